package cli

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
)

func TestProgressBar(t *testing.T) {
	var out bytes.Buffer
	bar, stop := newProgress(&out, "/models/"+hostile+".bin", 3<<20)
	chunk := make([]byte, 1<<20)
	for range 3 {
		if n, err := bar.Write(chunk); n != len(chunk) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	stop()
	stop()
	s := out.String()
	// The bar shows the escaped file name, sizes in binary units, and
	// ends with the line erased, so that what follows starts clean.
	if !strings.Contains(s, "100%") || !strings.Contains(s, "MiB") || !strings.Contains(s, safeText(hostile+".bin")) {
		t.Errorf("progress output %q lacks 100%%, MiB or the escaped name", s)
	}
	if r, bad := rawControls(strings.ReplaceAll(s, "\r", "")); bad {
		t.Errorf("progress output holds raw %U: %q", r, s)
	}
	if last := s[strings.LastIndex(s, "\r")+1:]; last != "" {
		t.Errorf("progress output ends with %q, want the line erased (ending in \\r)", last)
	}
	if isTerminal(&out) {
		t.Error("a bytes.Buffer counted as a terminal: the bar would go into pipes and files")
	}
}

// TestNoProgressOffTerminal runs the long commands on a file large enough
// for a bar, with stderr not a terminal (a buffer; then /dev/null, a file
// but no terminal): nothing may be drawn.
func TestNoProgressOffTerminal(t *testing.T) {
	addr, tok := startDaemon(t, 16<<20, 0)
	big := writeSized(t, "big.bin", progressMinBytes+1)
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	for _, args := range [][]string{
		{"digest", big},
		{"seal", "--device", "sim", "--sim-capacity", "16MiB", big},
		{"shard", "add", big, "--addr", addr, "--token-file", tok},
	} {
		var out, errb bytes.Buffer
		cmd := New(&out, &errb)
		cmd.SetArgs(args)
		if err := cmd.Execute(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if errb.Len() != 0 || strings.Contains(out.String(), "%") {
			t.Errorf("%v off a terminal drew %q on stderr (stdout %q)", args, errb.String(), out.String())
		}
	}
	if w, _ := startProgress(devNull, big, 1<<30, false, false); w != io.Discard {
		t.Error("startProgress drew on /dev/null, which is not a terminal")
	}
}
