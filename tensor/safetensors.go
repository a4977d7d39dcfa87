package tensor

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits of the safetensors parser. See the package documentation.
const (
	// MaxSafetensorsHeader is the largest header length N accepted: the
	// reference implementation's MAX_HEADER_SIZE.
	MaxSafetensorsHeader = 100_000_000
	// MaxTensors is the most tensors a file may hold.
	MaxTensors = 1_000_000
	// MaxNameLen is the longest tensor name, in bytes.
	MaxNameLen = 1024
	// MaxRank is the most dimensions a tensor may have.
	MaxRank = 16
)

// safetensorsDTypes are the dtypes accepted, with their sizes in bytes.
var safetensorsDTypes = map[string]int64{
	"BOOL": 1, "U8": 1, "I8": 1,
	"F8_E5M2": 1, "F8_E4M3": 1, "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1, "F8_E8M0": 1,
	"I16": 2, "U16": 2, "F16": 2, "BF16": 2,
	"I32": 4, "U32": 4, "F32": 4,
	"I64": 8, "U64": 8, "F64": 8, "C64": 8,
}

// subByteDTypes are known safetensors dtypes this package does not support.
var subByteDTypes = map[string]bool{"F4": true, "F6_E2M3": true, "F6_E3M2": true}

const metadataKey = "__metadata__"

// malformed returns an error that wraps [ErrMalformed].
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// SafetensorsHeaderLen reads the 8-byte little-endian header length N from
// the first 8 bytes of a safetensors file of fileSize bytes and returns 8+N,
// the prefix a caller must buffer to parse the header. It fails when first8
// is shorter than 8 bytes, N is 0 or over [MaxSafetensorsHeader], or 8+N is
// over fileSize.
func SafetensorsHeaderLen(first8 []byte, fileSize int64) (int64, error) {
	if len(first8) < 8 || fileSize < 8 {
		return 0, malformed("safetensors: file shorter than the 8-byte header length")
	}
	n := binary.LittleEndian.Uint64(first8)
	switch {
	case n == 0:
		return 0, malformed("safetensors: header length 0")
	case n > MaxSafetensorsHeader:
		return 0, malformed("safetensors: header length %d over the limit of %d", n, MaxSafetensorsHeader)
	case int64(n) > fileSize-8:
		return 0, malformed("safetensors: header length %d runs past the end of the %d-byte file", n, fileSize)
	}
	return 8 + int64(n), nil
}

// ReadSafetensors reads and parses the header of a safetensors file of size
// bytes from r. Errors from r are returned wrapped, without [ErrMalformed].
func ReadSafetensors(r io.ReaderAt, size int64) (*Map, error) {
	var first8 [8]byte
	if size >= 8 {
		if err := readFull(r, first8[:], 0); err != nil {
			return nil, err
		}
	}
	n, err := SafetensorsHeaderLen(first8[:], size)
	if err != nil {
		return nil, err
	}
	prefix := make([]byte, n)
	if err := readFull(r, prefix, 0); err != nil {
		return nil, err
	}
	return ParseSafetensors(prefix, size)
}

// readFull fills b from r at off; a short read is an error.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("tensor: reading %d bytes at offset %d: %w", len(b), off, err)
}

// ParseSafetensors parses the header of a safetensors file of fileSize
// bytes. prefix is exactly the first 8+N bytes of the file, the header
// length included (see [SafetensorsHeaderLen]). The rules it enforces are
// in the package documentation.
func ParseSafetensors(prefix []byte, fileSize int64) (*Map, error) {
	return parseSafetensors(prefix, fileSize, MaxTensors)
}

// parseSafetensors is [ParseSafetensors] with at most maxTensors tensors,
// so that tests reach the limit without a header of 50 MB.
func parseSafetensors(prefix []byte, fileSize int64, maxTensors int) (*Map, error) {
	total, err := SafetensorsHeaderLen(prefix, fileSize)
	if err != nil {
		return nil, err
	}
	if int64(len(prefix)) != total {
		return nil, malformed("safetensors: header of %d bytes, got a prefix of %d bytes", total-8, len(prefix))
	}
	header := prefix[8:]
	if !utf8.Valid(header) {
		return nil, malformed("safetensors: header is not valid UTF-8")
	}
	if header[0] != '{' {
		return nil, malformed("safetensors: header does not start with '{'")
	}
	p := stParser{
		dec:        json.NewDecoder(bytes.NewReader(header)),
		dataSize:   fileSize - total,
		maxTensors: maxTensors,
	}
	p.dec.UseNumber()
	m, err := p.parse()
	if err != nil {
		return nil, err
	}
	// Only spaces may follow the object.
	if rest := header[p.dec.InputOffset():]; len(bytes.TrimRight(rest, " ")) != 0 {
		return nil, malformed("safetensors: header has bytes other than spaces after the JSON object, at header offset %d", p.dec.InputOffset())
	}
	m.Size = fileSize
	m.DataStart = total
	for i := range m.Tensors {
		m.Tensors[i].Offset += total
	}
	if err := checkLayout(m); err != nil {
		return nil, err
	}
	return m, nil
}

