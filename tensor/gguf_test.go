package tensor

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestGGUFFixture(t *testing.T) {
	dir := fixtureDir(t)
	b := readFixture(t, filepath.Join(dir, "tiny.gguf"))
	var want struct {
		Version          int    `json:"version"`
		Align            int64  `json:"align"`
		TensorDataOffset int64  `json:"tensorDataOffset"`
		Arch             string `json:"arch"`
		Tensors          []struct {
			Name   string  `json:"name"`
			DType  uint32  `json:"dtype"`
			Shape  []int64 `json:"shape"`
			Offset int64   `json:"offset"`
		} `json:"tensors"`
	}
	if err := json.Unmarshal(readFixture(t, filepath.Join(dir, "tiny.gguf.tensors.json")), &want); err != nil {
		t.Fatal(err)
	}
	m, err := ParseGGUF(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("ParseGGUF(tiny.gguf) = %v", err)
	}
	if m.Format != "gguf" || m.Size != int64(len(b)) || m.DataStart != want.TensorDataOffset {
		t.Errorf("ParseGGUF(tiny.gguf) = {%q %d %d}, want {gguf %d %d}", m.Format, m.Size, m.DataStart, len(b), want.TensorDataOffset)
	}
	if m.Metadata["general.architecture"] != want.Arch {
		t.Errorf("general.architecture = %q, want %q", m.Metadata["general.architecture"], want.Arch)
	}
	if a := m.Metadata["general.alignment"]; a != "" && a != "32" {
		t.Errorf("general.alignment = %q, want 32", a)
	}
	if len(m.Tensors) != len(want.Tensors) {
		t.Fatalf("ParseGGUF(tiny.gguf): %d tensors, want %d", len(m.Tensors), len(want.Tensors))
	}
	byName := make(map[string]*Tensor)
	for i := range m.Tensors {
		byName[m.Tensors[i].Name] = &m.Tensors[i]
	}
	for _, w := range want.Tensors {
		g := byName[w.Name]
		if g == nil {
			t.Errorf("tensor %q missing", w.Name)
			continue
		}
		if g.DType != ggmlTypes[w.DType].name || !slices.Equal(g.Shape, w.Shape) || g.Offset != want.TensorDataOffset+w.Offset {
			t.Errorf("tensor %q = %+v, want type %d shape %v offset %d", w.Name, *g, w.DType, w.Shape, want.TensorDataOffset+w.Offset)
		}
	}
	// Lengths: each tensor ends where the next (aligned) begins, or within
	// the alignment padding of the file's end.
	for i, tt := range m.Tensors {
		next := m.Size
		if i+1 < len(m.Tensors) {
			next = m.Tensors[i+1].Offset
		}
		if tt.End() > next || next-tt.End() >= want.Align {
			t.Errorf("tensor %q ends at %d, next data at %d", tt.Name, tt.End(), next)
		}
	}
	// Truncated at every offset of the header: an error, never a panic.
	for i := range m.DataStart {
		if _, err := ParseGGUF(bytes.NewReader(b[:i]), i); err == nil {
			t.Fatalf("ParseGGUF(tiny.gguf cut at %d) = nil error", i)
		}
	}
	// Every byte of the header changed: no panic (many changes are valid).
	for i := range m.DataStart {
		c := slices.Clone(b)
		c[i] ^= 0xff
		ParseGGUF(bytes.NewReader(c), int64(len(c)))
	}
}

// ggufBuilder writes GGUF files for tests.
type ggufBuilder struct{ b []byte }

func (g *ggufBuilder) u32(v uint32) *ggufBuilder {
	g.b = binary.LittleEndian.AppendUint32(g.b, v)
	return g
}
func (g *ggufBuilder) u64(v uint64) *ggufBuilder {
	g.b = binary.LittleEndian.AppendUint64(g.b, v)
	return g
}
func (g *ggufBuilder) str(s string) *ggufBuilder {
	g.u64(uint64(len(s)))
	g.b = append(g.b, s...)
	return g
}
func (g *ggufBuilder) raw(b ...byte) *ggufBuilder { g.b = append(g.b, b...); return g }

