package narration_test

import (
	"strings"
	"testing"

	"github.com/vramseal/vramseal/narration"
)

// FuzzParseTraceparent feeds arbitrary header values to the traceparent
// parser: it must never panic, and what it accepts must be valid and
// re-encode to a header that parses to the same context.
func FuzzParseTraceparent(f *testing.F) {
	for _, s := range []string{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
		"", "00", strings.Repeat("0", 55),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tc, ok := narration.ParseTraceparent(s)
		if !ok {
			return
		}
		if !tc.IsValid() {
			t.Fatalf("ParseTraceparent(%q) accepted an invalid context %+v", s, tc)
		}
		again, ok := narration.ParseTraceparent(tc.Traceparent())
		if !ok || again != tc {
			t.Fatalf("ParseTraceparent(%q) = %+v, re-encoded as %q parses to %+v, %v", s, tc, tc.Traceparent(), again, ok)
		}
	})
}

// FuzzValidCorrelationID checks that every ID the validator accepts is
// short and made only of the allowed bytes, so it can never forge a log
// line or a terminal escape.
func FuzzValidCorrelationID(f *testing.F) {
	for _, s := range []string{"req-xyz", "a\nb", "\x1b[31m", strings.Repeat("a", 129), "trace:1/2.3_4-5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !narration.ValidCorrelationID(s) {
			return
		}
		if len(s) == 0 || len(s) > narration.MaxCorrelationIDLen {
			t.Fatalf("ValidCorrelationID(%q) accepted length %d", s, len(s))
		}
		for i := 0; i < len(s); i++ {
			c := s[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(".:/-", c) >= 0) {
				t.Fatalf("ValidCorrelationID(%q) accepted byte %q", s, c)
			}
		}
	})
}
