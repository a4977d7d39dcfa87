package cuda

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"github.com/vramseal/vramseal/gpu"
)

// CUDA enumerations used by the device worker (cuda.h).
const (
	attrMultiprocessorCount          = 16
	attrIntegrated                   = 18
	attrECCEnabled                   = 32
	attrComputeCapabilityMajor       = 75
	attrComputeCapabilityMinor       = 76
	attrConcurrentManagedAccess      = 89
	attrPageableMemoryAccess         = 88
	attrPageableMemoryUsesHostTables = 100

	ptrAttrMemoryType    = 2
	ptrAttrHostPointer   = 4
	ptrAttrIsManaged     = 8
	ptrAttrDeviceOrdinal = 9
	ptrAttrMapped        = 13

	streamNonBlocking = 1 // CU_STREAM_NON_BLOCKING
	eventDisableTime  = 2 // CU_EVENT_DISABLE_TIMING
)

// Device is one CUDA device. It implements [gpu.Device]; all methods are
// safe for concurrent use and are carried out, in the order they arrive, by
// the device's worker thread.
type Device struct {
	drv     *Driver
	ordinal int
	calls   chan func()
	stop    chan struct{}
	done    chan struct{}

	// Set by the worker before Open returns, read-only afterwards.
	static Facts

	// Owned by the worker goroutine.
	refuse      bool   // Options.RefuseViolations
	cuDev       int32  // CUdevice from cuDeviceGet
	granularity uint64 // minimum VMM allocation granularity (setupVMM)
	ctx         uintptr
	stream      uintptr
	staging     [2]staging
	module      uintptr
	fn          uintptr
	kernelErr   error
	scratch     devptr // chunk indexes, then hashes, for one launch
	batch       int    // chunks per launch
	nvmlDev     uintptr
	live        map[*buffer]struct{}
	lost        error
}

var _ gpu.Device = (*Device)(nil)

// staging is one pinned host buffer and the event that marks the end of
// the last copy that read it.
type staging struct {
	mem   []byte // pinned memory from cuMemAllocHost_v2
	event uintptr
	dirty bool
}

// buffer is a device allocation: physical memory from cuMemCreate
// (handle) mapped at ptr for mapSize bytes. Its formatting shows only its
// size and device (see Format); the device address and the handle never
// leave the package.
type buffer struct {
	dev     *Device
	ptr     devptr
	handle  uint64 // CUmemGenericAllocationHandle
	mapSize uint64 // size rounded up to the granularity
	size    int64
	report  AllocReport

	readOnly bool // set by Protect; owned by the worker
}

func (b *buffer) Size() int64      { return b.size }
func (b *buffer) DeviceIndex() int { return b.dev.ordinal }

// Format prints the buffer as "cuda buffer of N bytes on device D" for
// every verb, so that no formatting path can show its address.
func (b *buffer) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, "cuda buffer of %d bytes on device %d", b.size, b.dev.ordinal)
}

// AllocReport is what the driver said when a buffer was allocated: free
// device memory before and after the allocation (cuMemCreate and its
// mapping), the pointer facts, and the physical allocation's properties.
type AllocReport struct {
	// Size is the requested size in bytes.
	Size int64
	// FreeBefore and FreeAfter are cuMemGetInfo_v2's free bytes around the
	// allocation (other processes may allocate or free in between).
	FreeBefore, FreeAfter uint64
	// Facts are the allocation's pointer facts.
	Facts gpu.PointerFacts
	// VMM are the physical allocation's properties and mapped size.
	VMM VMMFacts
	// Violations lists the VRAM-only policy rules the allocation breaks
	// (see the package documentation); nil when it keeps them all.
	Violations []string
}

// FreeDrop returns by how much free device memory fell (0 if it rose).
func (r AllocReport) FreeDrop() uint64 {
	if r.FreeAfter >= r.FreeBefore {
		return 0
	}
	return r.FreeBefore - r.FreeAfter
}

const violationIntegrated = "integrated device shares memory with the host"