// header starts a file: magic, version, counts.
func ggufHeader(version uint32, nt, nkv uint64) *ggufBuilder {
	g := &ggufBuilder{b: []byte("GGUF")}
	return g.u32(version).u64(nt).u64(nkv)
}

// tensor appends a tensor info.
func (g *ggufBuilder) tensor(name string, typ uint32, off uint64, dims ...uint64) *ggufBuilder {
	g.str(name).u32(uint32(len(dims)))
	for _, d := range dims {
		g.u64(d)
	}
	return g.u32(typ).u64(off)
}

// data pads to align and appends n data bytes.
func (g *ggufBuilder) data(align, n int) []byte {
	for len(g.b)%align != 0 {
		g.b = append(g.b, 0)
	}
	return append(g.b, make([]byte, n)...)
}

func TestParseGGUFValid(t *testing.T) {
	b := ggufHeader(2, 3, 4).
		str("general.architecture").u32(ggufString).str("llama").
		str("general.alignment").u32(ggufUint32).u32(64).
		str("tokenizer.ggml.tokens").u32(ggufArray).u32(ggufString).u64(2).str("a").str("b").
		str("x.f").u32(ggufFloat32).u32(math.Float32bits(0.5)).
		tensor("q", 8, 0, 64, 2).   // Q8_0: 2 blocks of 34 per row, 2 rows = 136 bytes
		tensor("s", 0, 192).        // scalar F32: 4 bytes, after a hole
		tensor("e", 30, 256, 0, 7). // empty BF16
		data(64, 260)
	m, err := ParseGGUF(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("ParseGGUF = %v", err)
	}
	if m.DataStart%64 != 0 || m.Metadata["general.architecture"] != "llama" || m.Metadata["x.f"] != "0.5" || m.Metadata["general.alignment"] != "64" {
		t.Errorf("ParseGGUF = DataStart %d, metadata %v", m.DataStart, m.Metadata)
	}
	if _, ok := m.Metadata["tokenizer.ggml.tokens"]; ok {
		t.Errorf("array in Metadata: %v", m.Metadata)
	}
	want := []Tensor{
		{Name: "q", DType: "Q8_0", Shape: []int64{64, 2}, Offset: m.DataStart, Length: 136},
		{Name: "s", DType: "F32", Shape: []int64{}, Offset: m.DataStart + 192, Length: 4},
		{Name: "e", DType: "BF16", Shape: []int64{0, 7}, Offset: m.DataStart + 256, Length: 0},
	}
	if len(m.Tensors) != len(want) {
		t.Fatalf("tensors = %+v, want %+v", m.Tensors, want)
	}
	for i := range want {
		g, w := m.Tensors[i], want[i]
		if g.Name != w.Name || g.DType != w.DType || !slices.Equal(g.Shape, w.Shape) || g.Offset != w.Offset || g.Length != w.Length {
			t.Errorf("tensor %d = %+v, want %+v", i, g, w)
		}
	}
	hits, _ := m.Lookup(m.DataStart+130, 64, 0)
	if len(hits) != 3 || hits[0].Tensor == nil || hits[0].Tensor.Name != "q" || hits[1].Region != RegionPadding || hits[2].Tensor.Name != "s" {
		t.Errorf("Lookup = %v", hits)
	}
}

