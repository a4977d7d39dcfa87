package units

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestFormatBytes(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{1, "1 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{1024*1024 - 1, "1.0 MiB"}, // rounds up to the next unit
		{1024*1024 - 52, "1023.9 KiB"},
		{64 << 20, "64.0 MiB"},
		{3 << 29, "1.5 GiB"},
		{5 << 40, "5.0 TiB"},
		{7 << 50, "7.0 PiB"},
		{math.MaxInt64, "8.0 EiB"},
		{-1536, "-1.5 KiB"},
		{math.MinInt64, "-8.0 EiB"},
	}
	for _, tt := range tests {
		if got := FormatBytes(tt.n); got != tt.want {
			t.Errorf("FormatBytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
		want := strings.ReplaceAll(tt.want, " ", "")
		if got := string(AppendBytes([]byte("x="), tt.n)); got != "x="+want {
			t.Errorf("AppendBytes(x=, %d) = %q, want %q", tt.n, got, "x="+want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{1, "1ns"},
		{850, "850ns"},
		{999, "999ns"},
		{time.Microsecond, "1µs"},
		{1500, "1.5µs"},
		{1234, "1.23µs"},
		{1235, "1.24µs"}, // half up
		{12345, "12.3µs"},
		{850 * time.Microsecond, "850µs"},
		{999499, "999µs"},
		{999500, "1ms"}, // rounds up to the next unit
		{2 * time.Millisecond, "2ms"},
		{2050 * time.Microsecond, "2.05ms"},
		{12300 * time.Microsecond, "12.3ms"},
		{41500 * time.Microsecond, "41.5ms"},
		{999 * time.Millisecond, "999ms"},
		{999600 * time.Microsecond, "1s"},
		{1520 * time.Millisecond, "1.52s"},
		{1500 * time.Millisecond, "1.5s"},
		{59900 * time.Millisecond, "59.9s"},
		{59960 * time.Millisecond, "1m00s"}, // rounds up to a minute
		{time.Minute, "1m00s"},
		{3*time.Minute + 4*time.Second, "3m04s"},
		{3*time.Minute + 4600*time.Millisecond, "3m05s"},
		{59*time.Minute + 59*time.Second, "59m59s"},
		{59*time.Minute + 59600*time.Millisecond, "1h00m"},
		{2*time.Hour + 5*time.Minute, "2h05m"},
		{23*time.Hour + 59*time.Minute + 31*time.Second, "1d00h"},
		{3*24*time.Hour + 4*time.Hour, "3d04h"},
		{2555 * 24 * time.Hour, "2555d00h"},
		{-1520 * time.Millisecond, "-1.52s"},
		{-1, "-1ns"},
		{math.MaxInt64, "106752d00h"},
		{math.MinInt64, "-106752d00h"},
	}
	for _, tt := range tests {
		if got := FormatDuration(tt.d); got != tt.want {
			t.Errorf("FormatDuration(%d) = %q, want %q", int64(tt.d), got, tt.want)
		}
	}
}

// TestFormatDurationNeverZero walks durations from 1ns to a year in steps
// of about 0.1% and checks that none is written as zero and that every one
// below a minute has at most three significant digits.
func TestFormatDurationNeverZero(t *testing.T) {
	for d := time.Duration(1); d < 365*24*time.Hour; d += max(1, d/1000) {
		s := FormatDuration(d)
		if strings.Trim(s, "0.nsµmhd") == "" {
			t.Fatalf("FormatDuration(%d) = %q, reads as zero", int64(d), s)
		}
		if d < time.Minute {
			digits := strings.TrimLeft(strings.Map(func(r rune) rune {
				if r >= '0' && r <= '9' {
					return r
				}
				return -1
			}, s), "0")
			if len(strings.TrimRight(digits, "0")) > 3 {
				t.Fatalf("FormatDuration(%d) = %q, more than three significant digits", int64(d), s)
			}
		}
	}
}

func TestAppendDurationAllocs(t *testing.T) {
	buf := make([]byte, 0, 32)
	if n := testing.AllocsPerRun(100, func() { buf = AppendDuration(buf[:0], 12300*time.Microsecond) }); n != 0 {
		t.Errorf("AppendDuration allocates %v times, want 0", n)
	}
}
