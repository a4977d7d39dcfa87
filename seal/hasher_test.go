package seal

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"testing"
)

// writeSplits writes data to h in pieces whose sizes come from sizes.
func writeSplits(t *testing.T, h *Hasher, data []byte, sizes func() int) {
	t.Helper()
	for len(data) > 0 {
		n := min(sizes(), len(data))
		if got, err := h.Write(data[:n]); got != n || err != nil {
			t.Fatalf("Write(%d bytes) = %d, %v", n, got, err)
		}
		data = data[n:]
	}
}

func TestHasherMatchesOneShot(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	type tc struct {
		name  string
		size  int
		chunk int64
		sizes func() int
	}
	var tests []tc
	for _, size := range []int{0, 1, 100, 4096, 4097, 3*65536 - 1, 3 * 65536, 1<<20 + 3, 3<<20 + 17} {
		for _, chunk := range []int64{1024, 4096, DefaultChunkSize} {
			tests = append(tests,
				tc{"one write", size, chunk, func() int { return size + 1 }},
				tc{"1-byte writes", size, chunk, func() int { return 1 }},
				tc{"random small", size, chunk, func() int { return 1 + r.IntN(int(chunk)*2) }},
				tc{"random large", size, chunk, func() int { return 1 + r.IntN(1<<20) }},
				tc{"chunk aligned", size, chunk, func() int { return int(chunk) * (1 + r.IntN(40)) }},
				tc{"misaligned large", size, chunk, func() int { return int(chunk)*(2+r.IntN(40)) + 1 + r.IntN(int(chunk)-1) }},
			)
		}
	}
	for _, tt := range tests {
		if tt.name == "1-byte writes" && tt.size > 1<<16 {
			continue
		}
		t.Run(fmt.Sprintf("%s/size=%d/chunk=%d", tt.name, tt.size, tt.chunk), func(t *testing.T) {
			data := randBytes(uint64(tt.size), tt.size)
			h := NewHasher(tt.chunk)
			defer h.Close()
			writeSplits(t, h, data, tt.sizes)
			digest, leaves, size := h.Sum()
			if want := Hash(sha256.Sum256(data)); digest != want {
				t.Errorf("Sum digest = %s, want %s", digest, want)
			}
			if size != int64(tt.size) {
				t.Errorf("Sum size = %d, want %d", size, tt.size)
			}
			want := naiveLeaves(data, int(tt.chunk))
			if len(leaves) != len(want) {
				t.Fatalf("Sum has %d leaves, want %d", len(leaves), len(want))
			}
			for i := range want {
				if leaves[i] != want[i] {
					t.Fatalf("leaf %d = %s, want %s", i, leaves[i], want[i])
				}
			}
		})
	}
}

// TestHasherDoesNotRetainInput overwrites every buffer right after Write
// returns: results must not change, for both the in-place and the copied
// paths.
func TestHasherDoesNotRetainInput(t *testing.T) {
	data := randBytes(3, 2<<20+5000)
	r := rand.New(rand.NewPCG(1, 2))
	for _, maxWrite := range []int{1000, 70000, 1 << 20} {
		t.Run(fmt.Sprint(maxWrite), func(t *testing.T) {
			h := NewHasher(4096)
			defer h.Close()
			buf := make([]byte, maxWrite)
			for off := 0; off < len(data); {
				n := min(1+r.IntN(maxWrite), len(data)-off)
				copy(buf, data[off:off+n])
				h.Write(buf[:n])
				for i := range buf[:n] {
					buf[i] = 0xff
				}
				off += n
			}
			digest, leaves, _ := h.Sum()
			if digest != sha256.Sum256(data) {
				t.Errorf("digest changed after the caller reused its buffer")
			}
			if Root(leaves) != Root(naiveLeaves(data, 4096)) {
				t.Errorf("leaves changed after the caller reused its buffer")
			}
		})
	}
}

