// Package gpu defines the small device interface that vramseal's residency
// manager needs from a GPU backend: device facts, plain device allocations,
// streaming writes, on-device leaf hashing, and the pointer facts that the
// VRAM-only policy checks.
//
// Backends live in sub-packages: gpu/sim (a simulated device over host
// memory, used everywhere without an NVIDIA driver) and gpu/cuda (the CUDA
// driver API loaded at run time). Every backend passes the conformance suite
// in gpu/gputest.
//
// Device pointers never leave a backend: an allocation is an opaque
// [Buffer] whose formatting shows its size and device, never an address.
package gpu

import (
	"context"
	"errors"
	"fmt"
	"os"
)

// HashSize is the length of a leaf hash in bytes (SHA-256).
const HashSize = 32

// Info holds the facts about one device that callers and the VRAM-only
// policy need. It never contains pointers.
type Info struct {
	// Index is the device ordinal within its backend (0-based).
	Index int
	// Name is the marketing name, for example "NVIDIA H100 80GB HBM3".
	Name string
	// UUID is the stable device identifier ("GPU-..."), as nvidia-smi and
	// dcgm-exporter print it.
	UUID string
	// Driver names the backend: "sim" or "cuda".
	Driver string
	// DriverVersion is the backend's version string ("" when unknown).
	DriverVersion string
	// TotalBytes is the device memory size.
	TotalBytes uint64
	// FreeBytes is the device memory currently free for new allocations.
	// A backend that allocates in granules reports whole granules (rounded
	// down), so that an allocation of FreeBytes fits.
	FreeBytes uint64
	// Integrated reports a device that shares memory with the host
	// (for example a Jetson or a laptop iGPU). The VRAM-only policy refuses it.
	Integrated bool
	// PageableMemoryAccess reports that the device can access pageable
	// host memory (HMM / ATS). It is recorded, not refused: vramseal never
	// hands the device host memory for weights.
	PageableMemoryAccess bool
	// CanHash reports whether [Device.LeafHashes] runs on the device itself
	// (true for CUDA with the leaf kernel loaded, and for the simulator,
	// which stands in for a device).
	CanHash bool
}

// MemoryType is where an allocation's memory lives.
type MemoryType int

// Memory types reported in [PointerFacts].
const (
	MemoryUnknown MemoryType = iota
	MemoryDevice
	MemoryHost
	MemoryArray
	MemoryUnified
)

// String returns the memory type's lower-case name, as used in policy
// violations and logs.
func (t MemoryType) String() string {
	switch t {
	case MemoryDevice:
		return "device"
	case MemoryHost:
		return "host"
	case MemoryArray:
		return "array"
	case MemoryUnified:
		return "unified"
	default:
		return "unknown"
	}
}

// PointerFacts are what the driver says about an allocation. The VRAM-only
// policy requires MemoryType == MemoryDevice, !Managed, DeviceOrdinal equal
// to the device asked for, Mapped, and !HostAccessible.
type PointerFacts struct {
	MemoryType MemoryType
	// Managed reports unified (managed) memory that may migrate to the host.
	Managed bool
	// DeviceOrdinal is the device the memory belongs to.
	DeviceOrdinal int
	// Mapped reports that the range is mapped into the device address space.
	Mapped bool
	// HostAccessible reports that the allocation has a host pointer (mapped
	// or registered host memory).
	HostAccessible bool
	// ReadOnly reports that the backend's own mapping of the allocation
	// allows reads only, as it must after [Device.Protect].
	ReadOnly bool
}

// Kinds of [Share]: how a consumer process maps the descriptor.
const (
	// ShareMemfd is a sealed memfd (the simulator): map it with
	// mmap(PROT_READ, MAP_SHARED) at offset 0. The file is sealed against
	// writes, growth and shrinking, so no process can map it writable.
	ShareMemfd = "memfd"
	// ShareCUDAVMM is a CUDA virtual memory management allocation handle
	// exported as a POSIX file descriptor
	// (CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR): import it with
	// cuMemImportFromShareableHandle, reserve MapSize bytes of address
	// space aligned to Granularity with cuMemAddressReserve, cuMemMap it at
	// offset 0, and grant read access only with cuMemSetAccess
	// (CU_MEM_ACCESS_FLAGS_PROT_READ) on the device with the shard's UUID.
	ShareCUDAVMM = "cuda_vmm_fd"
)

