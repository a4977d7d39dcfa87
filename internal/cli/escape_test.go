package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// hostile is a file name part that a terminal would act on if printed raw:
// an ANSI colour, a carriage return, a newline, a bidirectional override,
// the line and paragraph separators, a bell and an invalid byte.
const hostile = "evil\x1b[31m\r\n\u202e\u2028\u2029\a\xff"

// rawControls returns the first rune of s that must never reach a
// terminal raw, allowing the newline that ends each line.
func rawControls(s string) (rune, bool) {
	for i, r := range s {
		if r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD") {
			return r, true
		}
		if r == '\n' {
			continue
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x2028 || r == 0x2029 || (r >= 0x202a && r <= 0x202e) {
			return r, true
		}
	}
	return 0, false
}

func TestNoRawControlsOnTerminal(t *testing.T) {
	addr, tok := startDaemon(t, 1<<20, 0)
	dir := t.TempDir()
	model := filepath.Join(dir, hostile+".bin")
	if err := os.WriteFile(model, bytes.Repeat([]byte{3}, 5000), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "no-"+hostile)
	key := filepath.Join(t.TempDir(), "key-"+hostile)
	c := []string{"--addr", addr, "--token-file", tok}
	if _, _, err := runCLI(t, append([]string{"shard", "add", model, "--shard-id", "sep", "--model-ref", "org/m\u2028x\u2029"}, c...)...); err != nil {
		t.Fatalf("shard add with a U+2028 model ref: %v", err)
	}
	tests := []struct {
		name string
		args []string
	}{
		{"digest ok", []string{"digest", model}},
		{"digest missing", []string{"digest", missing}},
		{"digest dir", []string{"digest", dir}},
		{"seal ok", []string{"seal", "--device", "sim", "--sim-capacity", "1MiB", model}},
		{"seal missing", []string{"seal", "--device", "sim", missing}},
		{"shard add missing", append([]string{"shard", "add", missing}, c...)},
		{"shard ls", append([]string{"shard", "ls"}, c...)},
		{"model add missing", append([]string{"model", "add", missing}, c...)},
		{"model add bad signature file", append([]string{"model", "add", model, "--signature", missing, "--public-key", missing}, c...)},
		{"audit init ok", []string{"audit", "init", filepath.Join(dir, "log-"+hostile), "--verification-key", key}},
		{"audit init key exists", []string{"audit", "init", filepath.Join(dir, "log2"), "--verification-key", key}},
		{"audit verify missing", []string{"audit", "verify", missing}},
		{"audit verify bad key", []string{"audit", "verify", dir, "--verification-key", model}},
		{"audit query missing", []string{"audit", "query", missing}},
		{"audit tail missing", []string{"audit", "tail", missing}},
		{"audit prune missing", []string{"audit", "prune", missing, "--retain", "1d"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			status := Run(context.Background(), tt.args, &out, &errb)
			for name, s := range map[string]string{"stdout": out.String(), "stderr": errb.String()} {
				if r, bad := rawControls(s); bad {
					t.Errorf("vramseal %s (exit %d): %s holds raw %U:\n%q", tt.name, status, name, r, s)
				}
			}
			if out.Len()+errb.Len() == 0 {
				t.Errorf("vramseal %s printed nothing", tt.name)
			}
		})
	}
}

func TestSafeText(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"model.bin", "model.bin"},
		{"my model.bin", "my model.bin"},
		{"Ünïcødé/模型", "Ünïcødé/模型"},
		{"", ""},
		{"a\x1b[31mb", `"a\x1b[31mb"`},
		{"a\u2028b", `"a\u2028b"`},
		{"a\u202eb", `"a\u202eb"`},
		{`say "hi"`, `"say \"hi\""`},
		{`a\x1b`, `"a\\x1b"`},
		{"\xff", `"\xff"`},
	} {
		if got := safeText(tt.in); got != tt.want {
			t.Errorf("safeText(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
