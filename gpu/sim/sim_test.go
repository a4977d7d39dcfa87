package sim_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/gpu/gputest"
	"github.com/vramseal/vramseal/gpu/sim"
)

// newDevice returns the first of the devices New makes with opts.
func newDevice(t *testing.T, opts sim.Options) *sim.Device {
	t.Helper()
	devs, err := sim.New(opts)
	if err != nil {
		t.Fatalf("New(%+v) error = %v", opts, err)
	}
	return devs[0]
}

func TestConformance(t *testing.T) {
	tests := []struct {
		name string
		opts sim.Options
	}{
		{"default", sim.Options{}},
		{"one worker", sim.Options{Workers: 1}},
		{"seven workers", sim.Options{Workers: 7, Capacity: 1 << 30}},
		{"second device", sim.Options{Devices: 2, Seed: 42}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gputest.Suite{ExactFree: true, Seed: 1}.Run(t, func(t *testing.T) gpu.Device {
				devs, err := sim.New(tt.opts)
				if err != nil {
					t.Fatalf("New(%+v) error = %v", tt.opts, err)
				}
				return devs[len(devs)-1]
			})
		})
	}
}

var uuidForm = regexp.MustCompile(`^GPU-[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestNew(t *testing.T) {
	tests := []struct {
		opts     sim.Options
		devices  int
		capacity uint64
	}{
		{sim.Options{}, 1, uint64(sim.DefaultCapacity)},
		{sim.Options{Devices: 3, Capacity: 1 << 20}, 3, 1 << 20},
		{sim.Options{Devices: 2, Capacity: 1, Seed: 7, Workers: 3}, 2, 1},
	}
	for _, tt := range tests {
		devs, err := sim.New(tt.opts)
		if err != nil {
			t.Fatalf("New(%+v) error = %v", tt.opts, err)
		}
		if len(devs) != tt.devices {
			t.Fatalf("New(%+v) made %d devices, want %d", tt.opts, len(devs), tt.devices)
		}
		uuids := map[string]bool{}
		for i, d := range devs {
			got, err := d.Info(t.Context())
			if err != nil {
				t.Fatalf("Info() error = %v", err)
			}
			want := gpu.Info{
				Index:         i,
				Name:          sim.Name,
				UUID:          got.UUID,
				Driver:        sim.Driver,
				DriverVersion: sim.DriverVersion,
				TotalBytes:    tt.capacity,
				FreeBytes:     tt.capacity,
				CanHash:       true,
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("New(%+v)[%d].Info() mismatch (-want +got):\n%s", tt.opts, i, diff)
			}
			if !uuidForm.MatchString(got.UUID) {
				t.Errorf("New(%+v)[%d] UUID = %q, want GPU-<version 8 UUID>", tt.opts, i, got.UUID)
			}
			uuids[got.UUID] = true
		}
		if len(uuids) != len(devs) {
			t.Errorf("New(%+v) UUIDs are not distinct: %v", tt.opts, uuids)
		}
	}
}

func TestNewUUIDsDeterministic(t *testing.T) {
	uuid := func(seed uint64) string {
		in, err := newDevice(t, sim.Options{Seed: seed}).Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return in.UUID
	}
	if a, b := uuid(1), uuid(1); a != b {
		t.Errorf("UUID with seed 1 = %q then %q, want equal", a, b)
	}
	if a, b := uuid(1), uuid(2); a == b {
		t.Errorf("UUID with seeds 1 and 2 = %q, want different", a)
	}
}

func TestNewInvalid(t *testing.T) {
	for _, opts := range []sim.Options{
		{Devices: -1},
		{Capacity: -1},
		{Workers: -1},
		{Capacity: math.MinInt64},
	} {
		if devs, err := sim.New(opts); err == nil {
			t.Errorf("New(%+v) = %d devices, want error", opts, len(devs))
		}
	}
}

func TestOutOfMemory(t *testing.T) {
	const capacity = 1 << 20
	d := newDevice(t, sim.Options{Capacity: capacity})
	ctx := t.Context()
	a, err := d.Alloc(ctx, 600_000)
	if err != nil {
		t.Fatalf("Alloc(600000) error = %v", err)
	}
	_, err = d.Alloc(ctx, 600_000)
	if !errors.Is(err, gpu.ErrOutOfMemory) {
		t.Fatalf("Alloc(600000) with 448576 free error = %v, want %v", err, gpu.ErrOutOfMemory)
	}
	for _, n := range []string{"600000", "448576"} {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("Alloc error %q does not give %s bytes", err, n)
		}
	}
	// Exactly the free bytes fit; then nothing does.
	rest, err := d.Alloc(ctx, capacity-600_000)
	if err != nil {
		t.Fatalf("Alloc(%d) of exactly the free bytes error = %v", capacity-600_000, err)
	}
	if _, err := d.Alloc(ctx, 1); !errors.Is(err, gpu.ErrOutOfMemory) {
		t.Errorf("Alloc(1) on a full device error = %v, want %v", err, gpu.ErrOutOfMemory)
	}
	for _, b := range []gpu.Buffer{a, rest} {
		if err := d.Free(ctx, b); err != nil {
			t.Fatalf("Free(%v) error = %v", b, err)
		}
	}
	if _, err := d.Alloc(ctx, capacity); err != nil {
		t.Errorf("Alloc(%d) after freeing all error = %v", capacity, err)
	}
}

func TestBufferFromOtherDevice(t *testing.T) {
	devs, err := sim.New(sim.Options{Devices: 2})
	if err != nil {
		t.Fatal(err)
	}
	other := newDevice(t, sim.Options{}) // same index 0, another New
	b, err := devs[0].Alloc(t.Context(), 4096)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []*sim.Device{devs[1], other} {
		// The other device has a live buffer with the same number.
		if _, err := d.Alloc(t.Context(), 4096); err != nil {
			t.Fatal(err)
		}
		if _, err := d.PointerFacts(t.Context(), b); !errors.Is(err, gpu.ErrInvalidBuffer) {
			t.Errorf("PointerFacts(buffer of another device) error = %v, want %v", err, gpu.ErrInvalidBuffer)
		}
		if err := d.Write(t.Context(), b, 0, []byte{1}); !errors.Is(err, gpu.ErrInvalidBuffer) {
			t.Errorf("Write(buffer of another device) error = %v, want %v", err, gpu.ErrInvalidBuffer)
		}
		if err := d.Free(t.Context(), b); !errors.Is(err, gpu.ErrInvalidBuffer) {
			t.Errorf("Free(buffer of another device) error = %v, want %v", err, gpu.ErrInvalidBuffer)
		}
	}
	if err := devs[0].Free(t.Context(), b); err != nil {
		t.Errorf("Free() on the owning device error = %v", err)
	}
}

// leaf is the reference leaf hash.
func leaf(chunk []byte) [gpu.HashSize]byte {
	return sha256.Sum256(append([]byte{0}, chunk...))
}

// hashes returns the device's leaf hashes of every chunk of b.
func hashes(t *testing.T, d *sim.Device, b gpu.Buffer, chunkSize int64) [][gpu.HashSize]byte {
	t.Helper()
	n := gpu.ChunkCount(b.Size(), chunkSize)
	chunks := make([]int64, n)
	for i := range chunks {
		chunks[i] = int64(i)
	}
	out := make([][gpu.HashSize]byte, n)
	if err := d.LeafHashes(t.Context(), b, chunkSize, chunks, out); err != nil {
		t.Fatalf("LeafHashes() error = %v", err)
	}
	return out
}

// filled allocates size bytes holding a counting pattern.
func filled(t *testing.T, d *sim.Device, size int64) (gpu.Buffer, []byte) {
	t.Helper()
	b, err := d.Alloc(t.Context(), size)
	if err != nil {
		t.Fatalf("Alloc(%d) error = %v", size, err)
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>8)
	}
	if err := d.Write(t.Context(), b, 0, data); err != nil {
		t.Fatalf("Write() error = %v", err)
	}
	return b, data
}

func TestFlipBits(t *testing.T) {
	d := newDevice(t, sim.Options{})
	const size, chunk = 10000, 1024
	b, data := filled(t, d, size)
	clean := hashes(t, d, b, chunk)
	tests := []struct {
		off  int64
		mask byte
	}{{0, 0x01}, {1023, 0x80}, {1024, 0xff}, {size - 1, 0x10}, {5000, 0x24}}
	for _, tt := range tests {
		if err := d.FlipBits(b, tt.off, tt.mask); err != nil {
			t.Fatalf("FlipBits(%d, %#x) error = %v", tt.off, tt.mask, err)
		}
		got := make([]byte, 1)
		if err := d.Peek(b, tt.off, got); err != nil {
			t.Fatalf("Peek(%d) error = %v", tt.off, err)
		}
		if want := data[tt.off] ^ tt.mask; got[0] != want {
			t.Errorf("after FlipBits(%d, %#x) byte = %#x, want %#x", tt.off, tt.mask, got[0], want)
		}
		flipped := hashes(t, d, b, chunk)
		for i := range flipped {
			changed := flipped[i] != clean[i]
			if want := int64(i) == tt.off/chunk; changed != want {
				t.Errorf("after FlipBits(%d, %#x) chunk %d changed = %v, want %v", tt.off, tt.mask, i, changed, want)
			}
		}
		if err := d.FlipBits(b, tt.off, tt.mask); err != nil { // restore
			t.Fatal(err)
		}
	}
	if got := hashes(t, d, b, chunk); !cmp.Equal(got, clean) {
		t.Errorf("after flipping back, hashes differ from the clean ones")
	}
	for _, off := range []int64{-1, size, math.MaxInt64, math.MinInt64} {
		if err := d.FlipBits(b, off, 1); !errors.Is(err, gpu.ErrOutOfRange) {
			t.Errorf("FlipBits(%d) error = %v, want %v", off, err, gpu.ErrOutOfRange)
		}
	}
	if err := d.Free(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	if err := d.FlipBits(b, 0, 1); !errors.Is(err, gpu.ErrInvalidBuffer) {
		t.Errorf("FlipBits(freed) error = %v, want %v", err, gpu.ErrInvalidBuffer)
	}
}

func TestPeek(t *testing.T) {
	d := newDevice(t, sim.Options{})
	b, data := filled(t, d, 5000)
	got := make([]byte, 100)
	if err := d.Peek(b, 4900, got); err != nil {
		t.Fatalf("Peek(4900, 100 bytes) error = %v", err)
	}
	if !cmp.Equal(got, data[4900:]) {
		t.Errorf("Peek(4900, 100 bytes) = %x, want %x", got, data[4900:])
	}
	for _, off := range []int64{-1, 4901, math.MaxInt64 - 50} {
		if err := d.Peek(b, off, got); !errors.Is(err, gpu.ErrOutOfRange) {
			t.Errorf("Peek(%d, 100 bytes) error = %v, want %v", off, err, gpu.ErrOutOfRange)
		}
	}
}

var errInjected = errors.New("injected by test")

func TestFailNextAlloc(t *testing.T) {
	tests := []struct {
		err  error
		want error
	}{
		{nil, gpu.ErrOutOfMemory},
		{errInjected, errInjected},
		{gpu.ErrDeviceLost, gpu.ErrDeviceLost},
	}
	for _, tt := range tests {
		d := newDevice(t, sim.Options{Capacity: 1 << 20})
		d.FailNextAlloc(tt.err)
		if _, err := d.Alloc(t.Context(), 1); !errors.Is(err, tt.want) {
			t.Errorf("FailNextAlloc(%v): Alloc() error = %v, want %v", tt.err, err, tt.want)
		}
		in, _ := d.Info(t.Context())
		if in.FreeBytes != 1<<20 {
			t.Errorf("FailNextAlloc(%v): FreeBytes = %d after failed Alloc, want %d", tt.err, in.FreeBytes, 1<<20)
		}
		if _, err := d.Alloc(t.Context(), 1); err != nil {
			t.Errorf("FailNextAlloc(%v): second Alloc() error = %v, want nil", tt.err, err)
		}
	}
}

func TestFailWrites(t *testing.T) {
	d := newDevice(t, sim.Options{})
	b, data := filled(t, d, 100)
	d.FailWrites(errInjected)
	if err := d.Write(t.Context(), b, 0, make([]byte, 100)); !errors.Is(err, errInjected) {
		t.Errorf("Write() with FailWrites error = %v, want %v", err, errInjected)
	}
	got := make([]byte, 100)
	if err := d.Peek(b, 0, got); err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(got, data) {
		t.Errorf("a failed Write() changed the buffer")
	}
	d.FailWrites(nil)
	if err := d.Write(t.Context(), b, 0, make([]byte, 100)); err != nil {
		t.Errorf("Write() after FailWrites(nil) error = %v", err)
	}
}

func TestFailHashing(t *testing.T) {
	d := newDevice(t, sim.Options{})
	b, data := filled(t, d, 100)
	out := make([][gpu.HashSize]byte, 1)
	d.FailHashing(gpu.ErrDeviceLost)
	for range 2 {
		if err := d.LeafHashes(t.Context(), b, 100, []int64{0}, out); !errors.Is(err, gpu.ErrDeviceLost) {
			t.Errorf("LeafHashes() with FailHashing error = %v, want %v", err, gpu.ErrDeviceLost)
		}
	}
	d.FailHashing(nil)
	if err := d.LeafHashes(t.Context(), b, 100, []int64{0}, out); err != nil {
		t.Fatalf("LeafHashes() after FailHashing(nil) error = %v", err)
	}
	if out[0] != leaf(data) {
		t.Errorf("LeafHashes() = %x, want %x", out[0], leaf(data))
	}
}

func TestPolicyFaults(t *testing.T) {
	plain := gpu.PointerFacts{MemoryType: gpu.MemoryDevice, DeviceOrdinal: 1, Mapped: true}
	tests := []struct {
		name       string
		set        func(d *sim.Device, on bool)
		integrated bool
		facts      gpu.PointerFacts
	}{
		{"integrated", (*sim.Device).SetIntegrated, true, plain},
		{"managed", (*sim.Device).SetManaged, false,
			gpu.PointerFacts{MemoryType: gpu.MemoryUnified, Managed: true, DeviceOrdinal: 1, Mapped: true}},
		{"host mapped", (*sim.Device).SetHostMapped, false,
			gpu.PointerFacts{MemoryType: gpu.MemoryDevice, DeviceOrdinal: 1, Mapped: true, HostAccessible: true}},
		{"wrong ordinal", (*sim.Device).SetWrongOrdinal, false,
			gpu.PointerFacts{MemoryType: gpu.MemoryDevice, DeviceOrdinal: 2, Mapped: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			devs, err := sim.New(sim.Options{Devices: 2})
			if err != nil {
				t.Fatal(err)
			}
			d := devs[1]
			ctx := t.Context()
			before, _ := d.Alloc(ctx, 4096)
			check := func(when string, integrated bool, want gpu.PointerFacts) {
				t.Helper()
				in, _ := d.Info(ctx)
				if in.Integrated != integrated {
					t.Errorf("%s: Info().Integrated = %v, want %v", when, in.Integrated, integrated)
				}
				after, err := d.Alloc(ctx, 4096)
				if err != nil {
					t.Fatal(err)
				}
				for _, b := range []gpu.Buffer{before, after} {
					got, err := d.PointerFacts(ctx, b)
					if err != nil {
						t.Fatalf("PointerFacts() error = %v", err)
					}
					if got != want {
						t.Errorf("%s: PointerFacts(%v) = %+v, want %+v", when, b, got, want)
					}
				}
			}
			tt.set(d, true)
			check("on", tt.integrated, tt.facts)
			tt.set(d, false)
			check("off", false, plain)
		})
	}
}

func TestHostFallback(t *testing.T) {
	const capacity = 1 << 20
	d := newDevice(t, sim.Options{Capacity: capacity})
	ctx := t.Context()
	full, err := d.Alloc(ctx, capacity)
	if err != nil {
		t.Fatal(err)
	}
	d.SetHostFallback(true)
	b, err := d.Alloc(ctx, capacity)
	if err != nil {
		t.Fatalf("Alloc(%d) on a full device with host fallback error = %v", capacity, err)
	}
	if _, err := d.Alloc(ctx, 1); !errors.Is(err, gpu.ErrOutOfMemory) {
		t.Errorf("Alloc(1) with the host pool full error = %v, want %v", err, gpu.ErrOutOfMemory)
	}
	if err := d.Free(ctx, full); err != nil {
		t.Fatal(err)
	}
	in, _ := d.Info(ctx)
	if in.FreeBytes != capacity {
		t.Errorf("with host fallback FreeBytes = %d after Alloc, want %d (unchanged)", in.FreeBytes, capacity)
	}
	want := gpu.PointerFacts{MemoryType: gpu.MemoryHost, DeviceOrdinal: 0, Mapped: true, HostAccessible: true}
	d.SetHostFallback(false)
	if got, err := d.PointerFacts(ctx, b); err != nil || got != want {
		t.Errorf("PointerFacts(fallback buffer) = %+v, %v, want %+v", got, err, want)
	}
	if _, err := d.Alloc(ctx, capacity+1); !errors.Is(err, gpu.ErrOutOfMemory) {
		t.Errorf("Alloc(%d) after host fallback off error = %v, want %v", capacity+1, err, gpu.ErrOutOfMemory)
	}
	if err := d.Free(ctx, b); err != nil {
		t.Fatal(err)
	}
	if in, _ := d.Info(ctx); in.FreeBytes != capacity {
		t.Errorf("FreeBytes = %d after freeing the fallback buffer, want %d", in.FreeBytes, capacity)
	}
}

// countdown is a context whose Err reports cancellation from its n-th call on.
type countdown struct {
	context.Context
	n atomic.Int64
}

func (c *countdown) Err() error {
	if c.n.Add(-1) < 0 {
		return context.Canceled
	}
	return nil
}

func TestLeafHashesCancel(t *testing.T) {
	d := newDevice(t, sim.Options{Workers: 2})
	b, _ := filled(t, d, 16<<20)
	chunks := make([]int64, gpu.ChunkCount(b.Size(), 1024))
	for i := range chunks {
		chunks[i] = int64(i)
	}
	out := make([][gpu.HashSize]byte, len(chunks))

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := d.LeafHashes(ctx, b, 1024, chunks, out); !errors.Is(err, context.Canceled) {
		t.Errorf("LeafHashes(cancelled) error = %v, want %v", err, context.Canceled)
	}
	// Cancelled after the request checks and a few batches: the work stops
	// and the error says why.
	cd := &countdown{Context: t.Context()}
	cd.n.Store(3)
	if err := d.LeafHashes(cd, b, 1024, chunks, out); !errors.Is(err, context.Canceled) {
		t.Errorf("LeafHashes(cancelled midway) error = %v, want %v", err, context.Canceled)
	}
	if out[len(out)-1] != ([gpu.HashSize]byte{}) {
		t.Errorf("LeafHashes(cancelled midway) hashed the last chunk")
	}
}

func TestBufferFormat(t *testing.T) {
	d := newDevice(t, sim.Options{})
	d.Alloc(t.Context(), 1) // buffer #1
	b, err := d.Alloc(t.Context(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	const want = "sim buffer #2 (1048576 bytes on GPU 0)"
	type hidden struct{ b gpu.Buffer }
	tests := []struct {
		format string
		arg    any
		want   string
	}{
		{"%v", b, want},
		{"%s", b, want},
		{"%+v", b, want},
		{"%x", b, want},
		{"%d", b, want},
		{"%#v", b, "sim.Buffer{ID: 2, Size: 1048576, Device: 0}"},
		{"%p", b, ""},
		{"%v", hidden{b}, ""},
		{"%+v", &hidden{b}, ""},
		{"%#v", hidden{b}, ""},
	}
	address := regexp.MustCompile(`(?i)0x[0-9a-f]{6,}`)
	for _, tt := range tests {
		got := fmt.Sprintf(tt.format, tt.arg)
		if tt.want != "" && got != tt.want {
			t.Errorf("Sprintf(%q, buffer) = %q, want %q", tt.format, got, tt.want)
		}
		if address.MatchString(got) {
			t.Errorf("Sprintf(%q, %T) = %q, which shows an address", tt.format, tt.arg, got)
		}
	}
	text, err := b.(interface{ MarshalText() ([]byte, error) }).MarshalText()
	if err != nil || string(text) != want {
		t.Errorf("MarshalText() = %q, %v, want %q", text, err, want)
	}
}

func TestReuseFreed(t *testing.T) {
	ctx := context.Background()
	devs, err := sim.New(sim.Options{Capacity: 1 << 20, ReuseFreed: true})
	if err != nil {
		t.Fatal(err)
	}
	d := devs[0]
	b, err := d.Alloc(ctx, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Write(ctx, b, 0, []byte("first tenant")); err != nil {
		t.Fatal(err)
	}
	if err := d.Free(ctx, b); err != nil {
		t.Fatal(err)
	}
	// An allocation of the same page-rounded size reuses the memory;
	// accounting stays exact.
	b2, err := d.Alloc(ctx, 99_000)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := d.Info(ctx)
	if info.FreeBytes != 1<<20-99_000 {
		t.Errorf("FreeBytes = %d, want %d", info.FreeBytes, 1<<20-99_000)
	}
	got := make([]byte, 12)
	if err := d.Peek(b2, 0, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != "first tenant" {
		t.Errorf("reused allocation starts %q, want the freed bytes (memory was not reused)", got)
	}
	// One of another size gets fresh, zeroed memory.
	d.Free(ctx, b2)
	b3, _ := d.Alloc(ctx, 1000)
	d.Peek(b3, 0, got)
	if string(got) != string(make([]byte, 12)) {
		t.Errorf("small allocation starts %q, want zeros", got)
	}
	if err := d.Write(ctx, b3, 990, make([]byte, 11)); err == nil {
		t.Error("write past a reused allocation's size succeeded")
	}
}
