// Package gputest is the conformance suite that every [gpu.Device]
// implementation passes: device facts, exact or driver-rounded capacity
// accounting, size and range checks (overflowing offsets included), buffer
// lifetime (double free and foreign buffers are errors, never crashes),
// leaf hashes that match seal's reference for random data, chunk sizes and
// chunk subsets, the pointer facts of the VRAM-only policy, concurrent use,
// and formatting that never shows an address.
//
// A backend's test calls [Run] (or [Suite.Run]) with a constructor:
//
//	func TestConformance(t *testing.T) {
//		gputest.Run(t, func(t *testing.T) gpu.Device { return newDevice(t) })
//	}
//
// The suite allocates at most [Suite.MaxAlloc] bytes at once (4 MiB by
// default), so it runs on a real GPU with tens of GiB as well as on the
// simulator. It frees everything it allocates.
package gputest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"sync"
	"testing"

	"github.com/vramseal/vramseal/gpu"
)

// Suite configures a conformance run. The zero value suits a real GPU.
type Suite struct {
	// ExactFree requires [gpu.Info.FreeBytes] to drop by exactly the size
	// of an allocation and to return to its earlier value exactly after
	// Free, as the simulator's bookkeeping does. When false (real drivers
	// round allocations up to their granularity), FreeBytes must drop by at
	// least the size on Alloc and rise by at least the size on Free.
	ExactFree bool
	// MaxAlloc caps the size in bytes of every allocation the suite makes;
	// 0 means 4 MiB. Values under 64 KiB are raised to 64 KiB.
	MaxAlloc int64
	// Goroutines is the number of goroutines of the concurrency test;
	// 0 means 8.
	Goroutines int
	// Seed seeds the random data, sizes and chunk choices; zero is a valid
	// seed. Failures print the seed.
	Seed uint64
}

// Run runs the conformance suite with the zero [Suite].
func Run(t *testing.T, newDevice func(t *testing.T) gpu.Device) {
	t.Helper()
	Suite{}.Run(t, newDevice)
}

// Run runs every conformance test as a subtest of t. newDevice is called
// once per subtest and may return the same device each time (a real GPU)
// or a fresh one (the simulator); it reports its own failures through the
// t it is given.
func (s Suite) Run(t *testing.T, newDevice func(t *testing.T) gpu.Device) {
	t.Helper()
	if s.MaxAlloc == 0 {
		s.MaxAlloc = 4 << 20
	}
	s.MaxAlloc = max(s.MaxAlloc, 64<<10)
	if s.Goroutines <= 0 {
		s.Goroutines = 8
	}
	tests := []struct {
		name string
		run  func(t *testing.T, d gpu.Device)
	}{
		{"Info", s.testInfo},
		{"Capacity", s.testCapacity},
		{"AllocSize", s.testAllocSize},
		{"OutOfMemory", s.testOutOfMemory},
		{"WriteRange", s.testWriteRange},
		{"Lifetime", s.testLifetime},
		{"ForeignBuffer", s.testForeignBuffer},
		{"LeafHashes", s.testLeafHashes},
		{"ChunkSubsets", s.testChunkSubsets},
		{"ChunkRange", s.testChunkRange},
		{"PointerFacts", s.testPointerFacts},
		{"ProtectExport", s.testProtectExport},
		{"Concurrency", s.testConcurrency},
		{"Format", s.testFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, newDevice(t))
		})
	}
}

