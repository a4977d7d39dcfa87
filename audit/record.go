package audit

import (
	"bytes"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// Parser limits, independent of the writer's [Options]: a line longer than
// maxLineBytes, a string longer than maxStringBytes or an event with more
// than maxFieldsParse fields is malformed.
const (
	maxLineBytes   = 1 << 20
	maxStringBytes = 1 << 16
	maxFieldsParse = 256
)

// maxInt is the largest seq, epoch or count a reader accepts: 2^63-1, so
// every such number also fits an int64.
const maxInt = 1<<63 - 1

// Record is one parsed record. Strings are decoded (escapes resolved).
type Record struct {
	Seq           uint64
	Time          time.Time
	ID            string
	Type          string
	Severity      Severity
	Service       string
	Node          string
	Worker        string
	CorrelationID string
	Fields        []Field
	Epoch         uint64
	Prev          [32]byte
	MAC           [32]byte
	// Line is the record's exact line without its newline. It is valid
	// only during the callback that received the record.
	Line []byte
}

// Field returns the field named key and whether it is present.
func (r *Record) Field(key string) (Field, bool) {
	for _, f := range r.Fields {
		if f.Key == key {
			return f, true
		}
	}
	return Field{}, false
}

// rawString is a validated JSON string: its content without quotes.
type rawString struct {
	b   []byte
	esc bool // contains escapes
}

func (s rawString) decode() string {
	if !s.esc {
		return string(s.b)
	}
	return string(unescape(nil, s.b))
}

// rawField is a validated field: key, kind and the raw value.
type rawField struct {
	key  []byte
	kind Kind
	str  rawString
	num  int64
	dig  [32]byte
}

// recordView is a parsed line whose strings still point into the line. It
// allocates nothing, which keeps verification fast.
type recordView struct {
	ver     int    // format version
	line    []byte // without newline
	seq     uint64
	time    []byte // canonical, fixed width: compares like the instant
	id      []byte
	typ     []byte
	sev     Severity
	service rawString
	node    rawString
	worker  rawString
	cid     rawString
	fields  []rawField
	epoch   uint64
	prev    [32]byte
	mac     [32]byte
	idLogID []byte
}

// parseHead parses the start of the line in d, through its seq, into v:
// enough for a copy to keep records in order without reading the rest.
func parseHead(d *dec, v *recordView) error {
	if len(d.b) > maxLineBytes {
		return fmt.Errorf("%w: line of %d bytes exceeds %d", errMalformed, len(d.b), maxLineBytes)
	}
	// Version first, so a future format is named as such.
	if !d.lit(`{"v":`) {
		return d.fail("record must start with {\"v\":")
	}
	ver, ok := d.uint()
	if !ok || ver != formatV1 && ver != formatVersion {
		return fmt.Errorf("%w: unsupported format version (want %d or %d)", errMalformed, formatV1, formatVersion)
	}
	v.ver, v.line = int(ver), d.b
	if !d.lit(`,"seq":`) {
		return d.fail(`want "seq"`)
	}
	if v.seq, ok = d.uint(); !ok || v.seq == 0 || v.seq > maxInt {
		return d.fail("bad seq")
	}
	return nil
}

// parseRecord parses line (without its newline) strictly: members in the
// fixed order of format versions 1 and 2, canonical numbers, strings and times
// only. On error v is left in an unspecified state.
func parseRecord(line []byte, v *recordView) error {
	d := dec{b: line}
	if err := parseHead(&d, v); err != nil {
		return err
	}
	var ok bool
	if !d.lit(`,"time":"`) {
		return d.fail(`want "time"`)
	}
	if d.i+len(timeLayout) > len(d.b) {
		return d.fail("bad time")
	}
	v.time = d.b[d.i : d.i+len(timeLayout)]
	if !validTime(v.time) {
		return d.fail("bad time")
	}
	d.i += len(timeLayout)
	if !d.lit(`","id":`) {
		return d.fail(`want "id"`)
	}
	id, ok := d.str()
	if !ok || id.esc {
		return d.fail("bad id")
	}
	v.id = id.b
	dash := bytes.IndexByte(id.b, '-')
	if dash != 16 || !isLowerHex(id.b[:16]) {
		return d.fail("bad id")
	}
	if n, err := strconv.ParseUint(string(id.b[17:]), 10, 64); err != nil || n != v.seq || strconv.FormatUint(n, 10) != string(id.b[17:]) {
		return d.fail("id does not match seq")
	}
	v.idLogID = id.b[:16]
	if !d.lit(`,"type":`) {
		return d.fail(`want "type"`)
	}
	typ, ok := d.str()
	if !ok || !validName(string(typ.b)) {
		return d.fail("bad type")
	}
	v.typ = typ.b
	if !d.lit(`,"sev":`) {
		return d.fail(`want "sev"`)
	}
	sev, ok := d.str()
	if !ok {
		return d.fail("bad sev")
	}
	v.sev = 0
	for i := SeverityInfo; i <= SeverityCritical; i++ {
		if string(sev.b) == severityNames[i] {
			v.sev = i
		}
	}
	if v.sev == 0 {
		return d.fail("bad sev")
	}
	for _, m := range []struct {
		name string
		dst  *rawString
	}{{`,"service":`, &v.service}, {`,"node":`, &v.node}, {`,"worker":`, &v.worker}, {`,"cid":`, &v.cid}} {
		if !d.lit(m.name) {
			return d.fail("want " + m.name[1:len(m.name)-1])
		}
		if *m.dst, ok = d.str(); !ok {
			return d.fail("bad " + m.name[2:len(m.name)-2])
		}
	}
	if len(v.service.b) == 0 || len(v.node.b) == 0 {
		return d.fail("empty service or node")
	}
	if !d.lit(`,"fields":{`) {
		return d.fail(`want "fields"`)
	}
	v.fields = v.fields[:0]
	if !d.lit("}") {
		for {
			var f rawField
			key, ok := d.str()
			if !ok || !validName(string(key.b)) {
				return d.fail("bad field key")
			}
			f.key = key.b
			for i := range v.fields {
				if bytes.Equal(v.fields[i].key, key.b) {
					return d.fail("duplicate field key")
				}
			}
			if !d.lit(":") {
				return d.fail("want :")
			}
			if !d.value(&f) {
				return d.fail("bad value of field " + string(key.b))
			}
			if len(v.fields) == maxFieldsParse {
				return d.fail("too many fields")
			}
			v.fields = append(v.fields, f)
			if d.lit("}") {
				break
			}
			if !d.lit(",") {
				return d.fail("want , or }")
			}
		}
	}
	if !d.lit(`,"epoch":`) {
		return d.fail(`want "epoch"`)
	}
	if v.epoch, ok = d.uint(); !ok || v.epoch > maxInt {
		return d.fail("bad epoch")
	}
	if !d.lit(`,"prev":"`) || !d.hex32(&v.prev) || !d.lit(`"`) {
		return d.fail("bad prev")
	}
	if d.i != len(d.b)-macSuffixLen {
		return d.fail("want mac last")
	}
	if !d.lit(`,"mac":"`) || !d.hex32(&v.mac) || !d.lit(`"}`) || d.i != len(d.b) {
		return d.fail("bad mac")
	}
	return nil
}

// macInput returns the bytes the MAC covers.
func (v *recordView) macInput() []byte { return v.line[:len(v.line)-macSuffixLen] }

// record converts v into a Record that owns its strings.
func (v *recordView) record(r *Record) {
	t, _ := time.Parse(timeLayout, string(v.time))
	*r = Record{
		Seq: v.seq, Time: t, ID: string(v.id), Type: string(v.typ), Severity: v.sev,
		Service: v.service.decode(), Node: v.node.decode(), Worker: v.worker.decode(),
		CorrelationID: v.cid.decode(), Epoch: v.epoch, Prev: v.prev, MAC: v.mac, Line: v.line,
		Fields: make([]Field, len(v.fields)),
	}
	for i, f := range v.fields {
		r.Fields[i] = Field{Key: string(f.key), kind: f.kind, num: f.num, dig: f.dig}
		if f.kind == KindString {
			r.Fields[i].str = f.str.decode()
		}
	}
}

// ParseRecord parses one record line (with or without its newline)
// strictly, as [Verify] does, without checking its MAC or chain.
func ParseRecord(line []byte) (*Record, error) {
	line = bytes.TrimSuffix(line, []byte{'\n'})
	var v recordView
	if err := parseRecord(line, &v); err != nil {
		return nil, err
	}
	r := new(Record)
	v.record(r)
	r.Line = line
	return r, nil
}

// validTime reports whether b is a canonical time: the layout's shape, and
// a real calendar date and clock time (no leap seconds).
func validTime(b []byte) bool {
	if len(b) != len(timeLayout) {
		return false
	}
	for i, c := range []byte(timeLayout) {
		if c >= '0' && c <= '9' {
			if b[i] < '0' || b[i] > '9' {
				return false
			}
		} else if b[i] != c {
			return false
		}
	}
	num := func(i, n int) int {
		v := 0
		for _, c := range b[i : i+n] {
			v = v*10 + int(c-'0')
		}
		return v
	}
	year, month, day := num(0, 4), num(5, 2), num(8, 2)
	if month < 1 || month > 12 || day < 1 || num(11, 2) > 23 || num(14, 2) > 59 || num(17, 2) > 59 {
		return false
	}
	days := [...]int{31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}[month-1]
	if month == 2 && year%4 == 0 && (year%100 != 0 || year%400 == 0) {
		days = 29
	}
	return day <= days
}

func isLowerHex(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// dec is a cursor over a line.
type dec struct {
	b []byte
	i int
}

func (d *dec) fail(what string) error {
	return fmt.Errorf("%w: %s at byte %d", errMalformed, what, d.i)
}

func (d *dec) lit(s string) bool {
	if len(d.b)-d.i >= len(s) && string(d.b[d.i:d.i+len(s)]) == s {
		d.i += len(s)
		return true
	}
	return false
}

// uint reads a canonical unsigned decimal (no sign, no leading zero).
func (d *dec) uint() (uint64, bool) {
	start := d.i
	var n uint64
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		c := uint64(d.b[d.i] - '0')
		if n > (1<<64-1-c)/10 {
			return 0, false
		}
		n = n*10 + c
		d.i++
	}
	if d.i == start || d.b[start] == '0' && d.i-start > 1 {
		return 0, false
	}
	return n, true
}

// int reads a canonical int64 ("-0" is not canonical).
func (d *dec) int() (int64, bool) {
	neg := d.lit("-")
	u, ok := d.uint()
	if !ok {
		return 0, false
	}
	if neg {
		if u == 0 || u > 1<<63 {
			return 0, false
		}
		return -int64(u-1) - 1, true
	}
	if u > 1<<63-1 {
		return 0, false
	}
	return int64(u), true
}

func (d *dec) hex32(dst *[32]byte) bool {
	if len(d.b)-d.i < 64 {
		return false
	}
	src := d.b[d.i : d.i+64]
	var bad byte
	for i := range 32 {
		hi, lo := unhexTable[src[2*i]], unhexTable[src[2*i+1]]
		bad |= hi | lo
		dst[i] = hi<<4 | lo&0xf
	}
	if bad > 15 {
		return false
	}
	d.i += 64
	return true
}

// unhexTable maps lowercase hex digits to their value, all else to 255.
var unhexTable = func() (t [256]byte) {
	for i := range t {
		t[i] = 255
	}
	for i, c := range []byte(hexdigits) {
		t[c] = byte(i)
	}
	return t
}()

// unhex decodes a lowercase hex digit; 255 for anything else.
func unhex(c byte) byte { return unhexTable[c] }

// str reads a canonical JSON string (see appendString).
func (d *dec) str() (rawString, bool) {
	if !d.lit(`"`) {
		return rawString{}, false
	}
	start := d.i
	esc := false
	decoded := 0
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			s := rawString{b: d.b[start:d.i], esc: esc}
			d.i++
			return s, decoded <= maxStringBytes
		case c == '\\':
			if d.i+1 >= len(d.b) {
				return rawString{}, false
			}
			esc = true
			switch d.b[d.i+1] {
			case '"', '\\':
				d.i += 2
				decoded++
			case 'u':
				if d.i+6 > len(d.b) {
					return rawString{}, false
				}
				var r rune
				for _, h := range d.b[d.i+2 : d.i+6] {
					x := unhex(h)
					if x > 15 {
						return rawString{}, false
					}
					r = r<<4 | rune(x)
				}
				if !mustEscape(r) {
					return rawString{}, false
				}
				d.i += 6
				decoded += utf8.RuneLen(r)
			default:
				return rawString{}, false
			}
		case c < 0x20 || c == 0x7f:
			return rawString{}, false
		case c < utf8.RuneSelf:
			d.i++
			decoded++
		default:
			r, size := utf8.DecodeRune(d.b[d.i:])
			if r == utf8.RuneError && size == 1 || mustEscape(r) {
				return rawString{}, false
			}
			d.i += size
			decoded += size
		}
	}
	return rawString{}, false
}

