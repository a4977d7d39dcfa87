package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// oracleLookup classifies every byte of [lo, hi) on its own and merges runs:
// a slow, obviously right Lookup without a bound.
func oracleLookup(m *Map, off, n int64) []Hit {
	lo, hi := max(off, 0), min(off+n, m.Size)
	if n <= 0 || lo >= hi {
		return nil
	}
	last := m.DataStart
	for i := range m.Tensors {
		if m.Tensors[i].Length > 0 {
			last = max(last, m.Tensors[i].End())
		}
	}
	var hits []Hit
	for b := lo; b < hi; b++ {
		var h Hit
		switch {
		case b < m.DataStart:
			h = Hit{Region: RegionHeader, Start: b, End: b + 1}
		case b >= last:
			h = Hit{Region: RegionTrailing, Start: b, End: b + 1}
		default:
			h = Hit{Region: RegionPadding, Start: b, End: b + 1}
			for i := range m.Tensors {
				t := &m.Tensors[i]
				if t.Offset <= b && b < t.End() {
					h = Hit{Tensor: t, Start: b - t.Offset, End: b - t.Offset + 1}
				}
			}
		}
		if k := len(hits) - 1; k >= 0 && hits[k].Tensor == h.Tensor && hits[k].Region == h.Region && hits[k].End == h.Start {
			hits[k].End = h.End
			continue
		}
		hits = append(hits, h)
	}
	return hits
}

// holeyMap is a map with every kind of region: header, a hole before the
// first tensor, adjacent tensors, zero-length tensors at boundaries and in
// holes, a hole between tensors, and trailing bytes.
func holeyMap(t *testing.T) *Map {
	t.Helper()
	h := `{"a":{"dtype":"U8","shape":[4],"data_offsets":[3,7]},` +
		`"b":{"dtype":"I16","shape":[2],"data_offsets":[7,11]},` +
		`"z0":{"dtype":"F32","shape":[0],"data_offsets":[7,7]},` +
		`"z1":{"dtype":"F32","shape":[0],"data_offsets":[13,13]},` +
		`"c":{"dtype":"F32","shape":[1],"data_offsets":[16,20]},` +
		`"z2":{"dtype":"F32","shape":[0],"data_offsets":[22,22]}}`
	b := stFile(h, 25)
	m, err := ParseSafetensors(b[:8+len(h)], int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLookupAgreesWithOracle(t *testing.T) {
	m := holeyMap(t)
	hand := *m
	hand.dataEnd = 0 // as a Map built by hand
	for _, mm := range []*Map{m, &hand} {
		for off := int64(-2); off <= m.Size+2; off++ {
			for n := int64(-1); off+n <= m.Size+3; n++ {
				got, more := mm.Lookup(off, n, 0)
				want := oracleLookup(mm, off, n)
				if more != 0 || !equalHits(got, want) {
					t.Fatalf("Lookup(%d, %d, 0) = %v, %d, want %v", off, n, got, more, want)
				}
				for max := 1; max <= len(want)+1; max++ {
					got, more := mm.Lookup(off, n, max)
					k := min(max, len(want))
					if !equalHits(got, want[:k]) || more != len(want)-k {
						t.Fatalf("Lookup(%d, %d, %d) = %v, %d, want %v, %d", off, n, max, got, more, want[:k], len(want)-k)
					}
				}
			}
		}
	}
}

func TestLookupBigMapAgreesWithOracle(t *testing.T) {
	m := bigMap(2000, true)
	r := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		off := r.Int64N(m.Size)
		n := 1 + r.Int64N(5000)
		got, more := m.Lookup(off, n, 0)
		if want := oracleLookup(m, off, n); more != 0 || !equalHits(got, want) {
			t.Fatalf("Lookup(%d, %d, 0) = %v, want %v", off, n, got, want)
		}
	}
}

func TestLookupOverflow(t *testing.T) {
	m := holeyMap(t)
	for _, tt := range []struct{ off, n int64 }{
		{math.MaxInt64, math.MaxInt64}, {m.Size - 1, math.MaxInt64}, {math.MinInt64, math.MaxInt64}, {math.MinInt64, 1},
	} {
		got, _ := m.Lookup(tt.off, tt.n, 0)
		want := oracleLookup(m, tt.off, min(tt.n, m.Size-max(tt.off, 0)))
		if tt.off < 0 {
			want = oracleLookup(m, 0, max(0, tt.off+tt.n))
		}
		if !equalHits(got, want) {
			t.Errorf("Lookup(%d, %d, 0) = %v, want %v", tt.off, tt.n, got, want)
		}
	}
}

func equalHits(a, b []Hit) bool {
	return slices.EqualFunc(a, b, func(x, y Hit) bool { return x == y })
}

func TestHitString(t *testing.T) {
	w := &Tensor{Name: "model.layers.0.attn.q_proj.weight", DType: "BF16", Shape: []int64{4096, 4096}, Length: 1 << 25}
	tests := []struct {
		hit  Hit
		want string
	}{
		{Hit{Tensor: w, Start: 0, End: 65536}, "model.layers.0.attn.q_proj.weight (BF16 [4096 4096], bytes 0-65535)"},
		{Hit{Tensor: &Tensor{Name: "s", DType: "F32", Shape: []int64{}}, Start: 0, End: 4}, "s (F32 [], bytes 0-3)"},
		{Hit{Tensor: &Tensor{Name: "bad\x1b[31m\n", DType: "U8\x00"}, Start: 1, End: 2}, `"bad\x1b[31m\n" ("U8\x00" [], bytes 1-1)`},
		{Hit{Tensor: &Tensor{Name: "rtl\u202eevil", DType: "U8"}, Start: 0, End: 1}, `"rtl\u202eevil" (U8 [], bytes 0-0)`},
		{Hit{Tensor: &Tensor{Name: `quo"te`, DType: "U8"}, Start: 0, End: 1}, `"quo\"te" (U8 [], bytes 0-0)`},
		{Hit{Tensor: &Tensor{Name: "", DType: "U8"}, Start: 0, End: 1}, `"" (U8 [], bytes 0-0)`},
		{Hit{Tensor: &Tensor{Name: "\xff", DType: "U8"}, Start: 0, End: 1}, `"\xff" (U8 [], bytes 0-0)`},
		{Hit{Tensor: &Tensor{Name: "日本 語", DType: "U8"}, Start: 0, End: 1}, `日本 語 (U8 [], bytes 0-0)`},
		{Hit{Region: RegionHeader, Start: 0, End: 1064}, "header (bytes 0-1063)"},
		{Hit{Region: RegionTrailing, Start: 100, End: 101}, "trailing (bytes 100-100)"},
	}
	for _, tt := range tests {
		if got := tt.hit.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.hit, got, tt.want)
		}
		if strings.ContainsFunc(tt.hit.String(), func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Errorf("%#v.String() holds a control character", tt.hit)
		}
	}
}

