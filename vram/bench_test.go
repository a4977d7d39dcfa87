package vram

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/gpu/sim"
	"github.com/vramseal/vramseal/seal"
)

// benchSize is the shard size of the large benchmarks: 1 GiB, or
// VRAMSEAL_BENCH_BYTES.
func benchSize(tb testing.TB) int {
	if v := os.Getenv("VRAMSEAL_BENCH_BYTES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			tb.Fatalf("VRAMSEAL_BENCH_BYTES=%q", v)
		}
		return n
	}
	return 1 << 30
}

// benchManager returns a manager with the default 64 KiB chunks and room
// for two shards of size bytes.
func benchManager(tb testing.TB, size int) *Manager {
	devs, err := sim.New(sim.Options{Capacity: int64(2*size) + 1<<20, ReuseFreed: true})
	if err != nil {
		tb.Fatal(err)
	}
	m, _ := newTestManager(tb, 1, 0, func(o *Options) { o.ChunkSize, o.Devices = 0, []gpu.Device{devs[0]} })
	return m
}

func BenchmarkSHA256Baseline(b *testing.B) {
	data := randomBytes(1, benchSize(b))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		sha256.Sum256(data)
	}
}

func BenchmarkSeal(b *testing.B) {
	data := randomBytes(1, benchSize(b))
	m := benchManager(b, len(data))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		sealAndRelease(b, m, data)
	}
}

func sealAndRelease(tb testing.TB, m *Manager, data []byte) {
	if _, err := m.Seal(context.Background(), SealRequest{ShardID: "bench", ModelRef: "m", Size: int64(len(data)), Data: bytes.NewReader(data)}); err != nil {
		tb.Fatal(err)
	}
	if err := m.Release(context.Background(), "bench"); err != nil {
		tb.Fatal(err)
	}
}

func BenchmarkVerifyFull(b *testing.B) {
	data := randomBytes(1, benchSize(b))
	m := benchManager(b, len(data))
	sealBytes(b, m, "s", 0, data)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := m.Verify(context.Background(), "s", Full); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifySampled16(b *testing.B) {
	data := randomBytes(1, benchSize(b))
	m := benchManager(b, len(data))
	sealBytes(b, m, "s", 0, data)
	for b.Loop() {
		if _, err := m.Verify(context.Background(), "s", Sampled(16)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCapacity(b *testing.B) {
	m, _ := newTestManager(b, 1, 1<<30)
	sealBytes(b, m, "s", 0, []byte("x"))
	for b.Loop() {
		if _, err := m.Capacity(context.Background(), 0); err != nil {
			b.Fatal(err)
		}
	}
}

// TestPerformanceRatios measures the performance targets as
// ratios against a single-threaded SHA-256 pass over the same bytes,
// interleaving the runs so that machine noise hits both alike, and prints
// medians. It runs only with VRAMSEAL_PERF=1 (it needs about 3 GiB of
// memory and a minute):
//
//	VRAMSEAL_PERF=1 go test -run TestPerformanceRatios -v ./vram
func TestPerformanceRatios(t *testing.T) {
	if os.Getenv("VRAMSEAL_PERF") == "" {
		t.Skip("set VRAMSEAL_PERF=1 to measure performance ratios")
	}
	const rounds = 7
	data := randomBytes(1, benchSize(t))
	m := benchManager(t, len(data))
	timeIt := func(f func()) time.Duration {
		start := time.Now()
		f()
		return time.Since(start)
	}
	// Warm up: first touch of fresh memory is slow on virtual machines.
	sha256.Sum256(data)
	sealAndRelease(t, m, data)
	sealBytes(t, m, "resident", 0, data)
	if _, err := m.Verify(context.Background(), "resident", Full); err != nil {
		t.Fatal(err)
	}
	var shaT, sealT, verifyT []time.Duration
	for range rounds {
		shaT = append(shaT, timeIt(func() { sha256.Sum256(data) }))
		sealT = append(sealT, timeIt(func() { sealAndRelease(t, m, data) }))
		verifyT = append(verifyT, timeIt(func() {
			if _, err := m.Verify(context.Background(), "resident", Full); err != nil {
				t.Fatal(err)
			}
		}))
	}
	sampled := make([]time.Duration, 0, 1000)
	for range 1000 {
		sampled = append(sampled, timeIt(func() {
			if _, err := m.Verify(context.Background(), "resident", Sampled(16)); err != nil {
				t.Fatal(err)
			}
		}))
	}
	var capT []time.Duration
	for range 50 {
		const n = 10000
		d := timeIt(func() {
			for range n {
				m.Capacity(context.Background(), 0)
			}
		})
		capT = append(capT, d/n)
	}
	var s seal.Seal
	sh, _ := m.Shard("resident")
	s = sh.Seal
	k := m.Key()
	var signT, checkT []time.Duration
	for range 50 {
		const n = 1000
		signT = append(signT, timeIt(func() {
			for range n {
				k.Sign(&s)
			}
		})/n)
		checkT = append(checkT, timeIt(func() {
			for range n {
				k.Verify(&s)
			}
		})/n)
	}
	med := func(v []time.Duration) time.Duration { slices.Sort(v); return v[len(v)/2] }
	sha, sl, vf := med(shaT), med(sealT), med(verifyT)
	report := fmt.Sprintf(`shard %d bytes, GOMAXPROCS %d, medians of %d interleaved rounds
sha256 single pass  %v (%.0f MB/s)
seal from memory    %v  ratio %.3f (target <= 1.15)
full verify         %v  ratio %.3f (target <= 0.65)
sampled verify 16   %v (target < 1ms)
capacity query      %v (target < 1us)
seal sign           %v, seal verify %v (target < 10us)`,
		len(data), runtimeProcs(), rounds, sha, float64(len(data))/sha.Seconds()/1e6, sl, float64(sl)/float64(sha), vf, float64(vf)/float64(sha),
		med(sampled), med(capT), med(signT), med(checkT))
	t.Log("\n" + report)
}
