package narration

import (
	"context"
	"log/slog"
	"math"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Sink receives events that passed filtering, truncation and redaction.
//
// Handle may be called from many goroutines at once; an implementation
// serializes its own writes. It must not retain anything that refers to the
// event after it returns (the strings it holds may be kept). An error is
// counted in [Stats.SinkErrors]; it does not stop the other sinks.
type Sink interface {
	Handle(ctx context.Context, e Event) error
}

// Options configures a [Narrator]. The zero value narrates nothing.
type Options struct {
	// Sinks receive every enabled event, in order. Nil entries are skipped;
	// no sinks means events are discarded after filtering.
	Sinks []Sink
	// Level is the minimum level emitted. Nil means [slog.LevelInfo]. A
	// *[slog.LevelVar] can be changed while the Narrator runs.
	Level slog.Leveler
	// Actions, if not nil, reports whether events with the given action are
	// emitted. Nil means every action. It must be cheap and safe for
	// concurrent use.
	Actions func(action string) bool
	// Clock returns the time stamped on events without one. Nil means
	// [time.Now].
	Clock func() time.Time
	// Actor is the actor of events that name none. Empty means none.
	Actor string
}

// Stats counts what a [Narrator] did since it was made.
type Stats struct {
	Emitted     uint64 // events handed to the sinks
	Redactions  uint64 // secrets replaced in human sentences and error text
	Truncations uint64 // human sentences cut to MaxHumanRunes
	SinkErrors  uint64 // errors returned by sinks
}

// Narrator filters, completes, redacts and dispatches events to its sinks.
// A nil *Narrator is valid and discards everything. A Narrator is safe for
// concurrent use.
type Narrator struct {
	sinks []Sink
	// min is the minimum level, or math.MinInt when leveler decides.
	min     *slog.LevelVar
	leveler slog.Leveler
	actions func(string) bool
	clock   func() time.Time
	actor   string

	emitted, redactions, truncations, sinkErrors atomic.Uint64
}

// New returns a Narrator configured by opts.
func New(opts Options) *Narrator {
	n := &Narrator{
		actions: opts.Actions,
		clock:   opts.Clock,
		actor:   opts.Actor,
	}
	for _, s := range opts.Sinks {
		if s != nil {
			n.sinks = append(n.sinks, s)
		}
	}
	switch l := opts.Level.(type) {
	case nil:
		n.min = new(slog.LevelVar) // LevelInfo
	case slog.Level:
		n.min = new(slog.LevelVar)
		n.min.Set(l)
	case *slog.LevelVar:
		n.min = l
	default:
		n.min = new(slog.LevelVar)
		n.min.Set(math.MinInt)
		n.leveler = l
	}
	if n.clock == nil {
		n.clock = time.Now
	}
	return n
}

// Enabled reports whether an event with the given level and action would be
// emitted. It is cheap; call it before building an expensive event.
func (n *Narrator) Enabled(level slog.Level, action string) bool {
	return n.maybe(level) && n.enabled(level, action)
}

// maybe is the part of Enabled that is cheap enough to inline: false means
// disabled.
func (n *Narrator) maybe(level slog.Level) bool {
	return n != nil && level >= n.min.Level()
}

func (n *Narrator) enabled(level slog.Level, action string) bool {
	if n.leveler != nil && level < n.leveler.Level() {
		return false
	}
	return n.actions == nil || n.actions(action)
}

// Emit narrates e if it is enabled: it fills the time, actor, correlation,
// trace and span IDs that e leaves empty (from the Narrator and ctx), cuts a
// long human sentence, scrubs secrets from the human sentence and error text,
// and hands the result to every sink in order. It works on a copy: *e is
// neither changed nor retained, so the caller may reuse it. A nil e is
// ignored.
//
// e is a pointer because an [Event] is large: passed by value it would be
// copied on every call, disabled or not, and a disabled event is meant to
// cost about what a disabled zerolog event costs (BenchmarkEmitDisabled). Built
// in place, n.Emit(ctx, &narration.Event{...}), it stays on the stack.
func (n *Narrator) Emit(ctx context.Context, e *Event) {
	if e != nil && n.maybe(e.Level) {
		n.emit(ctx, e)
	}
}

func (n *Narrator) emit(ctx context.Context, p *Event) {
	if !n.enabled(p.Level, p.Action) {
		return
	}
	e := *p
	if e.Time.IsZero() {
		e.Time = n.clock()
	}
	if e.Actor == "" {
		e.Actor = n.actor
	}
	if ctx != nil && (e.CorrelationID == "" || e.TraceID == "") {
		if v, ok := ctx.Value(ctxKey{}).(*ctxValue); ok {
			if e.CorrelationID == "" {
				e.CorrelationID = v.id
			}
			if e.TraceID == "" {
				e.TraceID, e.SpanID = v.trace.TraceID, v.trace.SpanID
			}
		}
	}
	// Scrub before cutting, so that a cut never hides part of a secret from
	// the patterns.
	var r int
	e.Human, r = scrub(e.Human, r)
	e.Error, r = scrub(e.Error, r)
	if r > 0 {
		n.redactions.Add(uint64(r))
	}
	if len(e.Human) > MaxHumanRunes && utf8.RuneCountInString(e.Human) > MaxHumanRunes {
		e.Human = truncate(e.Human)
		n.truncations.Add(1)
	}
	n.emitted.Add(1)
	for _, s := range n.sinks {
		var err error
		if js, ok := s.(*JSONSink); ok {
			err = js.handle(&e) // saves copying the event
		} else {
			err = s.Handle(ctx, e)
		}
		if err != nil {
			n.sinkErrors.Add(1)
		}
	}
}

func scrub(s string, count int) (string, int) {
	if s == "" || !mayHoldSecret(s) {
		return s, count
	}
	out, k := Scrub(s)
	return out, count + k
}

// truncate cuts s to MaxHumanRunes runes, the last of them an ellipsis.
func truncate(s string) string {
	i, runes := 0, 0
	for i < len(s) && runes < MaxHumanRunes-1 {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
		runes++
	}
	return s[:i] + "…"
}

// Stats returns the counters of n; zero for a nil Narrator.
func (n *Narrator) Stats() Stats {
	if n == nil {
		return Stats{}
	}
	return Stats{
		Emitted:     n.emitted.Load(),
		Redactions:  n.redactions.Load(),
		Truncations: n.truncations.Load(),
		SinkErrors:  n.sinkErrors.Load(),
	}
}