func TestParseGGUFRejects(t *testing.T) {
	kv := func(n uint64) *ggufBuilder { return ggufHeader(3, 0, n) }
	one := func() *ggufBuilder { return ggufHeader(3, 1, 0) }
	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"empty", nil, "magic"},
		{"bad magic", []byte("GGML\x03\x00\x00\x00"), "bad magic"},
		{"version 1", ggufHeader(1, 0, 0).b, "version 1 not supported"},
		{"version 4", ggufHeader(4, 0, 0).b, "version 4 not supported"},
		{"big endian", (&ggufBuilder{b: []byte("GGUF\x00\x00\x00\x03")}).u64(0).u64(0).b, "not supported"},
		{"too many tensors", ggufHeader(3, MaxGGUFTensors+1, 0).b, "over the limit"},
		{"too many kvs", ggufHeader(3, 0, MaxGGUFKVs+1).b, "over the limit"},
		{"counts past file", ggufHeader(3, 1000, 1000).b, "cannot fit"},
		{"key too long", kv(1).u64(MaxGGUFString + 1).raw(make([]byte, 8)...).b, "over the limit"},
		{"key past file", kv(1).u64(100).raw('a').u32(0).raw(0, 0, 0, 0, 0, 0, 0, 0).b, "runs past the end"},
		{"key not utf-8", kv(1).str("\xff").u32(ggufUint8).raw(1).b, "not valid UTF-8"},
		{"empty key", kv(1).str("").u32(ggufUint8).raw(1).b, "empty metadata key"},
		{"duplicate key", kv(2).str("k").u32(ggufUint8).raw(1).str("k").u32(ggufUint8).raw(2).b, "duplicate metadata key k"},
		{"duplicate array key", kv(2).str("k").u32(ggufArray).u32(ggufUint8).u64(0).str("k").u32(ggufUint8).raw(2).b, "duplicate metadata key k"},
		{"unknown value type", kv(1).str("k").u32(13).raw(0, 0, 0, 0, 0, 0, 0, 0).b, "unknown value type 13"},
		{"bad bool", kv(1).str("k").u32(ggufBool).raw(2).raw(make([]byte, 13)...).b, "boolean 2"},
		{"value past file", kv(1).str("k").u32(ggufUint64).raw(1, 2, 3, 4, 5).b, "runs past the end"},
		{"string value not utf-8", kv(1).str("k").u32(ggufString).str("\xc3").b, "not valid UTF-8"},
		{"nested array", kv(1).str("k").u32(ggufArray).u32(ggufArray).u64(1).raw(make([]byte, 12)...).b, "nested array"},
		{"array too long", kv(1).str("k").u32(ggufArray).u32(ggufUint8).u64(MaxGGUFArray + 1).b, "over the limit"},
		{"array past file", kv(1).str("k").u32(ggufArray).u32(ggufUint32).u64(10).raw(1, 2, 3).b, "runs past the end"},
		{"array unknown type", kv(1).str("k").u32(ggufArray).u32(99).u64(1).raw(make([]byte, 8)...).b, "unknown array element type 99"},
		{"array string past file", kv(1).str("k").u32(ggufArray).u32(ggufString).u64(2).str("a").u64(50).raw(make([]byte, 8)...).b, "runs past the end"},
		{"alignment not u32", kv(1).str("general.alignment").u32(ggufUint64).u64(32).b, "want UINT32"},
		{"alignment zero", kv(1).str("general.alignment").u32(ggufUint32).u32(0).raw(make([]byte, 9)...).b, "not a power of two"},
		{"alignment 48", kv(1).str("general.alignment").u32(ggufUint32).u32(48).raw(make([]byte, 9)...).b, "not a power of two"},
		{"empty tensor name", one().tensor("", 0, 0, 1).data(32, 4), "empty name"},
		{"tensor name too long", one().tensor(strings.Repeat("n", MaxNameLen+1), 0, 0, 1).data(32, 4), "over the limit"},
		{"duplicate tensor", ggufHeader(3, 2, 0).tensor("a", 0, 0, 1).tensor("a", 0, 32, 1).data(32, 36), "duplicate tensor a"},
		{"five dims", one().tensor("a", 0, 0, 1, 1, 1, 1, 1).data(32, 4), "5 dimensions"},
		{"huge dim", one().tensor("a", 0, 0, 1<<63).data(32, 4), "out of range"},
		{"unknown type", one().tensor("a", 4, 0, 32).data(32, 18), "unknown ggml type 4"},
		{"unaligned offset", ggufHeader(3, 2, 0).tensor("a", 0, 0, 1).tensor("b", 0, 4, 1).data(32, 8), "not a multiple of the alignment"},
		{"block size", one().tensor("a", 2, 0, 33).data(32, 36), "not a multiple of the Q4_0 block size 32"},
		{"scalar quantized", one().tensor("a", 8, 0).data(32, 34), "block size"},
		{"shape overflow", one().tensor("a", 0, 0, 1<<32, 1<<32).data(32, 4), "overflows"},
		{"size overflow", one().tensor("a", 28, 0, 1<<61).data(32, 4), "overflows"},
		{"past the end", one().tensor("a", 0, 0, 2).data(32, 7), "runs past the end"},
		{"offset past the end", one().tensor("a", 0, 1<<40, 1).data(32, 4), "runs past the end"},
		{"data start past the end", one().tensor("a", 0, 0, 0).b, "past the end"},
		{"overlap", ggufHeader(3, 2, 0).tensor("a", 0, 0, 16).tensor("b", 0, 32, 1).data(32, 64), "tensor b at data offsets [32, 36) overlaps tensor a at [0, 64)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseGGUF(bytes.NewReader(tt.file), int64(len(tt.file)))
			if err == nil {
				t.Fatalf("ParseGGUF(%q) = %+v, want error", tt.file, m)
			}
			if m != nil || !errors.Is(err, ErrMalformed) {
				t.Errorf("ParseGGUF(%q) = %v, %v, want nil and ErrMalformed", tt.file, m, err)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "tensor: ") || !strings.Contains(msg, tt.want) {
				t.Errorf("ParseGGUF(%q) = %q, want \"tensor: ...%s...\"", tt.file, msg, tt.want)
			}
		})
	}
}

