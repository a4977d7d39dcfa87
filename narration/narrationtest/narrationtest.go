// Package narrationtest captures narration events in tests and asserts on
// them.
//
// A [Recorder] is a [narration.Sink] scoped to one test: it holds the events
// exactly as every other sink sees them (filtered, completed and scrubbed by
// the [narration.Narrator]), is safe for concurrent use and for parallel
// tests (each test has its own), and stops recording when the test ends.
// Assertions print the captured events when they fail.
package narrationtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vramseal/vramseal/narration"
)

// errClosed is returned by [Recorder.Handle] after its test has ended.
var errClosed = errors.New("narrationtest: event after the end of the test")

// Recorder captures events for one test.
type Recorder struct {
	t      testing.TB
	mu     sync.Mutex
	events []narration.Event
	closed bool
}

var _ narration.Sink = (*Recorder)(nil)

// Capture returns a Recorder for t and a Narrator that emits every level
// and every action into it, with the default clock.
func Capture(t testing.TB) (*Recorder, *narration.Narrator) {
	t.Helper()
	return CaptureOptions(t, narration.Options{})
}

// CaptureOptions is [Capture] with the Narrator configured by opts, to which
// the Recorder is added as the last sink. A nil opts.Level means every level
// (not [slog.LevelInfo]).
func CaptureOptions(t testing.TB, opts narration.Options) (*Recorder, *narration.Narrator) {
	t.Helper()
	r := NewRecorder(t)
	opts.Sinks = append(slices.Clip(opts.Sinks), r)
	if opts.Level == nil {
		opts.Level = slog.Level(math.MinInt)
	}
	return r, narration.New(opts)
}

// NewRecorder returns a Recorder for t, to be added to the sinks of a
// Narrator. It stops recording when t ends.
func NewRecorder(t testing.TB) *Recorder {
	r := &Recorder{t: t}
	t.Cleanup(func() {
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
	})
	return r
}

// Handle records e. After the test has ended it records nothing and returns
// an error, which the Narrator counts.
func (r *Recorder) Handle(_ context.Context, e narration.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errClosed
	}
	r.events = append(r.events, e)
	return nil
}

// Events returns a copy of the captured events, in the order they were
// handled.
func (r *Recorder) Events() []narration.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// ByCorrelationID returns a Recorder for the same test holding a snapshot of
// the captured events whose correlation ID is id. It records nothing more.
func (r *Recorder) ByCorrelationID(id string) *Recorder {
	v := &Recorder{t: r.t, closed: true}
	for _, e := range r.Events() {
		if e.CorrelationID == id {
			v.events = append(v.events, e)
		}
	}
	return v
}

// Match selects events. Empty fields match anything.
type Match struct {
	Action string
	Target string
	// Fields maps output keys ("level", "actor", "worker_id", an attribute
	// key; see [Field]) to the value as [Field] formats it.
	Fields map[string]string
}

// Matches reports whether e matches m.
func (m Match) Matches(e narration.Event) bool {
	if m.Action != "" && e.Action != m.Action || m.Target != "" && e.Target != m.Target {
		return false
	}
	for k, want := range m.Fields {
		if got, ok := Field(e, k); !ok || got != want {
			return false
		}
	}
	return true
}

// String lists the fields the Match requires, for failure messages.
func (m Match) String() string {
	var b strings.Builder
	b.WriteString("{")
	sep := ""
	add := func(k, v string) {
		fmt.Fprintf(&b, "%s%s=%q", sep, k, v)
		sep = " "
	}
	if m.Action != "" {
		add("action", m.Action)
	}
	if m.Target != "" {
		add("target", m.Target)
	}
	keys := make([]string, 0, len(m.Fields))
	for k := range m.Fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		add(k, m.Fields[k])
	}
	b.WriteString("}")
	return b.String()
}

// Field returns the value of e under an output key of the JSON format (see
// package narration), as exact as the JSON output and without quotes:
// "level" is "INFO", "duration_ms" is "2" or "0.85", "gpu" is "0"; integer
// and byte-count attributes in decimal, duration attributes in milliseconds,
// string and boolean attributes as [narration.Attr.String] writes them. The
// bool is false when e does not have the field.
func Field(e narration.Event, key string) (string, bool) {
	str := func(s string) (string, bool) { return s, s != "" }
	switch key {
	case "time":
		return e.Time.UTC().Format("2006-01-02T15:04:05.999999999Z07:00"), !e.Time.IsZero()
	case "level":
		return e.Level.String(), true
	case "actor":
		return str(e.Actor)
	case "action":
		return str(e.Action)
	case "target":
		return str(e.Target)
	case "human":
		return str(e.Human)
	case "correlation_id":
		return str(e.CorrelationID)
	case "trace_id":
		return str(e.TraceID)
	case "span_id":
		return str(e.SpanID)
	case "duration_ms":
		return millis(e.Duration), e.Duration != 0
	case "gpu":
		return strconv.Itoa(e.Device.Index), e.Device.Set
	case "gpu_uuid":
		return str(e.Device.UUID)
	case "worker_id":
		return str(e.WorkerID)
	case "error_kind":
		return str(e.ErrorKind)
	case "error":
		return str(e.Error)
	}
	for _, a := range e.Attrs {
		if a.Key != key {
			continue
		}
		switch a.Kind() {
		case narration.KindInt, narration.KindBytes:
			return strconv.FormatInt(a.Int64(), 10), true
		case narration.KindDuration:
			return millis(a.Duration()), true
		}
		return a.String(), true
	}
	return "", false
}

