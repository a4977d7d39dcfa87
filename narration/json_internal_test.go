package narration

import (
	"io"
	"testing"
	"time"
)

func TestAppendTimeMatchesRFC3339Nano(t *testing.T) {
	s := NewJSONSink(io.Discard)
	base := time.Date(2026, 11, 26, 23, 59, 59, 0, time.FixedZone("X", 3600))
	for _, ns := range []int{0, 1, 10, 100, 123456789, 999999999, 500000000, 120, 7} {
		for _, dsec := range []time.Duration{0, time.Second, 3 * time.Hour} {
			tm := base.Add(dsec).Add(time.Duration(ns))
			got := string(s.appendTime(nil, tm))
			want := `"` + tm.UTC().Format(time.RFC3339Nano) + `"`
			if got != want {
				t.Errorf("appendTime(%v) = %s, want %s", tm, got, want)
			}
		}
	}
}
