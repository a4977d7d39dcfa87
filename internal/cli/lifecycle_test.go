package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/vramseal/vramseal/audit"
)

// serveInProcess runs `vramseal serve` with args in this process until
// stop is called, and returns its address once it serves. stop cancels
// the command's context with cause (nil: a plain cancel), waits for it to
// return and gives its exit status and everything it wrote to stderr.
func serveInProcess(t *testing.T, args ...string) (addr string, stop func(cause error) (int, string)) {
	t.Helper()
	ctx, cancel := context.WithCancelCause(context.Background())
	pr, pw := io.Pipe()
	status := make(chan int, 1)
	go func() {
		status <- Run(ctx, append([]string{"serve", "--listen", "127.0.0.1:0", "--attach-socket", "none"}, args...), io.Discard, pw)
		pw.Close()
	}()
	var mu sync.Mutex
	var stderr strings.Builder
	found := make(chan string, 1)
	scanned := make(chan struct{})
	re := regexp.MustCompile(`serving on http://(127\.0\.0\.1:\d+)`)
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			mu.Lock()
			stderr.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
		close(found)
	}()
	stop = func(cause error) (int, string) {
		cancel(cause)
		st := <-status
		<-scanned
		mu.Lock()
		defer mu.Unlock()
		return st, stderr.String()
	}
	addr, ok := <-found
	if !ok {
		_, out := stop(nil)
		t.Fatalf("serve ended before serving:\n%s", out)
	}
	t.Cleanup(func() { cancel(nil) })
	return addr, stop
}

// lifecycleRecords returns the daemon_started and daemon_stopped records
// of the log in dir, in order.
func lifecycleRecords(t *testing.T, dir string) []*audit.Record {
	t.Helper()
	var out []*audit.Record
	err := audit.Query(context.Background(), dir, audit.Filter{Types: []string{EventDaemonStarted, EventDaemonStopped}}, audit.ReadOptions{},
		func(r *audit.Record) error {
			// r is valid only during the call: keep a parsed copy.
			c, err := audit.ParseRecord(append([]byte(nil), r.Line...))
			out = append(out, c)
			return err
		})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// fieldText returns the text of field key of r, or "<missing>".
func fieldText(r *audit.Record, key string) string {
	f, ok := r.Field(key)
	if !ok {
		return "<missing>"
	}
	return f.Text()
}

func TestDaemonLifecycleAudit(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	args := []string{"--device", "sim", "--sim-devices", "2", "--sim-capacity", "64MiB", "--data-dir", data,
		"--headroom", "1MiB", "--max-shard-size", "32MiB", "--scrub-rate", "16MiB", "--scrub-interval", "1h", "--audit-failure", "open",
		"--audit-segment-size", "1MiB", "--audit-epoch-interval", "1m"}
	addr, stop := serveInProcess(t, args...)
	model, _ := writeModel(t, 200_000)
	if _, stderr, err := runCLI(t, "shard", "add", model, "--shard-id", "lifecycle-a", "--addr", "http://"+addr); err != nil {
		t.Fatalf("shard add: %v\n%s", err, stderr)
	}
	status, stderr := stop(nil)
	if status != 0 {
		t.Fatalf("serve after cancel: exit %d\n%s", status, stderr)
	}

	// First start: the checkpoint public key is printed and written beside
	// the verification key, and it is the log's.
	pubPath := filepath.Join(data, "audit-verification.key.pub")
	b, err := os.ReadFile(pubPath)
	if err != nil {
		t.Fatalf("first start wrote no checkpoint public key: %v\n%s", err, stderr)
	}
	pk, err := audit.ParsePublicKey(b)
	if err != nil {
		t.Fatalf("%s: %v", pubPath, err)
	}
	logPK, err := audit.ReadPublicKey(filepath.Join(data, "audit"), nil)
	if err != nil || logPK.String() != pk.String() {
		t.Errorf("public key %s, the log's %v (%v): want the same", pk, logPK, err)
	}
	if !strings.Contains(stderr, "checkpoint public key written to "+pubPath) || !strings.Contains(stderr, pk.String()) {
		t.Errorf("serve's first start did not print the checkpoint public key and its file:\n%s", stderr)
	}
	if fi, err := os.Stat(pubPath); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("public key file mode %v (%v), want 0644", fi.Mode().Perm(), err)
	}

	// A restart finds no shard resident, and records so.
	_, stop = serveInProcess(t, args...)
	status, stderr2 := stop(errors.New("terminated signal received"))
	if status != 0 {
		t.Fatalf("second serve: exit %d\n%s", status, stderr2)
	}
	if strings.Contains(stderr2, "checkpoint public key written") {
		t.Errorf("a restart announced a new public key:\n%s", stderr2)
	}

	recs := lifecycleRecords(t, filepath.Join(data, "audit"))
	var types []string
	for _, r := range recs {
		types = append(types, r.Type)
	}
	want := []string{EventDaemonStarted, EventDaemonStopped, EventDaemonStarted, EventDaemonStopped}
	if strings.Join(types, " ") != strings.Join(want, " ") {
		t.Fatalf("lifecycle records %v, want %v", types, want)
	}
	started, stopped := recs[0], recs[1]
	if started.CorrelationID == "" || started.CorrelationID != stopped.CorrelationID || recs[2].CorrelationID == started.CorrelationID {
		t.Errorf("correlation IDs %q %q %q: want one per run, shared by its two records",
			started.CorrelationID, stopped.CorrelationID, recs[2].CorrelationID)
	}
	if started.Severity != audit.SeverityHigh || stopped.Severity != audit.SeverityHigh {
		t.Errorf("severities %v, %v, want high", started.Severity, stopped.Severity)
	}
	for _, tt := range []struct {
		r          *audit.Record
		key, value string
	}{
		{started, "backend", "sim"},
		{started, "backend_reason", "--device sim"},
		{started, "weights_in_host_memory", "true"},
		{started, "gpu_count", "2"},
		{started, "vram_total", "134217728"},
		{started, "headroom", "1048576"},
		{started, "max_shard_size", "33554432"},
		{started, "chunk_size", "65536"},
		{started, "scrub", "true"},
		{started, "scrub_rate_bytes_per_second", "16777216"},
		{started, "scrub_interval_us", "3600000000"},
		{started, "audit_failure", "fail-open"},
		{started, "audit_retain", "forever"},
		{started, "audit_format", "2"},
		{started, "audit_segment_size", "1048576"},
		{started, "audit_epoch_interval_us", "60000000"},
		{started, "audit_log_id", pk.LogID()},
		{started, "listen", addr},
		{started, "token_required", "false"},
		{started, "attach_socket", "none"},
		{started, "test_faults", "false"},
		{started, "resident_shards_found", "0"},
		{started, "resident_shards_note", residentNote},
		{stopped, "reason", "shutdown"},
		{stopped, "shards_released", "1"},
		{stopped, "shards_not_released", "0"},
		{recs[2], "resident_shards_found", "0"},
		{recs[3], "reason", "signal"},
		{recs[3], "detail", "terminated signal received"},
		{recs[3], "shards_released", "0"},
	} {
		if got := fieldText(tt.r, tt.key); got != tt.value {
			t.Errorf("%s (seq %d) %s = %q, want %q", tt.r.Type, tt.r.Seq, tt.key, got, tt.value)
		}
	}
	devs := fieldText(started, "devices")
	if !regexp.MustCompile(`^0=GPU-[^,:]+:67108864,1=GPU-[^,:]+:67108864$`).MatchString(devs) {
		t.Errorf("devices = %q, want index=UUID:total bytes for both GPUs", devs)
	}
	if v := fieldText(started, "version"); v == "" || v == "<missing>" {
		t.Errorf("version = %q", v)
	}
	if f, ok := stopped.Field("uptime_us"); !ok || f.Int64() <= 0 {
		t.Errorf("uptime_us = %v, want a positive duration", f.Int64())
	}
	// The stop comes after the shard's release, which it counts.
	var deallocated uint64
	audit.Query(context.Background(), filepath.Join(data, "audit"), audit.Filter{Types: []string{"vram_deallocated"}}, audit.ReadOptions{},
		func(r *audit.Record) error { deallocated = r.Seq; return nil })
	if deallocated == 0 || deallocated > stopped.Seq || deallocated < started.Seq {
		t.Errorf("vram_deallocated at seq %d, want between daemon_started %d and daemon_stopped %d", deallocated, started.Seq, stopped.Seq)
	}
}