// rng returns the random source of one test, derived from the seed and the
// test's name so that tests do not depend on their order.
func (s Suite) rng(t *testing.T) *rand.Rand {
	var h uint64 = 14695981039346656037 // FNV-1a over the name
	for _, c := range []byte(t.Name()) {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return rand.New(rand.NewPCG(s.Seed, h))
}

// info returns the device's facts or stops the test.
func info(t *testing.T, d gpu.Device) gpu.Info {
	t.Helper()
	in, err := d.Info(t.Context())
	if err != nil {
		t.Fatalf("Info() error = %v", err)
	}
	return in
}

// alloc allocates size bytes and frees them when the test ends (a buffer
// the test already freed is skipped).
func alloc(t *testing.T, d gpu.Device, size int64) gpu.Buffer {
	t.Helper()
	b, err := d.Alloc(t.Context(), size)
	if err != nil {
		t.Fatalf("Alloc(%d) error = %v", size, err)
	}
	if b == nil {
		t.Fatalf("Alloc(%d) = nil, nil", size)
	}
	t.Cleanup(func() {
		if err := d.Free(context.Background(), b); err != nil && !errors.Is(err, gpu.ErrInvalidBuffer) {
			t.Errorf("Free(%d-byte buffer) at cleanup: %v", size, err)
		}
	})
	return b
}

// fill writes random bytes to the whole buffer in pieces of random length,
// as a streaming shard copy does, and returns what it wrote.
func fill(t *testing.T, d gpu.Device, b gpu.Buffer, r *rand.Rand) []byte {
	t.Helper()
	data := randomBytes(r, b.Size())
	write(t, d, b, data, r)
	return data
}

// write writes data to the start of b in pieces of random length.
func write(t *testing.T, d gpu.Device, b gpu.Buffer, data []byte, r *rand.Rand) {
	t.Helper()
	for off := 0; off < len(data); {
		n := min(len(data)-off, 1+r.IntN(max(len(data)/3, 1)))
		if err := d.Write(t.Context(), b, int64(off), data[off:off+n]); err != nil {
			t.Fatalf("Write(%d-byte buffer, %d, %d bytes) error = %v", b.Size(), off, n, err)
		}
		off += n
	}
}

// randomBytes returns n random bytes.
func randomBytes(r *rand.Rand, n int64) []byte {
	p := make([]byte, n)
	for i := range p {
		if i%8 == 0 {
			v := r.Uint64()
			for j := 0; j < 8 && i+j < len(p); j++ {
				p[i+j] = byte(v >> (8 * j))
			}
		}
	}
	return p
}

// allChunks returns the indexes 0..n-1.
func allChunks(n int64) []int64 {
	idx := make([]int64, n)
	for i := range idx {
		idx[i] = int64(i)
	}
	return idx
}

// checkHashes compares the device's leaf hashes of the chunks of b with
// the reference over want, the bytes b must hold.
func checkHashes(t *testing.T, d gpu.Device, b gpu.Buffer, want []byte, chunkSize int64, chunks []int64) {
	t.Helper()
	if err := hashesMatch(t.Context(), d, b, want, chunkSize, chunks); err != nil {
		t.Fatal(err)
	}
}

// hashesMatch is checkHashes for use from any goroutine.
func hashesMatch(ctx context.Context, d gpu.Device, b gpu.Buffer, want []byte, chunkSize int64, chunks []int64) error {
	out := make([][gpu.HashSize]byte, len(chunks))
	if err := d.LeafHashes(ctx, b, chunkSize, chunks, out); err != nil {
		return fmt.Errorf("LeafHashes(%d-byte buffer, chunk size %d, %d chunks) error = %v", len(want), chunkSize, len(chunks), err)
	}
	for j, c := range chunks {
		start := c * chunkSize
		end := start + min(chunkSize, int64(len(want))-start)
		if ref := leafHash(want[start:end]); out[j] != ref {
			return fmt.Errorf("LeafHashes(%d-byte buffer, chunk size %d): out[%d] (chunk %d) = %x, want %x",
				len(want), chunkSize, j, c, out[j], ref)
		}
	}
	return nil
}

func (s Suite) testInfo(t *testing.T, d gpu.Device) {
	in := info(t, d)
	if in.Index < 0 {
		t.Errorf("Info().Index = %d, want >= 0", in.Index)
	}
	for _, f := range []struct{ name, v string }{{"Name", in.Name}, {"UUID", in.UUID}, {"Driver", in.Driver}} {
		if f.v == "" {
			t.Errorf("Info().%s is empty", f.name)
		}
	}
	if in.TotalBytes == 0 {
		t.Errorf("Info().TotalBytes = 0, want > 0")
	}
	if in.FreeBytes > in.TotalBytes {
		t.Errorf("Info().FreeBytes = %d > TotalBytes %d", in.FreeBytes, in.TotalBytes)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := d.Info(ctx); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Info(cancelled) error = %v, want nil or context.Canceled", err)
	}
}

func (s Suite) testCapacity(t *testing.T, d gpu.Device) {
	for _, size := range []int64{1, 4096, 65537, s.MaxAlloc} {
		before := info(t, d).FreeBytes
		b, err := d.Alloc(t.Context(), size)
		if err != nil {
			t.Fatalf("Alloc(%d) error = %v", size, err)
		}
		if b.Size() != size {
			t.Errorf("Alloc(%d).Size() = %d", size, b.Size())
		}
		if got, want := b.DeviceIndex(), info(t, d).Index; got != want {
			t.Errorf("Alloc(%d).DeviceIndex() = %d, want %d", size, got, want)
		}
		during := info(t, d).FreeBytes
		if err := d.Free(t.Context(), b); err != nil {
			t.Fatalf("Free(%d-byte buffer) error = %v", size, err)
		}
		after := info(t, d).FreeBytes
		drop := int64(before) - int64(during)
		if s.ExactFree {
			if drop != size {
				t.Errorf("Alloc(%d): FreeBytes dropped by %d, want %d", size, drop, size)
			}
			if after != before {
				t.Errorf("Alloc(%d) then Free: FreeBytes = %d, want %d as before", size, after, before)
			}
			continue
		}
		if drop < size {
			t.Errorf("Alloc(%d): FreeBytes dropped by %d, want >= %d", size, drop, size)
		}
		if rise := int64(after) - int64(during); rise < size {
			t.Errorf("Free(%d-byte buffer): FreeBytes rose by %d, want >= %d", size, rise, size)
		}
	}
}

func (s Suite) testAllocSize(t *testing.T, d gpu.Device) {
	before := info(t, d).FreeBytes
	for _, size := range []int64{0, -1, -4096, math.MinInt64} {
		b, err := d.Alloc(t.Context(), size)
		if err == nil {
			t.Errorf("Alloc(%d) = %v, want error", size, b)
			d.Free(t.Context(), b)
		}
	}
	if after := info(t, d).FreeBytes; s.ExactFree && after != before {
		t.Errorf("after rejected allocations FreeBytes = %d, want %d", after, before)
	}
}

func (s Suite) testOutOfMemory(t *testing.T, d gpu.Device) {
	total := info(t, d).TotalBytes
	sizes := []int64{math.MaxInt64}
	if total < math.MaxInt64 {
		sizes = append(sizes, int64(total)+1)
	}
	for _, size := range sizes {
		b, err := d.Alloc(t.Context(), size)
		if err == nil {
			d.Free(t.Context(), b)
			t.Errorf("Alloc(%d) beyond TotalBytes %d succeeded", size, total)
			continue
		}
		if !errors.Is(err, gpu.ErrOutOfMemory) {
			t.Errorf("Alloc(%d) beyond TotalBytes %d error = %v, want %v", size, total, err, gpu.ErrOutOfMemory)
		}
	}
	// The device still works.
	alloc(t, d, 4096)
}

func (s Suite) testWriteRange(t *testing.T, d gpu.Device) {
	r := s.rng(t)
	const size = 4096
	b := alloc(t, d, size)
	want := fill(t, d, b, r)
	chunks := allChunks(gpu.ChunkCount(size, 64))
	checkHashes(t, d, b, want, 64, chunks)

	tests := []struct {
		off int64
		n   int
	}{
		{-1, 1},
		{-1, 0},
		{size, 1},
		{size + 1, 0},
		{size - 1, 2},
		{0, size + 1},
		{1, size},
		{math.MaxInt64, 1},
		{math.MaxInt64 - 1, 2},
		{math.MaxInt64, 0},
		{math.MinInt64, 1},
	}
	for _, tt := range tests {
		p := make([]byte, tt.n)
		for i := range p {
			p[i] = ^want[min(max(int(tt.off), 0)+i, size-1)]
		}
		err := d.Write(t.Context(), b, tt.off, p)
		if !errors.Is(err, gpu.ErrOutOfRange) {
			t.Errorf("Write(%d-byte buffer, %d, %d bytes) error = %v, want %v", size, tt.off, tt.n, err, gpu.ErrOutOfRange)
		}
	}
	checkHashes(t, d, b, want, 64, chunks)

	// Edge writes inside the buffer succeed.
	for _, tt := range []struct {
		off int64
		n   int
	}{{0, 0}, {size, 0}, {size - 1, 1}, {0, size}, {17, 100}} {
		p := randomBytes(r, int64(tt.n))
		if err := d.Write(t.Context(), b, tt.off, p); err != nil {
			t.Errorf("Write(%d-byte buffer, %d, %d bytes) error = %v", size, tt.off, tt.n, err)
			continue
		}
		copy(want[tt.off:], p)
	}
	checkHashes(t, d, b, want, 64, chunks)
}

func (s Suite) testLifetime(t *testing.T, d gpu.Device) {
	b, err := d.Alloc(t.Context(), 4096)
	if err != nil {
		t.Fatalf("Alloc(4096) error = %v", err)
	}
	if err := d.Free(t.Context(), b); err != nil {
		t.Fatalf("Free() error = %v", err)
	}
	checkInvalid(t, d, b, "freed")
	if err := d.Free(t.Context(), b); !errors.Is(err, gpu.ErrInvalidBuffer) {
		t.Errorf("second Free() error = %v, want %v", err, gpu.ErrInvalidBuffer)
	}
	checkInvalid(t, d, nil, "nil")
	if err := d.Free(t.Context(), nil); !errors.Is(err, gpu.ErrInvalidBuffer) {
		t.Errorf("Free(nil) error = %v, want %v", err, gpu.ErrInvalidBuffer)
	}

	// Free works under a cancelled context, so cleanup paths can rely on it,
	// or reports the cancellation and leaves the buffer live.
	b = alloc(t, d, 4096)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := d.Free(ctx, b); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Free(cancelled) error = %v, want nil or context.Canceled", err)
	}
}

