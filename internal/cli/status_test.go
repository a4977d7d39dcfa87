package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/gpu/sim"
	"github.com/vramseal/vramseal/internal/server"
	"github.com/vramseal/vramseal/seal"
	"github.com/vramseal/vramseal/vram"
)

// startDaemon serves a daemon on one simulated GPU of capacity bytes, with
// uploads capped at maxUpload, and returns its URL and a token file.
func startDaemon(t *testing.T, capacity, maxUpload int64) (addr, tokenFile string) {
	t.Helper()
	return startDaemonWith(t, capacity, func(o *server.Options) { o.MaxUploadBytes = maxUpload })
}

// startDaemonWith is startDaemon with the server's options set by opt.
func startDaemonWith(t *testing.T, capacity int64, opt func(*server.Options)) (addr, tokenFile string) {
	t.Helper()
	devs, err := sim.New(sim.Options{Devices: 1, Capacity: capacity})
	if err != nil {
		t.Fatal(err)
	}
	key, err := seal.DeriveKey([]byte("cli-test-secret-0123456789abcdef-0123"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := vram.New(context.Background(), vram.Options{Devices: []gpu.Device{devs[0]}, Key: key, WorkerID: "w", ChunkSize: 4096, Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	const token = "cli-test-token-0123456789"
	opts := server.Options{Manager: m, Token: token}
	opt(&opts)
	s, err := server.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(func() { hs.Close(); s.Close(); m.Close(context.Background()) })
	tokenFile = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return hs.URL, tokenFile
}

func writeSized(t *testing.T, name string, n int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, bytes.Repeat([]byte{7}, n), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestExitStatuses runs every failure class of every command, with and
// without --json: the exit status is the README's table, and with --json
// stdout holds one JSON error object naming the same status.
func TestExitStatuses(t *testing.T) {
	addr, tok := startDaemon(t, 192<<10, 128<<10)
	small := writeSized(t, "small.bin", 8<<10)
	big := writeSized(t, "big.bin", 200<<10)
	huge := writeSized(t, "huge.bin", 120<<10)
	empty := writeSized(t, "empty.bin", 0)
	dir, key := initLog(t)
	c := []string{"--addr", addr, "--token-file", tok}
	if _, _, err := runCLI(t, append([]string{"shard", "add", small, "--shard-id", "taken"}, c...)...); err != nil {
		t.Fatalf("shard add: %v", err)
	}
	tests := []struct {
		name   string
		args   []string
		status int
		code   string
	}{
		{"add ok", append([]string{"shard", "add", small, "--shard-id", "ok1"}, c...), 0, ""},
		{"ls ok", append([]string{"shard", "ls"}, c...), 0, ""},
		{"verify ok", append([]string{"shard", "verify", "taken"}, c...), 0, ""},
		{"devices ok", append([]string{"devices"}, c...), 0, ""},
		{"capacity ok", append([]string{"capacity", "--plan", "4KiB"}, c...), 0, ""},
		{"rm ok", append([]string{"shard", "rm", "ok1"}, c...), 0, ""},
		{"digest ok", []string{"digest", small}, 0, ""},
		{"add duplicate id", append([]string{"shard", "add", small, "--shard-id", "taken"}, c...), 5, server.CodeExists},
		{"add empty file", append([]string{"shard", "add", empty}, c...), 2, "invalid_input"},
		{"add too large", append([]string{"shard", "add", big}, c...), 2, server.CodeTooLarge},
		{"add no room", append([]string{"shard", "add", huge, "--shard-id", "h1"}, append(c, "--gpu", "0")...), 0, ""},
		{"add no room again", append([]string{"shard", "add", huge, "--shard-id", "h2"}, c...), 3, server.CodeInsufficient},
		{"add bad id", append([]string{"shard", "add", small, "--shard-id", "a/b"}, c...), 2, "invalid_input"},
		{"add missing file", append([]string{"shard", "add", "/no/such/file"}, c...), 2, "invalid_input"},
		{"verify empty id", append([]string{"shard", "verify", ""}, c...), 2, "invalid_input"},
		{"verify dot", append([]string{"shard", "verify", "."}, c...), 2, "invalid_input"},
		{"verify dotdot", append([]string{"shard", "verify", ".."}, c...), 2, "invalid_input"},
		{"verify percent", append([]string{"shard", "verify", "a%b"}, c...), 2, "invalid_input"},
		{"verify unknown", append([]string{"shard", "verify", "nope"}, c...), 2, server.CodeNotFound},
		{"rm unknown", append([]string{"shard", "rm", "nope"}, c...), 2, server.CodeNotFound},
		{"capacity does not fit", append([]string{"capacity", "--plan", "1GiB"}, c...), 3, "insufficient_vram"},
		{"reset blank reason", append([]string{"reset", "--reason", "  "}, c...), 2, "invalid_input"},
		{"no token", []string{"devices", "--addr", addr}, 1, server.CodeUnauthorized},
		{"unreachable", []string{"devices", "--addr", "http://127.0.0.1:1"}, 1, "error"},
		{"seal chunk size 0", []string{"seal", small, "--device", "sim", "--chunk-size", "0"}, 2, "invalid_input"},
		{"digest chunk size 0", []string{"digest", small, "--chunk-size", "0"}, 2, "invalid_input"},
		{"digest missing", []string{"digest", "/no/such/file"}, 2, "invalid_input"},
		{"audit verify ok", []string{"audit", "verify", dir, "--verification-key", key}, 0, ""},
		{"audit tail negative", []string{"audit", "tail", "-n", "-1", dir}, 2, "invalid_input"},
		{"audit query empty key", []string{"audit", "query", dir, "--field", "=x"}, 2, "invalid_input"},
		{"audit init no key", []string{"audit", "init", t.TempDir()}, 2, "invalid_input"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := tt.args
			if tt.status == 0 && args[0] != "audit" {
				// Successes run with --json: stdout must be JSON.
				args = append(args, "--json")
			}
			if got := Run(context.Background(), args, &out, &errb); got != tt.status {
				t.Fatalf("vramseal %s = exit %d (%s), want %d", strings.Join(tt.args, " "), got, errb.String(), tt.status)
			}
			// An ID escaped twice shows as %25; an unvalidated one reaches
			// the router (405, no endpoint).
			if e := errb.String(); strings.Contains(e, "%25") || strings.Contains(e, "answered 405") || strings.Contains(e, "endpoint") {
				t.Errorf("error = %s", e)
			}
			if tt.status == 0 {
				if len(args) > len(tt.args) {
					for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
						if !json.Valid([]byte(line)) {
							t.Errorf("--json printed %q, not one JSON value a line", line)
						}
					}
				}
				return
			}
			out.Reset()
			errb.Reset()
			got := Run(context.Background(), append(tt.args, "--json"), &out, &errb)
			var e ErrorJSON
			if err := json.Unmarshal(out.Bytes(), &e); err != nil || got != tt.status || e.Error.ExitStatus != tt.status || e.Error.Code != tt.code || e.Error.Message == "" {
				t.Errorf("--json: exit %d, stdout %q (%v), want exit %d code %s", got, out.String(), err, tt.status, tt.code)
			}
		})
	}
}

func TestNoTokenNamesTokenFile(t *testing.T) {
	addr, _ := startDaemon(t, 64<<10, 0)
	var out, errb bytes.Buffer
	Run(context.Background(), []string{"devices", "--addr", addr}, &out, &errb)
	if !strings.Contains(errb.String(), "--token-file") {
		t.Errorf("401 error = %q, want it to name --token-file", errb.String())
	}
}

func TestCapacityVerdictOnce(t *testing.T) {
	addr, tok := startDaemon(t, 64<<10, 0)
	var out, errb bytes.Buffer
	Run(context.Background(), []string{"capacity", "--plan", "1GiB", "--addr", addr, "--token-file", tok}, &out, &errb)
	if n := strings.Count(out.String()+errb.String(), "does not fit"); n != 1 {
		t.Errorf("capacity --plan said its verdict %d times:\n%s%s", n, out.String(), errb.String())
	}
}
