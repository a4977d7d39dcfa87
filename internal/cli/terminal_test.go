package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/vramseal/vramseal/internal/server"
	"github.com/vramseal/vramseal/seal"
)

func TestVersion(t *testing.T) {
	info := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.0"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "69cacd8a1b2c3d4e5f60718293a4b5c6d7e8f901"},
		{Key: "vcs.time", Value: "2026-12-02T13:00:00Z"},
		{Key: "vcs.modified", Value: "true"},
	}}
	for _, tt := range []struct {
		info *debug.BuildInfo
		ok   bool
		want string
	}{
		{info, true, "v1.2.0 (commit 69cacd8a1b2c, 2026-12-02T13:00:00Z, modified; go1.26.8)"},
		{&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, true, "(devel) (commit unknown; go1.26.8)"},
		{nil, false, "unknown (no build information)"},
	} {
		if got := version(tt.info, tt.ok); got != tt.want {
			t.Errorf("version() = %q, want %q", got, tt.want)
		}
	}
	var out, errb bytes.Buffer
	if got := Run(context.Background(), []string{"--version"}, &out, &errb); got != 0 || !strings.HasPrefix(out.String(), "vramseal ") || !strings.Contains(out.String(), "commit") {
		t.Errorf("--version: exit %d, %q %q", got, out.String(), errb.String())
	}
}

func TestMistypedCommandSuggests(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"shrad", "ls"}, "did you mean shard?"},
		{[]string{"shard", "lss"}, "did you mean ls?"},
		{[]string{"audit", "verfy", "x"}, "did you mean verify?"},
	} {
		var out, errb bytes.Buffer
		if got := Run(context.Background(), tt.args, &out, &errb); got != 2 || !strings.Contains(errb.String(), tt.want) {
			t.Errorf("vramseal %s: exit %d, %q; want 2 and %q", strings.Join(tt.args, " "), got, errb.String(), tt.want)
		}
	}
}

// TestHelp checks every command's help: each one that runs has examples,
// and byte-size defaults are shown in units.
func TestHelp(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Runnable() && !c.HasSubCommands() && c.Name() != "help" && c.Name() != "completion" && c.Parent() != nil && c.Parent().Name() != "completion" {
			if c.Example == "" {
				t.Errorf("%s --help has no examples", c.CommandPath())
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(New(&bytes.Buffer{}, &bytes.Buffer{}))
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"seal", "--help"}, []string{"(default 8GiB)", "(default 64KiB)", "Examples:"}},
		{[]string{"serve", "--help"}, []string{"--upload-min-rate bytes", "(default 1MiB)"}},
		{[]string{"shard", "ls", "--help"}, []string{"(default 1m0s)"}},
	} {
		out, _, err := runCLI(t, tt.args...)
		for _, w := range tt.want {
			if err != nil || !strings.Contains(out, w) {
				t.Errorf("vramseal %s: %v, output lacks %q:\n%s", strings.Join(tt.args, " "), err, w, out)
			}
		}
	}
	// An upload's time grows with the file: no default limit.
	add := newShardAddCmd()
	if f := add.Flags().Lookup("timeout"); f == nil || f.DefValue != "0s" {
		t.Errorf("shard add --timeout default = %v, want 0s", f)
	}
	for _, n := range []int64{0, 1, 1000, 64 << 10, 3 << 20, 8 << 30, 1<<40 + 1} {
		b := ByteSize(n)
		var back ByteSize
		if err := back.Set(b.String()); err != nil || back != b {
			t.Errorf("ByteSize(%d).String() = %q reads back as %d, %v", n, b.String(), int64(back), err)
		}
	}
}