func TestHasherLifecycle(t *testing.T) {
	data := randBytes(4, 300<<10)

	h := NewHasher(0)
	if h.chunkSize != DefaultChunkSize {
		t.Errorf("NewHasher(0) chunk size = %d, want %d", h.chunkSize, DefaultChunkSize)
	}
	h.Write(data)
	d1, l1, s1 := h.Sum()
	d2, l2, s2 := h.Sum()
	if d1 != d2 || s1 != s2 || len(l1) != len(l2) {
		t.Errorf("second Sum differs from the first")
	}
	if n, err := h.Write([]byte("x")); n != 0 || err == nil {
		t.Errorf("Write after Sum = %d, %v, want 0 and an error", n, err)
	}
	h.Close() // safe after Sum
	if d, _, _ := h.Sum(); d != d1 {
		t.Errorf("Sum after Close changed the digest")
	}

	// Abandoned with chunks in flight.
	h = NewHasher(1024)
	h.Write(data[:5000])
	h.Write(data)
	h.Close()
	h.Close()
	if n, err := h.Write(data); n != 0 || err == nil {
		t.Errorf("Write after Close = %d, %v, want 0 and an error", n, err)
	}
	if d, l, s := h.Sum(); !d.IsZero() || l != nil || s != 0 {
		t.Errorf("Sum after Close = %s, %d leaves, %d; want zero values", d, len(l), s)
	}

	// Input shorter than a chunk is hashed on the caller alone.
	h = NewHasher(1024)
	h.Write(data[:1000])
	if h.pool != nil && h.pool.started {
		t.Errorf("a 1000-byte input started the leaf workers")
	}
	if _, l, _ := h.Sum(); len(l) != 1 || l[0] != LeafHash(data[:1000]) {
		t.Errorf("Sum of a short input = %d leaves, want its one leaf", len(l))
	}

	// Empty input.
	h = NewHasher(1024)
	h.Write(nil)
	d, l, s := h.Sum()
	if d != sha256.Sum256(nil) || l != nil || s != 0 {
		t.Errorf("Sum of nothing = %s, %d leaves, %d", d, len(l), s)
	}
	if Root(l) != Root(Leaves(nil, 1024)) {
		t.Errorf("Root of empty Hasher differs from Root(Leaves(nil))")
	}
}

// TestHasherBoundedBuffers writes many small pieces, which go through the
// pooled buffers, and checks that the pool never grows past its bound.
func TestHasherBoundedBuffers(t *testing.T) {
	data := randBytes(5, 4<<20)
	h := NewHasher(1024)
	defer h.Close()
	r := rand.New(rand.NewPCG(3, 4))
	writeSplits(t, h, data, func() int { return 1 + r.IntN(3000) })
	if h.pool == nil {
		t.Fatal("no worker pool after 4 MiB of writes")
	}
	if limit := 2*h.pool.workers + 2; h.pool.nbuf > limit || cap(h.pool.free) != limit {
		t.Errorf("pool allocated %d chunk buffers (capacity %d), want at most %d", h.pool.nbuf, cap(h.pool.free), limit)
	}
	if digest, _, _ := h.Sum(); digest != sha256.Sum256(data) {
		t.Errorf("digest differs")
	}
}

// TestHashersConcurrent runs independent Hashers at once (for -race).
func TestHashersConcurrent(t *testing.T) {
	done := make(chan error)
	for g := range 4 {
		go func() {
			data := randBytes(uint64(100+g), 1<<20+g*777)
			h := NewHasher(4096)
			defer h.Close()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for p := data; len(p) > 0; {
				n := min(1+r.IntN(300<<10), len(p))
				h.Write(p[:n])
				p = p[n:]
			}
			digest, leaves, _ := h.Sum()
			if digest != sha256.Sum256(data) || Root(leaves) != Root(Leaves(data, 4096)) {
				done <- fmt.Errorf("hasher %d: results differ from one-shot", g)
				return
			}
			done <- nil
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
