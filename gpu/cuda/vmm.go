package cuda

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"syscall"

	"github.com/vramseal/vramseal/gpu"
)

// CUDA virtual memory management enumerations (cuda.h, CUDA 10.2 and
// later).
const (
	memAllocationTypePinned = 1 // CU_MEM_ALLOCATION_TYPE_PINNED
	memHandleTypePosixFD    = 1 // CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR
	memLocationTypeDevice   = 1 // CU_MEM_LOCATION_TYPE_DEVICE
	memGranularityMinimum   = 0 // CU_MEM_ALLOC_GRANULARITY_MINIMUM

	memAccessRead      = 1 // CU_MEM_ACCESS_FLAGS_PROT_READ
	memAccessReadWrite = 3 // CU_MEM_ACCESS_FLAGS_PROT_READWRITE

	attrVirtualMemoryManagement = 102 // CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED
	attrPosixFDHandles          = 103 // CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED
)

// memLocation is CUmemLocation: a CUmemLocationType and, for a device,
// its CUdevice (8 bytes).
type memLocation struct {
	typ int32
	id  int32
}

// memAllocationProp is CUmemAllocationProp (32 bytes): type,
// requestedHandleTypes, location, win32HandleMetaData (a pointer, nil
// here), and allocFlags (compressionType, gpuDirectRDMACapable, a 16-bit
// usage and 4 reserved bytes), all zero here: no compression, no
// GPUDirect RDMA, no special usage.
type memAllocationProp struct {
	typ                  int32
	requestedHandleTypes int32
	location             memLocation
	win32HandleMetaData  uintptr
	allocFlags           [8]byte
}

// memAccessDesc is CUmemAccessDesc: a location and its CUmemAccess_flags
// (12 bytes).
type memAccessDesc struct {
	location memLocation
	flags    int32
}

// VMMFacts are what the driver says about a buffer's physical allocation:
// the properties that cuMemGetAllocationPropertiesFromHandle reports for
// the handle that cuMemRetainAllocationHandle finds at the buffer's
// address, and the size mapped there. They hold no address or handle.
type VMMFacts struct {
	// AllocationType is the CUmemAllocationType: 1 (pinned device
	// memory) is the only type the policy accepts.
	AllocationType int
	// LocationType is the CUmemLocationType: 1 (a device) is the only
	// one the policy accepts; 2 and up are host memory.
	LocationType int
	// LocationID is the device the physical memory lives on, which must
	// be the buffer's.
	LocationID int
	// HandleTypes are the CUmemAllocationHandleType bits the allocation
	// can be exported as; [Device.Export] needs 1 (a POSIX file
	// descriptor).
	HandleTypes int
	// MapSize is the bytes allocated and mapped: the buffer's size
	// rounded up to Granularity.
	MapSize int64
	// Granularity is the device's minimum allocation granularity
	// (cuMemGetAllocationGranularity).
	Granularity int64
}

// violations checks the VMM facts against the VRAM-only policy.
func (f VMMFacts) violations(ordinal int) []string {
	var v []string
	if f.AllocationType != memAllocationTypePinned {
		v = append(v, fmt.Sprintf("allocation type %d, want pinned device memory (1)", f.AllocationType))
	}
	if f.LocationType != memLocationTypeDevice {
		v = append(v, fmt.Sprintf("allocation location type %d, want device (1)", f.LocationType))
	}
	if f.LocationID != ordinal {
		v = append(v, fmt.Sprintf("allocation on device %d, want %d", f.LocationID, ordinal))
	}
	if f.HandleTypes&memHandleTypePosixFD == 0 {
		v = append(v, "allocation cannot be exported as a POSIX file descriptor")
	}
	return v
}

// allocProp is the allocation every buffer of d gets: pinned memory of
// the device, exportable as a POSIX file descriptor, nothing else.
func (d *Device) allocProp() memAllocationProp {
	return memAllocationProp{
		typ:                  memAllocationTypePinned,
		requestedHandleTypes: memHandleTypePosixFD,
		location:             memLocation{typ: memLocationTypeDevice, id: d.cuDev},
	}
}

