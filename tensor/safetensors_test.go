package tensor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
)

// stFile returns a safetensors file with the given header and data buffer
// length (zero bytes).
func stFile(header string, dataLen int) []byte {
	b := make([]byte, 8, 8+len(header)+dataLen)
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, dataLen)...)
}

// parseFile parses a whole safetensors file held in memory.
func parseFile(b []byte) (*Map, error) {
	return ReadSafetensors(bytes.NewReader(b), int64(len(b)))
}

func TestParseSafetensorsValid(t *testing.T) {
	tests := []struct {
		name    string
		header  string
		dataLen int
		want    []Tensor // offsets relative to the data buffer
		meta    map[string]string
	}{
		{"empty object", `{}`, 0, nil, nil},
		{"empty object padded", `{}      `, 0, nil, nil},
		{"metadata only", `{"__metadata__":{"a":"b","":""}}`, 0, nil, map[string]string{"a": "b", "": ""}},
		{"empty metadata", `{"__metadata__":{}}`, 0, nil, map[string]string{}},
		{"scalar", `{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}`, 4,
			[]Tensor{{Name: "s", DType: "F32", Shape: []int64{}, Offset: 0, Length: 4}}, nil},
		{"members in any order, whitespace", "{ \"w\" : {\"shape\":[2, 3],\n\"data_offsets\":[0,12],\t\"dtype\":\"BF16\"} }  ", 12,
			[]Tensor{{Name: "w", DType: "BF16", Shape: []int64{2, 3}, Offset: 0, Length: 12}}, nil},
		{"sorted by offset", `{"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}`, 4,
			[]Tensor{{Name: "a", DType: "U8", Shape: []int64{2}, Offset: 0, Length: 2}, {Name: "b", DType: "U8", Shape: []int64{2}, Offset: 2, Length: 2}}, nil},
		{"zero-length tensors", `{"z":{"dtype":"F64","shape":[0,5],"data_offsets":[8,8]},"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"y":{"dtype":"I8","shape":[0],"data_offsets":[0,0]}}`, 8,
			[]Tensor{{Name: "y", DType: "I8", Shape: []int64{0}, Offset: 0, Length: 0}, {Name: "a", DType: "F64", Shape: []int64{1}, Offset: 0, Length: 8}, {Name: "z", DType: "F64", Shape: []int64{0, 5}, Offset: 8, Length: 0}}, nil},
		{"holes and trailing bytes", `{"a":{"dtype":"I16","shape":[1],"data_offsets":[4,6]}}`, 10,
			[]Tensor{{Name: "a", DType: "I16", Shape: []int64{1}, Offset: 4, Length: 2}}, nil},
		{"escaped and unicode names", `{"\u00e9\n":{"dtype":"BOOL","shape":[1],"data_offsets":[0,1]},"日本":{"dtype":"C64","shape":[1],"data_offsets":[1,9]}}`, 9,
			[]Tensor{{Name: "é\n", DType: "BOOL", Shape: []int64{1}, Offset: 0, Length: 1}, {Name: "日本", DType: "C64", Shape: []int64{1}, Offset: 1, Length: 8}}, nil},
		{"every dtype size", `{"a":{"dtype":"F8_E4M3","shape":[3],"data_offsets":[0,3]},"b":{"dtype":"U16","shape":[3],"data_offsets":[3,9]},"c":{"dtype":"U32","shape":[3],"data_offsets":[9,21]},"d":{"dtype":"U64","shape":[3],"data_offsets":[21,45]}}`, 45,
			[]Tensor{{Name: "a", DType: "F8_E4M3", Shape: []int64{3}, Length: 3}, {Name: "b", DType: "U16", Shape: []int64{3}, Offset: 3, Length: 6}, {Name: "c", DType: "U32", Shape: []int64{3}, Offset: 9, Length: 12}, {Name: "d", DType: "U64", Shape: []int64{3}, Offset: 21, Length: 24}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := stFile(tt.header, tt.dataLen)
			m, err := parseFile(b)
			if err != nil {
				t.Fatalf("ReadSafetensors(%q) = %v", tt.header, err)
			}
			ds := int64(8 + len(tt.header))
			if m.DataStart != ds || m.Size != int64(len(b)) || m.Format != "safetensors" {
				t.Errorf("ReadSafetensors(%q) = {%q %d %d}, want {safetensors %d %d}", tt.header, m.Format, m.Size, m.DataStart, len(b), ds)
			}
			want := slices.Clone(tt.want)
			for i := range want {
				want[i].Offset += ds
			}
			if len(m.Tensors) != len(want) {
				t.Fatalf("ReadSafetensors(%q) tensors = %+v, want %+v", tt.header, m.Tensors, want)
			}
			for i := range want {
				g, w := m.Tensors[i], want[i]
				if g.Name != w.Name || g.DType != w.DType || !slices.Equal(g.Shape, w.Shape) || g.Offset != w.Offset || g.Length != w.Length {
					t.Errorf("ReadSafetensors(%q) tensor %d = %+v, want %+v", tt.header, i, g, w)
				}
			}
			if (m.Metadata == nil) != (tt.meta == nil) || fmt.Sprint(m.Metadata) != fmt.Sprint(tt.meta) {
				t.Errorf("ReadSafetensors(%q) metadata = %#v, want %#v", tt.header, m.Metadata, tt.meta)
			}
		})
	}
}

