package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vramseal/vramseal/audit"
)

func runAuditCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	root := New(&out, &errb)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String() + errb.String(), err
}

func TestAuditCommands(t *testing.T) {
	tmp := t.TempDir()
	dir, key := filepath.Join(tmp, "log"), filepath.Join(tmp, "vk")
	if out, err := runAuditCLI(t, "audit", "init", dir, "--verification-key", key); err != nil {
		t.Fatalf("audit init = %v\n%s", err, out)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	l, err := audit.Open(dir, audit.Options{Service: "vramseal"})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b\x1b[31m", "c"} {
		l.Append(context.Background(), audit.Event{Type: "shard_sealed", Severity: audit.SeverityCritical,
			CorrelationID: "req-" + id[:1], Fields: []audit.Field{audit.String("shard_id", id)}})
	}
	l.Close(context.Background())

	out, err := runAuditCLI(t, "audit", "verify", dir, "--verification-key", key)
	if err != nil || !strings.Contains(out, "OK: 3 records") || !strings.Contains(out, "checked with the verification key") {
		t.Fatalf("audit verify = %v\n%s", err, out)
	}
	out, err = runAuditCLI(t, "audit", "verify", dir)
	if err != nil || !strings.Contains(out, "NOT checked") {
		t.Fatalf("audit verify without key = %v\n%s", err, out)
	}
	out, err = runAuditCLI(t, "audit", "query", dir, "--field", "shard_id=c")
	if err != nil || strings.Count(out, "\n") != 1 || !strings.Contains(out, `"shard_id":"c"`) {
		t.Fatalf("audit query = %v\n%s", err, out)
	}
	out, err = runAuditCLI(t, "audit", "query", dir, "--cid", "req-b", "--format", "table")
	if err != nil || !strings.Contains(out, `\x1b[31m`) || strings.Contains(out, "\x1b") {
		t.Fatalf("audit query table = %v\n%q", err, out)
	}
	out, err = runAuditCLI(t, "audit", "tail", "-n", "2", dir)
	if err != nil || strings.Count(out, "\n") != 2 || strings.Contains(out, "\x1b") {
		t.Fatalf("audit tail = %v\n%q", err, out)
	}

	// Tamper: the verify command fails with exit status 2 and names the place.
	m, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	b, _ := os.ReadFile(m[0])
	os.WriteFile(m[0], bytes.Replace(b, []byte(`"shard_id":"a"`), []byte(`"shard_id":"x"`), 1), 0o600)
	out, err = runAuditCLI(t, "audit", "verify", dir, "--verification-key", key)
	if ExitCode(err) != 2 || !strings.Contains(out, "FAIL: modified") || !strings.Contains(out, "line:    1") {
		t.Fatalf("audit verify after tampering = %v (exit %d)\n%s", err, ExitCode(err), out)
	}
}