// checkInvalid checks that every method taking a buffer rejects b with
// ErrInvalidBuffer. It does not call Free.
func checkInvalid(t *testing.T, d gpu.Device, b gpu.Buffer, what string) {
	t.Helper()
	ctx := t.Context()
	if err := d.Write(ctx, b, 0, []byte{1}); !errors.Is(err, gpu.ErrInvalidBuffer) {
		t.Errorf("Write(%s buffer) error = %v, want %v", what, err, gpu.ErrInvalidBuffer)
	}
	out := make([][gpu.HashSize]byte, 1)
	if err := d.LeafHashes(ctx, b, 64, []int64{0}, out); !errors.Is(err, gpu.ErrInvalidBuffer) {
		t.Errorf("LeafHashes(%s buffer) error = %v, want %v", what, err, gpu.ErrInvalidBuffer)
	}
	if _, err := d.PointerFacts(ctx, b); !errors.Is(err, gpu.ErrInvalidBuffer) {
		t.Errorf("PointerFacts(%s buffer) error = %v, want %v", what, err, gpu.ErrInvalidBuffer)
	}
}

// foreign is a Buffer that no device allocated.
type foreign struct {
	size  int64
	index int
}

func (f foreign) Size() int64      { return f.size }
func (f foreign) DeviceIndex() int { return f.index }
func (f foreign) String() string   { return "foreign buffer" }

