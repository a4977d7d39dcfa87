package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestProgressBar(t *testing.T) {
	var out bytes.Buffer
	p := &progress{w: &out, total: 3 << 20, start: time.Now().Add(-time.Second)}
	chunk := make([]byte, 1<<20)
	for range 3 {
		if n, err := p.Write(chunk); n != len(chunk) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	p.finish()
	s := out.String()
	// The first write draws at once; the last always draws (100%).
	last := s[strings.LastIndex(s, "\r")+1:]
	if !strings.HasPrefix(last, "["+strings.Repeat("=", 30)+"] 100.0% 3.0 MiB of 3.0 MiB") || !strings.HasSuffix(s, "\n") {
		t.Errorf("final progress line = %q (all output %q)", last, s)
	}
	if strings.Count(s, "\r") < 2 {
		t.Errorf("progress drew %d times, want the first and the last write", strings.Count(s, "\r"))
	}
	if isTerminal(&out) {
		t.Error("a bytes.Buffer counted as a terminal: the bar would go into pipes and files")
	}
}
