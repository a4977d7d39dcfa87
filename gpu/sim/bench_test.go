package sim

import (
	"context"
	"crypto/sha256"
	"flag"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/vramseal/vramseal/gpu"
)

var benchBytes = flag.Int64("benchbytes", 256<<20, "bytes of the simulated shard in the LeafHashes benchmarks (1073741824 for the 1 GiB target)")

// benchChunk is the default chunk size of a seal (64 KiB).
const benchChunk = 64 << 10

// benchShard is one allocation shared by the benchmarks, filled and touched
// once: the first touch of fresh memory is slow and is not what they measure.
var benchShard = sync.OnceValues(func() (*benchState, error) {
	devs, err := New(Options{Capacity: *benchBytes})
	if err != nil {
		return nil, err
	}
	d := devs[0]
	b, err := d.Alloc(context.Background(), *benchBytes)
	if err != nil {
		return nil, err
	}
	r := rand.NewChaCha8([32]byte{1})
	piece := make([]byte, 4<<20)
	for off := int64(0); off < *benchBytes; off += int64(len(piece)) {
		p := piece[:min(int64(len(piece)), *benchBytes-off)]
		r.Read(p)
		if err := d.Write(context.Background(), b, off, p); err != nil {
			return nil, err
		}
	}
	v, _ := d.allocs.Load(b.(buffer).id)
	n := gpu.ChunkCount(*benchBytes, benchChunk)
	s := &benchState{d: d, b: b, data: v.(*allocation).data, chunks: make([]int64, n), out: make([][gpu.HashSize]byte, n)}
	for i := range s.chunks {
		s.chunks[i] = int64(i)
	}
	return s, nil
})

type benchState struct {
	d      *Device
	b      gpu.Buffer
	data   []byte // the device's own copy, for the baseline
	chunks []int64
	out    [][gpu.HashSize]byte
}

func shard(b *testing.B) *benchState {
	s, err := benchShard()
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func (s *benchState) verify(b *testing.B) {
	if err := s.d.LeafHashes(b.Context(), s.b, benchChunk, s.chunks, s.out); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSHA256Baseline is one single-threaded SHA-256 pass over the
// shard's bytes, the baseline of BenchmarkLeafHashes.
func BenchmarkSHA256Baseline(b *testing.B) {
	s := shard(b)
	b.SetBytes(int64(len(s.data)))
	for b.Loop() {
		sha256.Sum256(s.data)
	}
}

// BenchmarkLeafHashes is a full verify's hashing: every 64 KiB leaf of the
// shard on all cores.
func BenchmarkLeafHashes(b *testing.B) {
	s := shard(b)
	s.verify(b)
	b.SetBytes(int64(len(s.data)))
	for b.Loop() {
		s.verify(b)
	}
}

// BenchmarkLeafHashesRatio interleaves a full LeafHashes pass and a
// single-threaded SHA-256 pass over the same bytes and reports their time
// ratio (target <= 0.65), so that load from other processes hits both.
func BenchmarkLeafHashesRatio(b *testing.B) {
	s := shard(b)
	s.verify(b)
	b.SetBytes(int64(len(s.data)))
	var leaves, base time.Duration
	for b.Loop() {
		t0 := time.Now()
		s.verify(b)
		t1 := time.Now()
		sha256.Sum256(s.data)
		leaves, base = leaves+t1.Sub(t0), base+time.Since(t1)
	}
	b.ReportMetric(float64(leaves)/float64(base), "leaves/sha256")
}

// BenchmarkLeafHashesSampled is a sampled verify's hashing: 16 scattered
// 64 KiB leaves.
func BenchmarkLeafHashesSampled(b *testing.B) {
	s := shard(b)
	n := int64(len(s.chunks))
	chunks := make([]int64, 16)
	for i := range chunks {
		chunks[i] = int64(i) * n / 16
	}
	out := make([][gpu.HashSize]byte, 16)
	b.SetBytes(16 * benchChunk)
	for b.Loop() {
		if err := s.d.LeafHashes(b.Context(), s.b, benchChunk, chunks, out); err != nil {
			b.Fatal(err)
		}
	}
}
