package cuda

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"unsafe"

	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/gpu/cuda/kernel"
)

// leafhashPTX is the leaf kernel, generated from kernel/leafhash.cu by
// kernel/gen.sh. The driver JIT-compiles it for the device at hand.
var leafhashPTX = kernel.PTX()

// kernelName is the .entry of leafhashPTX.
const kernelName = "leafhash"

// loadKernel loads the PTX module and looks up the kernel; it runs on the
// worker. A failure leaves the device usable without on-device hashing.
func (d *Device) loadKernel() error {
	api := d.drv.api
	img := []byte(leafhashPTX + "\x00") // cuModuleLoadData reads a C string
	if err := d.check("cuModuleLoadData", api.moduleLoadData(&d.module, unsafe.Pointer(unsafe.SliceData(img)))); err != nil {
		d.module = 0
		return err
	}
	if err := d.check("cuModuleGetFunction", api.moduleGetFunction(&d.fn, d.module, kernelName)); err != nil {
		d.fn = 0
		return err
	}
	return nil
}

// launchArgs is the kernel's parameter block: the values, and the array of
// pointers to them that cuLaunchKernel reads. It is pinned for the call.
type launchArgs struct {
	vals [6]uint64 // data, size, chunk, idx, n, out (kernel/leafhash.cu)
	ptrs [6]unsafe.Pointer
}

// LeafHashes implements [gpu.Device.LeafHashes] with the leaf kernel, one
// GPU thread per requested chunk. Per launch, the chunk indexes go to the
// device and the 32-byte hashes come back through the pinned staging
// buffers; the buffer's bytes never leave the device. Requests larger
// than one launch (see [Options.MaxLaunchChunks]) take several launches,
// and ctx is checked between them. When the kernel could not be loaded,
// the error says why ([Facts.KernelError]).
func (d *Device) LeafHashes(ctx context.Context, b gpu.Buffer, chunkSize int64, chunks []int64, out [][gpu.HashSize]byte) error {
	buf, err := d.own(b)
	if err != nil {
		return err
	}
	return d.do(ctx, func() error {
		if err := d.isLive(buf); err != nil {
			return err
		}
		if err := gpu.CheckChunks(buf.size, chunkSize, chunks, out); err != nil {
			return fmt.Errorf("cuda: device %d: leaf hashes: %w", d.ordinal, err)
		}
		if err := d.usable(); err != nil {
			return err
		}
		if d.kernelErr != nil {
			return fmt.Errorf("cuda: device %d: leaf kernel unavailable: %w", d.ordinal, d.kernelErr)
		}
		for start := 0; start < len(chunks); start += d.batch {
			if err := ctx.Err(); err != nil {
				return err
			}
			end := min(start+d.batch, len(chunks))
			if err := d.launch(buf, chunkSize, chunks[start:end], out[start:end]); err != nil {
				return err
			}
		}
		return nil
	})
}

// launch hashes one batch; it runs on the worker.
func (d *Device) launch(buf *buffer, chunkSize int64, chunks []int64, out [][gpu.HashSize]byte) (err error) {
	api := d.drv.api
	n := len(chunks)
	idx, hashes := d.staging[0].mem[:8*n], d.staging[1].mem[:gpu.HashSize*n]
	d.staging[0].dirty, d.staging[1].dirty = true, true
	defer d.scrub()
	for i, c := range chunks {
		binary.LittleEndian.PutUint64(idx[8*i:], uint64(c))
	}
	devIdx := d.scratch
	devOut := d.scratch + devptr(8*d.batch)
	if err := d.check("cuMemcpyHtoDAsync_v2", api.memcpyHtoDAsync(devIdx, unsafe.Pointer(unsafe.SliceData(idx)), uint64(len(idx)), d.stream)); err != nil {
		return err
	}
	a := &launchArgs{vals: [6]uint64{uint64(buf.ptr), uint64(buf.size), uint64(chunkSize), uint64(devIdx), uint64(n), uint64(devOut)}}
	var pin runtime.Pinner
	pin.Pin(a)
	defer pin.Unpin()
	for i := range a.vals {
		a.ptrs[i] = unsafe.Pointer(&a.vals[i])
	}
	blocks := uint32((n + defaultBlockThreads - 1) / defaultBlockThreads)
	r := api.launchKernel(d.fn, blocks, 1, 1, defaultBlockThreads, 1, 1, 0, d.stream, &a.ptrs[0], nil)
	if err := d.check("cuLaunchKernel", r); err != nil {
		api.streamSynchronize(d.stream)
		return err
	}
	if err := d.check("cuMemcpyDtoHAsync_v2", api.memcpyDtoHAsync(unsafe.Pointer(unsafe.SliceData(hashes)), devOut, uint64(len(hashes)), d.stream)); err != nil {
		api.streamSynchronize(d.stream)
		return err
	}
	if err := d.check("cuStreamSynchronize", api.streamSynchronize(d.stream)); err != nil {
		return err
	}
	for i := range out {
		copy(out[i][:], hashes[gpu.HashSize*i:])
	}
	return nil
}
