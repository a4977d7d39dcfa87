package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// checkJSONLines checks that out is one or more lines, each one compact
// JSON object whose keys, at every depth, are snake_case.
func checkJSONLines(t *testing.T, what, out string) []map[string]any {
	t.Helper()
	if out == "" || !strings.HasSuffix(out, "\n") {
		t.Fatalf("%s: stdout %q, want JSON lines", what, out)
	}
	var objs []map[string]any
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("%s: line %q is not a JSON object: %v", what, line, err)
		}
		var compact bytes.Buffer
		if json.Compact(&compact, []byte(line)) != nil || compact.String() != line {
			t.Errorf("%s: line is not compact JSON: %s", what, line)
		}
		checkKeys(t, what, v)
		objs = append(objs, v)
	}
	return objs
}

func checkKeys(t *testing.T, what string, v any) {
	t.Helper()
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if !snakeCase.MatchString(k) {
				t.Errorf("%s: key %q is not snake_case", what, k)
			}
			checkKeys(t, what, e)
		}
	case []any:
		for _, e := range v {
			checkKeys(t, what, e)
		}
	}
}

// runSplit runs args through [Run] and returns its exit status, stdout
// and stderr apart.
func runSplit(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	status := Run(context.Background(), args, &out, &errb)
	return status, out.String(), errb.String()
}

// TestAuditJSON: every audit command prints JSON, and only JSON, on
// stdout with --json, on success and on failure.
func TestAuditJSON(t *testing.T) {
	tmp := t.TempDir()
	dir, key := filepath.Join(tmp, "log"), filepath.Join(tmp, "vk")
	pub := key + ".pub"
	status, out, stderr := runSplit("audit", "init", dir, "--verification-key", key, "--json")
	if status != 0 {
		t.Fatalf("audit init --json: exit %d\n%s", status, stderr)
	}
	got := checkJSONLines(t, "audit init", out)
	pk, err := readPublicKey(pub)
	if err != nil || len(got) != 1 || got[0]["public_key"] != pk.String() || got[0]["log_id"] != pk.LogID() ||
		got[0]["public_key_file"] != pub || got[0]["verification_key_file"] != key || got[0]["dir"] != dir {
		t.Errorf("audit init --json = %s (public key %v, %v)", out, pk, err)
	}
	appendRecords(t, dir, 5)
	proof := filepath.Join(tmp, "r2.tlog-proof")
	if status, _, stderr := runSplit("audit", "prove", dir, "2", "--out", proof); status != 0 {
		t.Fatalf("audit prove --out: exit %d\n%s", status, stderr)
	}

	for _, tt := range []struct {
		args  []string
		lines int
		want  map[string]any // members every line must have, with these values
	}{
		{[]string{"verify", dir, "--verification-key", key, "--public-key", pub}, 1,
			map[string]any{"ok": true, "records": 5.0, "first_seq": 1.0, "last_seq": 5.0, "macs_checked": true, "checkpoints_checked": true,
				"format_version": 2.0, "epochs_time_bound": true}},
		{[]string{"verify", dir}, 1, map[string]any{"ok": true, "macs_checked": false, "checkpoints_checked": false}},
		{[]string{"query", dir, "--json"}, 5, map[string]any{"type": "shard_sealed"}},
		{[]string{"query", dir, "--json", "--format", "ndjson", "--field", "n=3"}, 1, map[string]any{"seq": 4.0}},
		{[]string{"tail", "-n", "2", dir, "--json"}, 2, map[string]any{"type": "shard_sealed"}},
		{[]string{"checkpoint", dir}, 1, map[string]any{"tree_size": 5.0}},
		{[]string{"prove", dir, "3"}, 1, map[string]any{"kind": "inclusion", "seq": 3.0}},
		{[]string{"prove", dir, "--consistency", "5"}, 1, map[string]any{"kind": "consistency", "old_size": 5.0}},
		{[]string{"check-proof", "--public-key", pub, proof}, 1, map[string]any{"ok": true, "seq": 2.0}},
		{[]string{"prune", dir, "--retain", "1h"}, 1, map[string]any{"pruned_segments": 0.0, "pruned_records": 0.0}},
	} {
		args := append([]string{"audit"}, tt.args...)
		if !strings.Contains(strings.Join(args, " "), "--json") {
			args = append(args, "--json")
		}
		name := strings.Join(args[:2], " ")
		t.Run(name, func(t *testing.T) {
			status, out, stderr := runSplit(args...)
			if status != 0 {
				t.Fatalf("%v: exit %d\n%s", args, status, stderr)
			}
			got := checkJSONLines(t, name, out)
			if len(got) != tt.lines {
				t.Errorf("%v: %d lines, want %d:\n%s", args, len(got), tt.lines, out)
			}
			for _, o := range got {
				for k, v := range tt.want {
					if o[k] != v {
						t.Errorf("%v: %s = %v, want %v\n%s", args, k, o[k], v, out)
					}
				}
			}
		})
	}

	// Every audit command has a --json flag that prints JSON on success:
	// none is left with only the error-object flag.
	var audit *cobra.Command
	for _, c := range New(nil, nil).Commands() {
		if c.Name() == "audit" {
			audit = c
		}
	}
	for _, c := range audit.Commands() {
		if f := c.Flags().Lookup("json"); f == nil || strings.HasPrefix(f.Usage, "on failure") {
			t.Errorf("audit %s has no --json output of its own", c.Name())
		}
	}

	// A log that fails verification: one error object, no text, exit 4.
	segs, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, segs[0], bytes.Replace(b, []byte(`"n":0`), []byte(`"n":9`), 1))
	status, out, _ = runSplit("audit", "verify", dir, "--verification-key", key, "--json")
	got = checkJSONLines(t, "audit verify of a tampered log", out)
	if status != 4 || len(got) != 1 || strings.Contains(out, "FAIL") {
		t.Errorf("audit verify --json of a tampered log: exit %d, stdout %s; want 4 and one error object", status, out)
	} else if e, _ := got[0]["error"].(map[string]any); e["code"] != "integrity" || e["exit_status"] != 4.0 {
		t.Errorf("audit verify --json of a tampered log: %s", out)
	}
	if status, out, _ := runSplit("audit", "query", dir, "--json", "--format", "table"); status != 2 || len(checkJSONLines(t, "query --json --format table", out)) != 1 {
		t.Errorf("audit query --json --format table: exit %d, stdout %s; want 2 and an error object", status, out)
	}
}
