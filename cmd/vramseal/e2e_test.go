package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vramseal/vramseal/internal/daemontest"
)

// buildBinary compiles vramseal into a temp dir.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test builds the binary; skipped with -short")
	}
	return daemontest.Build(t, ".")
}

func startDaemon(t *testing.T, bin, dataDir string, extra ...string) *daemontest.Daemon {
	t.Helper()
	return daemontest.Start(t, bin, append([]string{"serve", "--listen", "127.0.0.1:0", "--device", "sim", "--sim-capacity", "256MiB",
		"--data-dir", dataDir, "--log-format", "json", "--enable-test-faults"}, extra...)...)
}

// run runs a CLI command and returns its stdout and exit code.
func run(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String() + errb.String(), code
}

func TestEndToEnd(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	d := startDaemon(t, bin, data)
	addr := "--addr=http://" + d.Addr

	model := filepath.Join(dir, "model.bin")
	weights := make([]byte, 5<<20+12345)
	rand.Read(weights)
	if err := os.WriteFile(model, weights, 0o600); err != nil {
		t.Fatal(err)
	}
	// A file named .safetensors must be one: random bytes are refused.
	fake := filepath.Join(dir, "model.safetensors")
	if err := os.WriteFile(fake, weights[:4096], 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := run(t, bin, "shard", "add", fake, addr); code != 2 || !strings.Contains(out, "not a valid safetensors file") {
		t.Fatalf("shard add of random bytes named .safetensors: exit %d, want 2 naming the format\n%s", code, out)
	}
	out, code := run(t, bin, "shard", "add", model, "--shard-id", "llama-tp0", "--model-ref", "org/llama", "--json", addr)
	if code != 0 {
		t.Fatalf("shard add: exit %d\n%s", code, out)
	}
	var added struct {
		Seal struct {
			ShardID string `json:"shard_id"`
			Size    int64  `json:"size_bytes"`
		} `json:"seal"`
	}
	if err := json.Unmarshal([]byte(out), &added); err != nil || added.Seal.ShardID != "llama-tp0" || added.Seal.Size != int64(len(weights)) {
		t.Fatalf("shard add output %q (%v)", out, err)
	}
	if out, code := run(t, bin, "shard", "verify", "llama-tp0", "--full", addr); code != 0 || !strings.Contains(out, "verified llama-tp0 (full)") {
		t.Fatalf("shard verify: exit %d\n%s", code, out)
	}
	if out, code := run(t, bin, "shard", "ls", addr); code != 0 || !strings.Contains(out, "llama-tp0") {
		t.Fatalf("shard ls: exit %d\n%s", code, out)
	}

	// Corrupt simulated device memory through the test-only hook.
	const cid = "e2e-corrupt-check"
	post := func(path, body string) *http.Response {
		req, _ := http.NewRequest("POST", "http://"+d.Addr+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Correlation-ID", cid)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := post("/v1/test/corrupt", `{"shard_id":"llama-tp0","offset":3000000}`); resp.StatusCode != 200 {
		t.Fatalf("corrupt = %d", resp.StatusCode)
	}
	if resp := post("/v1/shards/llama-tp0/verify", `{"mode":"full"}`); resp.StatusCode != 409 {
		t.Fatalf("verify after corruption = %d, want 409", resp.StatusCode)
	}
	if out, code := run(t, bin, "shard", "verify", "llama-tp0", addr); code != 4 {
		t.Fatalf("CLI verify while stopped: exit %d, want 4\n%s", code, out)
	}
	resp, err := http.Get("http://" + d.Addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("/readyz after failure = %d, want 503", resp.StatusCode)
	}
	if out, code := run(t, bin, "reset", "--reason", "restored shard from the registry", addr); code != 0 {
		t.Fatalf("reset: exit %d\n%s", code, out)
	}
	resp, _ = http.Get("http://" + d.Addr + "/readyz")
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/readyz after reset = %d", resp.StatusCode)
	}

	// Capacity planning: the exit status says whether it fits, with or
	// without --json. The daemon has 256 MiB and one 5 MiB shard.
	if out, code := run(t, bin, "capacity", "--plan", "64MiB", addr); code != 0 || !strings.Contains(out, "fits on GPU 0") {
		t.Fatalf("capacity --plan 64MiB: exit %d\n%s", code, out)
	}
	for _, extra := range [][]string{nil, {"--json"}} {
		args := append([]string{"capacity", "--plan", "1GiB", addr}, extra...)
		if out, code := run(t, bin, args...); code != 3 {
			t.Fatalf("%v: exit %d, want 3 (retryable: does not fit)\n%s", args, code, out)
		}
	}
	if out, code := run(t, bin, "shard", "rm", "llama-tp0", addr); code != 0 {
		t.Fatalf("shard rm: exit %d\n%s", code, out)
	}
	if out, code := run(t, bin, "shard", "verify", "llama-tp0", addr); code == 0 {
		t.Fatalf("verify of a released shard succeeded\n%s", out)
	}
	if out, code := run(t, bin, "shard", "rm", "../etc", addr); code != 2 {
		t.Fatalf("shard rm with a bad ID: exit %d, want 2\n%s", code, out)
	}

	// Graceful shutdown flushes the audit log and releases the shard.
	d.Cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-d.Exited:
		if err != nil {
			t.Fatalf("daemon exit: %v\n%s", err, d.Output())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not shut down")
	}
	if !strings.Contains(d.Output(), `"correlation_id":"`+cid+`"`) {
		t.Errorf("narration lacks correlation ID %s", cid)
	}

	auditDir := filepath.Join(data, "audit")
	key := filepath.Join(data, "audit-verification.key")
	out, code = run(t, bin, "audit", "verify", auditDir, "--verification-key", key)
	if code != 0 {
		t.Fatalf("audit verify: exit %d\n%s", code, out)
	}
	out, code = run(t, bin, "audit", "query", auditDir, "--type", "seal_verification_failed", "--format", "ndjson")
	if code != 0 {
		t.Fatalf("audit query: exit %d\n%s", code, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], `"llama-tp0"`) || !strings.Contains(lines[0], cid) || !strings.Contains(lines[0], "worker_stopped") {
		t.Fatalf("seal_verification_failed records:\n%s", out)
	}
	for _, typ := range []string{"vram_allocated", "vram_sealed", "seal_verified", "worker_reset", "vram_deallocated"} {
		out, _ := run(t, bin, "audit", "query", auditDir, "--type", typ, "--format", "ndjson")
		if !strings.Contains(out, "llama-tp0") && typ != "worker_reset" || strings.TrimSpace(out) == "" {
			t.Errorf("audit has no %s record for the shard:\n%s", typ, out)
		}
	}
}

// TestEndToEndScrub: with --scrub-rate the daemon finds corruption on its
// own, with no verify request, and stops the worker.
func TestEndToEndScrub(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	d := startDaemon(t, bin, data, "--scrub-rate", "1GiB", "--scrub-interval", "20ms")
	addr := "--addr=http://" + d.Addr
	model := filepath.Join(dir, "model.bin")
	weights := make([]byte, 3<<20)
	rand.Read(weights)
	if err := os.WriteFile(model, weights, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := run(t, bin, "shard", "add", model, "--shard-id", "scrubbed", addr); code != 0 {
		t.Fatalf("shard add: exit %d\n%s", code, out)
	}
	req, _ := http.NewRequest("POST", "http://"+d.Addr+"/v1/test/corrupt", strings.NewReader(`{"shard_id":"scrubbed","offset":2000000}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("corrupt = %d", resp.StatusCode)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + d.Addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 503 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the scrub never stopped the worker:\n%s", d.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.Cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-d.Exited:
		if err != nil {
			t.Fatalf("daemon exit: %v\n%s", err, d.Output())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not shut down")
	}
	out, code := run(t, bin, "audit", "query", filepath.Join(data, "audit"), "--type", "seal_verification_failed", "--format", "ndjson")
	// 2,000,000 / 65,536 = chunk 30.
	if code != 0 || !strings.Contains(out, `"scrub"`) || !strings.Contains(out, `"30"`) {
		t.Fatalf("audit query: exit %d, want a scrub failure naming chunk 30:\n%s", code, out)
	}
	// The lifecycle: started on the simulator with test faults on; stopped
	// by the signal after releasing the (quarantined) shard.
	out, code = run(t, bin, "audit", "query", filepath.Join(data, "audit"), "--type", "daemon_started,daemon_stopped", "--format", "ndjson")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 {
		t.Fatalf("audit query of the lifecycle: exit %d, want 2 records:\n%s", code, out)
	}
	for _, want := range []string{`"type":"daemon_started"`, `"backend":"sim"`, `"weights_in_host_memory":true`, `"test_faults":true`, `"resident_shards_found":0`} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("daemon_started lacks %s:\n%s", want, lines[0])
		}
	}
	for _, want := range []string{`"type":"daemon_stopped"`, `"reason":"signal"`, `"detail":"interrupt signal received"`, `"shards_released":1`} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("daemon_stopped lacks %s:\n%s", want, lines[1])
		}
	}
}