// violations checks the VRAM-only policy; see the package documentation.
func (r AllocReport) violations(ordinal int, integrated bool) []string {
	var v []string
	if integrated {
		v = append(v, violationIntegrated)
	}
	f := r.Facts
	if f.MemoryType != gpu.MemoryDevice {
		v = append(v, fmt.Sprintf("memory type %v, want device", f.MemoryType))
	}
	if f.Managed {
		v = append(v, "managed (unified) memory")
	}
	if f.DeviceOrdinal != ordinal {
		v = append(v, fmt.Sprintf("device ordinal %d, want %d", f.DeviceOrdinal, ordinal))
	}
	if !f.Mapped {
		v = append(v, "range not mapped")
	}
	if f.HostAccessible {
		v = append(v, "allocation has a host pointer")
	}
	v = append(v, r.VMM.violations(ordinal)...)
	if g := uint64(r.VMM.Granularity); g > 0 {
		if want := uint64(r.Size) / g * g; want > 0 && r.FreeDrop() < want {
			v = append(v, fmt.Sprintf("free memory dropped by %d bytes, want >= %d", r.FreeDrop(), want))
		}
	}
	return v
}

// startDevice starts the worker of device ordinal and waits for its setup.
func startDevice(drv *Driver, ordinal int, opts Options) (*Device, error) {
	d := &Device{
		drv:     drv,
		ordinal: ordinal,
		calls:   make(chan func()),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		live:    make(map[*buffer]struct{}),
		refuse:  opts.RefuseViolations,
	}
	ready := make(chan error, 1)
	go d.run(opts, ready)
	if err := <-ready; err != nil {
		<-d.done
		return nil, err
	}
	return d, nil
}

// run is the worker: it locks itself to an OS thread, makes the primary
// context current there, and serves calls until stop is closed.
func (d *Device) run(opts Options, ready chan<- error) {
	runtime.LockOSThread()
	defer close(d.done)
	// The thread is not unlocked: it had a CUDA context current, and
	// exiting the goroutine while locked retires the thread with it.
	if err := d.setup(opts); err != nil {
		d.teardown()
		ready <- err
		return
	}
	ready <- nil
	for {
		select {
		case f := <-d.calls:
			f()
		case <-d.stop:
			d.teardown()
			return
		}
	}
}

// do runs f on the worker and returns its error. It gives up waiting for
// the worker when ctx ends, but once f has started it runs to completion.
func (d *Device) do(ctx context.Context, f func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	res := make(chan error, 1)
	select {
	case d.calls <- func() { res <- f() }:
		return <-res
	case <-ctx.Done():
		return ctx.Err()
	case <-d.done:
		return errClosed
	}
}

// close stops the worker and waits for its teardown.
func (d *Device) close() error {
	select {
	case <-d.done:
		return nil
	default:
	}
	var err error
	_ = d.do(context.Background(), func() error {
		err = d.freeAll()
		return nil
	})
	close(d.stop)
	<-d.done
	return err
}

// check turns a CUresult into an error, latching the device as lost on a
// sticky error. It runs on the worker.
func (d *Device) check(op string, r cuResult) error {
	if r == 0 {
		return nil
	}
	e := newError(op, r)
	e.Device = d.ordinal
	if isSticky(e.Code) && d.lost == nil {
		d.lost = e
	}
	return e
}

// usable returns the latched device-lost error, if any.
func (d *Device) usable() error {
	if d.lost != nil {
		return fmt.Errorf("%w; the device stays unusable in this process", d.lost)
	}
	return nil
}

