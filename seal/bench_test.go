package seal

import (
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"sync"
	"testing"
	"time"
)

var benchMiB = flag.Int("benchmib", 256, "size in MiB of the buffer the Hasher and SHA-256 benchmarks hash")

var benchBuf = sync.OnceValue(func() []byte { return randBytes(99, *benchMiB<<20) })

// BenchmarkSHA256Baseline is one single-threaded stdlib SHA-256 pass, the
// baseline of the Hasher's performance target.
func BenchmarkSHA256Baseline(b *testing.B) {
	buf := benchBuf()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		sha256.Sum256(buf)
	}
}

// BenchmarkHasher computes the flat digest and the leaves of the same
// buffer, written whole or in pieces of the given size.
func BenchmarkHasher(b *testing.B) {
	buf := benchBuf()
	for _, w := range []int{0, 4 << 20, 256 << 10, 64 << 10, 32 << 10} {
		name := "write=whole"
		if w > 0 {
			name = fmt.Sprintf("write=%dKiB", w>>10)
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				hashPieces(buf, w)
			}
		})
	}
}

func hashPieces(buf []byte, w int) {
	h := NewHasher(DefaultChunkSize)
	if w == 0 {
		w = len(buf)
	}
	for p := buf; len(p) > 0; {
		n := min(w, len(p))
		h.Write(p[:n])
		p = p[n:]
	}
	h.Sum()
}

// BenchmarkHasherVsSHA256 times a Hasher pass (4 MiB writes, as a stream
// would arrive) and a single-threaded SHA-256 pass over the same buffer in
// each iteration and reports their ratio; the target is <= 1.15.
func BenchmarkHasherVsSHA256(b *testing.B) {
	buf := benchBuf()
	b.SetBytes(int64(len(buf)))
	var hasher, base, hasherCPU, baseCPU time.Duration
	for b.Loop() {
		c0, t0 := processCPU(), time.Now()
		sha256.Sum256(buf)
		c1, t1 := processCPU(), time.Now()
		hashPieces(buf, 4<<20)
		hasher += time.Since(t1)
		hasherCPU += processCPU() - c1
		base += t1.Sub(t0)
		baseCPU += c1 - c0
	}
	b.ReportMetric(float64(hasher)/float64(base), "hasher/sha256")
	// On a loaded machine wall time says little; CPU time shows the
	// Hasher's overhead: 2.0 is the flat pass plus the leaf pass, nothing
	// more.
	if baseCPU > 0 {
		b.ReportMetric(float64(hasherCPU)/float64(baseCPU), "cpu-hasher/cpu-sha256")
	}
}

// BenchmarkLeaves hashes the leaves of the buffer on all cores.
func BenchmarkLeaves(b *testing.B) {
	buf := benchBuf()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		Leaves(buf, DefaultChunkSize)
	}
}

// BenchmarkRoot computes the tree root of a 1 GiB shard in 64 KiB chunks.
func BenchmarkRoot(b *testing.B) {
	leaves := make([]Hash, 1<<14)
	for i := range leaves {
		leaves[i] = LeafHash([]byte{byte(i), byte(i >> 8)})
	}
	for b.Loop() {
		Root(leaves)
	}
}

func BenchmarkSign(b *testing.B) {
	k := testKey(b)
	s := testSeal(b)
	for b.Loop() {
		if err := k.Sign(&s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	k := testKey(b)
	s := signedSeal(b)
	for b.Loop() {
		if err := k.Verify(&s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnmarshalBinary(b *testing.B) {
	s := signedSeal(b)
	enc, _ := s.MarshalBinary()
	b.SetBytes(int64(len(enc)))
	for b.Loop() {
		var got Seal
		if err := got.UnmarshalBinary(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeJSON(b *testing.B) {
	s := signedSeal(b)
	enc, _ := json.Marshal(s)
	b.SetBytes(int64(len(enc)))
	for b.Loop() {
		if _, err := DecodeJSON(enc); err != nil {
			b.Fatal(err)
		}
	}
}
