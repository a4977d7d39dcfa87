// Package sim is a simulated [gpu.Device]: it keeps real bytes in host
// memory, accounts a fixed capacity exactly, hashes leaves on all CPU cores,
// and injects faults (bit flips, failed allocations, failed hashing, and
// the policy faults of integrated devices, managed, host-mapped or
// misplaced memory) for tests.
//
// vramseal runs on it wherever no NVIDIA driver is present, and every test
// of the residency manager uses it. It passes the conformance suite in
// gpu/gputest.
//
// Capacity is bookkeeping: a device of 8 GiB holds no memory until
// [Device.Alloc] is called, and then exactly the bytes allocated (fresh
// pages are not touched until written). The host must have room for what
// is allocated.
//
// Like a real device, a simulated device never reveals where an
// allocation lives: its [gpu.Buffer] handles carry no pointer, and every
// formatting path prints only the buffer number, size and device, for
// example "sim buffer #3 (1048576 bytes on GPU 0)".
package sim

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vramseal/vramseal/gpu"
)

// Facts that every simulated device reports in [gpu.Info].
const (
	// Name is the device name reported by [Device.Info].
	Name = "vramseal simulated GPU"
	// Driver is the backend name reported by [Device.Info].
	Driver = "sim"
	// DriverVersion is the simulator's version reported by [Device.Info].
	DriverVersion = "1"
	// DefaultCapacity is the capacity of a device when [Options.Capacity]
	// is zero: 8 GiB.
	DefaultCapacity int64 = 8 << 30
	// DefaultSpin is [Options.Spin] when it is zero.
	DefaultSpin = time.Millisecond
)

// Options configures [New]. The zero value makes one device of
// [DefaultCapacity].
type Options struct {
	// Devices is the number of devices to create; 0 means 1.
	Devices int
	// Capacity is each device's memory size in bytes; 0 means
	// [DefaultCapacity].
	Capacity int64
	// Seed selects the devices' UUIDs: devices made with the same seed and
	// index have the same UUID, so tests and seals are reproducible. Zero
	// is a valid seed.
	Seed uint64
	// Workers is the number of goroutines [Device.LeafHashes] uses; 0 means
	// runtime.GOMAXPROCS(0) at the time of the call.
	Workers int
	// Spin is how long the helper goroutines of LeafHashes keep their
	// cores after a call, polling for the next, when calls come that close
	// together (see pool.go); 0 means [DefaultSpin], a negative value
	// never.
	Spin time.Duration
	// ReuseFreed keeps the host memory of freed allocations (up to
	// maxCached of them) and hands it, uncleared, to later allocations it
	// fits, as a caching GPU allocator does. It spares benchmarks the
	// host's first-touch cost of fresh pages; the contents of a reused
	// allocation are then unspecified, as with cuMemAlloc. False means
	// every allocation is fresh, zeroed memory.
	ReuseFreed bool
}

// maxCached bounds the freed allocations kept with [Options.ReuseFreed].
const maxCached = 4

// errOptions marks invalid [Options].
var errOptions = errors.New("sim: invalid options")

// errSize marks an allocation size that is not positive.
var errSize = errors.New("sim: allocation size must be positive")

// serials hands every device a process-unique identity, so that a buffer
// handle names its device without holding a pointer to it.
var serials atomic.Uint64

// Device is one simulated GPU. All methods are safe for concurrent use.
// Operations on different buffers do not wait for each other: each
// allocation has its own lock, and the device lock guards only the
// capacity count and the fault switches, never a copy or a hash.
type Device struct {
	serial   uint64
	index    int
	uuid     string
	capacity int64
	workers  int
	spin     time.Duration
	reuse    bool

	nextID atomic.Uint64
	allocs sync.Map // buffer ID (uint64) -> *allocation

	mu     sync.Mutex // guards the fields below
	used   int64      // sum of the sizes of live allocations in device memory
	cached []*region  // freed regions kept for reuse (Options.ReuseFreed)
	// hostUsed is the sum of the sizes of live host-fallback allocations,
	// which have a pool of the device's capacity of their own.
	hostUsed int64
	faults   faults
}

var _ gpu.Device = (*Device)(nil)

// allocation is the memory behind one buffer.
type allocation struct {
	size int64
	// fallback marks an allocation made while host fallback was injected:
	// it does not count against capacity and reports host memory.
	fallback bool

	mu     sync.RWMutex // writers and Free lock; hashing and reads read-lock
	region *region
	data   []byte // region.data[:size]
	freed  bool
	// protected is set by Protect: Write refuses, and the mapping is
	// read-only except for the moment of an injected bit flip.
	protected bool
}