// setupVMM checks that the device supports virtual memory management with
// POSIX file descriptors and reads its minimum allocation granularity; it
// runs on the worker during setup.
//
// The minimum granularity, not the recommended one, is what buffers are
// rounded to: it is the unit in which the driver backs a cuMemCreate
// allocation with physical memory, so it is also the unit of the
// free-memory accounting ([gpu.Info.FreeBytes] and the policy's drop
// check), it is the alignment every consumer's cuMemAddressReserve and
// cuMemMap needs (a consumer that queries its own minimum finds the same
// value), and it wastes the least per shard. The recommended granularity
// is a performance hint that some drivers set larger; shards are read
// sequentially by the leaf kernel and by consumers, so it would only
// waste memory.
func (d *Device) setupVMM() error {
	api := d.drv.api
	for _, a := range []int32{attrVirtualMemoryManagement, attrPosixFDHandles} {
		var v int32
		if err := d.check("cuDeviceGetAttribute", api.deviceGetAttribute(&v, a, d.cuDev)); err != nil {
			return err
		}
		if v == 0 {
			return fmt.Errorf("%w: device %d lacks CUDA virtual memory management with POSIX file descriptors (device attribute %d is 0)",
				ErrUnavailable, d.ordinal, a)
		}
	}
	prop := d.allocProp()
	var g uint64
	if err := d.check("cuMemGetAllocationGranularity", api.memGetAllocationGranularity(&g, &prop, memGranularityMinimum)); err != nil {
		return err
	}
	if g == 0 || g&(g-1) != 0 || g > 1<<30 {
		return fmt.Errorf("cuda: device %d: cuMemGetAllocationGranularity returned %d bytes, want a power of two up to 1 GiB", d.ordinal, g)
	}
	d.granularity = g
	d.static.AllocationGranularity = int64(g)
	return nil
}

// mapSize rounds a request up to whole granules, so that no two buffers
// share one and each allocation shows in the driver's free memory. The
// waste is under one granule (2 MiB on current GPUs) per buffer, noise
// next to a model shard. Sizes are positive int64, so the result fits in
// a uint64.
func (d *Device) mapSize(size int64) uint64 {
	g := d.granularity
	return (uint64(size) + g - 1) / g * g
}

// wholeGranules rounds free memory down to whole granules.
func (d *Device) wholeGranules(n uint64) uint64 { return n / d.granularity * d.granularity }

// vmmAlloc allocates size bytes (a multiple of the granularity) of device
// memory and maps them read-write for the device: cuMemCreate,
// cuMemAddressReserve, cuMemMap, cuMemSetAccess. On error it releases
// whatever it had acquired, in reverse order. It runs on the worker.
func (d *Device) vmmAlloc(size uint64) (devptr, uint64, error) {
	api := d.drv.api
	prop := d.allocProp()
	var h uint64
	if err := d.check("cuMemCreate", api.memCreate(&h, size, &prop, 0)); err != nil {
		return 0, 0, err
	}
	var p devptr
	if err := d.check("cuMemAddressReserve", api.memAddressReserve(&p, size, d.granularity, 0, 0)); err != nil {
		return 0, 0, errors.Join(err, d.check("cuMemRelease", api.memRelease(h)))
	}
	if err := d.check("cuMemMap", api.memMap(p, size, 0, h, 0)); err != nil {
		return 0, 0, errors.Join(err,
			d.check("cuMemAddressFree", api.memAddressFree(p, size)),
			d.check("cuMemRelease", api.memRelease(h)))
	}
	desc := memAccessDesc{location: memLocation{typ: memLocationTypeDevice, id: d.cuDev}, flags: memAccessReadWrite}
	if err := d.check("cuMemSetAccess", api.memSetAccess(p, size, &desc, 1)); err != nil {
		return 0, 0, errors.Join(err, d.vmmFree(p, h, size))
	}
	return p, h, nil
}

// vmmFree unmaps and releases an allocation of vmmAlloc: cuMemUnmap, then
// cuMemAddressFree of the reservation (only once nothing is mapped in
// it), then cuMemRelease of the handle, which frees the memory once no
// other process holds it (an importer's handle or mapping keeps the
// physical memory alive, never this process's address range). It runs on
// the worker.
func (d *Device) vmmFree(p devptr, h, size uint64) error {
	api := d.drv.api
	err := d.check("cuMemUnmap", api.memUnmap(p, size))
	if err == nil {
		err = d.check("cuMemAddressFree", api.memAddressFree(p, size))
	}
	return errors.Join(err, d.check("cuMemRelease", api.memRelease(h)))
}