// value reads a field value into f.
func (d *dec) value(f *rawField) bool {
	if d.i >= len(d.b) {
		return false
	}
	switch c := d.b[d.i]; {
	case c == '"':
		s, ok := d.str()
		f.kind, f.str = KindString, s
		return ok
	case c == '-' || c >= '0' && c <= '9':
		n, ok := d.int()
		f.kind, f.num = KindInt, n
		return ok
	case d.lit("true"):
		f.kind, f.num = KindBool, 1
		return true
	case d.lit("false"):
		f.kind, f.num = KindBool, 0
		return true
	case d.lit(`{"bytes":`):
		n, ok := d.uint()
		if !ok || n > 1<<63-1 {
			return false
		}
		f.kind, f.num = KindBytes, int64(n)
		return d.lit("}")
	case d.lit(`{"sha256":"`):
		f.kind = KindDigest
		return d.hex32(&f.dig) && d.lit(`"}`)
	}
	return false
}

// unescape decodes the content of a canonical JSON string.
func unescape(dst, s []byte) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		i++
		switch s[i] {
		case 'u':
			var r rune
			for _, h := range s[i+1 : i+5] {
				r = r<<4 | rune(unhex(h))
			}
			dst = utf8.AppendRune(dst, r)
			i += 4
		default:
			dst = append(dst, s[i])
		}
	}
	return dst
}
