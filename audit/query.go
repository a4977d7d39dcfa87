package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vramseal/vramseal/internal/units"
)

// FieldMatch selects records whose field Key has the text Value (see
// [Field.Text]).
type FieldMatch struct {
	Key, Value string
}

// Filter selects records. Zero members select everything; all non-zero
// members must match.
type Filter struct {
	Types         []string   // any of these types
	Severities    []Severity // any of these severities
	MinSeverity   Severity   // at least this severity
	Since         time.Time  // at or after
	Until         time.Time  // before
	CorrelationID string
	Fields        []FieldMatch
}

// Match reports whether r passes the filter.
func (f *Filter) Match(r *Record) bool {
	if len(f.Types) > 0 && !contains(f.Types, r.Type) {
		return false
	}
	if len(f.Severities) > 0 && !contains(f.Severities, r.Severity) {
		return false
	}
	if r.Severity < f.MinSeverity {
		return false
	}
	if !f.Since.IsZero() && r.Time.Before(f.Since) || !f.Until.IsZero() && !r.Time.Before(f.Until) {
		return false
	}
	if f.CorrelationID != "" && r.CorrelationID != f.CorrelationID {
		return false
	}
	for _, m := range f.Fields {
		v, ok := r.Field(m.Key)
		if !ok || v.Text() != m.Value {
			return false
		}
	}
	return true
}

func contains[T comparable](s []T, v T) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// ReadOptions configure [Query] and [Tail].
type ReadOptions struct {
	// FS is the file system. Nil means [OSFS].
	FS FS
	// Poll is how often [Tail] looks for new records when following. Zero
	// means 200 ms.
	Poll time.Duration
}

// fs is the file system to read: FS, or [OSFS] when nil.
func (o ReadOptions) fs() FS {
	if o.FS == nil {
		return OSFS{}
	}
	return o.FS
}

// Query streams the records of the log in dir that match f, oldest first,
// to fn; it stops at the first error fn returns. It reads without a lock and
// does not check MACs or the chain (run [Verify] for that); an unterminated
// last line (a write in progress) is skipped, any other unparsable line is
// an error.
func Query(ctx context.Context, dir string, f Filter, opts ReadOptions, fn func(*Record) error) error {
	fsys := opts.fs()
	man, err := loadManifest(fsys, dir)
	if err != nil {
		return err
	}
	var rec Record
	for i, s := range man.Segments {
		last := i == len(man.Segments)-1
		if s.Closed && s.Records > 0 && (!f.Since.IsZero() && s.LastTime.Before(f.Since) || !f.Until.IsZero() && !s.FirstTime.Before(f.Until)) {
			continue
		}
		if _, err := readSegment(ctx, fsys, dir, s.Name, 0, last, func(v *recordView) error {
			v.record(&rec)
			if !f.Match(&rec) {
				return nil
			}
			return fn(&rec)
		}); err != nil {
			return err
		}
	}
	return nil
}

func loadManifest(fsys FS, dir string) (*manifest, error) {
	mb, err := readFile(fsys, filepath.Join(dir, manifestName), maxManifestBytes)
	if err != nil {
		return nil, fmt.Errorf("audit: read manifest: %w", err)
	}
	return parseManifest(mb)
}

// readSegment calls fn for each complete record of a segment from byte
// offset from, and returns the offset after the last complete line. A
// missing file of the live segment reads as empty.
func readSegment(ctx context.Context, fsys FS, dir, name string, from int64, live bool, fn func(*recordView) error) (int64, error) {
	sr, err := openSegment(fsys, filepath.Join(dir, name))
	if err != nil {
		if live && errors.Is(err, os.ErrNotExist) {
			return from, nil
		}
		return from, fmt.Errorf("audit: read %s: %w", name, err)
	}
	defer sr.Close()
	if from > 0 {
		if _, err := io.CopyN(io.Discard, sr.br, from); err != nil {
			return from, fmt.Errorf("audit: read %s: %w", name, err)
		}
		sr.next = from
	}
	var v recordView
	end := from
	for n := 0; ; n++ {
		if n&1023 == 0 {
			if err := ctx.Err(); err != nil {
				return end, err
			}
		}
		line, term, err := sr.read()
		if err == io.EOF || err == nil && !term && live {
			return end, nil
		}
		if err == nil && !term {
			err = errors.New("unterminated line")
		}
		if err == nil {
			err = parseRecord(line, &v)
		}
		if err != nil {
			return end, fmt.Errorf("audit: read %s:%d (offset %d): %w", name, sr.line, sr.off, err)
		}
		end = sr.next
		if err := fn(&v); err != nil {
			return end, err
		}
	}
}

