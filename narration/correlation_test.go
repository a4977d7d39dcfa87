package narration_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vramseal/vramseal/narration"
)

func TestValidCorrelationID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"req-xyz", true},
		{"a", true},
		{"0af7651916cd43dd8448eb211c80319c", true},
		{"svc:req/1.2-3", true},
		{"req_1", false}, // underscore is outside the allowed set
		{strings.Repeat("a", 128), true},
		{"", false},
		{strings.Repeat("a", 129), false},
		{strings.Repeat("a", 10<<10), false},
		{"req\nINFO forged line", false},
		{"req\r\n", false},
		{"\x1b[31mred\x1b[0m", false},
		{"req xyz", false},
		{"req\x00", false},
		{"req\u202eevil", false},
		{"réq", false},
		{`req"}`, false},
		{"req;drop", false},
		{"req=1", false},
	}
	for _, tt := range tests {
		if got := narration.ValidCorrelationID(tt.id); got != tt.want {
			t.Errorf("ValidCorrelationID(%.40q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func TestNewCorrelationID(t *testing.T) {
	a, b := narration.NewCorrelationID(), narration.NewCorrelationID()
	if !narration.ValidCorrelationID(a) || len(a) != 32 || a == b {
		t.Errorf("NewCorrelationID() = %q, %q, want two different valid 32-digit IDs", a, b)
	}
}

func TestParseTraceparent(t *testing.T) {
	const (
		trace = "4bf92f3577b34da6a3ce929d0e0e4736"
		span  = "00f067aa0ba902b7"
	)
	tests := []struct {
		in   string
		want narration.TraceContext
		ok   bool
	}{
		{"00-" + trace + "-" + span + "-01", narration.TraceContext{TraceID: trace, SpanID: span, Sampled: true}, true},
		{"00-" + trace + "-" + span + "-00", narration.TraceContext{TraceID: trace, SpanID: span}, true},
		{"01-" + trace + "-" + span + "-03-future", narration.TraceContext{TraceID: trace, SpanID: span, Sampled: true}, true},
		{"01-" + trace + "-" + span + "-01", narration.TraceContext{TraceID: trace, SpanID: span, Sampled: true}, true},
		{"00-" + trace + "-" + span + "-01-extra", narration.TraceContext{}, false},
		{"01-" + trace + "-" + span + "-01x", narration.TraceContext{}, false},
		{"ff-" + trace + "-" + span + "-01", narration.TraceContext{}, false},
		{"00-" + strings.ToUpper(trace) + "-" + span + "-01", narration.TraceContext{}, false},
		{"00-00000000000000000000000000000000-" + span + "-01", narration.TraceContext{}, false},
		{"00-" + trace + "-0000000000000000-01", narration.TraceContext{}, false},
		{"00-" + trace + "-" + span + "-0g", narration.TraceContext{}, false},
		{"00-" + trace + "-" + span, narration.TraceContext{}, false},
		{"00_" + trace + "_" + span + "_01", narration.TraceContext{}, false},
		{"", narration.TraceContext{}, false},
		{"00-" + trace + "-" + span + "-01\n", narration.TraceContext{}, false},
	}
	for _, tt := range tests {
		got, ok := narration.ParseTraceparent(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseTraceparent(%q) = %+v, %v, want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
		if ok && tt.in[:2] == "00" && got.Traceparent() != tt.in {
			t.Errorf("ParseTraceparent(%q).Traceparent() = %q, want the input", tt.in, got.Traceparent())
		}
	}
}

func TestMiddleware(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tests := []struct {
		name    string
		headers map[string][]string
		wantID  string
		trace   bool
	}{
		{"absent", nil, "generated", false},
		{"correlation id", map[string][]string{"X-Correlation-Id": {"req-xyz"}}, "req-xyz", false},
		{"request id", map[string][]string{"X-Request-Id": {"rid-1"}}, "rid-1", false},
		{"correlation id first", map[string][]string{"X-Correlation-Id": {"c"}, "X-Request-Id": {"r"}}, "c", false},
		{"traceparent", map[string][]string{"Traceparent": {tp}}, "4bf92f3577b34da6a3ce929d0e0e4736", true},
		{"id and traceparent", map[string][]string{"X-Correlation-Id": {"c"}, "Traceparent": {tp}}, "c", true},
		{"bad traceparent", map[string][]string{"Traceparent": {"00-xyz"}}, "generated", false},
		{"two traceparents", map[string][]string{"Traceparent": {tp, tp}}, "generated", false},
		{"newline", map[string][]string{"X-Correlation-Id": {"req\nINFO forged"}}, "generated", false},
		{"ansi", map[string][]string{"X-Correlation-Id": {"\x1b[31mx"}}, "generated", false},
		{"10 KB", map[string][]string{"X-Correlation-Id": {strings.Repeat("a", 10<<10)}}, "generated", false},
		{"invalid id not replaced by request id", map[string][]string{"X-Correlation-Id": {"a b"}, "X-Request-Id": {"r"}}, "generated", false},
		{"two ids", map[string][]string{"X-Correlation-Id": {"a", "b"}}, "generated", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var gotID string
			var gotTrace narration.TraceContext
			h := narration.HTTPOptions{NewID: func() string { return "generated" }}.Middleware(
				http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					gotID = narration.CorrelationID(r.Context())
					gotTrace = narration.Trace(r.Context())
				}))
			req := httptest.NewRequest("GET", "/v1/shards", nil)
			for k, vs := range tt.headers {
				req.Header[k] = vs
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if gotID != tt.wantID {
				t.Errorf("CorrelationID(ctx) = %.40q, want %q", gotID, tt.wantID)
			}
			if echo := w.Header().Get("X-Correlation-ID"); echo != tt.wantID {
				t.Errorf("response X-Correlation-ID = %.40q, want %q", echo, tt.wantID)
			}
			if gotTrace.IsValid() != tt.trace {
				t.Errorf("Trace(ctx) = %+v, want valid=%v", gotTrace, tt.trace)
			}
		})
	}
}

func TestMiddlewareDefaults(t *testing.T) {
	var got string
	h := narration.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = narration.CorrelationID(r.Context())
	}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	if !narration.ValidCorrelationID(got) || w.Header().Get(narration.HeaderCorrelationID) != got {
		t.Errorf("generated ID %q, echoed %q", got, w.Header().Get(narration.HeaderCorrelationID))
	}

	h = narration.HTTPOptions{Header: "X-Trace-Me"}.Middleware(http.NotFoundHandler())
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("X-Trace-Me", "mine")
	w = httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if got := w.Header().Get("X-Trace-Me"); got != "mine" {
		t.Errorf("custom header echo = %q, want %q", got, "mine")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestRoundTripper(t *testing.T) {
	tc := narration.TraceContext{TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", SpanID: "00f067aa0ba902b7"}
	tests := []struct {
		name           string
		ctx            context.Context
		preset         string
		wantID, wantTP string
	}{
		{"none", context.Background(), "", "", ""},
		{"id", narration.WithCorrelationID(context.Background(), "req-1"), "", "req-1", ""},
		{"id and trace", narration.WithTrace(narration.WithCorrelationID(context.Background(), "req-1"), tc), "", "req-1", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"},
		{"preset kept", narration.WithCorrelationID(context.Background(), "req-1"), "caller", "caller", ""},
		{"invalid not sent", narration.WithCorrelationID(context.Background(), "a\nb"), "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got *http.Request
			rt := &narration.RoundTripper{Base: roundTripFunc(func(r *http.Request) (*http.Response, error) {
				got = r
				return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
			})}
			req := httptest.NewRequest("GET", "http://peer/x", nil).WithContext(tt.ctx)
			req.RequestURI = ""
			if tt.preset != "" {
				req.Header.Set("X-Correlation-ID", tt.preset)
			}
			if _, err := rt.RoundTrip(req); err != nil {
				t.Fatal(err)
			}
			if id := got.Header.Get("X-Correlation-ID"); id != tt.wantID {
				t.Errorf("sent X-Correlation-ID = %q, want %q", id, tt.wantID)
			}
			if tp := got.Header.Get("traceparent"); tp != tt.wantTP {
				t.Errorf("sent traceparent = %q, want %q", tp, tt.wantTP)
			}
			if tt.preset == "" && req.Header.Get("X-Correlation-ID") != "" {
				t.Errorf("RoundTrip modified the caller's request")
			}
		})
	}
}
