package narration

import (
	"context"
	"net/http"
)

// Header names read and written by [Middleware] and [RoundTripper].
const (
	HeaderCorrelationID = "X-Correlation-ID"
	HeaderRequestID     = "X-Request-ID"
	HeaderTraceparent   = "traceparent"
)

// HTTPOptions configures [HTTPOptions.Middleware]. The zero value is what
// [Middleware] uses.
type HTTPOptions struct {
	// Header is the request header read first and the response header the
	// correlation ID is echoed in. Empty means [HeaderCorrelationID].
	Header string
	// NewID returns a fresh valid correlation ID. Nil means
	// [NewCorrelationID].
	NewID func() string
}

// Middleware is [HTTPOptions.Middleware] with the zero options.
func Middleware(next http.Handler) http.Handler { return HTTPOptions{}.Middleware(next) }

// Middleware returns a handler that puts a correlation ID, and a W3C trace
// context when the request has a valid traceparent, in the request context,
// echoes the ID in the response header, and calls next.
//
// The ID is the first of these request headers that is present: o.Header,
// [HeaderRequestID], then the trace ID of [HeaderTraceparent]. A present
// value that is not a [ValidCorrelationID] is replaced by a generated ID and
// never logged; so is an absent one.
func (o HTTPOptions) Middleware(next http.Handler) http.Handler {
	header := o.Header
	if header == "" {
		header = HeaderCorrelationID
	}
	newID := o.NewID
	if newID == nil {
		newID = NewCorrelationID
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := ctxValue{}
		if tps := r.Header.Values(HeaderTraceparent); len(tps) == 1 {
			// W3C Trace Context section 3.2: more than one traceparent
			// header is invalid.
			v.trace, _ = ParseTraceparent(tps[0])
		}
		id, ok := firstHeader(r.Header, header, HeaderRequestID)
		if !ok && v.trace.TraceID != "" {
			id = v.trace.TraceID
		}
		if !ValidCorrelationID(id) {
			id = newID()
		}
		v.id = id
		w.Header().Set(header, id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, &v)))
	})
}

func firstHeader(h http.Header, names ...string) (string, bool) {
	for _, name := range names {
		if vs := h.Values(name); len(vs) > 0 {
			if len(vs) > 1 {
				return "", true // ambiguous: replaced by a generated ID
			}
			return vs[0], true
		}
	}
	return "", false
}

// RoundTripper is an [http.RoundTripper] for clients that adds the
// correlation ID and trace context of the request's context to outgoing
// requests that do not already carry them.
type RoundTripper struct {
	// Base sends the request. Nil means [http.DefaultTransport].
	Base http.RoundTripper
	// Header is the header the correlation ID is sent in. Empty means
	// [HeaderCorrelationID].
	Header string
}

var _ http.RoundTripper = (*RoundTripper)(nil)

// RoundTrip sends a copy of req with the correlation headers added; req
// itself is not modified.
func (rt *RoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	base := rt.Base
	if base == nil {
		base = http.DefaultTransport
	}
	header := rt.Header
	if header == "" {
		header = HeaderCorrelationID
	}
	v := fromContext(req.Context())
	addID := ValidCorrelationID(v.id) && req.Header.Get(header) == ""
	tp := v.trace.Traceparent()
	addTrace := tp != "" && req.Header.Get(HeaderTraceparent) == ""
	if !addID && !addTrace {
		return base.RoundTrip(req)
	}
	out := req.Clone(req.Context())
	if addID {
		out.Header.Set(header, v.id)
	}
	if addTrace {
		out.Header.Set(HeaderTraceparent, tp)
	}
	return base.RoundTrip(out)
}