// New creates opts.Devices simulated devices with indexes 0, 1, ...
// It returns an error when an option is negative.
func New(opts Options) ([]*Device, error) {
	if opts.Devices < 0 || opts.Capacity < 0 || opts.Workers < 0 {
		return nil, fmt.Errorf("%w: devices %d, capacity %d bytes, workers %d (none may be negative)",
			errOptions, opts.Devices, opts.Capacity, opts.Workers)
	}
	n := opts.Devices
	if n == 0 {
		n = 1
	}
	capacity := opts.Capacity
	if capacity == 0 {
		capacity = DefaultCapacity
	}
	devs := make([]*Device, n)
	for i := range devs {
		devs[i] = &Device{
			serial:   serials.Add(1),
			index:    i,
			uuid:     deviceUUID(opts.Seed, i),
			capacity: capacity,
			workers:  opts.Workers,
			spin:     spinOption(opts.Spin),
			reuse:    opts.ReuseFreed,
		}
	}
	return devs, nil
}

func spinOption(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return DefaultSpin
	case d < 0:
		return 0
	}
	return d
}

// deviceUUID derives a stable UUID in nvidia-smi's form ("GPU-" and the
// 8-4-4-4-12 hex groups) from the seed and index. It is a version 8
// (custom) UUID per RFC 9562 over a domain-separated SHA-256.
func deviceUUID(seed uint64, index int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "vramseal/sim/uuid/v1\x00%d\x00%d", seed, index))
	u := sum[:16]
	u[6] = u[6]&0x0f | 0x80
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("GPU-%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// Info returns the device's facts. FreeBytes is the capacity less the
// sizes of the live allocations, exactly.
func (d *Device) Info(ctx context.Context) (gpu.Info, error) {
	if err := ctx.Err(); err != nil {
		return gpu.Info{}, fmt.Errorf("sim: info of GPU %d: %w", d.index, err)
	}
	d.mu.Lock()
	free := d.capacity - d.used
	integrated := d.faults.integrated
	d.mu.Unlock()
	return gpu.Info{
		Index:         d.index,
		Name:          Name,
		UUID:          d.uuid,
		Driver:        Driver,
		DriverVersion: DriverVersion,
		TotalBytes:    uint64(d.capacity),
		FreeBytes:     uint64(free),
		Integrated:    integrated,
		CanHash:       true,
	}, nil
}

// Alloc reserves size bytes of the device's capacity and backs them with
// host memory. It fails with an error wrapping [gpu.ErrOutOfMemory] that
// gives the requested and free bytes when size exceeds the free capacity,
// and with the injected error after [Device.FailNextAlloc]. The contents of
// a new allocation are zero.
func (d *Device) Alloc(ctx context.Context, size int64) (gpu.Buffer, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sim: alloc %d bytes on GPU %d: %w", size, d.index, err)
	}
	if size <= 0 {
		return nil, fmt.Errorf("%w: alloc %d bytes on GPU %d", errSize, size, d.index)
	}
	d.mu.Lock()
	if d.faults.failAlloc {
		err := d.faults.allocErr
		d.faults.failAlloc, d.faults.allocErr = false, nil
		d.mu.Unlock()
		if err == nil {
			err = gpu.ErrOutOfMemory
		}
		return nil, fmt.Errorf("sim: alloc %d bytes on GPU %d: injected fault: %w", size, d.index, err)
	}
	fallback := d.faults.hostFallback
	used := &d.used
	if fallback {
		used = &d.hostUsed
	}
	if free := d.capacity - *used; size > free {
		d.mu.Unlock()
		return nil, fmt.Errorf("sim: alloc %d bytes on GPU %d with %d bytes free: %w",
			size, d.index, free, gpu.ErrOutOfMemory)
	}
	*used += size
	r := d.takeCached(size)
	d.mu.Unlock()

	if r == nil {
		// Outside the device lock: a fresh memfd's pages are untouched
		// until written.
		var err error
		if r, err = newRegion(size); err != nil {
			d.mu.Lock()
			*used -= size
			d.mu.Unlock()
			return nil, fmt.Errorf("sim: alloc %d bytes on GPU %d: %w", size, d.index, err)
		}
	}
	a := &allocation{size: size, fallback: fallback, region: r, data: r.data[:size]}
	id := d.nextID.Add(1)
	d.allocs.Store(id, a)
	return buffer{dev: d.serial, id: id, size: size, index: d.index}, nil
}

