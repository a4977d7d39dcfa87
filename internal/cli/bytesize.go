package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/vramseal/vramseal/internal/units"
)

// ByteSize is a flag value that accepts plain byte counts and binary or
// decimal units: 65536, 64KiB, 1MiB, 8GiB, 1GB.
type ByteSize int64

var sizeSuffixes = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1},
}

// ParseByteSize parses a byte count with an optional unit.
func ParseByteSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeSuffixes {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid byte size %q (examples: 65536, 64KiB, 8GiB)", s)
	}
	if n > (1<<63-1)/mult {
		return 0, fmt.Errorf("byte size %q overflows", s)
	}
	return n * mult, nil
}

// String renders the value so that Set reads it back: with the largest
// binary unit that divides it ("8GiB", "64KiB"), else in bytes. Help
// output shows defaults this way.
func (b *ByteSize) String() string {
	n := int64(*b)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// Set parses the flag value.
func (b *ByteSize) Set(s string) error {
	n, err := ParseByteSize(s)
	if err != nil {
		return err
	}
	*b = ByteSize(n)
	return nil
}

// Type names the flag type in help output.
func (b *ByteSize) Type() string { return "bytes" }

// FormatBytes renders a byte count with a binary unit, e.g. "1.5 GiB"
// (see [units.FormatBytes]).
func FormatBytes(n int64) string { return units.FormatBytes(n) }