// stParser reads a safetensors header with a streaming JSON decoder, so
// that duplicate members and unexpected structure are seen.
type stParser struct {
	dec        *json.Decoder
	dataSize   int64 // bytes in the data buffer
	maxTensors int   // the most tensors accepted: MaxTensors but in tests
}

func (p *stParser) parse() (*Map, error) {
	if err := p.delim('{', "header"); err != nil {
		return nil, err
	}
	m := &Map{Format: "safetensors"}
	seen := make(map[string]bool)
	for p.dec.More() {
		name, err := p.key("header")
		if err != nil {
			return nil, err
		}
		if seen[name] {
			return nil, malformed("safetensors: duplicate member %s", printable(name))
		}
		seen[name] = true
		if name == metadataKey {
			if m.Metadata, err = p.metadata(); err != nil {
				return nil, err
			}
			continue
		}
		if len(m.Tensors) == p.maxTensors {
			return nil, malformed("safetensors: more than %d tensors", p.maxTensors)
		}
		t, err := p.tensor(name)
		if err != nil {
			return nil, err
		}
		m.Tensors = append(m.Tensors, t)
	}
	if err := p.delim('}', "header"); err != nil {
		return nil, err
	}
	return m, nil
}

// token returns the next token; syntax errors and the end of the header
// are malformed input.
func (p *stParser) token(where string) (json.Token, error) {
	tok, err := p.dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, malformed("safetensors: %s: %v", where, err)
	}
	return tok, nil
}

func (p *stParser) delim(want json.Delim, where string) error {
	tok, err := p.token(where)
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return malformed("safetensors: %s: got %s, want %q", where, describe(tok), string(want))
	}
	return nil
}

// key reads an object member's name.
func (p *stParser) key(where string) (string, error) {
	tok, err := p.token(where)
	if err != nil {
		return "", err
	}
	s, ok := tok.(string)
	if !ok { // the decoder only returns strings for keys; be safe anyway
		return "", malformed("safetensors: %s: got %s for a member name", where, describe(tok))
	}
	if strings.ContainsRune(s, utf8.RuneError) {
		return "", malformed("safetensors: %s: member name %s holds U+FFFD or an invalid escape", where, printable(s))
	}
	return s, nil
}

// str reads a string value.
func (p *stParser) str(where string) (string, error) {
	tok, err := p.token(where)
	if err != nil {
		return "", err
	}
	s, ok := tok.(string)
	if !ok {
		return "", malformed("safetensors: %s: got %s, want a string", where, describe(tok))
	}
	if strings.ContainsRune(s, utf8.RuneError) {
		return "", malformed("safetensors: %s: string %s holds U+FFFD or an invalid escape", where, printable(s))
	}
	return s, nil
}

// integer reads a non-negative integer in plain decimal digits.
func (p *stParser) integer(where string) (int64, error) {
	tok, err := p.token(where)
	if err != nil {
		return 0, err
	}
	num, ok := tok.(json.Number)
	if !ok {
		return 0, malformed("safetensors: %s: got %s, want an integer", where, describe(tok))
	}
	s := string(num)
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, malformed("safetensors: %s: %s is not a non-negative integer", where, s)
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, malformed("safetensors: %s: %s out of range", where, s)
	}
	return v, nil
}

func (p *stParser) metadata() (map[string]string, error) {
	const where = "__metadata__"
	if err := p.delim('{', where); err != nil {
		return nil, err
	}
	md := make(map[string]string)
	for p.dec.More() {
		k, err := p.key(where)
		if err != nil {
			return nil, err
		}
		if _, dup := md[k]; dup {
			return nil, malformed("safetensors: __metadata__: duplicate key %s", printable(k))
		}
		v, err := p.str(where + " " + printable(k))
		if err != nil {
			return nil, err
		}
		md[k] = v
	}
	if err := p.delim('}', where); err != nil {
		return nil, err
	}
	return md, nil
}