func TestShardListAndGet(t *testing.T) {
	addr, tok := startDaemon(t, 1<<20, 0)
	c := []string{"--addr", addr, "--token-file", tok}
	out, _, err := runCLI(t, append([]string{"shard", "ls"}, c...)...)
	if err != nil || !strings.Contains(out, "no shards are resident") {
		t.Errorf("shard ls of an empty daemon = %q, %v; want it to say so", out, err)
	}
	small := writeSized(t, "small.bin", 9000)
	if _, _, err := runCLI(t, append([]string{"shard", "add", small, "--shard-id", "s1", "--model-ref", "org/m"}, c...)...); err != nil {
		t.Fatal(err)
	}
	out, _, err = runCLI(t, append([]string{"shard", "ls"}, c...)...)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "SHARD MODEL TP RANK GPU BACKEND SIZE STATUS VERIFIED AGE" {
		t.Fatalf("shard ls = %q, want the header and one row, no ATTACHED column", out)
	}
	if got := strings.Fields(lines[1]); strings.Join(got[:4], " ") != "s1 org/m 0/1 0" || got[4] != "sim" || got[7] != "ok" || got[8] != "never" {
		t.Errorf("shard ls row = %q", lines[1])
	}
	if _, _, err := runCLI(t, append([]string{"shard", "verify", "s1", "--full"}, c...)...); err != nil {
		t.Fatal(err)
	}
	out, _, err = runCLI(t, append([]string{"shard", "get", "s1"}, c...)...)
	if err != nil || !strings.Contains(out, "last verified  full ") || !strings.Contains(out, "s ago\n") || !strings.Contains(out, "status         ok") {
		t.Errorf("shard get after a verify = %q, %v", out, err)
	}
	out, _, err = runCLI(t, append([]string{"shard", "get", "s1", "--json"}, c...)...)
	var sh server.ShardJSON
	if err != nil || json.Unmarshal([]byte(out), &sh) != nil || sh.Backend != "sim" || sh.LastVerified == nil || sh.LastVerified.Mode != "full" {
		t.Errorf("shard get --json = %q, %v", out, err)
	}
	if _, _, err := runCLI(t, append([]string{"shard", "get", "nope"}, c...)...); ExitCode(err) != 2 {
		t.Errorf("shard get of an unknown shard: %v, want exit 2", err)
	}
}

func TestShardTableColumns(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	sealed := func(id string, idx, n int, ago time.Duration) seal.Seal {
		return seal.Seal{ShardID: id, ModelRef: "org/m", ShardIndex: idx, ShardCount: n, Size: 3 << 20, SealedAt: now.Add(-ago)}
	}
	shards := []server.ShardJSON{
		{Seal: sealed("a", 0, 2, 3*time.Hour), Status: "ok", Backend: "cuda", LastVerified: &server.LastVerifiedJSON{Mode: "scrub", At: now.Add(-90 * time.Second)}},
		{Seal: sealed("b", 1, 2, 72*time.Hour), Status: "corrupt", Backend: "cuda", Attachments: []server.AttachmentJSON{{PID: 41}, {PID: 97}}},
		{Seal: sealed("c", 0, 1, 5*time.Second), Status: "verifying", Backend: "sim"},
	}
	var b bytes.Buffer
	if err := printShardTableAt(&b, shards, now); err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"SHARD", "MODEL", "TP", "RANK", "GPU", "BACKEND", "SIZE", "STATUS", "VERIFIED", "AGE", "ATTACHED"},
		{"a", "org/m", "0/2", "0", "cuda", "3.0", "MiB", "ok", "scrub", "1m", "ago", "3h", "-"},
		{"b", "org/m", "1/2", "0", "cuda", "3.0", "MiB", "corrupt", "never", "3d", "2", "(pid", "41,", "97)"},
		{"c", "org/m", "0/1", "0", "sim", "3.0", "MiB", "verifying", "never", "5s", "-"},
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	for i, w := range want {
		if i >= len(lines) || strings.Join(strings.Fields(lines[i]), " ") != strings.Join(w, " ") {
			t.Errorf("shard table line %d = %q, want %q\n%s", i, lines[min(i, len(lines)-1)], strings.Join(w, " "), b.String())
		}
	}
}