// foreignPtr is a pointer-shaped foreign Buffer, as many backends use.
type foreignPtr struct{ foreign }

func (s Suite) testForeignBuffer(t *testing.T, d gpu.Device) {
	before := info(t, d)
	live := alloc(t, d, 4096)
	for _, b := range []gpu.Buffer{
		foreign{size: 4096, index: before.Index},
		&foreignPtr{foreign{size: 4096, index: before.Index}},
	} {
		checkInvalid(t, d, b, fmt.Sprintf("foreign %T", b))
		if err := d.Free(t.Context(), b); !errors.Is(err, gpu.ErrInvalidBuffer) {
			t.Errorf("Free(foreign %T) error = %v, want %v", b, err, gpu.ErrInvalidBuffer)
		}
	}
	// The live buffer is untouched.
	if err := d.Write(t.Context(), live, 0, []byte{1}); err != nil {
		t.Errorf("Write(live buffer) after foreign frees error = %v", err)
	}
	if after := info(t, d).FreeBytes; s.ExactFree && after != before.FreeBytes-4096 {
		t.Errorf("FreeBytes = %d after foreign frees, want %d", after, before.FreeBytes-4096)
	}
}

func (s Suite) testLeafHashes(t *testing.T, d gpu.Device) {
	r := s.rng(t)
	sizes := []int64{1, 2, 63, 64, 65, 1000, 4096, 65537, 1<<20 + 3, s.MaxAlloc}
	for _, size := range sizes {
		if size > s.MaxAlloc {
			continue
		}
		b := alloc(t, d, size)
		want := fill(t, d, b, r)
		chunkSizes := []int64{1, 3, 64, 4095, 4096, 65536, size - 1, size, size + 1, 1 << 40, math.MaxInt64}
		for _, cs := range chunkSizes {
			if cs <= 0 || gpu.ChunkCount(size, cs) > 1<<14 {
				continue
			}
			checkHashes(t, d, b, want, cs, allChunks(gpu.ChunkCount(size, cs)))
		}
		if err := d.Free(t.Context(), b); err != nil {
			t.Fatalf("Free(%d-byte buffer) error = %v", size, err)
		}
	}
}