func (d *Device) setup(opts Options) error {
	api := d.drv.api
	if err := d.check("cuDeviceGet", api.deviceGet(&d.cuDev, int32(d.ordinal))); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if err := d.check("cuDevicePrimaryCtxRetain", api.primaryCtxRetain(&d.ctx, d.cuDev)); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if err := d.check("cuCtxSetCurrent", api.ctxSetCurrent(d.ctx)); err != nil {
		return err
	}
	if err := d.readFacts(); err != nil {
		return err
	}
	if err := d.setupVMM(); err != nil {
		return err
	}
	if err := d.check("cuStreamCreate", api.streamCreate(&d.stream, streamNonBlocking)); err != nil {
		return err
	}
	size := opts.StagingBytes
	if size == 0 {
		size = DefaultStagingBytes
	}
	size = max(size, 4096)
	for i := range d.staging {
		s := &d.staging[i]
		var p unsafe.Pointer
		if err := d.check("cuMemAllocHost_v2", api.memAllocHost(&p, uint64(size))); err != nil {
			return err
		}
		s.mem = unsafe.Slice((*byte)(p), size)
		clear(s.mem)
		if err := d.check("cuEventCreate", api.eventCreate(&s.event, eventDisableTime)); err != nil {
			return err
		}
	}
	d.batch = size / gpu.HashSize
	if opts.MaxLaunchChunks > 0 {
		d.batch = min(d.batch, opts.MaxLaunchChunks)
	}
	// Scratch for one launch: indexes (8 bytes) and hashes (32 bytes) per
	// chunk. Allocated now so that verification never fails for lack of
	// memory on a full device.
	if err := d.check("cuMemAlloc_v2", api.memAlloc(&d.scratch, uint64(d.batch)*(8+gpu.HashSize))); err != nil {
		return err
	}
	d.kernelErr = d.loadKernel()
	d.static.Info.CanHash = d.kernelErr == nil
	return nil
}

// teardown releases what setup acquired, zeroing the staging memory.
func (d *Device) teardown() {
	api := d.drv.api
	if d.ctx == 0 {
		return
	}
	if d.module != 0 {
		api.moduleUnload(d.module)
	}
	if d.scratch != 0 {
		api.memFree(d.scratch)
	}
	for i := range d.staging {
		s := &d.staging[i]
		if s.mem != nil {
			clear(s.mem)
			api.memFreeHost(unsafe.Pointer(unsafe.SliceData(s.mem)))
			s.mem = nil
		}
		if s.event != 0 {
			api.eventDestroy(s.event)
		}
	}
	if d.stream != 0 {
		api.streamDestroy(d.stream)
	}
	api.ctxSetCurrent(0)
	api.primaryCtxRelease(d.cuDev)
	d.ctx = 0
}

// freeAll frees the buffers the caller did not free.
func (d *Device) freeAll() error {
	var errs []error
	for b := range d.live {
		delete(d.live, b)
		errs = append(errs, d.vmmFree(b.ptr, b.handle, b.mapSize))
	}
	return errors.Join(errs...)
}

// own returns b as this device's buffer, or an error wrapping
// gpu.ErrInvalidBuffer. Liveness is checked on the worker by isLive.
func (d *Device) own(b gpu.Buffer) (*buffer, error) {
	buf, ok := b.(*buffer)
	if !ok || buf == nil || buf.dev != d {
		return nil, fmt.Errorf("cuda: device %d: %w: not allocated by this device", d.ordinal, gpu.ErrInvalidBuffer)
	}
	return buf, nil
}

// isLive returns an error wrapping gpu.ErrInvalidBuffer unless buf is
// live; it runs on the worker.
func (d *Device) isLive(buf *buffer) error {
	if _, ok := d.live[buf]; !ok {
		return fmt.Errorf("cuda: device %d: %w: freed", d.ordinal, gpu.ErrInvalidBuffer)
	}
	return nil
}

// memInfo returns cuMemGetInfo_v2's free and total bytes.
func (d *Device) memInfo() (free, total uint64, err error) {
	err = d.check("cuMemGetInfo_v2", d.drv.api.memGetInfo(&free, &total))
	return free, total, err
}

// Info implements [gpu.Device.Info].
func (d *Device) Info(ctx context.Context) (gpu.Info, error) {
	var in gpu.Info
	err := d.do(ctx, func() error {
		if err := d.usable(); err != nil {
			return err
		}
		free, _, err := d.memInfo()
		in = d.static.Info
		// Allocations take whole granules: report what can be allocated.
		in.FreeBytes = d.wholeGranules(free)
		return err
	})
	return in, err
}

