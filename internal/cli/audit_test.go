package cli

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

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
	if err != nil || !strings.Contains(out, "OK: 3 records") || !strings.Contains(out, "checked with the verification key") ||
		!strings.Contains(out, "epoch anchors checked with the verification key") {
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

	// Tamper: the verify command fails with exit status 4 and names the place.
	m, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	b, _ := os.ReadFile(m[0])
	os.WriteFile(m[0], bytes.Replace(b, []byte(`"shard_id":"a"`), []byte(`"shard_id":"x"`), 1), 0o600)
	out, err = runAuditCLI(t, "audit", "verify", dir, "--verification-key", key)
	if ExitCode(err) != 4 || !strings.Contains(out, "FAIL: modified") || !strings.Contains(out, "line:    1") {
		t.Fatalf("audit verify after tampering = %v (exit %d)\n%s", err, ExitCode(err), out)
	}
}

// initLog runs audit init and returns the log directory and key file.
func initLog(t *testing.T) (dir, key string) {
	t.Helper()
	tmp := t.TempDir()
	dir, key = filepath.Join(tmp, "log"), filepath.Join(tmp, "vk")
	if out, err := runAuditCLI(t, "audit", "init", dir, "--verification-key", key); err != nil {
		t.Fatalf("audit init = %v\n%s", err, out)
	}
	return dir, key
}

// dirNames lists dir, or returns nil if it does not exist.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// A key path that cannot be created fails before the log exists, and an
// existing key file is never overwritten.
func TestAuditInitBadKeyPath(t *testing.T) {
	tests := []struct {
		name     string
		key      string // relative to the test's directory
		oldKey   string // existing contents of key, if any
		dirFirst bool   // DIR exists (empty, 0700) before init
		wantExit int
	}{
		{name: "key directory missing", key: "missing/vk", wantExit: 2},
		{name: "key directory missing, DIR exists", key: "missing/vk", dirFirst: true, wantExit: 2},
		{name: "key exists", key: "vk", oldKey: "keep me\n", wantExit: 2},
		{name: "key exists, DIR exists", key: "vk", oldKey: "keep me\n", dirFirst: true, wantExit: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			dir, key := filepath.Join(tmp, "log"), filepath.Join(tmp, tt.key)
			if tt.dirFirst {
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			if tt.oldKey != "" {
				if err := os.WriteFile(key, []byte(tt.oldKey), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			out, err := runAuditCLI(t, "audit", "init", dir, "--verification-key", key)
			if ExitCode(err) != tt.wantExit {
				t.Fatalf("audit init = %v (exit %d), want exit %d\n%s", err, ExitCode(err), tt.wantExit, out)
			}
			if tt.dirFirst {
				if got := dirNames(t, dir); len(got) != 0 {
					t.Errorf("DIR after failed init holds %q, want nothing", got)
				}
			} else if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("DIR after failed init: Lstat = %v, want not exist", err)
			}
			if tt.oldKey != "" {
				if b, err := os.ReadFile(key); err != nil || string(b) != tt.oldKey {
					t.Errorf("existing key file after init = %q, %v; want %q untouched", b, err, tt.oldKey)
				}
			} else if _, err := os.Lstat(key); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("key file after failed init: Lstat = %v, want not exist", err)
			}
		})
	}
}

// A DIR that Init refuses leaves no key file behind and DIR untouched.
func TestAuditInitDirNotEmpty(t *testing.T) {
	tmp := t.TempDir()
	dir, key := filepath.Join(tmp, "log"), filepath.Join(tmp, "vk")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "other"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runAuditCLI(t, "audit", "init", dir, "--verification-key", key); err == nil {
		t.Fatalf("audit init into a non-empty directory = nil error\n%s", out)
	}
	if got := dirNames(t, dir); len(got) != 1 || got[0] != "other" {
		t.Errorf("DIR after failed init holds %q, want [other]", got)
	}
	if _, err := os.Lstat(key); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("key file after failed init: Lstat = %v, want not exist", err)
	}
}

