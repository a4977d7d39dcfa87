package tensor

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// findFixtureDir returns the model fixtures, testdata/models at the
// repository's root (a copy of the shared real-format fixtures, with
// their README), or the place tried.
func findFixtureDir() (dir string, found bool) {
	d, err := filepath.Abs(filepath.Join("..", "testdata", "models"))
	if err != nil {
		return err.Error(), false
	}
	if fi, err := os.Stat(d); err == nil && fi.IsDir() {
		return d, true
	}
	return d, false
}

// fixtureDir returns the shared model fixtures directory. It fails the test
// when there is none, unless VRAMSEAL_NO_FIXTURES=1 (then it skips).
func fixtureDir(tb testing.TB) string {
	tb.Helper()
	d, ok := findFixtureDir()
	if ok {
		return d
	}
	if os.Getenv("VRAMSEAL_NO_FIXTURES") == "1" {
		tb.Skip("model fixtures not found and VRAMSEAL_NO_FIXTURES=1")
	}
	tb.Fatalf("model fixtures not found (tried %s); set VRAMSEAL_NO_FIXTURES=1 to skip", d)
	return ""
}

// safetensorsFixtures returns the paths of the safetensors fixtures.
func safetensorsFixtures(tb testing.TB) []string {
	dir := fixtureDir(tb)
	return []string{
		filepath.Join(dir, "tiny-llama", "model-00001-of-00002.safetensors"),
		filepath.Join(dir, "tiny-llama", "model-00002-of-00002.safetensors"),
		filepath.Join(dir, "single.safetensors"),
	}
}