func (s Suite) testChunkSubsets(t *testing.T, d gpu.Device) {
	r := s.rng(t)
	size := min(s.MaxAlloc, 1<<20) - 12345
	b := alloc(t, d, size)
	want := fill(t, d, b, r)
	for _, cs := range []int64{1, 511, 4096, 65536} {
		n := gpu.ChunkCount(size, cs)
		random := make([]int64, 16)
		for i := range random {
			random[i] = r.Int64N(n)
		}
		reversed := allChunks(min(n, 300))
		slices.Reverse(reversed)
		tests := []struct {
			name   string
			chunks []int64
		}{
			{"none", nil},
			{"empty", []int64{}},
			{"first", []int64{0}},
			{"tail", []int64{n - 1}},
			{"first and tail", []int64{0, n - 1}},
			{"random", random},
			{"duplicates", []int64{n - 1, 0, n - 1, n / 2, 0, n / 2, n / 2}},
			{"reversed", reversed},
		}
		for _, tt := range tests {
			if err := hashesMatch(t.Context(), d, b, want, cs, tt.chunks); err != nil {
				t.Errorf("%s chunks: %v", tt.name, err)
			}
		}
	}
}

func (s Suite) testChunkRange(t *testing.T, d gpu.Device) {
	const size = 10000
	b := alloc(t, d, size)
	fill(t, d, b, s.rng(t))
	tests := []struct {
		chunkSize int64
		chunks    []int64
	}{
		{0, []int64{0}},
		{-1, []int64{0}},
		{math.MinInt64, []int64{0}},
		{64, []int64{-1}},
		{64, []int64{gpu.ChunkCount(size, 64)}},
		{64, []int64{0, 1, gpu.ChunkCount(size, 64)}},
		{64, []int64{math.MaxInt64}},
		{64, []int64{math.MinInt64}},
		{size, []int64{1}},
		{math.MaxInt64, []int64{1}},
		{1, []int64{size}},
	}
	for _, tt := range tests {
		out := make([][gpu.HashSize]byte, len(tt.chunks))
		err := d.LeafHashes(t.Context(), b, tt.chunkSize, tt.chunks, out)
		if !errors.Is(err, gpu.ErrOutOfRange) {
			t.Errorf("LeafHashes(%d-byte buffer, chunk size %d, chunks %v) error = %v, want %v",
				size, tt.chunkSize, tt.chunks, err, gpu.ErrOutOfRange)
		}
	}
	for _, n := range []int{0, 2} {
		out := make([][gpu.HashSize]byte, n)
		if err := d.LeafHashes(t.Context(), b, 64, []int64{0}, out); err == nil {
			t.Errorf("LeafHashes(1 chunk, %d outputs) succeeded, want error", n)
		}
	}
}

