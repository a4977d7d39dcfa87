package sim

import (
	"context"
	"crypto/sha256"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vramseal/vramseal/gpu"
)

const poolChunk = 4 << 10

func poolData(t *testing.T) []byte {
	t.Helper()
	data := make([]byte, 256*poolChunk+100) // a short last chunk
	r := rand.New(rand.NewPCG(7, 9))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	return data
}

// wantLeaves computes the leaf hashes of chunks one at a time.
func wantLeaves(data []byte, chunks []int64) [][gpu.HashSize]byte {
	out := make([][gpu.HashSize]byte, len(chunks))
	for j, c := range chunks {
		end := min((c+1)*poolChunk, int64(len(data)))
		out[j] = sha256.Sum256(append([]byte{0}, data[c*poolChunk:end]...))
	}
	return out
}

// waitHelpersGone waits until the goroutine count is back to n: helpers
// end after their spin window.
func waitHelpersGone(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines 10 s after the last hash call, want %d: helpers did not end", runtime.NumGoroutine(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// Calls from many goroutines at once, close together so that helpers poll
// and move between calls, each get exactly their own chunks' hashes.
func TestHelpersShareCallsCorrectly(t *testing.T) {
	data := poolData(t)
	n := int64(len(data)+poolChunk-1) / poolChunk
	before := runtime.NumGoroutine()
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range 60 {
				chunks := make([]int64, 33+r.IntN(64)) // over serialBytes: all use helpers
				for i := range chunks {
					chunks[i] = r.Int64N(n)
				}
				out := make([][gpu.HashSize]byte, len(chunks))
				if err := leafHashes(context.Background(), data, poolChunk, chunks, out, 4, 5*time.Millisecond); err != nil {
					t.Error(err)
					return
				}
				want := wantLeaves(data, chunks)
				for j := range out {
					if out[j] != want[j] {
						t.Errorf("goroutine %d: leaf of chunk %d differs from a serial SHA-256", g, chunks[j])
						return
					}
				}
			}
		})
	}
	wg.Wait()
	waitHelpersGone(t, before)
}

// Back-to-back calls are joined by polling helpers (the point of the
// pool); with polling off (spin 0, a negative Options.Spin) none is.
func TestHelpersPollOnlyWhenAsked(t *testing.T) {
	data := poolData(t)
	chunks := make([]int64, 64)
	for i := range chunks {
		chunks[i] = int64(i * 4)
	}
	want := wantLeaves(data, chunks)
	calls := func(spin time.Duration) uint64 {
		before := runtime.NumGoroutine()
		start := pool.polled.Load()
		for range 50 {
			out := make([][gpu.HashSize]byte, len(chunks))
			if err := leafHashes(context.Background(), data, poolChunk, chunks, out, 2, spin); err != nil {
				t.Fatal(err)
			}
			for j := range out {
				if out[j] != want[j] {
					t.Fatalf("spin %v: leaf of chunk %d is wrong", spin, chunks[j])
				}
			}
		}
		polled := pool.polled.Load() - start
		waitHelpersGone(t, before)
		return polled
	}
	if got := calls(0); got != 0 {
		t.Errorf("with polling off, %d calls were joined by polling helpers, want 0", got)
	}
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("one core: helpers have nowhere to poll")
	}
	if got := calls(50 * time.Millisecond); got == 0 {
		t.Errorf("50 back-to-back calls with a 50 ms spin window: none was joined by a polling helper")
	}
}

// A polling helper gives its core up to goroutines that wait for one,
// long before its spin window ends.
func TestHelpersYieldToWaitingGoroutines(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("one core: helpers do not poll")
	}
	data := poolData(t)
	chunks := make([]int64, 64)
	for i := range chunks {
		chunks[i] = int64(i)
	}
	out := make([][gpu.HashSize]byte, len(chunks))
	before := runtime.NumGoroutine()
	for range 5 { // close together: the helpers poll afterwards
		if err := leafHashes(context.Background(), data, poolChunk, chunks, out, 2, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	// More busy goroutines than cores: some wait for one.
	var stop atomic.Bool
	var wg sync.WaitGroup
	busy := runtime.GOMAXPROCS(0) + 1
	for range busy {
		wg.Go(func() {
			for !stop.Load() {
			}
		})
	}
	defer func() { stop.Store(true); wg.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before+busy {
		if time.Now().After(deadline) {
			t.Fatalf("helpers still polling 10 s after other goroutines began waiting for a core (spin window 1 min)")
		}
		time.Sleep(time.Millisecond)
	}
}

// A cancelled call stops its helpers too, and returns the context's error.
func TestHelpersStopOnCancel(t *testing.T) {
	data := poolData(t)
	chunks := make([]int64, 256)
	for i := range chunks {
		chunks[i] = int64(i)
	}
	out := make([][gpu.HashSize]byte, len(chunks))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := leafHashes(ctx, data, poolChunk, chunks, out, 4, time.Millisecond); err != context.Canceled {
		t.Fatalf("leafHashes(cancelled) = %v, want %v", err, context.Canceled)
	}
	if out[0] != ([gpu.HashSize]byte{}) || out[255] != ([gpu.HashSize]byte{}) {
		t.Error("a cancelled call hashed chunks")
	}
}

func TestSpinOption(t *testing.T) {
	for _, tc := range []struct{ in, want time.Duration }{{0, DefaultSpin}, {-1, 0}, {3 * time.Millisecond, 3 * time.Millisecond}} {
		if got := spinOption(tc.in); got != tc.want {
			t.Errorf("spinOption(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
