package audit

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Severity ranks an event. The zero value is not a severity: an [Event]
// must name one.
type Severity uint8

// Severities, lowest first. Their names in records are "info", "low",
// "medium", "high" and "critical".
const (
	SeverityInfo Severity = iota + 1
	SeverityLow
	SeverityMedium
	SeverityHigh
	SeverityCritical
)

var severityNames = [...]string{"", "info", "low", "medium", "high", "critical"}

// String returns the name of s as written in records, or "severity(N)" for a
// value that is not a severity.
func (s Severity) String() string {
	if s.valid() {
		return severityNames[s]
	}
	return "severity(" + strconv.Itoa(int(s)) + ")"
}

func (s Severity) valid() bool { return s >= SeverityInfo && s <= SeverityCritical }

// ParseSeverity returns the severity named name ("info" ... "critical").
func ParseSeverity(name string) (Severity, error) {
	for i := SeverityInfo; i <= SeverityCritical; i++ {
		if severityNames[i] == name {
			return i, nil
		}
	}
	return 0, fmt.Errorf("audit: unknown severity %q", name)
}

// Kind is the type of a [Field] value.
type Kind uint8

// Field kinds. Their encodings in a record are given in the package
// documentation.
const (
	KindString Kind = iota + 1
	KindInt
	KindBool
	KindBytes
	KindDigest
)

var kindNames = [...]string{"", "string", "int", "bool", "bytes", "digest"}

// String returns the kind's name.
func (k Kind) String() string {
	if k >= KindString && k <= KindDigest {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Field is one typed, named value of an event. Build fields with [String],
// [Int], [Bool], [Bytes] and [Digest]; the zero Field is invalid. A Field is a
// small value: building one allocates nothing.
type Field struct {
	Key  string
	kind Kind
	str  string
	num  int64
	dig  [32]byte
}

// String returns a string field. The value must be valid UTF-8 and at most
// [Options.MaxFieldBytes] bytes long.
func String(key, value string) Field { return Field{Key: key, kind: KindString, str: value} }

// Int returns an integer field.
func Int(key string, value int64) Field { return Field{Key: key, kind: KindInt, num: value} }

// Bool returns a boolean field.
func Bool(key string, value bool) Field {
	f := Field{Key: key, kind: KindBool}
	if value {
		f.num = 1
	}
	return f
}

// Bytes returns a byte-count field (a size, not content); n must not be
// negative.
func Bytes(key string, n int64) Field { return Field{Key: key, kind: KindBytes, num: n} }

// Digest returns a SHA-256 digest field.
func Digest(key string, d [32]byte) Field { return Field{Key: key, kind: KindDigest, dig: d} }

// Kind returns the type of the field's value.
func (f Field) Kind() Kind { return f.kind }

// StringValue returns the value of a [KindString] field.
func (f Field) StringValue() string { return f.str }

// Int64 returns the value of a [KindInt] or [KindBytes] field.
func (f Field) Int64() int64 { return f.num }

// BoolValue returns the value of a [KindBool] field.
func (f Field) BoolValue() bool { return f.num != 0 }

// DigestValue returns the value of a [KindDigest] field.
func (f Field) DigestValue() [32]byte { return f.dig }

// Text returns the value as plain text: the string itself, a decimal number,
// "true" or "false", or lowercase hex for a digest. Query filters compare
// against it.
func (f Field) Text() string {
	switch f.kind {
	case KindString:
		return f.str
	case KindInt, KindBytes:
		return strconv.FormatInt(f.num, 10)
	case KindBool:
		return strconv.FormatBool(f.num != 0)
	case KindDigest:
		return hexString(f.dig[:])
	}
	return ""
}

// Event is what a caller records. Type and Severity are required; the
// service, node and worker come from [Options]; the writer adds the sequence
// number, time, audit ID, key epoch and chain.
type Event struct {
	// Type names the event in snake_case: [a-z][a-z0-9_]*, at most 64 bytes.
	Type string
	// Severity ranks the event; critical events are durable before
	// [Log.Append] returns.
	Severity Severity
	// CorrelationID ties the event to a request; empty means none. Valid
	// UTF-8, at most [Options.MaxFieldBytes] bytes.
	CorrelationID string
	// Fields are written in this order; keys are snake_case and unique.
	Fields []Field
	// Durable makes [Log.Append] return only once the event is durable,
	// whatever its severity: for events that must be on disk before the
	// operation they record takes effect. It is not written to the record.
	Durable bool
}

const maxNameLen = 64

// validName reports whether s is a snake_case name: [a-z][a-z0-9_]{0,63}.
func validName(s string) bool {
	if len(s) == 0 || len(s) > maxNameLen || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func validText(s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%w: %d bytes, limit %d", errTooLong, len(s), max)
	}
	if !utf8.ValidString(s) {
		return errBadUTF8
	}
	return nil
}

// validate checks e against the limits; it allocates only on error.
func (e *Event) validate(maxBytes, maxFields int) error {
	if !validName(e.Type) {
		return fmt.Errorf("%w: event type %q is not snake_case of 1 to 64 bytes", ErrInvalidEvent, truncateForError(e.Type))
	}
	if !e.Severity.valid() {
		return fmt.Errorf("%w: event %s: missing or unknown severity %d", ErrInvalidEvent, e.Type, e.Severity)
	}
	if err := validText(e.CorrelationID, maxBytes); err != nil {
		return fmt.Errorf("%w: event %s: correlation id: %w", ErrInvalidEvent, e.Type, err)
	}
	if len(e.Fields) > maxFields {
		return fmt.Errorf("%w: event %s: %d fields, limit %d", ErrInvalidEvent, e.Type, len(e.Fields), maxFields)
	}
	for i := range e.Fields {
		f := &e.Fields[i]
		if !validName(f.Key) {
			return fmt.Errorf("%w: event %s: field key %q is not snake_case of 1 to 64 bytes", ErrInvalidEvent, e.Type, truncateForError(f.Key))
		}
		for j := 0; j < i; j++ {
			if e.Fields[j].Key == f.Key {
				return fmt.Errorf("%w: event %s: duplicate field %s", ErrInvalidEvent, e.Type, f.Key)
			}
		}
		switch f.kind {
		case KindString:
			if err := validText(f.str, maxBytes); err != nil {
				return fmt.Errorf("%w: event %s: field %s: %w", ErrInvalidEvent, e.Type, f.Key, err)
			}
		case KindBytes:
			if f.num < 0 {
				return fmt.Errorf("%w: event %s: field %s: negative byte count %d", ErrInvalidEvent, e.Type, f.Key, f.num)
			}
		case KindInt, KindBool, KindDigest:
		default:
			return fmt.Errorf("%w: event %s: field %s has no value (build fields with audit.String, audit.Int, ...)", ErrInvalidEvent, e.Type, f.Key)
		}
	}
	return nil
}

// truncateForError keeps error messages short and printable.
func truncateForError(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return s
}
