package narrationtest_test

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vramseal/vramseal/narration"
	"github.com/vramseal/vramseal/narration/narrationtest"
)

// fakeT records fatal failures instead of ending the test.
type fakeT struct {
	testing.TB
	msg string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// fails runs fn with a fakeT and returns its failure message ("" if none).
func fails(t *testing.T, fn func(tb testing.TB)) string {
	f := &fakeT{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f.msg
}

func emitAll(n *narration.Narrator) {
	a := narration.WithCorrelationID(context.Background(), "req-a")
	b := narration.WithCorrelationID(context.Background(), "req-b")
	n.Emit(a, &narration.Event{Action: "seal", Target: "s1", WorkerID: "w0", Attrs: narration.Attrs{narration.Bytes("bytes", 1024)}})
	n.Emit(b, &narration.Event{Action: "seal", Target: "s2"})
	n.Emit(a, &narration.Event{Level: slog.LevelWarn, Action: "verify", Target: "s1"})
	n.Emit(a, &narration.Event{Action: "release", Target: "s1"})
}

func TestAssertionsPass(t *testing.T) {
	t.Parallel()
	rec, n := narrationtest.Capture(t)
	emitAll(n)
	e := rec.RequireOne(narrationtest.Match{Action: "seal", Target: "s1", Fields: map[string]string{"bytes": "1024", "worker_id": "w0"}})
	if e.CorrelationID != "req-a" {
		t.Errorf("RequireOne: CorrelationID = %q, want req-a", e.CorrelationID)
	}
	rec.RequireNone(narrationtest.Match{Action: "scrub"})
	rec.RequireSequence(
		narrationtest.Match{Action: "seal"},
		narrationtest.Match{Action: "verify", Fields: map[string]string{"level": "WARN"}},
		narrationtest.Match{Action: "release"},
	)
	a := rec.ByCorrelationID("req-a")
	if got := len(a.Events()); got != 3 {
		t.Errorf("ByCorrelationID(req-a): %d events, want 3", got)
	}
	a.RequireOne(narrationtest.Match{Action: "seal"})
	rec.RequireNoLeak("hunter2")
}

func TestAssertionsFail(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		fn   func(rec *narrationtest.Recorder)
		want string
	}{
		{"one: none match", func(r *narrationtest.Recorder) { r.RequireOne(narrationtest.Match{Action: "scrub"}) }, "0 events match"},
		{"one: two match", func(r *narrationtest.Recorder) { r.RequireOne(narrationtest.Match{Action: "seal"}) }, "2 events match"},
		{"one: field differs", func(r *narrationtest.Recorder) {
			r.RequireOne(narrationtest.Match{Action: "seal", Fields: map[string]string{"bytes": "1"}})
		}, "0 events match"},
		{"none", func(r *narrationtest.Recorder) { r.RequireNone(narrationtest.Match{Target: "s1"}) }, "3 events match"},
		{"sequence out of order", func(r *narrationtest.Recorder) {
			r.RequireSequence(narrationtest.Match{Action: "release"}, narrationtest.Match{Action: "seal"})
		}, `no event matches {action="seal"}`},
		{"leak", func(r *narrationtest.Recorder) { r.RequireNoLeak("s2") }, `canary "s2" leaks`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			msg := fails(t, func(tb testing.TB) {
				rec, n := narrationtest.Capture(tb)
				emitAll(n)
				tt.fn(rec)
			})
			if !strings.Contains(msg, tt.want) {
				t.Errorf("failure message %q, want it to contain %q", msg, tt.want)
			}
			if tt.name != "leak" && !strings.Contains(msg, "captured events (4)") {
				t.Errorf("failure message does not print the captured events:\n%s", msg)
			}
		})
	}
}

// TestLeakThroughEveryPath puts a secret where only the event's own text
// goes (an attribute value is not scrubbed) and checks every rendering
// catches it.
func TestLeakThroughEveryPath(t *testing.T) {
	t.Parallel()
	events := []narration.Event{{Action: "x", Attrs: narration.Attrs{narration.Str("k", "canary-123")}}}
	for _, r := range narrationtest.Render(events) {
		if !strings.Contains(r.Text, "canary-123") {
			t.Errorf("Render via %s lost the attribute:\n%s", r.Via, r.Text)
		}
	}
}

func TestCaptureIsRedacted(t *testing.T) {
	t.Parallel()
	rec, n := narrationtest.Capture(t)
	n.Emit(context.Background(), &narration.Event{Action: "add", Human: "Uses password=hunter2", Error: "Bearer abcdefghijklmnop"})
	rec.RequireNoLeak("hunter2", "abcdefghijklmnop")
}

func TestRecorderStopsAfterTest(t *testing.T) {
	var rec *narrationtest.Recorder
	var n *narration.Narrator
	t.Run("inner", func(t *testing.T) { rec, n = narrationtest.Capture(t) })
	n.Emit(context.Background(), &narration.Event{Action: "late"})
	if got := len(rec.Events()); got != 0 {
		t.Errorf("recorded %d events after the test ended, want 0", got)
	}
	if got := n.Stats().SinkErrors; got != 1 {
		t.Errorf("Stats().SinkErrors = %d, want 1", got)
	}
}

func TestField(t *testing.T) {
	e := narration.Event{
		Level: slog.LevelWarn, Duration: 850 * time.Microsecond, Device: narration.GPU(1, "GPU-x"),
		Attrs: narration.Attrs{narration.Bytes("shard_bytes", 1<<26), narration.Dur("hash", 40*time.Millisecond),
			narration.Bool("sampled", true), narration.Str("mode", "full")},
	}
	tests := []struct {
		key, want string
		ok        bool
	}{
		{"level", "WARN", true},
		{"duration_ms", "0.85", true},
		{"gpu", "1", true},
		{"gpu_uuid", "GPU-x", true},
		{"shard_bytes", "67108864", true},
		{"hash", "40", true},
		{"sampled", "true", true},
		{"mode", "full", true},
		{"device_index", "", false},
		{"target", "", false},
	}
	for _, tt := range tests {
		if got, ok := narrationtest.Field(e, tt.key); got != tt.want || ok != tt.ok {
			t.Errorf("Field(%q) = %q, %v, want %q, %v", tt.key, got, ok, tt.want, tt.ok)
		}
	}
}
