package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vramseal/vramseal/internal/server"
)

const modelFixtures = "../../testdata/models"

// run runs the CLI and returns stdout, stderr and the exit status.
func runStatus(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestModelCommands(t *testing.T) {
	root := t.TempDir()
	if err := os.CopyFS(filepath.Join(root, "tiny-llama"), os.DirFS(filepath.Join(modelFixtures, "tiny-llama"))); err != nil {
		t.Fatal(err)
	}
	addr, tok := startDaemonWith(t, 64<<20, func(o *server.Options) { o.ModelRoots = []string{root} })
	c := []string{"--addr", addr, "--token-file", tok}
	sig, key := filepath.Join(modelFixtures, "tiny-llama.sig"), filepath.Join(modelFixtures, "fixture-key.pub")

	// The wrong key: an integrity failure, nothing resident.
	other := filepath.Join(modelFixtures, "tiny-llama.other-key.sig")
	if _, errs, code := runStatus(append([]string{"model", "add", filepath.Join(root, "tiny-llama"), "--signature", other, "--public-key", key}, c...)...); code != 4 || !strings.Contains(errs, "provenance_failed") {
		t.Errorf("wrong key: exit %d, stderr %s", code, errs)
	}
	out, errs, code := runStatus(append([]string{"model", "add", filepath.Join(root, "tiny-llama"), "--signature", sig, "--public-key", key}, c...)...)
	if code != 0 || !strings.Contains(out, "tiny-llama") || !strings.Contains(out, "signature (key ") || !strings.Contains(out, "tiny-llama-1") {
		t.Fatalf("model add: exit %d\n%s%s", code, out, errs)
	}
	out, _, code = runStatus(append([]string{"model", "ls", "--json"}, c...)...)
	var ls struct {
		Models []server.ModelJSON `json:"models"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &ls) != nil || len(ls.Models) != 1 || len(ls.Models[0].Shards) != 2 || !ls.Models[0].Provenance.Verified {
		t.Errorf("model ls --json: exit %d %s", code, out)
	}
	if out, errs, code := runStatus(append([]string{"model", "verify", "tiny-llama", "--full"}, c...)...); code != 0 || !strings.Contains(out, "2 shards") {
		t.Errorf("model verify: exit %d %s%s", code, out, errs)
	}
	if _, errs, code := runStatus(append([]string{"model", "add", filepath.Join(root, "tiny-llama")}, c...)...); code != 5 {
		t.Errorf("second add: exit %d %s, want 5 (conflict)", code, errs)
	}
	for _, bad := range [][]string{
		{"model", "add", filepath.Join(root, "tiny-llama"), "--signature", sig},
		{"model", "add", filepath.Join(root, "nothere")},
		{"model", "add", filepath.Join(root, "tiny-llama"), "--model-id", "a/b"},
		{"model", "verify", ".."},
		{"model", "rm", "nothere"},
	} {
		if _, errs, code := runStatus(append(bad, c...)...); code != 2 {
			t.Errorf("%v: exit %d %s, want 2", bad, code, errs)
		}
	}
	if out, errs, code := runStatus(append([]string{"model", "rm", "tiny-llama"}, c...)...); code != 0 || !strings.Contains(out, "released model tiny-llama") {
		t.Errorf("model rm: exit %d %s%s", code, out, errs)
	}
	if out, _, code := runStatus(append([]string{"model", "ls"}, c...)...); code != 0 || !strings.Contains(out, "no models resident") {
		t.Errorf("empty model ls: exit %d %q", code, out)
	}

	// A single safetensors file is uploaded, its signature in headers.
	single := filepath.Join(modelFixtures, "single.safetensors")
	if out, errs, code := runStatus(append([]string{"model", "add", single, "--signature", filepath.Join(modelFixtures, "single.safetensors.sig"), "--public-key", key}, c...)...); code != 0 || !strings.Contains(out, "single-0") {
		t.Errorf("upload: exit %d %s%s", code, out, errs)
	}
	if _, errs, code := runStatus(append([]string{"model", "add", single, "--model-id", "s2", "--expect-sha256", strings.Repeat("0", 64)}, c...)...); code != 4 || !strings.Contains(errs, "expected") {
		t.Errorf("wrong --expect-sha256: exit %d %s", code, errs)
	}
}