// When the key cannot be made durable after Init created the log, the log
// is removed again, or, where that fails, the error says so and a fully
// written key file is kept.
func TestAuditInitUndo(t *testing.T) {
	errDisk := errors.New("disk on fire")
	// Both ways writeKeyFile fails: before the key is written (finishPrivate
	// removes the file) and after (syncing the directory).
	failEarly := func(f *os.File, _ []byte) error {
		f.Close()
		os.Remove(f.Name())
		return errDisk
	}
	failLate := func(f *os.File, data []byte) error {
		if err := finishPrivate(f, data); err != nil {
			return err
		}
		return errDisk
	}
	// blockUndo makes the log's removal fail: a non-empty directory that
	// undoInit, which removes nothing recursively, cannot remove.
	blockUndo := func(write func(*os.File, []byte) error) func(*os.File, []byte) error {
		return func(f *os.File, data []byte) error {
			d := filepath.Join(filepath.Dir(f.Name()), "log", "intruder")
			if err := os.Mkdir(d, 0o700); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(d, "x"), nil, 0o600); err != nil {
				return err
			}
			return write(f, data)
		}
	}
	tests := []struct {
		name     string
		dirFirst bool
		writeKey func(*os.File, []byte) error
		wantMsg  string
		wantDir  bool // DIR still exists afterwards
		wantKey  bool // the key file is still there
	}{
		{name: "new DIR, key not written", writeKey: failEarly, wantMsg: "removed the new audit log"},
		{name: "new DIR, key written, not synced", writeKey: failLate, wantMsg: "removed the new audit log"},
		{name: "empty DIR, key not written", dirFirst: true, writeKey: failEarly, wantMsg: "removed the new audit log", wantDir: true},
		{name: "empty DIR, key written, not synced", dirFirst: true, writeKey: failLate, wantMsg: "removed the new audit log", wantDir: true},
		{name: "undo fails, key written", writeKey: blockUndo(failLate), wantMsg: "failed too", wantDir: true, wantKey: true},
		{name: "undo fails, key not written", writeKey: blockUndo(failEarly), wantMsg: "delete it by hand", wantDir: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			dir, key := filepath.Join(tmp, "log"), filepath.Join(tmp, "vk")
			if tt.dirFirst {
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			vk, ierr := initAudit(dir, key, tt.writeKey)
			if vk != nil || !errors.Is(ierr, errDisk) || !strings.Contains(ierr.Error(), tt.wantMsg) {
				t.Fatalf("initAudit = %v, %v; want an error wrapping %v that says %q", vk, ierr, errDisk, tt.wantMsg)
			}
			fi, err := os.Stat(dir)
			if gotDir := err == nil; gotDir != tt.wantDir {
				t.Errorf("DIR exists = %v (%v), want %v", gotDir, err, tt.wantDir)
			}
			if tt.dirFirst && tt.wantDir {
				if got := dirNames(t, dir); len(got) != 0 || fi.Mode().Perm() != 0o700 {
					t.Errorf("DIR after undo holds %q, mode %v; want empty, 0700", got, fi.Mode().Perm())
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "state.json")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("state.json after undo: Stat = %v, want not exist", err)
			}
			b, rerr := os.ReadFile(key)
			if gotKey := rerr == nil; gotKey != tt.wantKey {
				t.Errorf("key file exists = %v, want %v", gotKey, tt.wantKey)
			}
			if tt.wantKey {
				// The kept key is whole, and the error names its log.
				vk, perr := audit.ParseVerificationKey(b)
				if perr != nil || !strings.Contains(ierr.Error(), "keep "+key) || !strings.Contains(ierr.Error(), vk.LogID()) {
					t.Errorf("kept key file: %v; error %q should say to keep %s of log %v", perr, ierr, key, vk)
				}
			}
		})
	}
}

func TestAuditExitCodes(t *testing.T) {
	dir, key := initLog(t)
	_, otherKey := initLog(t)
	tmp := t.TempDir()
	badKey := filepath.Join(tmp, "bad.key")
	if err := os.WriteFile(badKey, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(tmp, "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(tmp, "missing")
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"verify ok", []string{"audit", "verify", dir, "--verification-key", key}, 0},
		{"verify ok without key", []string{"audit", "verify", dir}, 0},
		{"verify no DIR argument", []string{"audit", "verify"}, 2},
		{"verify missing DIR", []string{"audit", "verify", missing}, 2},
		{"verify missing DIR with key", []string{"audit", "verify", missing, "--verification-key", key}, 2},
		{"verify key flag without value", []string{"audit", "verify", dir, "--verification-key"}, 2},
		{"verify missing key file", []string{"audit", "verify", dir, "--verification-key", filepath.Join(tmp, "nokey")}, 2},
		{"verify malformed key file", []string{"audit", "verify", dir, "--verification-key", badKey}, 2},
		{"verify key of another log", []string{"audit", "verify", dir, "--verification-key", otherKey}, 4},
		{"verify directory that is not a log", []string{"audit", "verify", empty}, 4},
		{"init without key flag", []string{"audit", "init", filepath.Join(tmp, "new")}, 2},
		{"query bad format", []string{"audit", "query", dir, "--format", "xml"}, 2},
		{"query bad severity", []string{"audit", "query", dir, "--severity", "urgent"}, 2},
		{"query bad field", []string{"audit", "query", dir, "--field", "novalue"}, 2},
		{"query bad since", []string{"audit", "query", dir, "--since", "yesterday"}, 2},
		{"prune bad retain", []string{"audit", "prune", dir, "--retain", "forever"}, 2},
		{"prune no retain", []string{"audit", "prune", dir}, 2},
		{"prune missing DIR", []string{"audit", "prune", missing, "--retain", "1d"}, 2},
		{"prune directory that is not a log", []string{"audit", "prune", empty, "--retain", "1d"}, 2},
		{"prune ok", []string{"audit", "prune", dir, "--retain", "2555d"}, 0},
		{"query missing DIR", []string{"audit", "query", missing}, 2},
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
	// Tampering is a verification failure (4), not bad input.
	m, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	for _, p := range m {
		os.Remove(p)
	}
	if _, err := os.Stat(filepath.Join(dir, "manifest.json")); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "manifest.json"))
	if out, err := runAuditCLI(t, "audit", "verify", dir, "--verification-key", key); ExitCode(err) != 4 {
		t.Errorf("audit verify with the manifest deleted = %v (exit %d), want exit 4\n%s", err, ExitCode(err), out)
	}
}