// Free releases an allocation and returns its bytes to the device's free
// capacity. It waits for operations in flight on the buffer. Freeing a
// buffer twice, or one from another device, returns an error wrapping
// [gpu.ErrInvalidBuffer]. Free ignores ctx's cancellation, so that cleanup
// runs on every path.
func (d *Device) Free(_ context.Context, b gpu.Buffer) error {
	h, err := d.handle("free", b)
	if err != nil {
		return err
	}
	v, ok := d.allocs.LoadAndDelete(h.id)
	if !ok {
		return fmt.Errorf("sim: free %v: %w", h, gpu.ErrInvalidBuffer)
	}
	a := v.(*allocation)
	a.mu.Lock()
	a.freed = true
	r := a.region
	a.region, a.data = nil, nil
	a.mu.Unlock()
	var drop *region
	d.mu.Lock()
	if d.reuse {
		if len(d.cached) == maxCached {
			drop = d.cached[0]
			d.cached = d.cached[1:]
		}
		d.cached = append(d.cached, r)
	} else {
		drop = r
	}
	if a.fallback {
		d.hostUsed -= a.size
	} else {
		d.used -= a.size
	}
	d.mu.Unlock()
	if drop != nil {
		if err := drop.release(); err != nil {
			return fmt.Errorf("sim: free %v: release host memory: %w", h, err)
		}
	}
	return nil
}

// handle checks that b is a buffer of this device. It does not check that
// the buffer is live.
func (d *Device) handle(op string, b gpu.Buffer) (buffer, error) {
	h, ok := b.(buffer)
	if !ok {
		// Never format a foreign buffer: its String may reveal an address.
		return buffer{}, fmt.Errorf("sim: %s: buffer of type %T is not from GPU %d: %w", op, b, d.index, gpu.ErrInvalidBuffer)
	}
	if h.dev != d.serial {
		return buffer{}, fmt.Errorf("sim: %s: %v is not from this GPU %d: %w", op, h, d.index, gpu.ErrInvalidBuffer)
	}
	return h, nil
}

// lookup returns the live allocation behind b.
func (d *Device) lookup(op string, b gpu.Buffer) (buffer, *allocation, error) {
	h, err := d.handle(op, b)
	if err != nil {
		return buffer{}, nil, err
	}
	v, ok := d.allocs.Load(h.id)
	if !ok {
		return buffer{}, nil, fmt.Errorf("sim: %s %v: %w", op, h, gpu.ErrInvalidBuffer)
	}
	return h, v.(*allocation), nil
}

// PointerFacts reports plain device memory on this device, unless a policy
// fault was injected with [Device.SetManaged], [Device.SetHostMapped],
// [Device.SetWrongOrdinal] or [Device.SetHostFallback].
func (d *Device) PointerFacts(ctx context.Context, b gpu.Buffer) (gpu.PointerFacts, error) {
	if err := ctx.Err(); err != nil {
		return gpu.PointerFacts{}, fmt.Errorf("sim: pointer facts: %w", err)
	}
	_, a, err := d.lookup("pointer facts of", b)
	if err != nil {
		return gpu.PointerFacts{}, err
	}
	d.mu.Lock()
	f := d.faults
	d.mu.Unlock()
	facts := gpu.PointerFacts{
		MemoryType:    gpu.MemoryDevice,
		DeviceOrdinal: d.index,
		Mapped:        true,
	}
	if f.managed {
		facts.MemoryType = gpu.MemoryUnified
		facts.Managed = true
	}
	if f.hostMapped {
		facts.HostAccessible = true
	}
	if f.wrongOrdinal {
		facts.DeviceOrdinal = d.index + 1
	}
	if a.fallback {
		facts.MemoryType = gpu.MemoryHost
		facts.HostAccessible = true
	}
	a.mu.RLock()
	facts.ReadOnly = a.protected
	a.mu.RUnlock()
	return facts, nil
}

// takeCached returns a freed region of exactly size bytes rounded up to
// pages, made writable again, or nil. d.mu must be held.
func (d *Device) takeCached(size int64) *region {
	for i, r := range d.cached {
		if int64(len(r.data)) == roundPages(size) && r.writable() == nil {
			d.cached = append(d.cached[:i], d.cached[i+1:]...)
			return r
		}
	}
	return nil
}