func (s Suite) testPointerFacts(t *testing.T, d gpu.Device) {
	index := info(t, d).Index
	b := alloc(t, d, 65536)
	got, err := d.PointerFacts(t.Context(), b)
	if err != nil {
		t.Fatalf("PointerFacts() error = %v", err)
	}
	want := gpu.PointerFacts{MemoryType: gpu.MemoryDevice, DeviceOrdinal: index, Mapped: true}
	if got != want {
		t.Errorf("PointerFacts() = %+v, want %+v", got, want)
	}
}

func (s Suite) testConcurrency(t *testing.T, d gpu.Device) {
	ctx := t.Context()
	before := info(t, d).FreeBytes
	r := s.rng(t)

	// A shared buffer that readers hash while others allocate and free.
	shared := alloc(t, d, min(s.MaxAlloc, 1<<20))
	sharedData := fill(t, d, shared, r)

	var wg sync.WaitGroup
	for g := range s.Goroutines {
		seed := r.Uint64()
		wg.Go(func() {
			r := rand.New(rand.NewPCG(s.Seed, seed))
			maxSize := max(s.MaxAlloc/int64(s.Goroutines), 1)
			for range 6 {
				size := 1 + r.Int64N(maxSize)
				b, err := d.Alloc(ctx, size)
				if err != nil {
					t.Errorf("goroutine %d: Alloc(%d) error = %v", g, size, err)
					return
				}
				data := randomBytes(r, size)
				for off := int64(0); off < size; {
					n := min(size-off, 1+r.Int64N(size))
					if err := d.Write(ctx, b, off, data[off:off+n]); err != nil {
						t.Errorf("goroutine %d: Write(%d-byte buffer, %d, %d bytes) error = %v", g, size, off, n, err)
					}
					off += n
				}
				cs := 1 + r.Int64N(min(size, 70000))
				if err := hashesMatch(ctx, d, b, data, cs, allChunks(gpu.ChunkCount(size, cs))); err != nil {
					t.Errorf("goroutine %d: %v", g, err)
				}
				if _, err := d.PointerFacts(ctx, b); err != nil {
					t.Errorf("goroutine %d: PointerFacts() error = %v", g, err)
				}
				if _, err := d.Info(ctx); err != nil {
					t.Errorf("goroutine %d: Info() error = %v", g, err)
				}
				if g%2 == 0 {
					if err := hashesMatch(ctx, d, shared, sharedData, 4096, allChunks(gpu.ChunkCount(shared.Size(), 4096))); err != nil {
						t.Errorf("goroutine %d: shared buffer: %v", g, err)
					}
				}
				if err := d.Free(ctx, b); err != nil {
					t.Errorf("goroutine %d: Free(%d-byte buffer) error = %v", g, size, err)
				}
			}
		})
	}
	// Racing frees of one buffer: exactly one succeeds.
	racy := alloc(t, d, 4096)
	var frees sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 4 {
		frees.Go(func() {
			err := d.Free(ctx, racy)
			switch {
			case err == nil:
				mu.Lock()
				ok++
				mu.Unlock()
			case !errors.Is(err, gpu.ErrInvalidBuffer):
				t.Errorf("concurrent Free() error = %v, want nil or %v", err, gpu.ErrInvalidBuffer)
			}
		})
	}
	frees.Wait()
	wg.Wait()
	if ok != 1 {
		t.Errorf("%d of 4 concurrent Free() calls of one buffer succeeded, want 1", ok)
	}
	if err := d.Free(ctx, shared); err != nil {
		t.Fatalf("Free(shared) error = %v", err)
	}
	after := info(t, d).FreeBytes
	if s.ExactFree && after != before {
		t.Errorf("FreeBytes = %d after concurrent use, want %d as before", after, before)
	}
	if !s.ExactFree && after < before {
		t.Logf("FreeBytes = %d after concurrent use, %d before (driver granularity or other processes)", after, before)
	}
}

// addressLike matches what a printed pointer looks like: 0x and at least
// eight hex digits, or a bare run of twelve or more hex digits.
var addressLike = regexp.MustCompile(`(?i)0x[0-9a-f]{8,}|\b[0-9a-f]{12,}\b`)

