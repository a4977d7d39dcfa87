package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vramseal/vramseal/seal"
)

func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := New(&out, &errb)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

func writeModel(t *testing.T, n int) (string, []byte) {
	t.Helper()
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i * 7)
	}
	p := filepath.Join(t.TempDir(), "model.bin")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, data
}

func TestDigest(t *testing.T) {
	path, data := writeModel(t, 200_000)
	out, _, err := runCLI(t, "digest", path, "--json", "--chunk-size", "64KiB")
	if err != nil {
		t.Fatal(err)
	}
	var got digestOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	root := seal.Root(seal.Leaves(data, 64<<10))
	if got.Digest != hex.EncodeToString(sum[:]) || got.Root != root.String() || got.Chunks != 4 || got.Size != 200_000 {
		t.Errorf("digest --json = %+v", got)
	}
	// Flags after positional arguments work, and the table form names the digest.
	out, _, err = runCLI(t, "digest", "--chunk-size", "1MiB", path)
	if err != nil || !strings.Contains(out, "sha256:"+hex.EncodeToString(sum[:])) || !strings.Contains(out, "chunks:     1") {
		t.Errorf("digest = %q, %v", out, err)
	}
}

func TestSealCommand(t *testing.T) {
	path, _ := writeModel(t, 300_000)
	out, _, err := runCLI(t, "seal", "--device", "sim", path, "--shard-id", "cli-1", "--json", "--sim-capacity", "16MiB")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Seal   seal.Seal `json:"seal"`
		Chunks int64     `json:"chunks"`
		Verify []struct {
			Mode string `json:"mode"`
		} `json:"verify"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("seal --json output %q: %v", out, err)
	}
	if got.Seal.ShardID != "cli-1" || got.Seal.Size != 300_000 || got.Chunks != 5 || len(got.Verify) != 2 || got.Verify[0].Mode != "full" {
		t.Errorf("seal --json = %+v", got)
	}
	out, _, err = runCLI(t, "seal", "--device", "sim", path)
	if err != nil || !strings.Contains(out, "verify full") || !strings.Contains(out, "tree root") {
		t.Errorf("seal table = %q, %v", out, err)
	}
}

func TestBadInput(t *testing.T) {
	path, _ := writeModel(t, 1000)
	tests := []struct {
		args []string
		code int // process exit status
	}{
		{[]string{"seal", "--device", "sim", path, "--shard-id", "../etc"}, 2},
		{[]string{"seal", "--device", "sim", path, "--sim-capacity", "100"}, 3}, // does not fit: retryable
		{[]string{"seal", "--device", "sim", path, "--gpu", "3"}, 2},
		{[]string{"seal", "--device", "sim", filepath.Join(t.TempDir(), "missing")}, 2},
		{[]string{"seal", "--device", "sim", t.TempDir()}, 2},
		{[]string{"seal", "--device", "sim", path, "--sim-devices", "0"}, 2},
		{[]string{"seal", "--device", "sim", path, "--chunk-size", "lots"}, 2},
		{[]string{"seal", "--device", "sim", path, "--no-such-flag"}, 2},
		{[]string{"digest", path, "--chunk-size", "0"}, 2},
		{[]string{"digest"}, 2},
		{[]string{"serve", "--log-format", "xml"}, 2},
		{[]string{"serve", "--listen", "0.0.0.0:1"}, 2},
		{[]string{"serve", "--audit-failure", "maybe"}, 2},
		{[]string{"serve", "--audit-retain", "forever"}, 2},
		{[]string{"serve", "--audit-segment-size", "1KiB"}, 2},
		{[]string{"serve", "--audit-segment-size", "lots"}, 2},
		{[]string{"serve", "--audit-epoch-interval", "0s"}, 2},
		{[]string{"serve", "--audit-epoch-interval", "48h"}, 2},
		{[]string{"reset"}, 2},
		{[]string{"audit", "verify"}, 2},
		{[]string{"bogus"}, 2},
		{[]string{"shard", "bogus"}, 2},
		{[]string{"audit"}, 2},
		{[]string{}, 2},
	}
	for _, tt := range tests {
		_, _, err := runCLI(t, tt.args...)
		if err == nil {
			t.Errorf("vramseal %v succeeded, want an error", tt.args)
			continue
		}
		if got := ExitCode(err); got != tt.code {
			t.Errorf("vramseal %v: exit %d (%v), want %d", tt.args, got, err, tt.code)
		}
	}
}

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"65536", 65536, true}, {"64KiB", 64 << 10, true}, {"8GiB", 8 << 30, true}, {"1GB", 1e9, true},
		{"2M", 2 << 20, true}, {"", 0, false}, {"-1", 0, false}, {"1.5GiB", 0, false}, {"99999999999TiB", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestApplyEnv(t *testing.T) {
	t.Setenv("VRAMSEAL_LOG_FORMAT", "xml")
	if _, _, err := runCLI(t, "serve"); err == nil || !strings.Contains(err.Error(), "xml") {
		t.Errorf("serve with VRAMSEAL_LOG_FORMAT=xml = %v, want the env value to be used and refused", err)
	}
	t.Setenv("VRAMSEAL_SIM_CAPACITY", "lots")
	if _, _, err := runCLI(t, "serve"); err == nil || !strings.Contains(err.Error(), "VRAMSEAL_SIM_CAPACITY") {
		t.Errorf("serve with VRAMSEAL_SIM_CAPACITY=lots = %v", err)
	}
}
