package seal

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fuzzSeeds returns real encodings to start from: the golden file and
// freshly signed seals.
func fuzzSeeds(t testing.TB) (bins, jsons [][]byte) {
	if b, err := os.ReadFile(filepath.Join("testdata", "seal.v1.golden")); err == nil {
		bins = append(bins, b)
	}
	if j, err := os.ReadFile(filepath.Join("testdata", "seal.v1.json.golden")); err == nil {
		jsons = append(jsons, j)
	}
	for _, s := range []Seal{signedSeal(t), goldenSeal(t)} {
		b, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		j, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		bins = append(bins, b, b[:len(b)/2])
		jsons = append(jsons, j, j[:len(j)/2])
	}
	return bins, jsons
}

// FuzzUnmarshalBinary feeds arbitrary bytes to the binary decoder: it must
// never panic, and whatever it accepts must re-encode to the same bytes and
// to equal JSON.
func FuzzUnmarshalBinary(f *testing.F) {
	bins, _ := fuzzSeeds(f)
	for _, b := range bins {
		f.Add(b)
	}
	k := testKey(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var s Seal
		if err := s.UnmarshalBinary(data); err != nil {
			return
		}
		re, err := s.MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary(decoded) = %v", err)
		}
		if !bytes.Equal(re, data) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", data, re)
		}
		j, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("json.Marshal(decoded) = %v", err)
		}
		fromJSON, err := DecodeJSON(j)
		if err != nil {
			t.Fatalf("DecodeJSON(json.Marshal(decoded)) = %v", err)
		}
		if diff := cmp.Diff(s, *fromJSON); diff != "" {
			t.Fatalf("JSON round trip differs:\n%s", diff)
		}
		_ = k.Verify(&s) // must not panic
	})
}

// FuzzDecodeJSON feeds arbitrary bytes to the JSON decoder: it must never
// panic, and whatever it accepts must re-encode stably and survive the
// binary round trip.
func FuzzDecodeJSON(f *testing.F) {
	_, jsons := fuzzSeeds(f)
	for _, j := range jsons {
		f.Add(j)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := DecodeJSON(data)
		if err != nil {
			return
		}
		j1, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("json.Marshal(decoded) = %v", err)
		}
		s2, err := DecodeJSON(j1)
		if err != nil {
			t.Fatalf("DecodeJSON(json.Marshal(decoded)) = %v", err)
		}
		if j2, _ := json.Marshal(s2); !bytes.Equal(j1, j2) {
			t.Fatalf("JSON re-encoding is not stable:\n%s\n%s", j1, j2)
		}
		b, err := s.MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary(decoded) = %v", err)
		}
		var fromBin Seal
		if err := fromBin.UnmarshalBinary(b); err != nil {
			t.Fatalf("UnmarshalBinary(MarshalBinary(decoded)) = %v", err)
		}
		if diff := cmp.Diff(*s, fromBin); diff != "" {
			t.Fatalf("binary round trip differs:\n%s", diff)
		}
	})
}