func millis(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', -1, 64)
}

// Filter returns the captured events that match m.
func (r *Recorder) Filter(m Match) []narration.Event {
	var out []narration.Event
	for _, e := range r.Events() {
		if m.Matches(e) {
			out = append(out, e)
		}
	}
	return out
}

// RequireOne fails the test unless exactly one captured event matches m, and
// returns that event.
func (r *Recorder) RequireOne(m Match) narration.Event {
	r.t.Helper()
	got := r.Filter(m)
	if len(got) != 1 {
		r.t.Fatalf("narrationtest: %d events match %v, want 1\n%s", len(got), m, r.dump())
	}
	return got[0]
}

// RequireNone fails the test if any captured event matches m.
func (r *Recorder) RequireNone(m Match) {
	r.t.Helper()
	if got := r.Filter(m); len(got) != 0 {
		r.t.Fatalf("narrationtest: %d events match %v, want none\n%s", len(got), m, r.dump())
	}
}

// RequireSequence fails the test unless the captured events hold events
// matching ms in that order (other events may come between them), and
// returns the first such events.
func (r *Recorder) RequireSequence(ms ...Match) []narration.Event {
	r.t.Helper()
	events := r.Events()
	out := make([]narration.Event, 0, len(ms))
	i := 0
	for _, e := range events {
		if i < len(ms) && ms[i].Matches(e) {
			out = append(out, e)
			i++
		}
	}
	if i < len(ms) {
		r.t.Fatalf("narrationtest: no event matches %v after the %d earlier matchers of the sequence\n%s", ms[i], i, r.dump())
	}
	return out
}

// RequireNoLeak renders every captured event through the JSON and console
// sinks, slog's JSON and text handlers (through [narration.SlogSink]) and
// fmt's %v, %+v and %#v, and fails the test if any canary appears in the
// output.
func (r *Recorder) RequireNoLeak(canaries ...string) {
	r.t.Helper()
	for _, out := range Render(r.Events()) {
		for _, c := range canaries {
			if c != "" && strings.Contains(out.Text, c) {
				r.t.Fatalf("narrationtest: canary %q leaks through %s:\n%s", c, out.Via, out.Text)
			}
		}
	}
}

// Rendering is the output of events through one path.
type Rendering struct {
	Via  string // the sink or format
	Text string
}

// Render writes events through every sink and format that RequireNoLeak
// checks.
func Render(events []narration.Event) []Rendering {
	var js, con, sj, st, fv bytes.Buffer
	sinks := []narration.Sink{
		narration.NewJSONSink(&js),
		narration.NewConsoleSink(&con, narration.ConsoleOptions{Color: true}),
		narration.NewSlogSink(slog.NewJSONHandler(&sj, &slog.HandlerOptions{Level: slog.Level(math.MinInt)})),
		narration.NewSlogSink(slog.NewTextHandler(&st, &slog.HandlerOptions{Level: slog.Level(math.MinInt)})),
	}
	ctx := context.Background()
	for _, e := range events {
		for _, s := range sinks {
			_ = s.Handle(ctx, e)
		}
		fmt.Fprintf(&fv, "%v\n%+v\n%#v\n", e, e, e)
	}
	return []Rendering{
		{"narration.JSONSink", js.String()},
		{"narration.ConsoleSink", con.String()},
		{"slog.JSONHandler", sj.String()},
		{"slog.TextHandler", st.String()},
		{"fmt", fv.String()},
	}
}

// dump renders the captured events for a failure message.
func (r *Recorder) dump() string {
	events := r.Events()
	if len(events) == 0 {
		return "captured events: none"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "captured events (%d):\n", len(events))
	s := narration.NewConsoleSink(&b, narration.ConsoleOptions{})
	for _, e := range events {
		_ = s.Handle(context.Background(), e)
	}
	return b.String()
}