func TestParseGGUFReaderError(t *testing.T) {
	b := ggufHeader(3, 1, 0).tensor("a", 0, 0, 1).data(32, 4)
	boom := errors.New("boom")
	if _, err := ParseGGUF(failingReaderAt{boom}, int64(len(b))); !errors.Is(err, boom) || errors.Is(err, ErrMalformed) {
		t.Errorf("ParseGGUF(failing reader) = %v, want boom and not ErrMalformed", err)
	}
}

func FuzzParseGGUF(f *testing.F) {
	if dir, ok := findFixtureDir(); ok {
		f.Add(readFixture(f, filepath.Join(dir, "tiny.gguf")))
	} else {
		fixtureDir(f) // fails, or skips under VRAMSEAL_NO_FIXTURES=1
	}
	f.Add(ggufHeader(3, 2, 1).str("general.alignment").u32(ggufUint32).u32(8).
		tensor("a", 8, 0, 32).tensor("b", 0, 40, 0).data(8, 40))
	f.Add(ggufHeader(2, 0, 1).str("k").u32(ggufArray).u32(ggufString).u64(1).str("v").b)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseGGUF(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			if m != nil || !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseGGUF = %v, %v: want nil map and ErrMalformed", m, err)
			}
			return
		}
		hits, more := m.Lookup(0, m.Size, 0)
		pos := int64(0)
		for _, h := range hits {
			s, e := h.Start, h.End
			if h.Tensor != nil {
				s, e = s+h.Tensor.Offset, e+h.Tensor.Offset
			}
			if s != pos || e <= s {
				t.Fatalf("Lookup(whole file): hit %v at %d", h, pos)
			}
			pos = e
		}
		if more != 0 || pos != m.Size {
			t.Fatalf("Lookup(whole file) covers [0, %d), want [0, %d)", pos, m.Size)
		}
	})
}
