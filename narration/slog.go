package narration

import (
	"context"
	"log/slog"
)

// SlogSink is a [Sink] that sends events to a [slog.Handler], so narration
// can go wherever slog goes. Each event becomes a [slog.Record] whose time
// and level are the event's, whose message is the human sentence, and whose
// attributes are the other non-empty fields, in the order of the JSON output
// (the duration as a [slog.KindDuration] value named "duration"). The
// handler gets the context given to [Narrator.Emit].
type SlogSink struct {
	h slog.Handler
}

var _ Sink = SlogSink{}

// NewSlogSink returns a sink that sends events to h.
func NewSlogSink(h slog.Handler) SlogSink { return SlogSink{h: h} }

// Handle sends e to the handler if the handler is enabled for e's level, and
// returns the handler's error.
func (s SlogSink) Handle(ctx context.Context, e Event) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if !s.h.Enabled(ctx, e.Level) {
		return nil
	}
	r := slog.NewRecord(e.Time, e.Level, e.Human, 0)
	var attrs [8]slog.Attr
	as := attrs[:0]
	as = slogStr(as, "actor", e.Actor)
	as = slogStr(as, "action", e.Action)
	as = slogStr(as, "target", e.Target)
	as = slogStr(as, "correlation_id", e.CorrelationID)
	as = slogStr(as, "trace_id", e.TraceID)
	as = slogStr(as, "span_id", e.SpanID)
	if e.Duration != 0 {
		as = append(as, slog.Duration("duration", e.Duration))
	}
	if e.Device.Set {
		as = append(as, slog.Int("gpu", e.Device.Index))
		as = slogStr(as, "gpu_uuid", e.Device.UUID)
	}
	as = slogStr(as, "worker_id", e.WorkerID)
	as = slogStr(as, "error_kind", e.ErrorKind)
	as = slogStr(as, "error", e.Error)
	for _, a := range e.Attrs {
		if a.Key != "" {
			as = append(as, slog.Attr{Key: a.Key, Value: a.Value()})
		}
	}
	r.AddAttrs(as...)
	return s.h.Handle(ctx, r)
}

func slogStr(as []slog.Attr, key, v string) []slog.Attr {
	if v == "" {
		return as
	}
	return append(as, slog.String(key, v))
}