// Share is one allocation exported to another process on the same host: a
// descriptor through which that process maps the very memory that was
// sealed, never a copy.
type Share struct {
	// File is a new descriptor for the allocation. The caller owns it and
	// must close it (after passing it on, for example over SCM_RIGHTS).
	File *os.File
	// Kind says how a consumer maps File: [ShareMemfd] or [ShareCUDAVMM].
	Kind string
	// MapSize is the length a consumer maps: the buffer's size rounded up
	// to a whole number of Granularity units.
	MapSize int64
	// Granularity is the mapping granularity in bytes: the page size for
	// a memfd, the VMM allocation granularity for CUDA.
	Granularity int64
}

// Buffer is an opaque handle to one device allocation. Implementations must
// not reveal device addresses through any formatting path.
type Buffer interface {
	// Size is the allocation's length in bytes.
	Size() int64
	// DeviceIndex is the ordinal of the device that owns the allocation.
	DeviceIndex() int
}

// Device is one GPU. All methods are safe for concurrent use. Methods that
// take a [Buffer] return an error wrapping [ErrInvalidBuffer] when the buffer
// was not allocated by this device or was already freed.
type Device interface {
	// Info returns the device's current facts, including free memory.
	Info(ctx context.Context) (Info, error)
	// Alloc allocates size bytes (size > 0) of plain device memory.
	// It returns an error wrapping [ErrOutOfMemory] when the device cannot
	// satisfy the request; the allocation's contents are unspecified.
	Alloc(ctx context.Context, size int64) (Buffer, error)
	// Free releases an allocation. A second Free of the same buffer is an
	// error wrapping [ErrInvalidBuffer], never a crash.
	Free(ctx context.Context, b Buffer) error
	// Write copies p into the allocation at off. The whole range
	// [off, off+len(p)) must lie inside the buffer; otherwise the error wraps
	// [ErrOutOfRange] and nothing is written. Write may be called
	// repeatedly to stream a large shard; the caller may reuse p on return.
	Write(ctx context.Context, b Buffer, off int64, p []byte) error
	// LeafHashes computes RFC 6962 leaf hashes, SHA-256(0x00 || chunk), of
	// the chunks with the given indexes, where chunk i is the byte range
	// [i*chunkSize, min((i+1)*chunkSize, Size)). out must have len(chunks)
	// entries; out[j] receives the hash of chunk chunks[j]. chunkSize must
	// be positive and every index must name a chunk inside the buffer
	// (otherwise ErrOutOfRange). Only the hashes leave the device.
	LeafHashes(ctx context.Context, b Buffer, chunkSize int64, chunks []int64, out [][HashSize]byte) error
	// PointerFacts returns the driver's facts about the allocation.
	PointerFacts(ctx context.Context, b Buffer) (PointerFacts, error)
	// Protect makes the allocation read-only once its contents are final:
	// afterwards [Device.Write] fails with an error wrapping [ErrReadOnly],
	// the backend's own mapping is read-only ([PointerFacts.ReadOnly]), and
	// every [Share] exported from it can be mapped for reading only.
	// Hashing is unaffected. A second Protect is a no-op.
	Protect(ctx context.Context, b Buffer) error
	// Export returns a new [Share] of a protected allocation, for a
	// consumer process to map. It fails with an error wrapping
	// [ErrNotProtected] before [Device.Protect], so no consumer ever gets
	// memory that can still be written through vramseal. Each call returns
	// a new descriptor; the allocation stays allocated until
	// [Device.Free], whatever the consumers hold.
	Export(ctx context.Context, b Buffer) (Share, error)
}

