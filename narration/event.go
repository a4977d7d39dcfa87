package narration

import (
	"log/slog"
	"strconv"
	"time"

	"github.com/vramseal/vramseal/internal/units"
)

// MaxHumanRunes is the longest human sentence, in runes, that a sink sees.
// [Narrator.Emit] cuts a longer sentence at a rune boundary, ends it with an
// ellipsis and counts the cut in [Stats.Truncations].
const MaxHumanRunes = 100

// Event is one narrated operation. It has a fixed schema of plain values, so
// that building one costs no allocation, and it is large (over 400 bytes), so
// [Narrator.Emit] takes it by pointer; [Sink.Handle] gets a copy.
//
// Empty string fields, a zero Duration, an unset Device and attributes with an
// empty key are left out of every output.
type Event struct {
	// Time is when the operation happened. Zero means the Narrator's clock.
	Time time.Time
	// Level is the severity; see [Options.Level].
	Level slog.Level
	// Actor is the component that acts ("vram-residency"). Empty means
	// [Options.Actor].
	Actor string
	// Action is a short verb naming the operation ("seal", "verify").
	Action string
	// Target is what the action applies to ("shard-abc123").
	Target string
	// Human is one sentence for people: present tense, numbers with units,
	// at most [MaxHumanRunes] runes. It is scrubbed of secrets.
	Human string
	// CorrelationID ties the event to a request. Empty means the ID carried
	// by the context given to [Narrator.Emit], if any.
	CorrelationID string
	// TraceID and SpanID are W3C trace context IDs (lower-case hex). Empty
	// means the ones carried by the context, if any.
	TraceID, SpanID string
	// Duration is how long the operation took.
	Duration time.Duration
	// Device is the GPU the operation ran on.
	Device Device
	// WorkerID names the worker (process or GPU owner) that acted.
	WorkerID string
	// ErrorKind classifies a failure with a short stable token ("integrity",
	// "capacity"), suitable for alerting.
	ErrorKind string
	// Error is the error text of a failure. It is scrubbed of secrets.
	Error string
	// Attrs are extra typed attributes, written in order after the fixed
	// fields. Their keys must differ from the fixed field names of the output
	// format (see the package documentation).
	Attrs Attrs
}

// Device names a GPU by index and UUID. The zero Device is unset.
type Device struct {
	Index int
	UUID  string
	Set   bool
}

// GPU returns the set Device with the given index and UUID.
func GPU(index int, uuid string) Device { return Device{Index: index, UUID: uuid, Set: true} }

// MaxAttrs is the number of extra attributes an [Event] can carry.
const MaxAttrs = 4

// Attrs holds the extra attributes of an [Event]. Entries with an empty key
// are unused.
type Attrs [MaxAttrs]Attr

// Kind is the type of an [Attr] value.
type Kind uint8

// The kinds of [Attr] values.
const (
	KindNone     Kind = iota // unused attribute
	KindInt                  // signed integer, see [Int]
	KindString               // string, see [Str]
	KindBytes                // byte count, see [Bytes]
	KindBool                 // boolean, see [Bool]
	KindDuration             // duration, see [Dur]
)

// Attr is a typed key and value. Build one with [Int], [Str], [Bytes],
// [Bool] or [Dur]; the zero Attr is unused.
type Attr struct {
	Key  string
	kind Kind
	num  uint64
	str  string
}

// Int returns an integer attribute.
func Int(key string, v int64) Attr { return Attr{Key: key, kind: KindInt, num: uint64(v)} }

// Str returns a string attribute. The value is not scrubbed: never pass a
// secret; wrap it in [Secret] and leave it out of events instead.
func Str(key, v string) Attr { return Attr{Key: key, kind: KindString, str: v} }

// Bytes returns an attribute holding a count of bytes.
func Bytes(key string, n int64) Attr { return Attr{Key: key, kind: KindBytes, num: uint64(n)} }

// Bool returns a boolean attribute.
func Bool(key string, v bool) Attr {
	var n uint64
	if v {
		n = 1
	}
	return Attr{Key: key, kind: KindBool, num: n}
}

// Dur returns a duration attribute.
func Dur(key string, d time.Duration) Attr { return Attr{Key: key, kind: KindDuration, num: uint64(d)} }

// Kind reports the type of a's value; [KindNone] for an unused attribute.
func (a Attr) Kind() Kind {
	if a.Key == "" {
		return KindNone
	}
	return a.kind
}

// Int64 returns the value of an attribute of kind [KindInt] or [KindBytes].
func (a Attr) Int64() int64 { return int64(a.num) }

// Str returns the value of an attribute of kind [KindString].
func (a Attr) Str() string { return a.str }

// Bool returns the value of an attribute of kind [KindBool].
func (a Attr) Bool() bool { return a.num != 0 }

// Duration returns the value of an attribute of kind [KindDuration].
func (a Attr) Duration() time.Duration { return time.Duration(a.num) }

// String formats the value as the console sink writes it: integers in
// decimal, byte counts in binary units with no space ("1.5GiB", see
// [FormatBytes]), durations as [FormatDuration] writes them, booleans as
// true or false.
func (a Attr) String() string { return string(a.appendValue(nil)) }

func (a Attr) appendValue(b []byte) []byte {
	switch a.kind {
	case KindInt:
		return strconv.AppendInt(b, int64(a.num), 10)
	case KindBytes:
		return units.AppendBytes(b, int64(a.num))
	case KindString:
		return append(b, a.str...)
	case KindBool:
		return strconv.AppendBool(b, a.num != 0)
	case KindDuration:
		return units.AppendDuration(b, time.Duration(a.num))
	}
	return b
}

// Value returns the value as a [slog.Value]. Byte counts are integers.
func (a Attr) Value() slog.Value {
	switch a.kind {
	case KindInt, KindBytes:
		return slog.Int64Value(int64(a.num))
	case KindString:
		return slog.StringValue(a.str)
	case KindBool:
		return slog.BoolValue(a.num != 0)
	case KindDuration:
		return slog.DurationValue(time.Duration(a.num))
	}
	return slog.Value{}
}

// levelString is slog.Level.String without its allocation for the four
// named levels.
func levelString(l slog.Level) string {
	switch l {
	case slog.LevelDebug:
		return "DEBUG"
	case slog.LevelInfo:
		return "INFO"
	case slog.LevelWarn:
		return "WARN"
	case slog.LevelError:
		return "ERROR"
	}
	return l.String()
}
