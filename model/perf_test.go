package model_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/gpu/sim"
	"github.com/vramseal/vramseal/model"
	"github.com/vramseal/vramseal/provenance"
	"github.com/vramseal/vramseal/provenance/provenancetest"
	"github.com/vramseal/vramseal/tensor"
	"github.com/vramseal/vramseal/vram"
)

// writeSafetensors writes a safetensors file of one U8 tensor of n bytes
// of pseudo-random data and returns its SHA-256.
func writeSafetensors(t testing.TB, p string, n int64, seed uint64) [32]byte {
	t.Helper()
	hdr := fmt.Sprintf(`{"w":{"dtype":"U8","shape":[%d],"data_offsets":[0,%d]}}`, n, n)
	hdr += strings.Repeat(" ", (8-len(hdr)%8)%8)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	w := io.MultiWriter(f, h)
	var l [8]byte
	binary.LittleEndian.PutUint64(l[:], uint64(len(hdr)))
	w.Write(l[:])
	io.WriteString(w, hdr)
	rng := rand.NewChaCha8([32]byte{byte(seed)})
	buf := make([]byte, 4<<20)
	for left := n; left > 0; left -= int64(len(buf)) {
		b := buf[:min(int64(len(buf)), left)]
		rng.Read(b)
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// parallelSHA256 hashes the files with SHA-256, one goroutine each: the
// baseline a model add is compared with.
func parallelSHA256(t testing.TB, paths []string) {
	var wg sync.WaitGroup
	for _, p := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Open(p)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			if _, err := io.Copy(sha256.New(), f); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

// TestModelAddPerformance measures model add of a directory of 4 files
// against hashing them with SHA-256 in parallel in the same run, and model
// add with a signature against model add without. Set VRAMSEAL_PERF=1 to
// run it; VRAMSEAL_PERF_MIB sets the file size (default 256) and
// VRAMSEAL_PERF_ROUNDS the rounds (default 5); VRAMSEAL_PERF_PHASES=1
// logs each add's preparation (signature and layout checks) and seal
// times. It asserts no time.
func TestModelAddPerformance(t *testing.T) {
	if os.Getenv("VRAMSEAL_PERF") == "" {
		t.Skip("set VRAMSEAL_PERF=1 to measure")
	}
	mib, rounds := int64(256), 5
	if v, err := strconv.Atoi(os.Getenv("VRAMSEAL_PERF_MIB")); err == nil && v > 0 {
		mib = int64(v)
	}
	if v, err := strconv.Atoi(os.Getenv("VRAMSEAL_PERF_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	root := t.TempDir()
	dir := filepath.Join(root, "m")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	digests := provenance.Digests{}
	var paths []string
	for i := range 4 {
		name := fmt.Sprintf("model-%05d-of-00004.safetensors", i+1)
		paths = append(paths, filepath.Join(dir, name))
		digests[name] = writeSafetensors(t, paths[i], mib<<20, uint64(i))
	}
	signer, err := provenancetest.NewSigner("p256")
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := signer.Sign("m", digests)
	if err != nil {
		t.Fatal(err)
	}
	devs, err := sim.New(sim.Options{Capacity: 4*(mib<<20) + 1<<30, ReuseFreed: true})
	if err != nil {
		t.Fatal(err)
	}
	m, err := vram.New(context.Background(), vram.Options{Devices: []gpu.Device{devs[0]}, Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	r, err := os.OpenRoot(root)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	var peakHeap uint64
	add := func(signed bool) time.Duration {
		start := time.Now()
		l, err := model.Open(r, "m")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		var exp *model.Expectation
		if signed {
			if exp, err = model.ExpectSignature(bundle, signer.PublicKeyPEM()); err != nil {
				t.Fatal(err)
			}
			if err := l.Check(exp); err != nil {
				t.Fatal(err)
			}
		}
		stop := make(chan struct{})
		sampled := make(chan uint64)
		go func() {
			var ms runtime.MemStats
			var peak uint64
			for {
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse)
				select {
				case <-stop:
					sampled <- peak
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
		t0 := time.Now()
		_, err = m.SealModel(context.Background(), l.Request("m", "", exp, nil))
		d := time.Since(start)
		if os.Getenv("VRAMSEAL_PERF_PHASES") != "" {
			t.Logf("signed=%v prep %v seal %v", signed, t0.Sub(start), time.Since(t0))
		}
		close(stop)
		peakHeap = max(peakHeap, <-sampled)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.ReleaseModel(context.Background(), "m", false); err != nil {
			t.Fatal(err)
		}
		return d
	}
	hash := func() time.Duration {
		start := time.Now()
		parallelSHA256(t, paths)
		return time.Since(start)
	}
	// Warm up: the page cache, the simulator's memory, the code paths.
	hash()
	add(false)
	add(true)
	var base, plain, signed []time.Duration
	for i := range rounds {
		// Alternate the order so drift on a shared machine hits all three.
		steps := []func(){
			func() { base = append(base, hash()) },
			func() { plain = append(plain, add(false)) },
			func() { signed = append(signed, add(true)) },
		}
		if i%2 == 1 {
			slices.Reverse(steps)
		}
		for _, s := range steps {
			s()
		}
	}
	med := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	mb, mp, ms := med(base), med(plain), med(signed)
	t.Logf("4 x %d MiB, %d rounds, GOMAXPROCS %d, medians:", mib, rounds, runtime.GOMAXPROCS(0))
	t.Logf("  parallel SHA-256 of the files: %v", mb)
	t.Logf("  model add:                     %v (%.3f x the parallel SHA-256)", mp, float64(mp)/float64(mb))
	t.Logf("  model add --signature:         %v (%.3f x model add)", ms, float64(ms)/float64(mp))
	t.Logf("  peak Go heap in use during a model add: %.1f MiB", float64(peakHeap)/(1<<20))
}

// TestTensorLookupPerformance times naming the tensors of a failed verify
// in a shard of 10,000 tensors. It asserts no time; set VRAMSEAL_PERF=1.
func TestTensorLookupPerformance(t *testing.T) {
	if os.Getenv("VRAMSEAL_PERF") == "" {
		t.Skip("set VRAMSEAL_PERF=1 to measure")
	}
	const n, each = 10_000, 4096
	var hdr strings.Builder
	hdr.WriteByte('{')
	for i := range n {
		if i > 0 {
			hdr.WriteByte(',')
		}
		fmt.Fprintf(&hdr, `"model.layers.%d.weight":{"dtype":"F16","shape":[%d],"data_offsets":[%d,%d]}`, i, each/2, i*each, (i+1)*each)
	}
	hdr.WriteByte('}')
	prefix := make([]byte, 8, 8+hdr.Len())
	binary.LittleEndian.PutUint64(prefix, uint64(hdr.Len()))
	prefix = append(prefix, hdr.String()...)
	size := int64(len(prefix)) + n*each
	tm, err := tensor.ParseSafetensors(prefix, size)
	if err != nil {
		t.Fatal(err)
	}
	// What a failed verify asks: every changed range of 64 KiB chunks,
	// here 100 scattered ones, bounded to vram.MaxTensorHits names.
	var ds []time.Duration
	for range 200 {
		start := time.Now()
		hits := 0
		for c := int64(0); c < 100; c++ {
			off := (c*7919 + 13) % (size / 65536) * 65536
			h, _ := tm.Lookup(off, 65536, vram.MaxTensorHits+1)
			hits += len(h)
		}
		ds = append(ds, time.Since(start))
		if hits == 0 {
			t.Fatal("no hits")
		}
	}
	slices.Sort(ds)
	t.Logf("10,000 tensors, 100 changed 64 KiB chunks: lookup median %v, max %v (200 runs)", ds[len(ds)/2], ds[len(ds)-1])
}
