package provenance

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func FuzzVerifyBundle(f *testing.F) {
	for _, n := range []string{"tiny-llama.sig", "tiny-llama.other-key.sig", "single.safetensors.sig"} {
		f.Add(readFixture(f, n))
	}
	key := fixtureKey(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := VerifyBundle(b, key)
		if err == nil {
			if st.Method != "files" || len(st.Files) == 0 || len(st.Digest) != 64 {
				t.Fatalf("VerifyBundle accepted a bad statement: %+v", st)
			}
			for n := range st.Files {
				if checkPath(n) != nil {
					t.Fatalf("VerifyBundle accepted name %q", n)
				}
			}
			return
		}
		var se *SignatureError
		if !errors.Is(err, ErrMalformed) && !errors.As(err, &se) {
			t.Fatalf("VerifyBundle error of unknown kind: %v", err)
		}
	})
}

func FuzzParseSHA256Sums(f *testing.F) {
	f.Add([]byte(d1 + "  config.json\n" + d2 + " *model.safetensors\n"))
	f.Add([]byte(d1 + "  ./a/b\r\n"))
	if ents, err := os.ReadDir(filepath.Join(fixtures, "tiny-llama")); err == nil {
		var buf bytes.Buffer
		for _, e := range ents {
			buf.WriteString(d1 + "  " + e.Name() + "\n")
		}
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseSHA256Sums(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseSHA256Sums error of unknown kind: %v", err)
			}
			return
		}
		for n := range d {
			if checkPath(n) != nil || n == SingleFile {
				t.Fatalf("ParseSHA256Sums accepted name %q", n)
			}
		}
	})
}

func BenchmarkVerifyBundle(b *testing.B) {
	bundle := readFixture(b, "tiny-llama.sig")
	key := fixtureKey(b)
	b.Run("baseline-sha256", func(b *testing.B) {
		b.SetBytes(int64(len(bundle)))
		for b.Loop() {
			_ = sha256Sum(bundle)
		}
	})
	b.Run("verify", func(b *testing.B) {
		b.SetBytes(int64(len(bundle)))
		for b.Loop() {
			if _, err := VerifyBundle(bundle, key); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }
