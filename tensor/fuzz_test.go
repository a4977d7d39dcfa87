package tensor

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"
)

func FuzzParseSafetensors(f *testing.F) {
	if _, ok := findFixtureDir(); ok || os.Getenv("VRAMSEAL_NO_FIXTURES") != "1" {
		for _, path := range safetensorsFixtures(f) {
			b := readFixture(f, path)
			f.Add(headerPrefix(b)[8:], int64(len(b)-len(headerPrefix(b))))
		}
	}
	f.Add([]byte(`{}`), int64(0))
	f.Add([]byte(`{"__metadata__":{"k":"v"}}  `), int64(0))
	f.Add([]byte(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"z":{"dtype":"U8","shape":[0],"data_offsets":[8,8]}}`), int64(12))
	f.Fuzz(func(t *testing.T, header []byte, dataLen int64) {
		if len(header) == 0 || dataLen < 0 || dataLen > 1<<50 {
			return
		}
		prefix := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
		prefix = append(prefix, header...)
		size := int64(len(prefix)) + dataLen
		m, err := ParseSafetensors(prefix, size)
		if err != nil {
			if m != nil || !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseSafetensors = %v, %v: want nil map and ErrMalformed", m, err)
			}
			return
		}
		// The invariants Lookup relies on hold, and a whole-file Lookup
		// accounts for every byte exactly once.
		if m.DataStart != int64(len(prefix)) || m.Size != size {
			t.Fatalf("map {%d %d}, want {%d %d}", m.DataStart, m.Size, len(prefix), size)
		}
		for i, tt := range m.Tensors {
			if tt.Offset < m.DataStart || tt.End() > m.Size || tt.Length < 0 {
				t.Fatalf("tensor %d %+v outside the data buffer", i, tt)
			}
			if i > 0 && m.Tensors[i-1].Offset > tt.Offset {
				t.Fatalf("tensors not sorted at %d", i)
			}
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
			_ = h.String()
		}
		if more != 0 || pos != m.Size {
			t.Fatalf("Lookup(whole file) covers [0, %d) with %d more, want [0, %d)", pos, more, m.Size)
		}
	})
}