// vmmFacts reads the VMM facts of the allocation mapped at p.
func (d *Device) vmmFacts(p devptr, size uint64) (VMMFacts, error) {
	api := d.drv.api
	var h uint64
	if err := d.check("cuMemRetainAllocationHandle", api.memRetainAllocationHandle(&h, p)); err != nil {
		return VMMFacts{}, err
	}
	var prop memAllocationProp
	err := d.check("cuMemGetAllocationPropertiesFromHandle", api.memGetAllocationProperties(&prop, h))
	// The retained handle is a reference of its own.
	if err := errors.Join(err, d.check("cuMemRelease", api.memRelease(h))); err != nil {
		return VMMFacts{}, err
	}
	return VMMFacts{
		AllocationType: int(prop.typ),
		LocationType:   int(prop.location.typ),
		LocationID:     int(prop.location.id),
		HandleTypes:    int(prop.requestedHandleTypes),
		MapSize:        int64(size),
		Granularity:    int64(d.granularity),
	}, nil
}

// readOnly asks the driver (cuMemGetAccess) whether the device may only
// read the mapping at p.
func (d *Device) readOnly(p devptr) (bool, error) {
	var flags uint64
	loc := memLocation{typ: memLocationTypeDevice, id: d.cuDev}
	if err := d.check("cuMemGetAccess", d.drv.api.memGetAccess(&flags, &loc, p)); err != nil {
		return false, err
	}
	return flags == memAccessRead, nil
}

// Protect implements [gpu.Device.Protect]: cuMemSetAccess with
// CU_MEM_ACCESS_FLAGS_PROT_READ for the device over the whole mapping, so
// that the device's own MMU refuses writes to it (a kernel or copy that
// writes faults), and [Device.Write] fails with [gpu.ErrReadOnly].
// [gpu.PointerFacts.ReadOnly] afterwards is the driver's answer
// (cuMemGetAccess), not a flag of this package.
func (d *Device) Protect(ctx context.Context, b gpu.Buffer) error {
	return d.onBuffer(ctx, b, func(buf *buffer) error {
		if buf.readOnly {
			return nil
		}
		desc := memAccessDesc{location: memLocation{typ: memLocationTypeDevice, id: d.cuDev}, flags: memAccessRead}
		if err := d.check("cuMemSetAccess", d.drv.api.memSetAccess(buf.ptr, buf.mapSize, &desc, 1)); err != nil {
			return err
		}
		buf.readOnly = true
		return nil
	})
}

// Export implements [gpu.Device.Export] with cuMemExportToShareableHandle
// (CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR): a new descriptor, close on
// exec, of kind [gpu.ShareCUDAVMM]. The descriptor names the physical
// allocation, not this process's mapping: whoever holds it can import the
// memory and ask for any access, read-write included (see the package
// documentation).
func (d *Device) Export(ctx context.Context, b gpu.Buffer) (gpu.Share, error) {
	var sh gpu.Share
	err := d.onBuffer(ctx, b, func(buf *buffer) error {
		if !buf.readOnly {
			return fmt.Errorf("cuda: device %d: export: %w", d.ordinal, gpu.ErrNotProtected)
		}
		fd := int32(-1)
		if err := d.check("cuMemExportToShareableHandle", d.drv.api.memExportToShareableHandle(&fd, buf.handle, memHandleTypePosixFD, 0)); err != nil {
			return err
		}
		if fd < 0 {
			return fmt.Errorf("cuda: device %d: cuMemExportToShareableHandle gave descriptor %d", d.ordinal, fd)
		}
		syscall.CloseOnExec(int(fd))
		sh = gpu.Share{
			File:        os.NewFile(uintptr(fd), "cuda-vmm-share"),
			Kind:        gpu.ShareCUDAVMM,
			MapSize:     int64(buf.mapSize),
			Granularity: int64(d.granularity),
		}
		return nil
	})
	return sh, err
}

// tooLarge reports a request no device holds without asking the driver,
// which may answer CUDA_ERROR_INVALID_VALUE rather than OUT_OF_MEMORY for
// sizes near 2^63.
func tooLarge(size uint64, total uint64) bool { return size > total || size > math.MaxInt64 }
