package narration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
)

// MaxCorrelationIDLen is the longest valid correlation ID, in bytes.
const MaxCorrelationIDLen = 128

type ctxKey struct{}

// ctxValue is what a context carries: one lookup finds both IDs.
type ctxValue struct {
	id    string
	trace TraceContext
}

func fromContext(ctx context.Context) ctxValue {
	if ctx == nil {
		return ctxValue{}
	}
	if v, ok := ctx.Value(ctxKey{}).(*ctxValue); ok {
		return *v
	}
	return ctxValue{}
}

// WithCorrelationID returns a copy of ctx that carries id. The caller
// validates id (see [ValidCorrelationID]); [Middleware] does.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	v := fromContext(ctx)
	v.id = id
	return context.WithValue(ctx, ctxKey{}, &v)
}

// CorrelationID returns the correlation ID carried by ctx, or "".
func CorrelationID(ctx context.Context) string { return fromContext(ctx).id }

// WithTrace returns a copy of ctx that carries the W3C trace context tc.
func WithTrace(ctx context.Context, tc TraceContext) context.Context {
	v := fromContext(ctx)
	v.trace = tc
	return context.WithValue(ctx, ctxKey{}, &v)
}

// Trace returns the trace context carried by ctx; the zero TraceContext if
// none.
func Trace(ctx context.Context) TraceContext { return fromContext(ctx).trace }

// ValidCorrelationID reports whether id is 1 to [MaxCorrelationIDLen] bytes
// of ASCII letters, digits and ".:/-". Nothing else is accepted, so a valid
// ID can be written to any log without escaping or injection.
func ValidCorrelationID(id string) bool {
	if len(id) == 0 || len(id) > MaxCorrelationIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == ':', c == '/', c == '-':
		default:
			return false
		}
	}
	return true
}

// NewCorrelationID returns a fresh random correlation ID: 32 lower-case hex
// digits (128 bits from crypto/rand).
func NewCorrelationID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// TraceContext is the part of a W3C Trace Context traceparent header that
// narration records: the trace ID, the parent (span) ID and the sampled flag.
type TraceContext struct {
	TraceID string // 32 lower-case hex digits, not all zero
	SpanID  string // 16 lower-case hex digits, not all zero
	Sampled bool
}

// IsValid reports whether tc holds a well-formed trace and span ID.
func (tc TraceContext) IsValid() bool {
	return isHexID(tc.TraceID, 32) && isHexID(tc.SpanID, 16)
}

// Traceparent formats tc as a version 00 traceparent header value; "" if tc
// is not valid.
func (tc TraceContext) Traceparent() string {
	if !tc.IsValid() {
		return ""
	}
	flags := "00"
	if tc.Sampled {
		flags = "01"
	}
	return "00-" + tc.TraceID + "-" + tc.SpanID + "-" + flags
}

// ParseTraceparent parses a traceparent header value strictly, as W3C Trace
// Context Level 1 section 3.2 specifies: version 00 is exactly 55 bytes;
// a later version (not ff) may append "-" and more after those 55 bytes; hex
// is lower case; trace and parent IDs are not all zero.
func ParseTraceparent(s string) (TraceContext, bool) {
	const n = 55 // "vv-" + 32 + "-" + 16 + "-" + "ff"
	if len(s) < n || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return TraceContext{}, false
	}
	version := s[0:2]
	if !isLowerHex(version) || version == "ff" {
		return TraceContext{}, false
	}
	if len(s) > n && (version == "00" || s[n] != '-') {
		return TraceContext{}, false
	}
	tc := TraceContext{TraceID: s[3:35], SpanID: s[36:52]}
	flags := s[53:55]
	if !isLowerHex(flags) || !tc.IsValid() {
		return TraceContext{}, false
	}
	tc.Sampled = unhex(flags[1])&1 == 1
	return tc, true
}

func isHexID(s string, n int) bool {
	if len(s) != n || !isLowerHex(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '0' {
			return true
		}
	}
	return false
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func unhex(c byte) byte {
	if c >= 'a' {
		return c - 'a' + 10
	}
	return c - '0'
}
