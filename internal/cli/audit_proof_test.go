package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vramseal/vramseal/audit"
)

// appendRecords opens the log in dir, appends n records and closes it.
func appendRecords(t *testing.T, dir string, n int) {
	t.Helper()
	l, err := audit.Open(dir, audit.Options{Service: "vramseal"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := l.Append(context.Background(), audit.Event{Type: "shard_sealed", Severity: audit.SeverityCritical,
			Fields: []audit.Field{audit.Int("n", int64(i))}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func writeTestFile(t *testing.T, path string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestAuditCheckpointAndProofs(t *testing.T) {
	tmp := t.TempDir()
	dir, key := filepath.Join(tmp, "log"), filepath.Join(tmp, "vk")
	out, err := runAuditCLI(t, "audit", "init", dir, "--verification-key", key)
	pub := key + ".pub"
	pk, perr := readPublicKey(pub)
	if err != nil || perr != nil || !strings.Contains(out, pk.String()) {
		t.Fatalf("audit init = %v, public key %v\n%s", err, perr, out)
	}
	appendRecords(t, dir, 3)
	out, err = runAuditCLI(t, "audit", "checkpoint", dir)
	if err != nil || !strings.HasPrefix(out, "vramseal/audit/") || !strings.Contains(out, "\n3\n") {
		t.Fatalf("audit checkpoint = %v\n%s", err, out)
	}
	old := writeTestFile(t, filepath.Join(tmp, "old.checkpoint"), []byte(out))
	appendRecords(t, dir, 4)

	out, err = runAuditCLI(t, "audit", "checkpoint", dir, "--json")
	var cj checkpointJSON
	if err != nil || json.Unmarshal([]byte(out), &cj) != nil || cj.TreeSize != 7 || !strings.HasPrefix(cj.Checkpoint, cj.Origin+"\n7\n"+cj.Root+"\n") {
		t.Fatalf("audit checkpoint --json = %v, %+v\n%s", err, cj, out)
	}
	out, err = runAuditCLI(t, "audit", "verify", dir, "--public-key", pub)
	if err != nil || !strings.Contains(out, "OK: 7 records") || !strings.Contains(out, "MACs: NOT checked") ||
		!strings.Contains(out, "signed checkpoints checked with the public key, the last of 7 records") {
		t.Fatalf("audit verify --public-key = %v\n%s", err, out)
	}

	// Inclusion: to stdout, and to a file.
	proof, err := runAuditCLI(t, "audit", "prove", dir, "5")
	if err != nil || !strings.HasPrefix(proof, "c2sp.org/tlog-proof@v1\nextra ") || !strings.Contains(proof, "\nindex 4\n") {
		t.Fatalf("audit prove = %v\n%s", err, proof)
	}
	pf := writeTestFile(t, filepath.Join(tmp, "r5.tlog-proof"), []byte(proof))
	out, err = runAuditCLI(t, "audit", "check-proof", "--public-key", pub, pf)
	if err != nil || !strings.Contains(out, "OK: record seq 5 (shard_sealed") || !strings.Contains(out, "tree of 7 records") {
		t.Fatalf("audit check-proof = %v\n%s", err, out)
	}
	if out, err := runAuditCLI(t, "audit", "prove", dir, "2", "--size", "3", "--out", filepath.Join(tmp, "r2.tlog-proof")); err != nil {
		t.Fatalf("audit prove --size 3 --out = %v\n%s", err, out)
	}
	out, err = runAuditCLI(t, "audit", "check-proof", "--public-key", pub, filepath.Join(tmp, "r2.tlog-proof"), "--json")
	var res map[string]any
	if err != nil || json.Unmarshal([]byte(out), &res) != nil || res["ok"] != true || res["seq"] != 2.0 {
		t.Fatalf("audit check-proof --json = %v\n%s", err, out)
	}

	// The record's line given beside the proof: the right one and another.
	var lines []string
	audit.Query(context.Background(), dir, audit.Filter{}, audit.ReadOptions{}, func(r *audit.Record) error {
		lines = append(lines, string(r.Line)+"\n")
		return nil
	})
	good := writeTestFile(t, filepath.Join(tmp, "r5.ndjson"), []byte(lines[4]))
	wrong := writeTestFile(t, filepath.Join(tmp, "r6.ndjson"), []byte(lines[5]))
	if out, err := runAuditCLI(t, "audit", "check-proof", "--public-key", pub, pf, good); err != nil {
		t.Fatalf("audit check-proof PROOF RECORD = %v\n%s", err, out)
	}
	out, err = runAuditCLI(t, "audit", "check-proof", "--public-key", pub, pf, wrong)
	if ExitCode(err) != 4 || !strings.Contains(out, "FAIL:") || !strings.Contains(out, "the record is seq 6, the proof is for seq 5") {
		t.Fatalf("audit check-proof of another record = %v (exit %d)\n%s", err, ExitCode(err), out)
	}

	// Consistency, against a checkpoint kept from before.
	cons, err := runAuditCLI(t, "audit", "prove", dir, "--consistency", "3")
	if err != nil {
		t.Fatalf("audit prove --consistency = %v\n%s", err, cons)
	}
	cf := writeTestFile(t, filepath.Join(tmp, "c.proof"), []byte(cons))
	out, err = runAuditCLI(t, "audit", "check-proof", "--public-key", pub, cf, old)
	if err != nil || !strings.Contains(out, "OK: the tree of 7 records extends the tree of 3 records") {
		t.Fatalf("audit check-proof CONSISTENCY OLD = %v\n%s", err, out)
	}
	latest, _ := runAuditCLI(t, "audit", "checkpoint", dir)
	other := writeTestFile(t, filepath.Join(tmp, "latest.checkpoint"), []byte(latest))
	out, err = runAuditCLI(t, "audit", "check-proof", "--public-key", pub, cf, other)
	if ExitCode(err) != 4 || !strings.Contains(out, "the proof starts from one of 3 records") {
		t.Fatalf("audit check-proof with another old checkpoint = %v (exit %d)\n%s", err, ExitCode(err), out)
	}

	// Forged: the checkpoint inside the proof says 8 records.
	forged := writeTestFile(t, filepath.Join(tmp, "forged.proof"), bytes.Replace([]byte(proof), []byte("\n7\n"), []byte("\n8\n"), 1))
	out, err = runAuditCLI(t, "audit", "check-proof", "--public-key", pub, forged)
	if ExitCode(err) != 4 || !strings.Contains(out, "forged or altered") {
		t.Fatalf("audit check-proof of a forged checkpoint = %v (exit %d)\n%s", err, ExitCode(err), out)
	}
	// The key of another log.
	odir, okey := filepath.Join(tmp, "other"), filepath.Join(tmp, "other.vk")
	if out, err := runAuditCLI(t, "audit", "init", odir, "--verification-key", okey); err != nil {
		t.Fatalf("audit init = %v\n%s", err, out)
	}
	out, err = runAuditCLI(t, "audit", "check-proof", "--public-key", okey+".pub", pf)
	if ExitCode(err) != 4 || !strings.Contains(out, "no signature by key") {
		t.Fatalf("audit check-proof with another log's key = %v (exit %d)\n%s", err, ExitCode(err), out)
	}
	out, err = runAuditCLI(t, "audit", "verify", dir, "--public-key", okey+".pub")
	if ExitCode(err) != 4 || !strings.Contains(out, "not the log of this key") {
		t.Fatalf("audit verify with another log's public key = %v (exit %d)\n%s", err, ExitCode(err), out)
	}

	// A record changed after it was signed: verify names the checkpoint.
	segs, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	last := segs[len(segs)-1]
	b, _ := os.ReadFile(last)
	writeTestFile(t, last, bytes.Replace(b, []byte(`"n":3`), []byte(`"n":9`), 1))
	out, err = runAuditCLI(t, "audit", "verify", dir, "--public-key", pub)
	if ExitCode(err) != 4 || !strings.Contains(out, "FAIL: checkpoint mismatch") {
		t.Fatalf("audit verify --public-key after tampering = %v (exit %d)\n%s", err, ExitCode(err), out)
	}
}

func TestAuditProofExitCodes(t *testing.T) {
	dir, key := initLog(t)
	pub := key + ".pub"
	appendRecords(t, dir, 2)
	tmp := t.TempDir()
	bad := writeTestFile(t, filepath.Join(tmp, "bad"), []byte("c2sp.org/tlog-proof@v1\nindex x\n"))
	empty, _ := initLog(t)
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"prove ok", []string{"audit", "prove", dir, "1"}, 0},
		{"prove seq not a number", []string{"audit", "prove", dir, "one"}, 2},
		{"prove seq 0", []string{"audit", "prove", dir, "0"}, 2},
		{"prove seq beyond the checkpoint", []string{"audit", "prove", dir, "3"}, 2},
		{"prove no checkpoint of that size", []string{"audit", "prove", dir, "1", "--size", "1"}, 2},
		{"prove no SEQ", []string{"audit", "prove", dir}, 2},
		{"prove missing DIR", []string{"audit", "prove", filepath.Join(tmp, "missing"), "1"}, 2},
		{"prove empty log", []string{"audit", "prove", empty, "1"}, 2},
		{"prove consistency ok", []string{"audit", "prove", dir, "--consistency", "2"}, 0},
		{"prove consistency beyond", []string{"audit", "prove", dir, "--consistency", "3"}, 2},
		{"checkpoint empty log", []string{"audit", "checkpoint", empty}, 2},
		{"check-proof without key", []string{"audit", "check-proof", bad}, 2},
		{"check-proof malformed", []string{"audit", "check-proof", "--public-key", pub, bad}, 2},
		{"check-proof missing proof", []string{"audit", "check-proof", "--public-key", pub, filepath.Join(tmp, "nope")}, 2},
		{"check-proof malformed key", []string{"audit", "check-proof", "--public-key", bad, bad}, 2},
		{"verify malformed public key", []string{"audit", "verify", dir, "--public-key", bad}, 2},
		{"verify ok with both keys", []string{"audit", "verify", dir, "--public-key", pub, "--verification-key", key}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runAuditCLI(t, tt.args...)
			got := 0
			if err != nil {
				got = ExitCode(err)
			}
			if got != tt.want {
				t.Errorf("vramseal %q = %v (exit %d), want exit %d\n%s", tt.args, err, got, tt.want, out)
			}
		})
	}
}