// bigMap returns a map of n tensors of varied sizes, with holes when holes
// is true.
func bigMap(n int, holes bool) *Map {
	r := rand.New(rand.NewPCG(3, 4))
	m := &Map{Format: "safetensors", DataStart: 4096}
	off := m.DataStart
	for i := range n {
		if holes && r.IntN(4) == 0 {
			off += r.Int64N(64)
		}
		l := 1 + r.Int64N(4096)
		if i%100 == 7 {
			l = 0
		}
		m.Tensors = append(m.Tensors, Tensor{Name: fmt.Sprintf("model.layers.%d.weight", i), DType: "U8", Shape: []int64{l}, Offset: off, Length: l})
		off += l
	}
	m.Size = off + 100
	if err := checkLayout(m); err != nil {
		panic(err)
	}
	return m
}

// BenchmarkLookup looks up one 64 KiB chunk in a map of 10,000 tensors, and,
// as the baseline, a linear scan over the tensors for the same chunk.
func BenchmarkLookup(b *testing.B) {
	m := bigMap(10000, true)
	const chunk = 64 << 10
	offs := make([]int64, 1024)
	r := rand.New(rand.NewPCG(5, 6))
	for i := range offs {
		offs[i] = r.Int64N(m.Size-chunk) &^ (chunk - 1)
	}
	b.Run("binary", func(b *testing.B) {
		b.SetBytes(chunk)
		i := 0
		for b.Loop() {
			m.Lookup(offs[i%len(offs)], chunk, 16)
			i++
		}
	})
	b.Run("linear-baseline", func(b *testing.B) {
		b.SetBytes(chunk)
		i := 0
		for b.Loop() {
			lo := offs[i%len(offs)]
			hi := lo + chunk
			var hits int
			for j := range m.Tensors {
				if t := &m.Tensors[j]; t.Length > 0 && t.Offset < hi && t.End() > lo {
					hits++
				}
			}
			i++
		}
	})
	b.Run("whole-file", func(b *testing.B) {
		b.SetBytes(m.Size)
		for b.Loop() {
			m.Lookup(0, m.Size, 16)
		}
	})
}
