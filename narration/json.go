package narration

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// JSONSink writes each event as one JSON object on one line, with the keys in
// the order the package documentation gives. It encodes with zerolog, without
// allocating, and never touches zerolog's global logger or settings (it does
// honour zerolog.SetGlobalLevel(zerolog.Disabled), which silences it).
type JSONSink struct {
	mu   sync.Mutex // serializes encoding and writes; guards err
	log  zerolog.Logger
	w    io.Writer
	err  error // error of the write in progress
	time [64]byte
	// lastSec and secText cache the formatted date and clock of the last
	// second seen (see appendTime).
	lastSec int64
	secText []byte
}

var _ Sink = (*JSONSink)(nil)

// NewJSONSink returns a sink that writes to w. Each event is one call to
// w.Write, made while no other call of this sink writes.
func NewJSONSink(w io.Writer) *JSONSink {
	s := &JSONSink{w: w}
	s.log = zerolog.New(sinkWriter{s})
	return s
}

// sinkWriter hands zerolog's output to the sink's writer and keeps the error
// for Handle, so that zerolog never reports it on os.Stderr.
type sinkWriter struct{ s *JSONSink }

func (sw sinkWriter) Write(p []byte) (int, error) {
	n, err := sw.s.w.Write(p)
	sw.s.err = err
	return n, nil
}

// Handle writes e and returns the writer's error.
func (s *JSONSink) Handle(_ context.Context, e Event) error { return s.handle(&e) }

func (s *JSONSink) handle(e *Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	z := s.log.Log()
	// The time stamp needs no escaping: append it quoted and hand it over
	// as raw JSON.
	z = z.RawJSON("time", s.appendTime(s.time[:0], e.Time)).Str("level", levelString(e.Level))
	z = jsonStr(z, "actor", e.Actor)
	z = jsonStr(z, "action", e.Action)
	z = jsonStr(z, "target", e.Target)
	z = jsonStr(z, "human", e.Human)
	z = jsonStr(z, "correlation_id", e.CorrelationID)
	z = jsonStr(z, "trace_id", e.TraceID)
	z = jsonStr(z, "span_id", e.SpanID)
	if e.Duration != 0 {
		z = z.Float64("duration_ms", float64(e.Duration)/float64(time.Millisecond))
	}
	if e.Device.Set {
		z = z.Int("gpu", e.Device.Index)
		z = jsonStr(z, "gpu_uuid", e.Device.UUID)
	}
	z = jsonStr(z, "worker_id", e.WorkerID)
	z = jsonStr(z, "error_kind", e.ErrorKind)
	z = jsonStr(z, "error", e.Error)
	for i := range e.Attrs {
		a := &e.Attrs[i]
		if a.Key == "" {
			continue
		}
		switch a.kind {
		case KindInt, KindBytes:
			z = z.Int64(a.Key, int64(a.num))
		case KindString:
			z = z.Str(a.Key, a.str)
		case KindBool:
			z = z.Bool(a.Key, a.num != 0)
		case KindDuration:
			z = z.Float64(a.Key, float64(a.num)/float64(time.Millisecond))
		}
	}
	z.Msg("")
	err := s.err
	s.err = nil
	return err
}

// appendTime appends t as a quoted RFC 3339 UTC time stamp with trailing
// zeros of the fraction trimmed, exactly as time.RFC3339Nano formats it.
// The date and clock of the last second seen are kept, so events within
// one second format only their fraction. s.mu must be held.
func (s *JSONSink) appendTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	if sec := t.Unix(); sec != s.lastSec || len(s.secText) == 0 {
		s.lastSec = sec
		s.secText = t.Truncate(time.Second).AppendFormat(s.secText[:0], "2006-01-02T15:04:05")
	}
	b = append(append(b, '"'), s.secText...)
	if ns := t.Nanosecond(); ns != 0 {
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i >= 1; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for frac[n-1] == '0' {
			n--
		}
		b = append(b, frac[:n]...)
	}
	return append(b, 'Z', '"')
}

func jsonStr(z *zerolog.Event, key, v string) *zerolog.Event {
	if v == "" {
		return z
	}
	return z.Str(key, v)
}