func (p *stParser) tensor(name string) (Tensor, error) {
	where := "tensor " + printable(name)
	if name == "" {
		return Tensor{}, malformed("safetensors: tensor with an empty name")
	}
	if len(name) > MaxNameLen {
		return Tensor{}, malformed("safetensors: tensor name of %d bytes (%.40s...) over the limit of %d", len(name), printable(name), MaxNameLen)
	}
	if err := p.delim('{', where); err != nil {
		return Tensor{}, err
	}
	t := Tensor{Name: name}
	var (
		haveDType, haveShape, haveOffsets bool
		begin, end                        int64
	)
	for p.dec.More() {
		field, err := p.key(where)
		if err != nil {
			return Tensor{}, err
		}
		switch field {
		case "dtype":
			if haveDType {
				return Tensor{}, malformed("safetensors: %s: duplicate member \"dtype\"", where)
			}
			haveDType = true
			if t.DType, err = p.str(where + " dtype"); err != nil {
				return Tensor{}, err
			}
		case "shape":
			if haveShape {
				return Tensor{}, malformed("safetensors: %s: duplicate member \"shape\"", where)
			}
			haveShape = true
			if t.Shape, err = p.shape(where + " shape"); err != nil {
				return Tensor{}, err
			}
		case "data_offsets":
			if haveOffsets {
				return Tensor{}, malformed("safetensors: %s: duplicate member \"data_offsets\"", where)
			}
			haveOffsets = true
			if begin, end, err = p.offsets(where + " data_offsets"); err != nil {
				return Tensor{}, err
			}
		default:
			return Tensor{}, malformed("safetensors: %s: unknown member %s", where, printable(field))
		}
	}
	if err := p.delim('}', where); err != nil {
		return Tensor{}, err
	}
	switch {
	case !haveDType:
		return Tensor{}, malformed("safetensors: %s: no \"dtype\"", where)
	case !haveShape:
		return Tensor{}, malformed("safetensors: %s: no \"shape\"", where)
	case !haveOffsets:
		return Tensor{}, malformed("safetensors: %s: no \"data_offsets\"", where)
	}
	size, ok := safetensorsDTypes[t.DType]
	if !ok {
		if subByteDTypes[t.DType] {
			return Tensor{}, malformed("safetensors: %s: dtype %s is not supported", where, t.DType)
		}
		return Tensor{}, malformed("safetensors: %s: unknown dtype %s", where, printable(t.DType))
	}
	want, ok := mulShape(t.Shape, size)
	if !ok {
		return Tensor{}, malformed("safetensors: %s: shape %v of %s overflows", where, t.Shape, t.DType)
	}
	if end-begin != want {
		return Tensor{}, malformed("safetensors: %s: data_offsets [%d %d] hold %d bytes, %s %v needs %d", where, begin, end, end-begin, t.DType, t.Shape, want)
	}
	if end > p.dataSize {
		return Tensor{}, malformed("safetensors: %s: data_offsets [%d %d] run past the %d-byte data buffer", where, begin, end, p.dataSize)
	}
	t.Offset, t.Length = begin, end-begin
	return t, nil
}

// mulShape returns the product of shape and elem, multiplied left to right,
// and false when a partial product overflows an int64. Dimensions are
// non-negative.
func mulShape(shape []int64, elem int64) (int64, bool) {
	n := int64(1)
	for _, d := range shape {
		if d != 0 && n > math.MaxInt64/d {
			return 0, false
		}
		n *= d
	}
	if elem != 0 && n > math.MaxInt64/elem {
		return 0, false
	}
	return n * elem, true
}

func (p *stParser) shape(where string) ([]int64, error) {
	if err := p.delim('[', where); err != nil {
		return nil, err
	}
	shape := []int64{}
	for p.dec.More() {
		if len(shape) == MaxRank {
			return nil, malformed("safetensors: %s: more than %d dimensions", where, MaxRank)
		}
		d, err := p.integer(where)
		if err != nil {
			return nil, err
		}
		shape = append(shape, d)
	}
	if err := p.delim(']', where); err != nil {
		return nil, err
	}
	return shape, nil
}

func (p *stParser) offsets(where string) (begin, end int64, err error) {
	if err := p.delim('[', where); err != nil {
		return 0, 0, err
	}
	if begin, err = p.integer(where); err != nil {
		return 0, 0, err
	}
	if end, err = p.integer(where); err != nil {
		return 0, 0, err
	}
	if p.dec.More() {
		return 0, 0, malformed("safetensors: %s: more than two offsets", where)
	}
	if err := p.delim(']', where); err != nil {
		return 0, 0, err
	}
	if begin > end {
		return 0, 0, malformed("safetensors: %s: begin %d after end %d", where, begin, end)
	}
	return begin, end, nil
}

// describe names a JSON token for an error message, without echoing long
// or raw input.
func describe(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		return strconv.Quote(string(v))
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return "an unexpected token"
}

// checkLayout sorts m.Tensors and checks that tensors do not overlap. It
// sets m.dataEnd.
func checkLayout(m *Map) error {
	slices.SortFunc(m.Tensors, func(a, b Tensor) int {
		return cmp.Or(cmp.Compare(a.Offset, b.Offset), cmp.Compare(a.Length, b.Length), strings.Compare(a.Name, b.Name))
	})
	// last is the tensor of nonzero length that ends furthest.
	var last *Tensor
	for i := range m.Tensors {
		t := &m.Tensors[i]
		if last != nil && t.Offset < last.End() && (t.Length > 0 || t.Offset > last.Offset) {
			d := m.DataStart
			return malformed("%s: tensor %s at data offsets [%d, %d) overlaps tensor %s at [%d, %d)", m.Format,
				printable(t.Name), t.Offset-d, t.End()-d, printable(last.Name), last.Offset-d, last.End()-d)
		}
		if t.Length > 0 {
			last = t
		}
	}
	m.dataEnd = m.DataStart
	if last != nil {
		m.dataEnd = last.End()
	}
	return nil
}
