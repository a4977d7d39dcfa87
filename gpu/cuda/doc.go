// Package cuda is vramseal's NVIDIA backend: a [gpu.Device] over the CUDA
// driver API, with on-device SHA-256 leaf hashing and the checks of the
// VRAM-only policy.
//
// # Loading
//
// [Open] loads libcuda.so.1 and, when present, libnvidia-ml.so.1 at run
// time with purego: there is no cgo, the module builds with
// CGO_ENABLED=0, and no CUDA toolkit is needed to build or test it. It
// binds the versioned symbols of cuda.h (cuMemGetInfo_v2,
// cuDeviceGetUuid_v2, ...) and the virtual memory management calls
// (cuMemCreate, cuMemMap, cuMemSetAccess, cuMemExportToShareableHandle,
// ..., CUDA 10.2 and later), and needs a driver of CUDA
// [MinDriverVersion] or later and devices that support virtual memory
// management with POSIX file descriptor handles (device attributes 102
// and 103). Without a usable driver or device, Open returns an error
// wrapping [ErrUnavailable], so that callers can fall back to gpu/sim and
// say why. Every failed driver call becomes an [*Error] naming the
// CUresult and the function.
//
// # Threads
//
// A CUDA context is current per OS thread. Each [Device] therefore has one
// worker goroutine, locked to its OS thread with the device's primary
// context current, that makes every driver call for the device; methods
// send it closures and wait. Devices work in parallel; calls on one device
// run one at a time in arrival order. After a sticky error (illegal
// address, launch failure, uncorrectable ECC error, ...) the context is
// unusable, so the device latches it and every later call returns an
// error wrapping [gpu.ErrDeviceLost].
//
// # Memory and the VRAM-only policy
//
// Weights live only in memory from CUDA's virtual memory management
// API. [Device.Alloc] rounds the request up to whole granules of the
// device's minimum allocation granularity (cuMemGetAllocationGranularity
// with CU_MEM_ALLOC_GRANULARITY_MINIMUM, 2 MiB on current GPUs, recorded
// in [Facts.AllocationGranularity]), so that buffers never share one,
// and then:
//
//   - cuMemCreate: CU_MEM_ALLOCATION_TYPE_PINNED physical memory located
//     on the device (CU_MEM_LOCATION_TYPE_DEVICE, its ordinal), with
//     CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR requested so that it can
//     be exported; no compression, no GPUDirect RDMA, nothing host
//     visible or managed;
//   - cuMemAddressReserve of the rounded size, aligned to the granularity;
//   - cuMemMap of the whole allocation there;
//   - cuMemSetAccess with CU_MEM_ACCESS_FLAGS_PROT_READWRITE for the
//     device alone, for the seal's copy.
//
// A failed step releases what the earlier ones acquired. [Device.Free]
// calls cuMemUnmap, cuMemAddressFree and cuMemRelease, in that order.
// The minimum granularity, not the recommended one, is used: it is the
// unit in which the driver backs the memory, hence of the free-memory
// accounting, and the alignment a consumer's own mapping needs; a larger
// recommended granularity would only waste memory per shard.
//
// Alloc reads cuMemGetInfo_v2 before and after the allocation, the
// allocation's pointer facts (cuPointerGetAttributes, and cuMemGetAccess
// for [gpu.PointerFacts.ReadOnly]) and its physical allocation's
// properties ([VMMFacts]: cuMemRetainAllocationHandle at its address,
// then cuMemGetAllocationPropertiesFromHandle), and
// [Device.AllocReport] lists a violation of the VRAM-only policy when:
//
//   - the device is integrated (CU_DEVICE_ATTRIBUTE_INTEGRATED: it shares
//     memory with the host);
//   - the memory type is not CU_MEMORYTYPE_DEVICE, the memory is managed,
//     the device ordinal is not the device's, the range is not mapped, or
//     the allocation has a host pointer;
//   - the physical allocation is not pinned device memory located on
//     this device, or cannot be exported as a POSIX file descriptor;
//   - free device memory did not drop by at least the size rounded down
//     to the granularity. Requests under one granule are not checked, to
//     stay safe should a driver's accounting lag. Another process
//     freeing memory at the same moment can mask a drop; one that
//     allocates can only add to it.
//
// [gpu.Info.FreeBytes] is free memory rounded down to whole granules.
//
// By default the caller decides: vramseal's residency manager makes the
// same checks through [gpu.Device] and audits a violation before it
// refuses to run. With [Options.RefuseViolations], Alloc itself frees
// such an allocation and returns a [*PolicyError] wrapping [ErrPolicy].
//
// The only host memory handed to the driver is two pinned
// staging buffers per device (cuMemAllocHost_v2, [Options.StagingBytes]
// each), used for streaming writes with asynchronous copies on the
// device's stream, for chunk indexes and for leaf hashes; they are zeroed
// after every use. Never managed, mapped or registered host memory. The
// leaf kernel's scratch (chunk indexes and hashes of one launch, never
// weights) is one small cuMemAlloc_v2 allocation per device.
//
// At Open the package records, in [Facts], whether a device can access
// pageable host memory (HMM, and ATS through the host page tables),
// whether managed memory can migrate, and these environment variables
// when set: CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER,
// NVIDIA_VISIBLE_DEVICES, GGML_CUDA_ENABLE_UNIFIED_MEMORY,
// CUDA_MANAGED_FORCE_DEVICE_ALLOC, CUDA_MODULE_LOADING,
// CUDA_LAUNCH_BLOCKING, CUDA_CACHE_DISABLE, CUDA_FORCE_PTX_JIT,
// CUDA_MPS_PIPE_DIRECTORY, CUDA_MPS_ACTIVE_THREAD_PERCENTAGE,
// PYTORCH_CUDA_ALLOC_CONF and PYTORCH_NO_CUDA_MEMORY_CACHING. Refusing
// settings is the residency manager's policy, not this package's.
//
// # Read-only memory and sharing
//
// [Device.Protect] makes a sealed buffer read-only: cuMemSetAccess with
// CU_MEM_ACCESS_FLAGS_PROT_READ for the device over the whole mapping,
// so that the GPU's MMU refuses writes through this process's mapping
// (a kernel or copy that writes faults), and [Device.Write] fails with
// [gpu.ErrReadOnly] without calling the driver. ReadOnly in the pointer
// facts is the driver's answer (cuMemGetAccess), not a flag.
//
// [Device.Export] of a protected buffer returns a new descriptor from
// cuMemExportToShareableHandle (CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR),
// of kind [gpu.ShareCUDAVMM], with the mapped size and the granularity.
// A consumer process imports it with cuMemImportFromShareableHandle,
// reserves and maps that size, and grants itself
// CU_MEM_ACCESS_FLAGS_PROT_READ with cuMemSetAccess on the device whose
// UUID the shard names (see package attach). It maps the very memory that
// was sealed; freeing the buffer here releases this process's mapping and
// handle, and the driver frees the memory once every importer has
// released it too.
//
// What read-only means on CUDA: access flags belong to each mapping, not
// to the memory. The descriptor names the physical allocation, and
// whoever holds it may import it and ask cuMemSetAccess for read-write
// access; the exporter cannot stop that (unlike a sealed memfd, which
// the kernel refuses to map writable). Compliant clients map read-only,
// so a stray write in them faults instead of changing weights; a write
// that happens anyway, through a writable mapping or a hardware fault,
// is caught by vramseal's gate and background scrub, which rehash the
// memory on the device against the seal.
//
// # Leaf kernel
//
// [Device.LeafHashes] runs the kernel of kernel/leafhash.cu: one GPU
// thread per requested chunk computes the RFC 6962 leaf hash
// SHA-256(0x00 || chunk) (FIPS 180-4), for any chunk size and tail
// length; only the 32-byte hashes come back. The kernel ships as PTX
// (ISA 7.0, sm_80, so it loads on Ampere, Hopper and later), generated by
// kernel/gen.sh with clang's NVPTX backend and embedded with go:embed;
// the driver JIT-compiles it at Open. If that fails, [gpu.Info.CanHash]
// is false and [Facts.KernelError] says why.
//
// # NVML
//
// When NVML loads, [Device.Facts] adds its name, UUID, memory (v2: total,
// reserved, free, used), ECC mode and error counts, remapped rows and the
// compute processes on the device. Without NVML the facts say why and
// everything else works.
//
// # Testing
//
// The tests build the fake driver of package gpu/cuda/cudatest, over host
// memory, whose kernel launch runs kernel/leafhash.cu compiled as C and
// whose virtual memory management is memfd, mmap and mprotect (so a
// read-only mapping really is), into a temporary shared library with $CC
// (default gcc), and run the gputest conformance suite, the fault cases,
// export to and import in child processes, and the residency Manager end
// to end against it. They skip when there is no C compiler, unless
// VRAMSEAL_REQUIRE_FAKECUDA=1 (set by .ci/run) makes that a failure; a
// compiler that fails on the fake is always a failure. With
// VRAMSEAL_CUDA=1 the same test binary also runs the GPU checks against
// the real driver (TestGPU, and TestGPUVMM for export, import in a
// second process and a refused write there); scripts/gpu-check.sh runs
// them on a GPU machine.
package cuda