// Tail calls fn for the last n records of the log in dir and then, if
// follow, for every record appended later, until ctx ends (it then returns
// nil). It polls every [ReadOptions.Poll] and moves on when the writer
// rotates.
func Tail(ctx context.Context, dir string, n int, follow bool, opts ReadOptions, fn func(*Record) error) error {
	fsys := opts.fs()
	poll := opts.Poll
	if poll <= 0 {
		poll = 200 * time.Millisecond
	}
	man, err := loadManifest(fsys, dir)
	if err != nil {
		return err
	}
	if len(man.Segments) == 0 {
		return nil
	}
	// Pick the first segment that may hold one of the last n records: the
	// live segment's count is only a checkpoint, so count it as unknown.
	start := len(man.Segments) - 1
	var have uint64 = man.Segments[start].Records
	for start > 0 && have < uint64(n) {
		start--
		have += man.Segments[start].Records
	}
	// A ring of the last n lines, copied.
	ring := make([][]byte, 0, max(n, 0))
	pos := 0
	var off int64
	name := ""
	for i := start; i < len(man.Segments); i++ {
		s := man.Segments[i]
		name = s.Name
		off, err = readSegment(ctx, fsys, dir, s.Name, 0, i == len(man.Segments)-1, func(v *recordView) error {
			if n <= 0 {
				return nil
			}
			if len(ring) < n {
				ring = append(ring, append([]byte(nil), v.line...))
				return nil
			}
			ring[pos] = append(ring[pos][:0], v.line...)
			pos = (pos + 1) % n
			return nil
		})
		if err != nil {
			return err
		}
	}
	var rec Record
	var v recordView
	for i := range ring {
		line := ring[(pos+i)%len(ring)]
		if err := parseRecord(line, &v); err != nil {
			return err
		}
		v.record(&rec)
		if err := fn(&rec); err != nil {
			return err
		}
	}
	if !follow {
		return nil
	}
	emit := func(v *recordView) error {
		v.record(&rec)
		return fn(&rec)
	}
	for {
		off, err = readSegment(ctx, fsys, dir, name, off, true, emit)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		man, err := loadManifest(fsys, dir)
		if err != nil {
			return err
		}
		moved := false
		for i, s := range man.Segments {
			if s.Name == name && i+1 < len(man.Segments) {
				// The writer rotated: finish this segment, then go on.
				if _, err = readSegment(ctx, fsys, dir, name, off, true, emit); err != nil {
					return err
				}
				name, off, moved = man.Segments[i+1].Name, 0, true
				break
			}
		}
		if moved {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		}
	}
}

// AppendText appends a one-line rendering of r for people: time, severity,
// type, sequence number, correlation ID and fields. Every value that is not
// plain ASCII text is quoted with Go escapes, so control characters, ANSI
// escape sequences and bidirectional overrides are shown, never interpreted
// by a terminal.
func (r *Record) AppendText(dst []byte) []byte {
	dst = r.Time.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z")
	dst = append(dst, ' ')
	dst = append(dst, fmt.Sprintf("%-8s", r.Severity.String())...)
	dst = append(dst, ' ')
	dst = appendSafe(dst, r.Type)
	dst = append(dst, " seq="...)
	dst = strconv.AppendUint(dst, r.Seq, 10)
	if r.CorrelationID != "" {
		dst = append(dst, " cid="...)
		dst = appendSafe(dst, r.CorrelationID)
	}
	if r.Worker != "" {
		dst = append(dst, " worker="...)
		dst = appendSafe(dst, r.Worker)
	}
	for _, f := range r.Fields {
		dst = append(dst, ' ')
		dst = appendSafe(dst, f.Key)
		dst = append(dst, '=')
		dst = f.AppendHuman(dst)
	}
	return dst
}

// AppendHuman appends f's value for people, in the formats that all of
// vramseal's text output uses: a byte count in binary units with no space
// ("1.5GiB"); an integer whose key ends in "_us", which holds microseconds
// by the naming rule of vramseal's records, as a duration ("850µs",
// "12.3ms", "1.52s"); a digest as its first 8 bytes
// ("sha256:0123456789abcdef..."); anything else as [Field.Text], quoted
// with Go escapes unless it is plain ASCII text, so that no control
// character or escape sequence reaches a terminal and no tab or newline
// splits a column. Filters and the JSON output use the exact values.
func (f Field) AppendHuman(dst []byte) []byte {
	switch {
	case f.kind == KindBytes:
		return units.AppendBytes(dst, f.num)
	case f.kind == KindInt && strings.HasSuffix(f.Key, "_us") && -maxMicros <= f.num && f.num <= maxMicros:
		return units.AppendDuration(dst, time.Duration(f.num)*time.Microsecond)
	case f.kind == KindDigest:
		dst = append(dst, "sha256:"...)
		dst = appendHex(dst, f.dig[:8])
		return append(dst, "..."...)
	}
	return appendSafe(dst, f.Text())
}

// maxMicros is the largest count of microseconds a [time.Duration] holds
// (about 292 years); a larger "_us" field is written as a plain integer.
const maxMicros = math.MaxInt64 / int64(time.Microsecond)

// appendSafe appends s bare if it is non-empty plain ASCII text, else
// quoted by strconv.Quote, which escapes every control, format (bidi) and
// non-printable character.
func appendSafe(dst []byte, s string) []byte {
	plain := s != ""
	for i := 0; i < len(s) && plain; i++ {
		c := s[i]
		plain = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '_' || c == '-' || c == '.' || c == ':' || c == '/' || c == '@' || c == '+'
	}
	if plain {
		return append(dst, s...)
	}
	return strconv.AppendQuote(dst, s)
}