// readFixture returns the file's bytes.
func readFixture(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// headerPrefix returns the first 8+N bytes of a safetensors file, N as the
// file says (no checks: for seeds and tamper tests).
func headerPrefix(b []byte) []byte {
	n := binary.LittleEndian.Uint64(b)
	return b[:8+n]
}

// independentRead reads a safetensors header the simple way: one
// json.Unmarshal into maps. It is the oracle for the fixtures.
func independentRead(t *testing.T, b []byte) map[string]Tensor {
	t.Helper()
	n := int64(binary.LittleEndian.Uint64(b))
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &raw); err != nil {
		t.Fatal(err)
	}
	out := make(map[string]Tensor)
	for name, v := range raw {
		if name == "__metadata__" {
			continue
		}
		var info struct {
			DType       string  `json:"dtype"`
			Shape       []int64 `json:"shape"`
			DataOffsets []int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(v, &info); err != nil {
			t.Fatal(err)
		}
		out[name] = Tensor{
			Name: name, DType: info.DType, Shape: info.Shape,
			Offset: 8 + n + info.DataOffsets[0], Length: info.DataOffsets[1] - info.DataOffsets[0],
		}
	}
	return out
}

func TestFixturesAgreeWithIndependentReading(t *testing.T) {
	for _, path := range safetensorsFixtures(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			b := readFixture(t, path)
			m, err := ParseSafetensors(headerPrefix(b), int64(len(b)))
			if err != nil {
				t.Fatalf("ParseSafetensors(%s) = %v", path, err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			m2, err := ReadSafetensors(f, int64(len(b)))
			if err != nil {
				t.Fatalf("ReadSafetensors(%s) = %v", path, err)
			}
			if !equalMaps(m, m2) {
				t.Errorf("ReadSafetensors and ParseSafetensors disagree:\n%+v\n%+v", m2, m)
			}
			want := independentRead(t, b)
			if len(m.Tensors) != len(want) {
				t.Errorf("got %d tensors, want %d", len(m.Tensors), len(want))
			}
			for i, got := range m.Tensors {
				w, ok := want[got.Name]
				if !ok {
					t.Errorf("tensor %q not in the file", got.Name)
					continue
				}
				if got.DType != w.DType || !slices.Equal(got.Shape, w.Shape) || got.Offset != w.Offset || got.Length != w.Length {
					t.Errorf("tensor %q = %+v, want %+v", got.Name, got, w)
				}
				if i > 0 && m.Tensors[i-1].Offset > got.Offset {
					t.Errorf("tensors not sorted by offset at %d", i)
				}
			}
			if m.Format != "safetensors" || m.Size != int64(len(b)) || m.DataStart != 8+int64(binary.LittleEndian.Uint64(b)) {
				t.Errorf("map = {%q %d %d}, want {safetensors %d 8+N}", m.Format, m.Size, m.DataStart, len(b))
			}
			if m.Metadata["format"] != "pt" || len(m.Metadata) != 1 {
				t.Errorf("Metadata = %v, want map[format:pt]", m.Metadata)
			}
			// The fixtures come from the reference writer: the data buffer
			// is covered exactly, so nothing but header and tensors.
			hits, more := m.Lookup(0, m.Size, 0)
			if more != 0 || len(hits) != 1+len(m.Tensors) || hits[0].Region != RegionHeader {
				t.Errorf("Lookup(whole file) = %d hits (%d more), want header + %d tensors", len(hits), more, len(m.Tensors))
			}
			for _, h := range hits[1:] {
				if h.Tensor == nil || h.Start != 0 || h.End != h.Tensor.Length {
					t.Errorf("Lookup(whole file) hit %v, want a whole tensor", h)
				}
			}
		})
	}
}

func equalMaps(a, b *Map) bool {
	if a.Format != b.Format || a.Size != b.Size || a.DataStart != b.DataStart || len(a.Tensors) != len(b.Tensors) || len(a.Metadata) != len(b.Metadata) {
		return false
	}
	for i := range a.Tensors {
		x, y := a.Tensors[i], b.Tensors[i]
		if x.Name != y.Name || x.DType != y.DType || !slices.Equal(x.Shape, y.Shape) || x.Offset != y.Offset || x.Length != y.Length {
			return false
		}
	}
	for k, v := range a.Metadata {
		if w, ok := b.Metadata[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestFixturesMatchIndex checks every shard against the index's weight_map:
// each tensor it names is in the file it names, and no file holds others.
func TestFixturesMatchIndex(t *testing.T) {
	dir := filepath.Join(fixtureDir(t), "tiny-llama")
	var index struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(readFixture(t, filepath.Join(dir, "model.safetensors.index.json")), &index); err != nil {
		t.Fatal(err)
	}
	if len(index.WeightMap) == 0 {
		t.Fatal("empty weight_map")
	}
	found := make(map[string]string)
	files := make(map[string]bool)
	for _, file := range index.WeightMap {
		files[file] = true
	}
	for file := range files {
		b := readFixture(t, filepath.Join(dir, file))
		m, err := ParseSafetensors(headerPrefix(b), int64(len(b)))
		if err != nil {
			t.Fatalf("ParseSafetensors(%s) = %v", file, err)
		}
		for _, tt := range m.Tensors {
			if prev, dup := found[tt.Name]; dup {
				t.Errorf("tensor %q in %s and %s", tt.Name, prev, file)
			}
			found[tt.Name] = file
		}
	}
	for name, file := range index.WeightMap {
		if found[name] != file {
			t.Errorf("tensor %q: in %q, weight_map says %q", name, found[name], file)
		}
	}
	for name, file := range found {
		if _, ok := index.WeightMap[name]; !ok {
			t.Errorf("tensor %q in %s is not in the weight_map", name, file)
		}
	}
}

// TestTruncatedFixtureHeader cuts each fixture's header at every offset and
// requires an error, for the prefix given as it is and for a header length
// rewritten to match the cut.
func TestTruncatedFixtureHeader(t *testing.T) {
	for _, path := range safetensorsFixtures(t) {
		b := readFixture(t, path)
		prefix := headerPrefix(b)
		size := int64(len(b))
		for i := 0; i < len(prefix); i++ {
			cut := prefix[:i]
			if _, err := ParseSafetensors(cut, size); err == nil {
				t.Fatalf("ParseSafetensors(%s cut at %d) = nil error", filepath.Base(path), i)
			}
			if i <= 8 {
				continue
			}
			relen := slices.Clone(cut)
			binary.LittleEndian.PutUint64(relen, uint64(i-8))
			// A cut in the trailing spaces still leaves a valid header,
			// but then the data buffer grows by the cut bytes: still valid.
			_, err := ParseSafetensors(relen, size)
			if err == nil && !onlySpacesAfter(prefix, i) {
				t.Fatalf("ParseSafetensors(%s cut at %d, length rewritten) = nil error", filepath.Base(path), i)
			}
		}
	}
}

// onlySpacesAfter reports whether the JSON object of the header prefix ends
// at or before offset i, so that cutting there keeps it whole.
func onlySpacesAfter(prefix []byte, i int) bool {
	for _, c := range prefix[i:] {
		if c != ' ' {
			return false
		}
	}
	return true
}
