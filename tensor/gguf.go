package tensor

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strconv"
	"unicode/utf8"
)

// Limits of the GGUF parser. See the package documentation.
const (
	// MaxGGUFTensors is the most tensors a GGUF file may hold.
	MaxGGUFTensors = 1_000_000
	// MaxGGUFKVs is the most metadata key-value pairs a GGUF file may hold.
	MaxGGUFKVs = 1_000_000
	// MaxGGUFString is the longest string, in bytes, of GGUF metadata.
	MaxGGUFString = 64 << 20
	// MaxGGUFArray is the most elements of one GGUF metadata array.
	MaxGGUFArray = 1 << 26
	// maxGGUFDims is GGML_MAX_DIMS.
	maxGGUFDims = 4
	// defaultGGUFAlignment applies when general.alignment is absent.
	defaultGGUFAlignment = 32
)

// ggmlType is a ggml tensor type: its name, and the bytes of one block of
// blockSize elements.
type ggmlType struct {
	name      string
	blockSize int64
	typeSize  int64
}

// ggmlTypes are the ggml types by number, as in ggml.h (enum ggml_type);
// numbers of removed types are absent.
var ggmlTypes = map[uint32]ggmlType{
	0: {"F32", 1, 4}, 1: {"F16", 1, 2},
	2: {"Q4_0", 32, 18}, 3: {"Q4_1", 32, 20},
	6: {"Q5_0", 32, 22}, 7: {"Q5_1", 32, 24},
	8: {"Q8_0", 32, 34}, 9: {"Q8_1", 32, 36},
	10: {"Q2_K", 256, 84}, 11: {"Q3_K", 256, 110}, 12: {"Q4_K", 256, 144},
	13: {"Q5_K", 256, 176}, 14: {"Q6_K", 256, 210}, 15: {"Q8_K", 256, 292},
	16: {"IQ2_XXS", 256, 66}, 17: {"IQ2_XS", 256, 74}, 18: {"IQ3_XXS", 256, 98},
	19: {"IQ1_S", 256, 50}, 20: {"IQ4_NL", 32, 18}, 21: {"IQ3_S", 256, 110},
	22: {"IQ2_S", 256, 82}, 23: {"IQ4_XS", 256, 136},
	24: {"I8", 1, 1}, 25: {"I16", 1, 2}, 26: {"I32", 1, 4}, 27: {"I64", 1, 8},
	28: {"F64", 1, 8}, 29: {"IQ1_M", 256, 56}, 30: {"BF16", 1, 2},
	34: {"TQ1_0", 256, 54}, 35: {"TQ2_0", 256, 66}, 39: {"MXFP4", 32, 17},
}

// GGUF metadata value types.
const (
	ggufUint8 = iota
	ggufInt8
	ggufUint16
	ggufInt16
	ggufUint32
	ggufInt32
	ggufFloat32
	ggufBool
	ggufString
	ggufArray
	ggufUint64
	ggufInt64
	ggufFloat64
)

// ggufFixedSize is the size of each fixed-size value type.
var ggufFixedSize = [...]int64{
	ggufUint8: 1, ggufInt8: 1, ggufUint16: 2, ggufInt16: 2, ggufUint32: 4, ggufInt32: 4,
	ggufFloat32: 4, ggufBool: 1, ggufString: 0, ggufArray: 0, ggufUint64: 8, ggufInt64: 8, ggufFloat64: 8,
}

// ggufReader reads a GGUF header sequentially, never past size.
type ggufReader struct {
	r    *bufio.Reader
	off  int64
	size int64
	buf  [8]byte
}

func (g *ggufReader) read(n int, what string) ([]byte, error) {
	if int64(n) > g.size-g.off {
		return nil, malformed("gguf: %s at offset %d runs past the end of the %d-byte file", what, g.off, g.size)
	}
	b := g.buf[:n]
	if _, err := io.ReadFull(g.r, b); err != nil {
		return nil, fmt.Errorf("tensor: gguf: reading %s at offset %d: %w", what, g.off, err)
	}
	g.off += int64(n)
	return b, nil
}

