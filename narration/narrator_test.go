package narration_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/vramseal/vramseal/narration"
	"github.com/vramseal/vramseal/narration/narrationtest"
)

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func fixedClock() time.Time { return t0 }

func TestNilNarrator(t *testing.T) {
	var n *narration.Narrator
	if n.Enabled(slog.LevelError, "seal") {
		t.Errorf("nil Narrator: Enabled = true, want false")
	}
	n.Emit(context.Background(), &narration.Event{Level: slog.LevelError, Action: "seal"})
	if got := n.Stats(); got != (narration.Stats{}) {
		t.Errorf("nil Narrator: Stats() = %+v, want zero", got)
	}
}

func TestFiltering(t *testing.T) {
	lv := new(slog.LevelVar)
	lv.Set(slog.LevelWarn)
	rec := narrationtest.NewRecorder(t)
	n := narration.New(narration.Options{
		Sinks:   []narration.Sink{nil, rec},
		Level:   lv,
		Actions: func(a string) bool { return a != "scrub" },
	})
	tests := []struct {
		level  slog.Level
		action string
		want   bool
	}{
		{slog.LevelInfo, "seal", false},
		{slog.LevelWarn, "seal", true},
		{slog.LevelError, "seal", true},
		{slog.LevelError, "scrub", false},
	}
	for _, tt := range tests {
		if got := n.Enabled(tt.level, tt.action); got != tt.want {
			t.Errorf("Enabled(%v, %q) = %v, want %v", tt.level, tt.action, got, tt.want)
		}
		n.Emit(context.Background(), &narration.Event{Level: tt.level, Action: tt.action})
	}
	if got := len(rec.Events()); got != 2 {
		t.Errorf("captured %d events, want 2", got)
	}
	lv.Set(slog.LevelDebug)
	if !n.Enabled(slog.LevelInfo, "seal") {
		t.Errorf("after LevelVar.Set(DEBUG): Enabled(INFO) = false, want true")
	}

	// A Leveler that is neither a Level nor a *LevelVar.
	n2 := narration.New(narration.Options{Level: customLeveler(slog.LevelError)})
	if n2.Enabled(slog.LevelWarn, "x") || !n2.Enabled(slog.LevelError, "x") {
		t.Errorf("custom Leveler(ERROR): Enabled(WARN), Enabled(ERROR) wrong")
	}
	// The zero Options: INFO and up.
	n3 := narration.New(narration.Options{})
	if n3.Enabled(slog.LevelDebug, "x") || !n3.Enabled(slog.LevelInfo, "x") {
		t.Errorf("zero Options: Enabled(DEBUG), Enabled(INFO) wrong")
	}
}

type customLeveler slog.Level

func (l customLeveler) Level() slog.Level { return slog.Level(l) }

func TestEmitCompletesEvent(t *testing.T) {
	rec, n := narrationtest.CaptureOptions(t, narration.Options{Clock: fixedClock, Actor: "vram-residency"})
	tc := narration.TraceContext{TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", SpanID: "00f067aa0ba902b7", Sampled: true}
	ctx := narration.WithTrace(narration.WithCorrelationID(context.Background(), "req-xyz"), tc)

	n.Emit(ctx, &narration.Event{Action: "seal", Target: "shard-1"})
	n.Emit(ctx, &narration.Event{Action: "verify", Actor: "cli", CorrelationID: "own", TraceID: "t", SpanID: "s",
		Time: t0.Add(time.Second)})
	//lint:ignore SA1012 a nil context must be tolerated
	n.Emit(nil, &narration.Event{Action: "release"})

	got := rec.Events()
	want := []narration.Event{
		{Time: t0, Actor: "vram-residency", Action: "seal", Target: "shard-1", CorrelationID: "req-xyz",
			TraceID: tc.TraceID, SpanID: tc.SpanID},
		{Time: t0.Add(time.Second), Actor: "cli", Action: "verify", CorrelationID: "own", TraceID: "t", SpanID: "s"},
		{Time: t0, Actor: "vram-residency", Action: "release"},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(narration.Attr{})); diff != "" {
		t.Errorf("captured events (-want +got):\n%s", diff)
	}
	if s := n.Stats(); s.Emitted != 3 {
		t.Errorf("Stats().Emitted = %d, want 3", s.Emitted)
	}
}

// TestEmitLeavesEventAlone checks that Emit completes and scrubs a copy:
// the caller's event is unchanged and can be emitted again.
func TestEmitLeavesEventAlone(t *testing.T) {
	rec, n := narrationtest.CaptureOptions(t, narration.Options{Clock: fixedClock, Actor: "vram-residency"})
	e := narration.Event{Action: "add", Human: "Uses password=hunter2"}
	want := e
	n.Emit(narration.WithCorrelationID(context.Background(), "req-1"), &e)
	if diff := cmp.Diff(want, e, cmp.AllowUnexported(narration.Attr{})); diff != "" {
		t.Errorf("event after Emit (-before +after):\n%s", diff)
	}
	n.Emit(context.Background(), nil)
	got := rec.Events()
	if len(got) != 1 || got[0].Actor != "vram-residency" || got[0].CorrelationID != "req-1" || got[0].Human == e.Human {
		t.Errorf("captured %+v, want one completed and scrubbed event", got)
	}
}

func TestTruncation(t *testing.T) {
	tests := []struct {
		name, human, want string
		cut               bool
	}{
		{"short", "Seals shard 'a' (2 ms)", "Seals shard 'a' (2 ms)", false},
		{"exactly 100", strings.Repeat("a", 100), strings.Repeat("a", 100), false},
		{"101 ASCII", strings.Repeat("a", 101), strings.Repeat("a", 99) + "…", true},
		{"100 multi-byte runes", strings.Repeat("é", 100), strings.Repeat("é", 100), false},
		{"101 multi-byte runes", strings.Repeat("€", 101), strings.Repeat("€", 99) + "…", true},
		{"mixed", strings.Repeat("a", 98) + "日本語", strings.Repeat("a", 98) + "日…", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, n := narrationtest.Capture(t)
			n.Emit(context.Background(), &narration.Event{Human: tt.human})
			got := rec.RequireOne(narrationtest.Match{}).Human
			if got != tt.want {
				t.Errorf("Emit(Human: %q): Human = %q, want %q", tt.human, got, tt.want)
			}
			if utf8.RuneCountInString(got) > narration.MaxHumanRunes {
				t.Errorf("Human has %d runes, want <= %d", utf8.RuneCountInString(got), narration.MaxHumanRunes)
			}
			if c := n.Stats().Truncations; c != map[bool]uint64{false: 0, true: 1}[tt.cut] {
				t.Errorf("Stats().Truncations = %d, want cut=%v", c, tt.cut)
			}
		})
	}
}

