// Package units renders byte counts and durations for people, the one way
// every part of vramseal writes them: narration's sentences and console
// lines, the CLI's tables, audit query output and error messages. Machine
// formats (JSON, metrics, audit records) keep exact integers instead.
//
// Sizes are in binary units with one decimal, "512 B", "1.0 KiB",
// "1.5 GiB", up to EiB. Durations keep three significant digits below a
// minute and two fields above it:
//
//	0              "0s"
//	under 1µs      whole nanoseconds: "850ns"
//	under 1s       µs or ms, three significant digits: "1.5µs", "850µs", "12.3ms"
//	under 1m       seconds, three significant digits: "1.52s", "59.9s"
//	under 1h       minutes and whole seconds: "3m04s"
//	under 24h      hours and whole minutes: "2h05m"
//	longer         days and whole hours: "3d04h"
//
// Values are rounded half up at the digit shown and trailing zeros of a
// fraction are dropped ("2ms", not "2.00ms"); a value that rounds up to the
// next unit is written in that unit ("1ms", not "1000µs"). Nothing that is
// not zero is ever written as zero. A negative value is written as its
// magnitude after a minus sign.
package units

import (
	"strconv"
	"time"
)

// FormatBytes renders n in binary units with one decimal ("512 B",
// "1.5 GiB"), a space between number and unit.
func FormatBytes(n int64) string { return string(appendBytes(nil, n, " ")) }

// AppendBytes appends n as [FormatBytes] renders it but with no space
// ("1.5GiB"), the form for key=value pairs, where a value is one token.
func AppendBytes(dst []byte, n int64) []byte { return appendBytes(dst, n, "") }

func appendBytes(dst []byte, n int64, sep string) []byte {
	u := uint64(n)
	if n < 0 {
		dst = append(dst, '-')
		u = -u // also right for math.MinInt64
	}
	const unit = 1024
	if u < unit {
		dst = strconv.AppendUint(dst, u, 10)
		return append(append(dst, sep...), 'B')
	}
	// tenths of the unit, rounded half up; move up a unit when rounding
	// reaches 1024.0 (1048575 B is "1.0 MiB", not "1024.0 KiB").
	div, exp := uint64(unit), 0
	for ; exp < 5; exp++ {
		if u/div < unit && tenths(u, div) < 10*unit {
			break
		}
		div *= unit
	}
	t := tenths(u, div)
	dst = strconv.AppendUint(dst, t/10, 10)
	dst = append(dst, '.', byte('0'+t%10))
	dst = append(dst, sep...)
	return append(dst, "KMGTPE"[exp], 'i', 'B')
}

// tenths returns u/div in tenths, rounded half up, without overflowing:
// div is at most 1<<60, so (u%div)*10 fits in 64 bits.
func tenths(u, div uint64) uint64 {
	return u/div*10 + ((u%div)*10+div/2)/div
}

// FormatDuration renders d as the package documentation describes ("850µs",
// "12.3ms", "1.52s", "3m04s").
func FormatDuration(d time.Duration) string {
	var b [24]byte
	return string(AppendDuration(b[:0], d))
}

// AppendDuration appends d as [FormatDuration] renders it. It does not
// allocate when dst has room.
func AppendDuration(dst []byte, d time.Duration) []byte {
	u := uint64(d)
	if d < 0 {
		dst = append(dst, '-')
		u = -u
	}
	const (
		us  = uint64(time.Microsecond)
		sec = uint64(time.Second)
		min = uint64(time.Minute)
		hr  = uint64(time.Hour)
	)
	switch {
	case u == 0:
		return append(dst, "0s"...)
	case u < us:
		return append(strconv.AppendUint(dst, u, 10), "ns"...)
	case u < min:
		for _, s := range [...]struct {
			unit uint64
			name string
		}{{us, "µs"}, {1000 * us, "ms"}, {sec, "s"}} {
			if u >= 1000*s.unit && s.unit != sec {
				continue
			}
			// Three significant digits: dec fraction digits, in steps of q.
			dec, pow := 2, uint64(100)
			if u >= 100*s.unit {
				dec, pow = 0, 1
			} else if u >= 10*s.unit {
				dec, pow = 1, 10
			}
			q := s.unit / pow
			r := (u + q/2) / q
			if r*q >= 1000*s.unit && s.unit != sec {
				continue // rounds up to the next unit
			}
			if r*q >= min {
				break
			}
			return appendFixed(dst, r, dec, pow, s.name)
		}
	}
	if s := (u + sec/2) / sec; s < 60*60 {
		return appendPair(dst, s/60, 'm', s%60, 's')
	}
	if m := (u + min/2) / min; m < 24*60 {
		return appendPair(dst, m/60, 'h', m%60, 'm')
	}
	h := (u + hr/2) / hr
	return appendPair(dst, h/24, 'd', h%24, 'h')
}

// appendFixed appends r/pow with dec fraction digits, trailing zeros of
// the fraction dropped, then name.
func appendFixed(dst []byte, r uint64, dec int, pow uint64, name string) []byte {
	dst = strconv.AppendUint(dst, r/pow, 10)
	frac := r % pow
	for frac != 0 && frac%10 == 0 {
		frac /= 10
		dec--
	}
	if frac != 0 {
		dst = append(dst, '.')
		for p := pow10(dec - 1); p > 0; p /= 10 {
			dst = append(dst, byte('0'+frac/p%10))
		}
	}
	return append(dst, name...)
}

func pow10(n int) uint64 {
	p := uint64(1)
	for range n {
		p *= 10
	}
	return p
}

// appendPair appends "<hi><hiUnit><lo, two digits><loUnit>" ("3m04s").
func appendPair(dst []byte, hi uint64, hiUnit byte, lo uint64, loUnit byte) []byte {
	dst = strconv.AppendUint(dst, hi, 10)
	return append(dst, hiUnit, byte('0'+lo/10), byte('0'+lo%10), loUnit)
}
