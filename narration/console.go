package narration

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mattn/go-isatty"

	"github.com/vramseal/vramseal/internal/units"
)

// ConsoleOptions configures a [ConsoleSink]. The zero value writes plain text.
type ConsoleOptions struct {
	// Color adds ANSI colours. Decide it with [UseColor]; false means none.
	Color bool
}

// ConsoleSink writes events for people, in three lines: time, level, actor,
// action and target; the human sentence, indented; then the other fields as
// key=value pairs, indented. Control characters and other unprintable runes
// in any field are escaped, so a field cannot forge a line or a colour.
type ConsoleSink struct {
	mu    sync.Mutex // serializes writes; guards buf
	w     io.Writer
	color bool
	buf   []byte
}

var _ Sink = (*ConsoleSink)(nil)

// NewConsoleSink returns a sink that writes to w, one call to w.Write per
// event.
func NewConsoleSink(w io.Writer, opts ConsoleOptions) *ConsoleSink {
	return &ConsoleSink{w: w, color: opts.Color}
}

// UseColor reports whether console output to w should be coloured: w is a
// terminal and noColorEnv, the value of the NO_COLOR environment variable
// (https://no-color.org), is empty.
func UseColor(w io.Writer, noColorEnv string) bool {
	f, ok := w.(*os.File)
	if !ok || noColorEnv != "" {
		return false
	}
	return isatty.IsTerminal(f.Fd())
}

const (
	ansiReset = "\x1b[0m"
	ansiDim   = "\x1b[2m"
	ansiBold  = "\x1b[1m"
)

func levelColor(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "\x1b[31m"
	case l >= slog.LevelWarn:
		return "\x1b[33m"
	case l >= slog.LevelInfo:
		return "\x1b[32m"
	}
	return "\x1b[90m"
}

// Handle writes e and returns the writer's error.
func (s *ConsoleSink) Handle(_ context.Context, e Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buf[:0]

	b = e.Time.UTC().AppendFormat(b, time.RFC3339)
	b = append(b, ' ')
	if s.color {
		b = append(b, levelColor(e.Level)...)
	}
	b = append(b, levelString(e.Level)...)
	if s.color {
		b = append(b, ansiReset+ansiBold...)
	}
	for _, f := range [...]string{e.Actor, e.Action, e.Target} {
		b = append(b, ' ')
		if f == "" {
			b = append(b, '-')
		} else {
			b = appendValue(b, f)
		}
	}
	if s.color {
		b = append(b, ansiReset...)
	}
	b = append(b, '\n')

	if e.Human != "" {
		b = append(b, "  "...)
		b = appendEscaped(b, e.Human)
		b = append(b, '\n')
	}

	start := len(b)
	b = append(b, "  "...)
	if s.color {
		b = append(b, ansiDim...)
	}
	mark := len(b)
	b = appendKV(b, mark, "worker_id", e.WorkerID)
	b = appendKV(b, mark, "correlation_id", e.CorrelationID)
	b = appendKV(b, mark, "trace_id", e.TraceID)
	b = appendKV(b, mark, "span_id", e.SpanID)
	if e.Device.Set {
		b = appendSep(b, mark)
		b = append(b, "gpu="...)
		b = strconv.AppendInt(b, int64(e.Device.Index), 10)
		b = appendKV(b, mark, "gpu_uuid", e.Device.UUID)
	}
	if e.Duration != 0 {
		b = appendSep(b, mark)
		b = append(b, "duration="...)
		b = units.AppendDuration(b, e.Duration)
	}
	b = appendKV(b, mark, "error_kind", e.ErrorKind)
	b = appendKV(b, mark, "error", e.Error)
	for _, a := range e.Attrs {
		if a.Key == "" {
			continue
		}
		b = appendSep(b, mark)
		b = appendValue(b, a.Key)
		b = append(b, '=')
		if a.kind == KindString {
			b = appendValue(b, a.str)
		} else {
			b = a.appendValue(b)
		}
	}
	if len(b) == mark {
		b = b[:start]
	} else {
		if s.color {
			b = append(b, ansiReset...)
		}
		b = append(b, '\n')
	}

	s.buf = b
	_, err := s.w.Write(b)
	return err
}

func appendSep(b []byte, mark int) []byte {
	if len(b) > mark {
		b = append(b, ' ')
	}
	return b
}

func appendKV(b []byte, mark int, key, v string) []byte {
	if v == "" {
		return b
	}
	b = appendSep(b, mark)
	b = append(b, key...)
	b = append(b, '=')
	return appendValue(b, v)
}

// appendValue appends v bare when it is a single printable token, and Go
// quoted otherwise.
func appendValue(b []byte, v string) []byte {
	if v == "" {
		return append(b, `""`...)
	}
	for _, r := range v {
		if r == ' ' || r == '=' || r == '"' || r == '\\' || r == utf8.RuneError || !unicode.IsPrint(r) {
			return strconv.AppendQuote(b, v)
		}
	}
	return append(b, v...)
}

// appendEscaped appends s with every unprintable rune (control characters,
// ANSI escapes, bidirectional overrides, invalid UTF-8) written as a Go
// escape, and everything else as is.
func appendEscaped(b []byte, s string) []byte {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\x`...)
			b = append(b, hexDigit[s[i]>>4], hexDigit[s[i]&0xf])
		case r == '\\' || (r != ' ' && !unicode.IsPrint(r)):
			q := strconv.QuoteRuneToASCII(r)
			b = append(b, q[1:len(q)-1]...)
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return b
}

const hexDigit = "0123456789abcdef"