func TestEmitRedacts(t *testing.T) {
	rec, n := narrationtest.Capture(t)
	n.Emit(context.Background(), &narration.Event{
		Action: "add",
		Human:  "Adds shard from https://bob:hunter2@models.example/x with token=abc%2Fdef",
		Error:  `fetch: 401 {"api_key":"sk-live-123"} Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig`,
	})
	e := rec.RequireOne(narrationtest.Match{Action: "add"})
	for _, canary := range []string{"hunter2", "abc%2Fdef", "sk-live-123", "eyJhbGciOiJIUzI1NiJ9"} {
		if strings.Contains(e.Human+e.Error, canary) {
			t.Errorf("captured event holds %q: %+v", canary, e)
		}
	}
	rec.RequireNoLeak("hunter2", "abc%2Fdef", "sk-live-123", "eyJhbGciOiJIUzI1NiJ9")
	if got := n.Stats().Redactions; got != 4 {
		t.Errorf("Stats().Redactions = %d, want 4", got)
	}
}

type failSink struct{}

func (failSink) Handle(context.Context, narration.Event) error { return errors.New("disk full") }

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestSinkErrorsAreCounted(t *testing.T) {
	rec := narrationtest.NewRecorder(t)
	n := narration.New(narration.Options{Sinks: []narration.Sink{
		failSink{}, narration.NewJSONSink(failWriter{}), narration.NewConsoleSink(failWriter{}, narration.ConsoleOptions{}), rec,
	}})
	n.Emit(context.Background(), &narration.Event{Level: slog.LevelError, Action: "seal"})
	if got := n.Stats().SinkErrors; got != 3 {
		t.Errorf("Stats().SinkErrors = %d, want 3", got)
	}
	rec.RequireOne(narrationtest.Match{Action: "seal"}) // a failing sink does not stop the others
}

// TestConcurrentEmit runs many emitters against every sink; run it with -race.
func TestConcurrentEmit(t *testing.T) {
	var js, con lockedBuffer
	rec := narrationtest.NewRecorder(t)
	n := narration.New(narration.Options{Sinks: []narration.Sink{
		narration.NewJSONSink(&js),
		narration.NewConsoleSink(&con, narration.ConsoleOptions{}),
		narration.NewSlogSink(slog.NewJSONHandler(&lockedBuffer{}, nil)),
		rec,
	}})
	const workers, each = 8, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			ctx := narration.WithCorrelationID(context.Background(), narration.NewCorrelationID())
			for i := range each {
				n.Emit(ctx, &narration.Event{Action: "verify", Human: "Verifies token=x", Attrs: narration.Attrs{narration.Int("i", int64(i)), narration.Int("w", int64(w))}})
			}
		})
	}
	wg.Wait()
	if got := strings.Count(js.String(), "\n"); got != workers*each {
		t.Errorf("JSON sink wrote %d lines, want %d", got, workers*each)
	}
	if got := len(rec.Events()); got != workers*each {
		t.Errorf("captured %d events, want %d", got, workers*each)
	}
	if s := n.Stats(); s.Emitted != workers*each || s.Redactions != workers*each {
		t.Errorf("Stats() = %+v, want %d emitted and redactions", s, workers*each)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