// Errors returned by backends. Callers branch with errors.Is.
var (
	// ErrOutOfMemory is returned by [Device.Alloc] when the device lacks
	// free memory. It is retryable.
	ErrOutOfMemory = errors.New("gpu: out of device memory")
	// ErrInvalidBuffer is returned for a buffer that is not live on the device.
	ErrInvalidBuffer = errors.New("gpu: invalid or freed buffer")
	// ErrOutOfRange is returned for offsets, lengths or chunk indexes outside a buffer.
	ErrOutOfRange = errors.New("gpu: range outside buffer")
	// ErrReadOnly is returned by [Device.Write] on a buffer after
	// [Device.Protect].
	ErrReadOnly = errors.New("gpu: buffer is read-only")
	// ErrNotProtected is returned by [Device.Export] for a buffer that
	// [Device.Protect] has not made read-only.
	ErrNotProtected = errors.New("gpu: buffer is not protected")
	// ErrDeviceLost is returned when the device stops answering (Xid,
	// fallen off the bus, or an injected fault). It is fatal.
	ErrDeviceLost = errors.New("gpu: device lost")
	// ErrPolicy is wrapped by the error of a backend's [Device.Alloc] that
	// refused an allocation, after freeing it, because it breaks the
	// VRAM-only policy. Such an error also carries a [*PolicyRefusal]. It
	// is fatal, not retryable.
	ErrPolicy = errors.New("gpu: allocation breaks the VRAM-only policy")
)

// PolicyRefusal holds what a backend saw when it refused an allocation for
// the VRAM-only policy, so that the caller's own policy check can name the
// violation. Backends return it wrapped in their own error type.
type PolicyRefusal struct {
	// Integrated is set when the device itself was refused (nothing was
	// allocated, and the other fields are zero).
	Integrated bool
	// Facts are the refused allocation's pointer facts.
	Facts PointerFacts
	// FreeBefore and FreeAfter are the device's free memory around the
	// allocation, as [Info.FreeBytes] reports it.
	FreeBefore, FreeAfter uint64
}

// Error says that a backend refused an allocation.
func (r *PolicyRefusal) Error() string {
	return "gpu: the backend refused an allocation for the VRAM-only policy"
}

// Unwrap returns [ErrPolicy].
func (r *PolicyRefusal) Unwrap() error { return ErrPolicy }

// ChunkCount returns the number of chunks of chunkSize bytes needed to cover
// size bytes (the last one may be short). It returns 0 for size <= 0 and
// panics on chunkSize <= 0, which is a caller's broken invariant.
func ChunkCount(size, chunkSize int64) int64 {
	if chunkSize <= 0 {
		panic(fmt.Sprintf("gpu: chunk size %d", chunkSize))
	}
	if size <= 0 {
		return 0
	}
	return (size-1)/chunkSize + 1
}

// CheckRange reports whether [off, off+n) lies within a buffer of size
// bytes, without overflowing. It returns an error wrapping [ErrOutOfRange].
func CheckRange(size, off, n int64) error {
	if off < 0 || n < 0 || off > size || n > size-off {
		return fmt.Errorf("%w: offset %d length %d in buffer of %d bytes", ErrOutOfRange, off, n, size)
	}
	return nil
}

// CheckChunks validates a LeafHashes request against a buffer of size bytes.
func CheckChunks(size, chunkSize int64, chunks []int64, out [][HashSize]byte) error {
	if chunkSize <= 0 {
		return fmt.Errorf("%w: chunk size %d", ErrOutOfRange, chunkSize)
	}
	if len(out) != len(chunks) {
		return fmt.Errorf("gpu: %d outputs for %d chunks", len(out), len(chunks))
	}
	n := ChunkCount(size, chunkSize)
	for _, c := range chunks {
		if c < 0 || c >= n {
			return fmt.Errorf("%w: chunk %d of %d", ErrOutOfRange, c, n)
		}
	}
	return nil
}