func (g *ggufReader) u32(what string) (uint32, error) {
	b, err := g.read(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (g *ggufReader) u64(what string) (uint64, error) {
	b, err := g.read(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// skip discards n bytes.
func (g *ggufReader) skip(n int64, what string) error {
	if n > g.size-g.off {
		return malformed("gguf: %s at offset %d runs past the end of the %d-byte file", what, g.off, g.size)
	}
	if _, err := g.r.Discard(int(n)); err != nil {
		return fmt.Errorf("tensor: gguf: reading %s at offset %d: %w", what, g.off, err)
	}
	g.off += n
	return nil
}

// str reads a string: u64 length, then bytes. With keep false, it skips
// the bytes and returns "".
func (g *ggufReader) str(what string, max int64, keep bool) (string, error) {
	at := g.off
	n, err := g.u64(what + " length")
	if err != nil {
		return "", err
	}
	if n > uint64(max) {
		return "", malformed("gguf: %s at offset %d: length %d over the limit of %d", what, at, n, max)
	}
	if int64(n) > g.size-g.off {
		return "", malformed("gguf: %s at offset %d: length %d runs past the end of the %d-byte file", what, at, n, g.size)
	}
	if !keep {
		return "", g.skip(int64(n), what)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(g.r, b); err != nil {
		return "", fmt.Errorf("tensor: gguf: reading %s at offset %d: %w", what, g.off, err)
	}
	g.off += int64(n)
	if !utf8.Valid(b) {
		return "", malformed("gguf: %s at offset %d is not valid UTF-8", what, at)
	}
	return string(b), nil
}

// ParseGGUF reads and parses the header of a GGUF file (version 2 or 3) of
// size bytes from r. Errors from r are returned wrapped, without
// [ErrMalformed]. The rules it enforces are in the package documentation.
func ParseGGUF(r io.ReaderAt, size int64) (*Map, error) {
	if size < 0 {
		return nil, malformed("gguf: negative file size %d", size)
	}
	g := &ggufReader{r: bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 64<<10), size: size}
	b, err := g.read(4, "magic")
	if err != nil {
		return nil, err
	}
	if string(b) != "GGUF" {
		return nil, malformed("gguf: bad magic %q", b)
	}
	version, err := g.u32("version")
	if err != nil {
		return nil, err
	}
	if version != 2 && version != 3 {
		return nil, malformed("gguf: version %d not supported (want 2 or 3)", version)
	}
	nt, err := g.u64("tensor count")
	if err != nil {
		return nil, err
	}
	nkv, err := g.u64("metadata count")
	if err != nil {
		return nil, err
	}
	if nt > MaxGGUFTensors {
		return nil, malformed("gguf: %d tensors over the limit of %d", nt, MaxGGUFTensors)
	}
	if nkv > MaxGGUFKVs {
		return nil, malformed("gguf: %d metadata pairs over the limit of %d", nkv, MaxGGUFKVs)
	}
	// Each pair takes at least 13 bytes, each tensor info at least 24.
	if rest := uint64(size - g.off); nkv*13+nt*24 > rest {
		return nil, malformed("gguf: %d metadata pairs and %d tensors cannot fit in %d bytes", nkv, nt, rest)
	}
	m := &Map{Format: "gguf", Size: size, Metadata: make(map[string]string)}
	alignment := int64(defaultGGUFAlignment)
	seen := make(map[string]bool, nkv)
	for range nkv {
		at := g.off
		key, err := g.str("metadata key", MaxGGUFString, true)
		if err != nil {
			return nil, err
		}
		if key == "" {
			return nil, malformed("gguf: empty metadata key at offset %d", at)
		}
		if seen[key] {
			return nil, malformed("gguf: duplicate metadata key %s at offset %d", printable(key), at)
		}
		typ, err := g.u32("metadata type")
		if err != nil {
			return nil, err
		}
		where := "metadata " + printable(key)
		if key == "general.alignment" {
			if typ != ggufUint32 {
				return nil, malformed("gguf: %s at offset %d: type %d, want UINT32", where, at, typ)
			}
			a, err := g.u32(where)
			if err != nil {
				return nil, err
			}
			if a == 0 || a&(a-1) != 0 {
				return nil, malformed("gguf: %s at offset %d: %d is not a power of two", where, at, a)
			}
			alignment = int64(a)
			seen[key] = true
			m.Metadata[key] = strconv.FormatUint(uint64(a), 10)
			continue
		}
		v, scalar, err := g.value(typ, where)
		if err != nil {
			return nil, err
		}
		seen[key] = true
		if scalar {
			m.Metadata[key] = v
		}
	}
	names := make(map[string]bool, nt)
	for range nt {
		at := g.off
		name, err := g.str("tensor name", MaxNameLen, true)
		if err != nil {
			return nil, err
		}
		where := "tensor " + printable(name)
		if name == "" {
			return nil, malformed("gguf: tensor with an empty name at offset %d", at)
		}
		if names[name] {
			return nil, malformed("gguf: duplicate %s at offset %d", where, at)
		}
		names[name] = true
		nd, err := g.u32(where + " dimension count")
		if err != nil {
			return nil, err
		}
		if nd > maxGGUFDims {
			return nil, malformed("gguf: %s at offset %d: %d dimensions, at most %d", where, at, nd, maxGGUFDims)
		}
		t := Tensor{Name: name, Shape: make([]int64, nd)}
		for i := range t.Shape {
			d, err := g.u64(where + " dimension")
			if err != nil {
				return nil, err
			}
			if d > math.MaxInt64 {
				return nil, malformed("gguf: %s at offset %d: dimension %d out of range", where, at, d)
			}
			t.Shape[i] = int64(d)
		}
		tn, err := g.u32(where + " type")
		if err != nil {
			return nil, err
		}
		typ, ok := ggmlTypes[tn]
		if !ok {
			return nil, malformed("gguf: %s at offset %d: unknown ggml type %d", where, at, tn)
		}
		t.DType = typ.name
		off, err := g.u64(where + " offset")
		if err != nil {
			return nil, err
		}
		if off > math.MaxInt64 || int64(off)%alignment != 0 {
			return nil, malformed("gguf: %s at offset %d: data offset %d is not a multiple of the alignment %d", where, at, off, alignment)
		}
		ne0 := int64(1)
		if nd > 0 {
			ne0 = t.Shape[0]
		}
		if ne0%typ.blockSize != 0 {
			return nil, malformed("gguf: %s at offset %d: first dimension %d is not a multiple of the %s block size %d", where, at, ne0, typ.name, typ.blockSize)
		}
		rows := int64(1)
		if nd > 1 {
			var ok bool
			if rows, ok = mulShape(t.Shape[1:], 1); !ok {
				return nil, malformed("gguf: %s at offset %d: shape %v overflows", where, at, t.Shape)
			}
		}
		n, ok := mulShape([]int64{ne0 / typ.blockSize, rows}, typ.typeSize)
		if !ok {
			return nil, malformed("gguf: %s at offset %d: shape %v of %s overflows", where, at, t.Shape, typ.name)
		}
		t.Offset, t.Length = int64(off), n
		m.Tensors = append(m.Tensors, t)
	}
	// The data starts at the next multiple of the alignment.
	ds := g.off
	if pad := ds % alignment; pad != 0 {
		ds += alignment - pad
	}
	if ds > size {
		if nt > 0 {
			return nil, malformed("gguf: tensor data would start at %d, past the end of the %d-byte file", ds, size)
		}
		ds = size
	}
	m.DataStart = ds
	for i := range m.Tensors {
		t := &m.Tensors[i]
		if t.Offset > size-ds || t.Length > size-ds-t.Offset {
			return nil, malformed("gguf: tensor %s at data offset %d, %d bytes, runs past the end of the %d-byte file", printable(t.Name), t.Offset, t.Length, size)
		}
		t.Offset += ds
	}
	if err := checkLayout(m); err != nil {
		return nil, err
	}
	return m, nil
}

// value reads a metadata value of type typ. For a scalar it returns the
// value formatted for [Map.Metadata] (strings as they are, numbers in
// decimal, booleans as "true" or "false") and true; it skips an array and
// returns false.
func (g *ggufReader) value(typ uint32, where string) (string, bool, error) {
	at := g.off
	switch typ {
	case ggufString:
		s, err := g.str(where, MaxGGUFString, true)
		return s, err == nil, err
	case ggufArray:
		et, err := g.u32(where + " array type")
		if err != nil {
			return "", false, err
		}
		n, err := g.u64(where + " array length")
		if err != nil {
			return "", false, err
		}
		if n > MaxGGUFArray {
			return "", false, malformed("gguf: %s at offset %d: array of %d over the limit of %d", where, at, n, MaxGGUFArray)
		}
		switch {
		case et == ggufArray:
			return "", false, malformed("gguf: %s at offset %d: nested array", where, at)
		case et == ggufString:
			for range n {
				if _, err := g.str(where, MaxGGUFString, false); err != nil {
					return "", false, err
				}
			}
			return "", false, nil
		case et < uint32(len(ggufFixedSize)):
			return "", false, g.skip(int64(n)*ggufFixedSize[et], where)
		default:
			return "", false, malformed("gguf: %s at offset %d: unknown array element type %d", where, at, et)
		}
	}
	if typ >= uint32(len(ggufFixedSize)) {
		return "", false, malformed("gguf: %s at offset %d: unknown value type %d", where, at, typ)
	}
	s, err := g.scalar(typ, where)
	return s, err == nil, err
}

// scalar reads a fixed-size value of type typ and formats it.
func (g *ggufReader) scalar(typ uint32, where string) (string, error) {
	at := g.off
	b, err := g.read(int(ggufFixedSize[typ]), where)
	if err != nil {
		return "", err
	}
	switch typ {
	case ggufUint8:
		return strconv.FormatUint(uint64(b[0]), 10), nil
	case ggufInt8:
		return strconv.FormatInt(int64(int8(b[0])), 10), nil
	case ggufUint16:
		return strconv.FormatUint(uint64(binary.LittleEndian.Uint16(b)), 10), nil
	case ggufInt16:
		return strconv.FormatInt(int64(int16(binary.LittleEndian.Uint16(b))), 10), nil
	case ggufUint32:
		return strconv.FormatUint(uint64(binary.LittleEndian.Uint32(b)), 10), nil
	case ggufInt32:
		return strconv.FormatInt(int64(int32(binary.LittleEndian.Uint32(b))), 10), nil
	case ggufFloat32:
		return strconv.FormatFloat(float64(math.Float32frombits(binary.LittleEndian.Uint32(b))), 'g', -1, 32), nil
	case ggufBool:
		if b[0] > 1 {
			return "", malformed("gguf: %s at offset %d: boolean %d", where, at, b[0])
		}
		return strconv.FormatBool(b[0] == 1), nil
	case ggufUint64:
		return strconv.FormatUint(binary.LittleEndian.Uint64(b), 10), nil
	case ggufInt64:
		return strconv.FormatInt(int64(binary.LittleEndian.Uint64(b)), 10), nil
	default: // ggufFloat64
		return strconv.FormatFloat(math.Float64frombits(binary.LittleEndian.Uint64(b)), 'g', -1, 64), nil
	}
}