// Alloc implements [gpu.Device.Alloc] with CUDA virtual memory management,
// in whole granules: cuMemCreate of pinned device memory exportable as a
// POSIX file descriptor, cuMemAddressReserve, cuMemMap and cuMemSetAccess
// (read-write, for the seal's copy). A full device is an error wrapping
// [gpu.ErrOutOfMemory]; any failure releases what was acquired. It checks
// the new allocation against the VRAM-only policy (see the package
// documentation) and records the result in [Device.AllocReport]. With
// [Options.RefuseViolations] it refuses instead: it frees the allocation
// and returns a [*PolicyError] wrapping [ErrPolicy] (on an integrated
// device without allocating at all).
func (d *Device) Alloc(ctx context.Context, size int64) (gpu.Buffer, error) {
	if size <= 0 {
		return nil, fmt.Errorf("cuda: device %d: alloc %d bytes: %w", d.ordinal, size, gpu.ErrOutOfRange)
	}
	var buf *buffer
	err := d.do(ctx, func() error {
		if err := d.usable(); err != nil {
			return err
		}
		integrated := d.static.Info.Integrated
		if integrated && d.refuse {
			return &PolicyError{Device: d.ordinal, Size: size, Violations: []string{violationIntegrated},
				Refusal: gpu.PolicyRefusal{Integrated: true}}
		}
		before, total, err := d.memInfo()
		if err != nil {
			return err
		}
		n := d.mapSize(size)
		if tooLarge(n, total) {
			return fmt.Errorf("cuda: device %d: alloc %d bytes: %w: the device has %d bytes", d.ordinal, size, gpu.ErrOutOfMemory, total)
		}
		p, h, err := d.vmmAlloc(n)
		if err != nil {
			return fmt.Errorf("%w (alloc %d bytes)", err, size)
		}
		after, _, err := d.memInfo()
		var facts gpu.PointerFacts
		var vf VMMFacts
		if err == nil {
			facts, err = d.pointerFacts(p)
		}
		if err == nil {
			vf, err = d.vmmFacts(p, n)
		}
		if err != nil {
			return errors.Join(err, d.vmmFree(p, h, n))
		}
		rep := AllocReport{Size: size, FreeBefore: before, FreeAfter: after, Facts: facts, VMM: vf}
		rep.Violations = rep.violations(d.ordinal, integrated)
		if len(rep.Violations) > 0 && d.refuse {
			return errors.Join(&PolicyError{Device: d.ordinal, Size: size, Violations: rep.Violations,
				Refusal: gpu.PolicyRefusal{Facts: facts, FreeBefore: d.wholeGranules(before), FreeAfter: d.wholeGranules(after)}},
				d.vmmFree(p, h, n))
		}
		buf = &buffer{dev: d, ptr: p, handle: h, mapSize: n, size: size, report: rep}
		d.live[buf] = struct{}{}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return buf, nil
}

// AllocReport returns what the driver said when b was allocated: free
// memory before and after, and the pointer facts that the VRAM-only policy
// checked.
func (d *Device) AllocReport(b gpu.Buffer) (AllocReport, error) {
	buf, err := d.own(b)
	if err != nil {
		return AllocReport{}, err
	}
	return buf.report, nil
}

// Free implements [gpu.Device.Free]: cuMemUnmap, cuMemAddressFree and
// cuMemRelease. Memory that another process imported stays allocated, by
// the driver, until that process releases it too; this process's mapping
// and handle are gone either way.
func (d *Device) Free(ctx context.Context, b gpu.Buffer) error {
	buf, err := d.own(b)
	if err != nil {
		return err
	}
	return d.do(ctx, func() error {
		if err := d.isLive(buf); err != nil {
			return err
		}
		delete(d.live, buf)
		return d.vmmFree(buf.ptr, buf.handle, buf.mapSize)
	})
}

// Write implements [gpu.Device.Write]. It copies p through the two pinned
// staging buffers with asynchronous host-to-device copies on the device's
// stream (filling one buffer while the other is in flight), waits for the
// copies to finish, and zeroes the staging buffers before returning. p is
// never handed to the driver, so it may be ordinary Go memory. After
// [Device.Protect] it fails with an error wrapping [gpu.ErrReadOnly]
// without calling the driver.
func (d *Device) Write(ctx context.Context, b gpu.Buffer, off int64, p []byte) error {
	return d.onRange(ctx, b, off, int64(len(p)), "write", func(buf *buffer, at devptr) error {
		if buf.readOnly {
			return fmt.Errorf("cuda: device %d: write: %w", d.ordinal, gpu.ErrReadOnly)
		}
		return d.write(ctx, at, p)
	})
}

// onRange checks that [off, off+n) lies in the live buffer b and runs fn
// on the device's worker with the buffer and the device address of off.
func (d *Device) onRange(ctx context.Context, b gpu.Buffer, off, n int64, op string, fn func(buf *buffer, at devptr) error) error {
	buf, err := d.own(b)
	if err != nil {
		return err
	}
	return d.do(ctx, func() error {
		if err := d.isLive(buf); err != nil {
			return err
		}
		if err := gpu.CheckRange(buf.size, off, n); err != nil {
			return fmt.Errorf("cuda: device %d: %s: %w", d.ordinal, op, err)
		}
		if err := d.usable(); err != nil {
			return err
		}
		return fn(buf, buf.ptr+devptr(off))
	})
}

// write streams p to dst; it runs on the worker.
func (d *Device) write(ctx context.Context, dst devptr, p []byte) (err error) {
	api := d.drv.api
	defer func() {
		if serr := d.check("cuStreamSynchronize", api.streamSynchronize(d.stream)); err == nil {
			err = serr
		}
		d.scrub()
	}()
	for i := 0; len(p) > 0; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		s := &d.staging[i%2]
		if s.dirty {
			if err := d.check("cuEventSynchronize", api.eventSynchronize(s.event)); err != nil {
				return err
			}
		}
		n := copy(s.mem, p)
		s.dirty = true
		if err := d.check("cuMemcpyHtoDAsync_v2", api.memcpyHtoDAsync(dst, unsafe.Pointer(unsafe.SliceData(s.mem)), uint64(n), d.stream)); err != nil {
			return err
		}
		if err := d.check("cuEventRecord", api.eventRecord(s.event, d.stream)); err != nil {
			return err
		}
		dst += devptr(n)
		p = p[n:]
	}
	return nil
}

// scrub zeroes the staging buffers that held data. Call it only after the
// stream is synchronized.
func (d *Device) scrub() {
	for i := range d.staging {
		if s := &d.staging[i]; s.dirty {
			clear(s.mem)
			s.dirty = false
		}
	}
}

// PointerFacts implements [gpu.Device.PointerFacts] with
// cuPointerGetAttributes, and cuMemGetAccess for ReadOnly.
func (d *Device) PointerFacts(ctx context.Context, b gpu.Buffer) (gpu.PointerFacts, error) {
	var facts gpu.PointerFacts
	err := d.onBuffer(ctx, b, func(buf *buffer) (err error) {
		facts, err = d.pointerFacts(buf.ptr)
		return err
	})
	return facts, err
}

// onBuffer checks that b is a live buffer of this device and that the
// device is usable, and runs fn on the device's worker with the buffer.
func (d *Device) onBuffer(ctx context.Context, b gpu.Buffer, fn func(buf *buffer) error) error {
	buf, err := d.own(b)
	if err != nil {
		return err
	}
	return d.do(ctx, func() error {
		if err := d.isLive(buf); err != nil {
			return err
		}
		if err := d.usable(); err != nil {
			return err
		}
		return fn(buf)
	})
}

// pointerFacts returns the facts of the mapping at p: cuPointerGetAttributes
// and, for ReadOnly, cuMemGetAccess.
func (d *Device) pointerFacts(p devptr) (gpu.PointerFacts, error) {
	f, err := d.pointerAttributes(p)
	if err != nil {
		return f, err
	}
	f.ReadOnly, err = d.readOnly(p)
	if err != nil {
		return gpu.PointerFacts{}, err
	}
	return f, nil
}

// pointerQuery is the argument block of one cuPointerGetAttributes call.
// Each value slot is zeroed and 8 bytes wide, so the driver may write a
// bool, an int or a pointer into it; read as little-endian integers.
type pointerQuery struct {
	attrs [5]int32
	vals  [5]uint64
	ptrs  [5]unsafe.Pointer
}

// pointerAttributes returns cuPointerGetAttributes's facts about p.
func (d *Device) pointerAttributes(p devptr) (gpu.PointerFacts, error) {
	q := &pointerQuery{attrs: [5]int32{ptrAttrMemoryType, ptrAttrHostPointer, ptrAttrIsManaged, ptrAttrDeviceOrdinal, ptrAttrMapped}}
	var pin runtime.Pinner
	pin.Pin(q)
	defer pin.Unpin()
	for i := range q.vals {
		q.ptrs[i] = unsafe.Pointer(&q.vals[i])
	}
	r := d.drv.api.pointerGetAttributes(uint32(len(q.attrs)), &q.attrs[0], &q.ptrs[0], p)
	if err := d.check("cuPointerGetAttributes", r); err != nil {
		return gpu.PointerFacts{}, err
	}
	var mt gpu.MemoryType
	switch uint32(q.vals[0]) {
	case 1:
		mt = gpu.MemoryHost
	case 2:
		mt = gpu.MemoryDevice
	case 3:
		mt = gpu.MemoryArray
	case 4:
		mt = gpu.MemoryUnified
	}
	return gpu.PointerFacts{
		MemoryType:     mt,
		HostAccessible: q.vals[1] != 0,
		Managed:        uint8(q.vals[2]) != 0,
		DeviceOrdinal:  int(int32(uint32(q.vals[3]))),
		Mapped:         uint8(q.vals[4]) != 0,
	}, nil
}

// ReadBack copies the buffer range [off, off+len(p)) into p through the
// pinned staging buffers. Verification never uses it (only leaf hashes
// leave the device); it exists for tests and for the benchmark that
// compares on-device hashing with copying back and hashing on the CPU.
func (d *Device) ReadBack(ctx context.Context, b gpu.Buffer, off int64, p []byte) error {
	return d.onRange(ctx, b, off, int64(len(p)), "read back", func(_ *buffer, at devptr) error { return d.readBack(ctx, at, p) })
}

// readBack copies src into p, double-buffered: while one staging buffer
// is copied out to p, the other is being filled by the device.
func (d *Device) readBack(ctx context.Context, src devptr, p []byte) (err error) {
	api := d.drv.api
	defer func() {
		if serr := d.check("cuStreamSynchronize", api.streamSynchronize(d.stream)); err == nil {
			err = serr
		}
		d.scrub()
	}()
	type piece struct {
		s   *staging
		dst []byte
	}
	var pending []piece
	drain := func() error {
		pc := pending[0]
		pending = pending[1:]
		if err := d.check("cuEventSynchronize", api.eventSynchronize(pc.s.event)); err != nil {
			return err
		}
		copy(pc.dst, pc.s.mem)
		return nil
	}
	for i := 0; len(p) > 0; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		s := &d.staging[i%2]
		if len(pending) == len(d.staging) {
			if err := drain(); err != nil {
				return err
			}
		}
		n := min(len(p), len(s.mem))
		s.dirty = true
		if err := d.check("cuMemcpyDtoHAsync_v2", api.memcpyDtoHAsync(unsafe.Pointer(unsafe.SliceData(s.mem)), src, uint64(n), d.stream)); err != nil {
			return err
		}
		if err := d.check("cuEventRecord", api.eventRecord(s.event, d.stream)); err != nil {
			return err
		}
		pending = append(pending, piece{s, p[:n]})
		src += devptr(n)
		p = p[n:]
	}
	for len(pending) > 0 {
		if err := drain(); err != nil {
			return err
		}
	}
	return nil
}