func TestStopReason(t *testing.T) {
	plain, cancel := context.WithCancel(context.Background())
	cancel()
	sig, cancelCause := context.WithCancelCause(context.Background())
	cancelCause(errors.New("interrupt signal received"))
	for _, tt := range []struct {
		name           string
		ctx            context.Context
		serveErr       error
		reason, detail string
	}{
		{"cancel", plain, nil, stopShutdown, "context canceled"},
		{"signal", sig, nil, stopSignal, "interrupt signal received"},
		{"serve error", context.Background(), errors.New("serve: accept: too many open files"), stopError, "serve: accept: too many open files"},
		{"serve error wins", sig, errors.New("serve: boom"), stopError, "serve: boom"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if r, d := stopReason(tt.ctx, tt.serveErr); r != tt.reason || d != tt.detail {
				t.Errorf("stopReason = %q, %q; want %q, %q", r, d, tt.reason, tt.detail)
			}
		})
	}
}

// failingAuditor refuses every event with err.
type failingAuditor struct{ err error }

func (a failingAuditor) Append(context.Context, audit.Event) (audit.Receipt, error) {
	return audit.Receipt{}, a.err
}

// A fail-closed log that cannot record a lifecycle event stops the daemon
// (the error names the event); a fail-open one does not.
func TestLifecycleAuditFailure(t *testing.T) {
	closed := errors.New("audit: log failed: disk full")
	open := fmt.Errorf("%w: audit: log failed: disk full", audit.ErrNotRecorded)
	for _, tt := range []struct {
		name    string
		err     error
		refused bool
	}{
		{"fail-closed", closed, true},
		{"fail-open", open, false},
		{"recorded", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := &lifecycle{log: failingAuditor{tt.err}}
			err := l.append(context.Background(), EventDaemonStarted, nil)
			if refused := err != nil; refused != tt.refused || refused && (!errors.Is(err, closed) || !strings.Contains(err.Error(), EventDaemonStarted)) {
				t.Errorf("append with the log answering %v = %v; want refused %v, naming %s", tt.err, err, tt.refused, EventDaemonStarted)
			}
		})
	}
}