func TestParseSafetensorsRejects(t *testing.T) {
	long := strings.Repeat("n", MaxNameLen+1)
	var many strings.Builder
	many.WriteString("[")
	for i := range MaxRank + 1 {
		if i > 0 {
			many.WriteString(",")
		}
		many.WriteString("1")
	}
	many.WriteString("]")
	tensor := func(name, dtype, shape, offsets string) string {
		return fmt.Sprintf(`{%q:{"dtype":%q,"shape":%s,"data_offsets":%s}}`, name, dtype, shape, offsets)
	}
	tests := []struct {
		name    string
		header  string
		dataLen int
		want    string // in the error message
	}{
		{"not utf-8", "{\"\xff\":1}", 0, "UTF-8"},
		{"leading space", ` {}`, 0, "start with '{'"},
		{"array", `[]`, 0, "start with '{'"},
		{"trailing newline", "{}\n", 0, "other than spaces"},
		{"trailing nul", "{}\x00", 0, "other than spaces"},
		{"two objects", `{} {}`, 0, "other than spaces"},
		{"unterminated", `{"a":`, 0, "unexpected EOF"},
		{"unterminated object", `{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}`, 1, "header: unexpected EOF"},
		{"syntax", `{"a"}`, 0, "invalid character"},
		{"duplicate tensor", `{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, 2, `duplicate member a`},
		{"duplicate by escape", `{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"\u0061":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, 2, `duplicate member a`},
		{"duplicate metadata", `{"__metadata__":{},"__metadata__":{}}`, 0, "duplicate member __metadata__"},
		{"duplicate metadata key", `{"__metadata__":{"k":"1","k":"2"}}`, 0, "duplicate key k"},
		{"metadata not object", `{"__metadata__":"x"}`, 0, "__metadata__"},
		{"metadata number value", `{"__metadata__":{"k":1}}`, 0, "want a string"},
		{"metadata nested", `{"__metadata__":{"k":{}}}`, 0, "want a string"},
		{"metadata null", `{"__metadata__":null}`, 0, "__metadata__"},
		{"lone surrogate", `{"\ud800":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 1, "U+FFFD"},
		{"literal replacement char", `{"__metadata__":{"k":"\ufffd"}}`, 0, "U+FFFD"},
		{"tensor not object", `{"a":[]}`, 0, `tensor a`},
		{"tensor null", `{"a":null}`, 0, `tensor a`},
		{"empty name", tensor("", "U8", "[1]", "[0,1]"), 1, "empty name"},
		{"long name", tensor(long, "U8", "[1]", "[0,1]"), 1, "over the limit"},
		{"unknown member", `{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1}}`, 1, "unknown member x"},
		{"duplicate dtype", `{"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 1, `duplicate member "dtype"`},
		{"duplicate shape", `{"a":{"dtype":"U8","shape":[1],"shape":[1],"data_offsets":[0,1]}}`, 1, `duplicate member "shape"`},
		{"duplicate offsets", `{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"data_offsets":[0,1]}}`, 1, `duplicate member "data_offsets"`},
		{"no dtype", `{"a":{"shape":[1],"data_offsets":[0,1]}}`, 1, `no "dtype"`},
		{"no shape", `{"a":{"dtype":"U8","data_offsets":[0,1]}}`, 1, `no "shape"`},
		{"no offsets", `{"a":{"dtype":"U8","shape":[1]}}`, 1, `no "data_offsets"`},
		{"dtype not string", `{"a":{"dtype":1,"shape":[1],"data_offsets":[0,1]}}`, 1, "want a string"},
		{"unknown dtype", tensor("a", "F128", "[1]", "[0,1]"), 1, "unknown dtype F128"},
		{"lowercase dtype", tensor("a", "f32", "[1]", "[0,4]"), 4, "unknown dtype f32"},
		{"sub-byte dtype", tensor("a", "F4", "[2]", "[0,1]"), 1, "F4 is not supported"},
		{"shape not array", tensor("a", "U8", "1", "[0,1]"), 1, "shape"},
		{"negative dim", tensor("a", "U8", "[-1]", "[0,1]"), 1, "not a non-negative integer"},
		{"fractional dim", tensor("a", "U8", "[1.0]", "[0,1]"), 1, "not a non-negative integer"},
		{"exponent dim", tensor("a", "U8", "[1e0]", "[0,1]"), 1, "not a non-negative integer"},
		{"string dim", tensor("a", "U8", `["1"]`, "[0,1]"), 1, "want an integer"},
		{"nested shape", tensor("a", "U8", `[[1]]`, "[0,1]"), 1, "want an integer"},
		{"huge dim", tensor("a", "U8", "[9223372036854775808]", "[0,1]"), 1, "out of range"},
		{"rank over cap", tensor("a", "U8", many.String(), "[0,1]"), 1, "more than 16 dimensions"},
		{"shape overflow", tensor("a", "U8", "[4294967296,4294967296]", "[0,1]"), 1, "overflows"},
		{"shape overflow before zero", tensor("a", "U8", "[4294967296,4294967296,0]", "[0,0]"), 0, "overflows"},
		{"size overflow", tensor("a", "F64", "[4611686018427387904]", "[0,1]"), 1, "overflows"},
		{"one offset", tensor("a", "U8", "[1]", "[0]"), 1, "data_offsets"},
		{"three offsets", tensor("a", "U8", "[1]", "[0,1,2]"), 1, "more than two offsets"},
		{"offsets not array", tensor("a", "U8", "[1]", `{"0":1}`), 1, "data_offsets"},
		{"negative offset", tensor("a", "U8", "[0]", "[-1,-1]"), 0, "not a non-negative integer"},
		{"begin after end", tensor("a", "U8", "[0]", "[2,1]"), 2, "begin 2 after end 1"},
		{"length mismatch", tensor("a", "F32", "[2]", "[0,4]"), 8, "hold 4 bytes, F32 [2] needs 8"},
		{"past the data", tensor("a", "U8", "[2]", "[0,2]"), 1, "run past the 1-byte data buffer"},
		{"zero-length past the data", tensor("a", "U8", "[0]", "[2,2]"), 1, "run past"},
		{"huge offsets", tensor("a", "U8", "[1]", "[9223372036854775806,9223372036854775807]"), 1, "run past"},
		{"overlap", `{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}}`, 5, "tensor b at data offsets [3, 5) overlaps tensor a at [0, 4)"},
		{"same range", `{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}}`, 4, "overlaps"},
		{"contained", `{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"I8","shape":[1],"data_offsets":[1,2]}}`, 4, "overlaps"},
		{"zero-length inside", `{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"I8","shape":[0],"data_offsets":[2,2]}}`, 4, "overlaps"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := stFile(tt.header, tt.dataLen)
			m, err := ParseSafetensors(b[:8+len(tt.header)], int64(len(b)))
			if err == nil {
				t.Fatalf("ParseSafetensors(%q) = %+v, want error", tt.header, m)
			}
			if m != nil {
				t.Errorf("ParseSafetensors(%q) returned a map with error %v", tt.header, err)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("ParseSafetensors(%q) = %v, want ErrMalformed", tt.header, err)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "tensor: ") || !strings.Contains(msg, tt.want) {
				t.Errorf("ParseSafetensors(%q) = %q, want \"tensor: ...%s...\"", tt.header, msg, tt.want)
			}
		})
	}
}

// TestTooManyTensors checks the tensor limit at its boundary through
// parseSafetensors' limit, so that the header holds a thousand tensors
// rather than a million (50 MB, seconds of parsing): ParseSafetensors
// passes MaxTensors.
func TestTooManyTensors(t *testing.T) {
	header := func(n int) []byte {
		var h strings.Builder
		h.WriteString("{")
		for i := range n {
			if i > 0 {
				h.WriteString(",")
			}
			fmt.Fprintf(&h, `"%d":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}`, i)
		}
		h.WriteString(`,"__metadata__":{"k":"v"}}`)
		return stFile(h.String(), 0)
	}
	const limit = 1000
	b := header(limit)
	if m, err := parseSafetensors(b, int64(len(b)), limit); err != nil || len(m.Tensors) != limit {
		t.Fatalf("parseSafetensors(%d tensors, limit %d) = %v; want them all", limit, limit, err)
	}
	b = header(limit + 1)
	_, err := parseSafetensors(b, int64(len(b)), limit)
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "more than 1000 tensors") {
		t.Fatalf("parseSafetensors(%d tensors, limit %d) = %v, want too many tensors", limit+1, limit, err)
	}
	if m, err := ParseSafetensors(b, int64(len(b))); err != nil || len(m.Tensors) != limit+1 {
		t.Fatalf("ParseSafetensors(%d tensors) = %v; want them all under MaxTensors", limit+1, err)
	}
}

