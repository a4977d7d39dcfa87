package vram

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/gpu/sim"
	"github.com/vramseal/vramseal/narration"
)

// observedPair returns two managers over identical warm simulated devices:
// one with no audit log and no narration, one with a real audit log in a
// temp dir (fail-closed, critical events fsynced) and JSON narration.
func observedPair(tb testing.TB, capacity int64) (off, on *Manager) {
	tb.Helper()
	mk := func(obs bool) *Manager {
		devs, err := sim.New(sim.Options{Capacity: capacity, ReuseFreed: true})
		if err != nil {
			tb.Fatal(err)
		}
		opts := Options{Devices: []gpu.Device{devs[0]}, Key: testKey(tb), WorkerID: "w", Environ: []string{}}
		if obs {
			dir := filepath.Join(tb.TempDir(), "audit")
			if _, err := audit.Init(dir, audit.Options{}); err != nil {
				tb.Fatal(err)
			}
			log, err := audit.Open(dir, audit.Options{Service: "vramseal"})
			if err != nil {
				tb.Fatal(err)
			}
			tb.Cleanup(func() { log.Close(context.Background()) })
			opts.Audit = log
			opts.Narrator = narration.New(narration.Options{Sinks: []narration.Sink{narration.NewJSONSink(io.Discard)}, Level: slog.LevelInfo})
		}
		m, err := New(context.Background(), opts)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { m.Close(context.Background()) })
		return m
	}
	return mk(false), mk(true)
}

func BenchmarkObservability(b *testing.B) {
	off, on := observedPair(b, 64<<20)
	data := randomBytes(3, 1<<20)
	for _, c := range []struct {
		name string
		m    *Manager
	}{{"off", off}, {"on", on}} {
		b.Run("seal-1MiB/"+c.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				sealAndRelease(b, c.m, data)
			}
		})
		b.Run("verify-sampled16/"+c.name, func(b *testing.B) {
			sealBytes(b, c.m, "v", 0, data)
			defer c.m.Release(context.Background(), "v")
			for b.Loop() {
				if _, err := c.m.Verify(context.Background(), "v", Sampled(16)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestObservabilityOverhead measures what the audit log and narration add
// to seal and verify, interleaving runs with both off and both on, and
// prints medians. It runs only with VRAMSEAL_PERF=1:
//
//	VRAMSEAL_PERF=1 go test -run TestObservabilityOverhead -v ./vram
func TestObservabilityOverhead(t *testing.T) {
	if os.Getenv("VRAMSEAL_PERF") == "" {
		t.Skip("set VRAMSEAL_PERF=1 to measure observability overhead")
	}
	big := benchSize(t)
	off, on := observedPair(t, int64(2*big)+64<<20)
	med := func(v []time.Duration) time.Duration { slices.Sort(v); return v[len(v)/2] }
	timeIt := func(f func()) time.Duration { s := time.Now(); f(); return time.Since(s) }
	measure := func(rounds int, f func(m *Manager)) (time.Duration, time.Duration) {
		f(off)
		f(on)
		var a, b []time.Duration
		for range rounds {
			a = append(a, timeIt(func() { f(off) }))
			b = append(b, timeIt(func() { f(on) }))
		}
		return med(a), med(b)
	}
	small := randomBytes(4, 1<<20)
	s0, s1 := measure(301, func(m *Manager) { sealAndRelease(t, m, small) })
	for _, m := range []*Manager{off, on} {
		sealBytes(t, m, "v", 0, small)
	}
	v0, v1 := measure(1001, func(m *Manager) {
		if _, err := m.Verify(context.Background(), "v", Sampled(16)); err != nil {
			t.Fatal(err)
		}
	})
	large := randomBytes(5, big)
	l0, l1 := measure(11, func(m *Manager) { sealAndRelease(t, m, large) })
	pct := func(a, b time.Duration) float64 { return 100 * float64(b-a) / float64(a) }
	t.Log("\n" + fmt.Sprintf(`observability off vs on (audit log fsync + JSON narration), medians, interleaved
seal 1 MiB          off %v  on %v  added %v
verify sampled 16   off %v  on %v  added %v
seal %d MiB       off %v  on %v  added %v (%.2f%% of the seal; target < 0.5%%)`,
		s0, s1, s1-s0, v0, v1, v1-v0, big>>20, l0, l1, l1-l0, pct(l0, l1)))
}