// Every column of the query table holds exactly its value, even when a
// value contains spaces, tabs or ANSI escapes, and nothing reaches the
// terminal raw.
func TestAuditQueryTable(t *testing.T) {
	dir, _ := initLog(t)
	l, err := audit.Open(dir, audit.Options{Service: "vramseal"})
	if err != nil {
		t.Fatal(err)
	}
	events := []audit.Event{
		{Type: "shard_sealed", Severity: audit.SeverityCritical, CorrelationID: "req 1\t\x1b[31mred",
			Fields: []audit.Field{audit.String("note", "two words\tand\x1b[2Jclear"), audit.Bytes("size", 3<<29), audit.Int("n", 7)}},
		{Type: "shard_released", Severity: audit.SeverityInfo, CorrelationID: "b",
			Fields: []audit.Field{audit.String("note", ""), audit.String("shard_id", "llama-tp0"), audit.Int("duration_us", 850)}},
		{Type: "shard_sealed", Severity: audit.SeverityHigh},
	}
	for _, e := range events {
		if _, err := l.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	var times []string
	var seqs []string
	err = audit.Query(context.Background(), dir, audit.Filter{Types: []string{"shard_sealed", "shard_released"}}, audit.ReadOptions{}, func(r *audit.Record) error {
		times = append(times, r.Time.UTC().Format("2006-01-02T15:04:05.000Z"))
		seqs = append(seqs, strconv.FormatUint(r.Seq, 10))
		return nil
	})
	if err != nil || len(times) != 3 {
		t.Fatalf("Query = %d records, %v", len(times), err)
	}
	want := [][]string{
		{times[0], "critical", "shard_sealed", seqs[0], `"req 1\t\x1b[31mred"`, `note="two words\tand\x1b[2Jclear" size=1.5GiB n=7`},
		{times[1], "info", "shard_released", seqs[1], "b", `note="" shard_id=llama-tp0 duration_us=850µs`},
		{times[2], "high", "shard_sealed", seqs[2], "", ""},
	}

	out, err := runAuditCLI(t, "audit", "query", dir, "--type", "shard_sealed,shard_released", "--format", "table")
	if err != nil {
		t.Fatalf("audit query --format table = %v\n%q", err, out)
	}
	for i := 0; i < len(out); i++ {
		if c := out[i]; c < 0x20 && c != '\n' || c == 0x7f {
			t.Fatalf("table output holds the control byte %#x at %d:\n%q", c, i, out)
		}
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 1+len(want) {
		t.Fatalf("table has %d lines, want %d:\n%s", len(lines), 1+len(want), out)
	}
	var starts []int
	for _, h := range []string{"TIME", "SEVERITY", "TYPE", "SEQ", "CID", "FIELDS"} {
		starts = append(starts, strings.Index(lines[0], h))
	}
	for i, row := range lines[1:] {
		var got []string
		for c, s := range starts {
			end := len(row)
			if c+1 < len(starts) {
				end = starts[c+1]
			}
			if s > len(row) || end > len(row) {
				t.Fatalf("row %d is too short for the header %q:\n%q", i, lines[0], row)
			}
			got = append(got, strings.TrimRight(row[s:end], " "))
		}
		if diff := cmp.Diff(want[i], got); diff != "" {
			t.Errorf("table row %d columns (-want +got):\n%s\nrow: %q", i, diff, row)
		}
	}
}