func (s Suite) testFormat(t *testing.T, d gpu.Device) {
	b := alloc(t, d, 1<<20)
	type wrapper struct{ Buffer gpu.Buffer }
	outputs := map[string]string{
		"Sprint":   fmt.Sprint(b),
		"Sprintln": fmt.Sprintln(b),
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		outputs[verb] = fmt.Sprintf(verb, b)
		outputs[verb+" in struct"] = fmt.Sprintf(verb, wrapper{b})
		outputs[verb+" in slice"] = fmt.Sprintf(verb, []gpu.Buffer{b})
	}
	outputs["Errorf"] = fmt.Errorf("op on %v: %w", b, gpu.ErrOutOfRange).Error()
	for how, got := range outputs {
		if got == "" {
			t.Errorf("%s of buffer is empty", how)
		}
		if m := addressLike.FindString(got); m != "" {
			t.Errorf("%s of buffer = %q, which contains %q, an address", how, got, m)
		}
	}
}

func (s Suite) testProtectExport(t *testing.T, d gpu.Device) {
	ctx := t.Context()
	r := s.rng(t)
	size := min(s.MaxAlloc, 3<<20+12345)
	b := alloc(t, d, size)
	want := fill(t, d, b, r)
	if sh, err := d.Export(ctx, b); !errors.Is(err, gpu.ErrNotProtected) {
		if err == nil {
			sh.File.Close()
		}
		t.Fatalf("Export(unprotected) error = %v, want %v", err, gpu.ErrNotProtected)
	}
	for i := range 2 {
		if err := d.Protect(ctx, b); err != nil {
			t.Fatalf("Protect() #%d error = %v", i+1, err)
		}
	}
	facts, err := d.PointerFacts(ctx, b)
	if err != nil {
		t.Fatalf("PointerFacts(protected) error = %v", err)
	}
	if !facts.ReadOnly || facts.MemoryType != gpu.MemoryDevice {
		t.Errorf("PointerFacts(protected) = %+v, want read-only device memory", facts)
	}
	if err := d.Write(ctx, b, 0, []byte{1}); !errors.Is(err, gpu.ErrReadOnly) {
		t.Errorf("Write(protected) error = %v, want %v", err, gpu.ErrReadOnly)
	}
	checkHashes(t, d, b, want, 65536, allChunks(gpu.ChunkCount(size, 65536)))
	for i := range 2 {
		sh, err := d.Export(ctx, b)
		if err != nil {
			t.Fatalf("Export() #%d error = %v", i+1, err)
		}
		if sh.File == nil {
			t.Fatalf("Export() #%d gave no file", i+1)
		}
		if sh.Kind != gpu.ShareMemfd && sh.Kind != gpu.ShareCUDAVMM {
			t.Errorf("Export().Kind = %q, want %q or %q", sh.Kind, gpu.ShareMemfd, gpu.ShareCUDAVMM)
		}
		if sh.Granularity <= 0 || sh.MapSize < size || sh.MapSize%sh.Granularity != 0 || sh.MapSize-size >= sh.Granularity {
			t.Errorf("Export() = map size %d, granularity %d for %d bytes: want the size rounded up to the granularity", sh.MapSize, sh.Granularity, size)
		}
		if err := sh.File.Close(); err != nil {
			t.Errorf("Close(share) error = %v", err)
		}
	}
	// Shares do not keep the allocation: Free works, and Protect, Export
	// and Write of the freed buffer are errors.
	if err := d.Free(ctx, b); err != nil {
		t.Fatalf("Free(protected) error = %v", err)
	}
	if err := d.Protect(ctx, b); !errors.Is(err, gpu.ErrInvalidBuffer) {
		t.Errorf("Protect(freed) error = %v, want %v", err, gpu.ErrInvalidBuffer)
	}
	if _, err := d.Export(ctx, b); !errors.Is(err, gpu.ErrInvalidBuffer) {
		t.Errorf("Export(freed) error = %v, want %v", err, gpu.ErrInvalidBuffer)
	}
}
