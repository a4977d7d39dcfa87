package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is written by the daemon and read by the test.
type lockedBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	serving chan struct{}
	once    sync.Once
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.b.Write(p)
	if strings.Contains(l.b.String(), "serving on") {
		l.once.Do(func() { close(l.serving) })
	}
	return n, err
}

// TestServeLogFormatJSONIsNDJSON starts serve with --log-format json,
// stops it, and requires every line it printed to be one JSON object.
func TestServeLogFormatJSONIsNDJSON(t *testing.T) {
	errb := &lockedBuffer{serving: make(chan struct{})}
	var out bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--device", "sim",
			"--sim-capacity", "1MiB", "--log-format", "json", "--attach-socket", "none"}, &out, errb)
	}()
	select {
	case <-errb.serving:
	case status := <-done:
		t.Fatalf("serve exited %d before serving:\n%s", status, errb.b.String())
	case <-time.After(time.Minute):
		t.Fatal("serve did not start within a minute")
	}
	cancel()
	if status := <-done; status != 0 {
		t.Errorf("serve exited %d after a stop", status)
	}
	lines := strings.Split(strings.TrimSpace(errb.b.String()+out.String()), "\n")
	for _, want := range []string{"serving on", "created audit log", "shutting down"} {
		if !strings.Contains(errb.b.String(), want) {
			t.Errorf("serve never said %q", want)
		}
	}
	for i, line := range lines {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Errorf("line %d is not JSON: %q", i+1, line)
		}
	}
}