func TestSafetensorsHeaderLen(t *testing.T) {
	le := func(n uint64) []byte { return binary.LittleEndian.AppendUint64(nil, n) }
	tests := []struct {
		name  string
		first []byte
		size  int64
		want  int64 // 0: error
	}{
		{"short", []byte{1, 0, 0}, 100, 0},
		{"file too short", le(1), 7, 0},
		{"zero", le(0), 100, 0},
		{"fits", le(2), 10, 10},
		{"past the end", le(3), 10, 0},
		{"at the cap", le(MaxSafetensorsHeader), MaxSafetensorsHeader + 8, MaxSafetensorsHeader + 8},
		{"over the cap", le(MaxSafetensorsHeader + 1), 1 << 40, 0},
		{"huge", le(1 << 63), 1 << 62, 0},
		{"max", le(^uint64(0)), 1 << 62, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SafetensorsHeaderLen(tt.first, tt.size)
			if tt.want == 0 {
				if err == nil || !errors.Is(err, ErrMalformed) {
					t.Errorf("SafetensorsHeaderLen(%x, %d) = %d, %v, want ErrMalformed", tt.first, tt.size, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("SafetensorsHeaderLen(%x, %d) = %d, %v, want %d", tt.first, tt.size, got, err, tt.want)
			}
		})
	}
}

func TestParseSafetensorsPrefixLength(t *testing.T) {
	b := stFile(`{}`, 4)
	for _, n := range []int{9, 11, 12} {
		if _, err := ParseSafetensors(b[:n], int64(len(b))); err == nil {
			t.Errorf("ParseSafetensors(prefix of %d bytes, header needs 10) = nil error", n)
		}
	}
}

func TestReadSafetensorsReaderErrors(t *testing.T) {
	b := stFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 1)
	boom := errors.New("boom")
	if _, err := ReadSafetensors(failingReaderAt{boom}, int64(len(b))); !errors.Is(err, boom) || errors.Is(err, ErrMalformed) {
		t.Errorf("ReadSafetensors(failing reader) = %v, want boom and not ErrMalformed", err)
	}
	// The file is shorter than the size claimed: the header read is short.
	if _, err := ReadSafetensors(bytes.NewReader(b[:20]), int64(len(b))); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("ReadSafetensors(short file) = %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := ReadSafetensors(bytes.NewReader(nil), 0); !errors.Is(err, ErrMalformed) {
		t.Errorf("ReadSafetensors(empty) = %v, want ErrMalformed", err)
	}
	// A reader that returns io.EOF with the last bytes is fine.
	if _, err := ReadSafetensors(eofReaderAt{bytes.NewReader(b[:len(b)-1])}, int64(len(b))); err != nil {
		t.Errorf("ReadSafetensors(EOF with data) = %v", err)
	}
}

type failingReaderAt struct{ err error }

func (f failingReaderAt) ReadAt([]byte, int64) (int, error) { return 0, f.err }

// eofReaderAt returns io.EOF along with data that reaches the end.
type eofReaderAt struct{ r *bytes.Reader }

func (e eofReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := e.r.ReadAt(p, off)
	if err == nil && off+int64(n) == e.r.Size() {
		err = io.EOF
	}
	return n, err
}
