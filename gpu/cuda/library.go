package cuda

import (
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	"github.com/ebitengine/purego"
)

// cuResult is the CUresult a driver function returns (0 is CUDA_SUCCESS).
type cuResult int32

// devptr is a CUdeviceptr: an address in the device's address space. It
// is a number to Go, never a Go pointer, and never leaves this package.
type devptr uint64

// driverAPI holds the CUDA driver functions gpu/cuda calls, bound from
// libcuda.so.1 by name. Versioned names (_v2) are the ones cuda.h maps the
// plain names to since CUDA 11; handles (CUcontext, CUstream, CUevent,
// CUmodule, CUfunction) are C pointers kept as uintptr, and a
// CUmemGenericAllocationHandle is a uint64.
type driverAPI struct {
	init                 func(flags uint32) cuResult
	driverGetVersion     func(v *int32) cuResult
	deviceGetCount       func(n *int32) cuResult
	deviceGet            func(dev *int32, ordinal int32) cuResult
	deviceGetName        func(name *byte, n int32, dev int32) cuResult
	deviceGetUUID        func(uuid *[16]byte, dev int32) cuResult
	deviceTotalMem       func(bytes *uint64, dev int32) cuResult
	deviceGetAttribute   func(v *int32, attr int32, dev int32) cuResult
	deviceGetPCIBusID    func(id *byte, n int32, dev int32) cuResult
	primaryCtxRetain     func(ctx *uintptr, dev int32) cuResult
	primaryCtxRelease    func(dev int32) cuResult
	ctxSetCurrent        func(ctx uintptr) cuResult
	memAlloc             func(p *devptr, size uint64) cuResult
	memFree              func(p devptr) cuResult
	memGetInfo           func(free, total *uint64) cuResult
	memcpyHtoDAsync      func(dst devptr, src unsafe.Pointer, n uint64, stream uintptr) cuResult
	memcpyDtoHAsync      func(dst unsafe.Pointer, src devptr, n uint64, stream uintptr) cuResult
	memAllocHost         func(p *unsafe.Pointer, size uint64) cuResult
	memFreeHost          func(p unsafe.Pointer) cuResult
	pointerGetAttributes func(n uint32, attrs *int32, data *unsafe.Pointer, p devptr) cuResult
	moduleLoadData       func(m *uintptr, image unsafe.Pointer) cuResult
	moduleUnload         func(m uintptr) cuResult
	moduleGetFunction    func(f *uintptr, m uintptr, name string) cuResult
	launchKernel         func(f uintptr, gx, gy, gz, bx, by, bz, sharedMem uint32, stream uintptr, params *unsafe.Pointer, extra unsafe.Pointer) cuResult
	streamCreate         func(s *uintptr, flags uint32) cuResult
	streamDestroy        func(s uintptr) cuResult
	streamSynchronize    func(s uintptr) cuResult
	eventCreate          func(e *uintptr, flags uint32) cuResult
	eventRecord          func(e, s uintptr) cuResult
	eventSynchronize     func(e uintptr) cuResult
	eventDestroy         func(e uintptr) cuResult

	// Virtual memory management (CUDA 10.2 and later); see vmm.go.
	memGetAllocationGranularity func(g *uint64, prop *memAllocationProp, option int32) cuResult
	memCreate                   func(h *uint64, size uint64, prop *memAllocationProp, flags uint64) cuResult
	memRelease                  func(h uint64) cuResult
	memAddressReserve           func(p *devptr, size, alignment uint64, addr devptr, flags uint64) cuResult
	memAddressFree              func(p devptr, size uint64) cuResult
	memMap                      func(p devptr, size, offset uint64, h uint64, flags uint64) cuResult
	memUnmap                    func(p devptr, size uint64) cuResult
	memSetAccess                func(p devptr, size uint64, desc *memAccessDesc, count uint64) cuResult
	memGetAccess                func(flags *uint64, loc *memLocation, p devptr) cuResult
	memExportToShareableHandle  func(fd *int32, h uint64, handleType int32, flags uint64) cuResult
	memGetAllocationProperties  func(prop *memAllocationProp, h uint64) cuResult
	memRetainAllocationHandle   func(h *uint64, addr devptr) cuResult
}

// nvmlAPI holds the NVML functions gpu/cuda calls. Only init, shutdown and
// nvmlDeviceGetHandleByUUID are required; a nil field is a function this
// libnvidia-ml.so.1 lacks, and its facts are left out.
type nvmlAPI struct {
	init                    func() int32
	shutdown                func() int32
	systemGetDriverVersion  func(s *byte, n uint32) int32
	deviceGetHandleByUUID   func(uuid string, h *uintptr) int32
	deviceGetName           func(h uintptr, s *byte, n uint32) int32
	deviceGetUUID           func(h uintptr, s *byte, n uint32) int32
	deviceGetMemoryInfoV2   func(h uintptr, m *nvmlMemoryV2) int32
	deviceGetEccMode        func(h uintptr, current, pending *int32) int32
	deviceGetTotalEccErrors func(h uintptr, errorType, counterType int32, n *uint64) int32
	deviceGetRemappedRows   func(h uintptr, corr, unc, pending, failed *uint32) int32
	deviceGetComputeProcs   func(h uintptr, count *uint32, infos *nvmlProcessInfo) int32
}

// nvmlMemoryV2 is nvmlMemory_v2_t.
type nvmlMemoryV2 struct {
	version  uint32
	_        uint32
	total    uint64
	reserved uint64
	free     uint64
	used     uint64
}

// nvmlMemoryV2Version is nvmlMemory_v2 = NVML_STRUCT_VERSION(Memory, 2).
const nvmlMemoryV2Version = uint32(unsafe.Sizeof(nvmlMemoryV2{})) | 2<<24

// nvmlProcessInfo is the nvmlProcessInfo_t of
// nvmlDeviceGetComputeRunningProcesses_v3 (24 bytes).
type nvmlProcessInfo struct {
	pid           uint32
	_             uint32
	usedGpuMemory uint64
	_             uint32 // gpuInstanceId
	_             uint32 // computeInstanceId
}

// binder binds C functions of one library, collecting missing names so that
// a driver too old to have them is one clear error, not a panic.
type binder struct {
	lib     uintptr
	missing []string
}

func (b *binder) bind(fptr any, name string) {
	sym, err := purego.Dlsym(b.lib, name)
	if err != nil || sym == 0 {
		b.missing = append(b.missing, name)
		return
	}
	purego.RegisterFunc(fptr, sym)
}

func (b *binder) err(path string) error {
	if len(b.missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s lacks %s (driver too old?)", ErrUnavailable, path, strings.Join(b.missing, ", "))
}

// dlopenError says which library could not be loaded. dlerror's message
// usually starts with the path already ("libcuda.so.1: cannot open shared
// object file"): the path is then not said twice.
func dlopenError(path string, err error) error {
	if strings.HasPrefix(err.Error(), path+":") {
		return fmt.Errorf("load %w", err)
	}
	return fmt.Errorf("load %s: %w", path, err)
}

// dlopen opens a library on one OS thread: dlerror's message is kept per
// thread, and read after the call, so the goroutine must not move between.
func dlopen(path string) (uintptr, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
}

// loadDriver opens the CUDA driver library at path and binds its functions.
func loadDriver(path string) (*driverAPI, error) {
	lib, err := dlopen(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, dlopenError(path, err))
	}
	var a driverAPI
	b := binder{lib: lib}
	b.bind(&a.init, "cuInit")
	b.bind(&a.driverGetVersion, "cuDriverGetVersion")
	b.bind(&a.deviceGetCount, "cuDeviceGetCount")
	b.bind(&a.deviceGet, "cuDeviceGet")
	b.bind(&a.deviceGetName, "cuDeviceGetName")
	b.bind(&a.deviceGetUUID, "cuDeviceGetUuid_v2")
	b.bind(&a.deviceTotalMem, "cuDeviceTotalMem_v2")
	b.bind(&a.deviceGetAttribute, "cuDeviceGetAttribute")
	b.bind(&a.deviceGetPCIBusID, "cuDeviceGetPCIBusId")
	b.bind(&a.primaryCtxRetain, "cuDevicePrimaryCtxRetain")
	b.bind(&a.primaryCtxRelease, "cuDevicePrimaryCtxRelease_v2")
	b.bind(&a.ctxSetCurrent, "cuCtxSetCurrent")
	b.bind(&a.memAlloc, "cuMemAlloc_v2")
	b.bind(&a.memFree, "cuMemFree_v2")
	b.bind(&a.memGetInfo, "cuMemGetInfo_v2")
	b.bind(&a.memcpyHtoDAsync, "cuMemcpyHtoDAsync_v2")
	b.bind(&a.memcpyDtoHAsync, "cuMemcpyDtoHAsync_v2")
	b.bind(&a.memAllocHost, "cuMemAllocHost_v2")
	b.bind(&a.memFreeHost, "cuMemFreeHost")
	b.bind(&a.pointerGetAttributes, "cuPointerGetAttributes")
	b.bind(&a.moduleLoadData, "cuModuleLoadData")
	b.bind(&a.moduleUnload, "cuModuleUnload")
	b.bind(&a.moduleGetFunction, "cuModuleGetFunction")
	b.bind(&a.launchKernel, "cuLaunchKernel")
	b.bind(&a.streamCreate, "cuStreamCreate")
	b.bind(&a.streamDestroy, "cuStreamDestroy_v2")
	b.bind(&a.streamSynchronize, "cuStreamSynchronize")
	b.bind(&a.eventCreate, "cuEventCreate")
	b.bind(&a.eventRecord, "cuEventRecord")
	b.bind(&a.eventSynchronize, "cuEventSynchronize")
	b.bind(&a.eventDestroy, "cuEventDestroy_v2")
	b.bind(&a.memGetAllocationGranularity, "cuMemGetAllocationGranularity")
	b.bind(&a.memCreate, "cuMemCreate")
	b.bind(&a.memRelease, "cuMemRelease")
	b.bind(&a.memAddressReserve, "cuMemAddressReserve")
	b.bind(&a.memAddressFree, "cuMemAddressFree")
	b.bind(&a.memMap, "cuMemMap")
	b.bind(&a.memUnmap, "cuMemUnmap")
	b.bind(&a.memSetAccess, "cuMemSetAccess")
	b.bind(&a.memGetAccess, "cuMemGetAccess")
	b.bind(&a.memExportToShareableHandle, "cuMemExportToShareableHandle")
	b.bind(&a.memGetAllocationProperties, "cuMemGetAllocationPropertiesFromHandle")
	b.bind(&a.memRetainAllocationHandle, "cuMemRetainAllocationHandle")
	if err := b.err(path); err != nil {
		return nil, err
	}
	return &a, nil
}

// loadNVML opens NVML at path and binds its functions.
func loadNVML(path string) (*nvmlAPI, error) {
	lib, err := dlopen(path)
	if err != nil {
		return nil, fmt.Errorf("cuda: %w", dlopenError(path, err))
	}
	var a nvmlAPI
	b := binder{lib: lib}
	b.bind(&a.init, "nvmlInit_v2")
	b.bind(&a.shutdown, "nvmlShutdown")
	b.bind(&a.deviceGetHandleByUUID, "nvmlDeviceGetHandleByUUID")
	if len(b.missing) > 0 {
		return nil, fmt.Errorf("cuda: %s lacks %s", path, strings.Join(b.missing, ", "))
	}
	optional := binder{lib: lib}
	optional.bind(&a.systemGetDriverVersion, "nvmlSystemGetDriverVersion")
	optional.bind(&a.deviceGetName, "nvmlDeviceGetName")
	optional.bind(&a.deviceGetUUID, "nvmlDeviceGetUUID")
	optional.bind(&a.deviceGetMemoryInfoV2, "nvmlDeviceGetMemoryInfo_v2")
	optional.bind(&a.deviceGetEccMode, "nvmlDeviceGetEccMode")
	optional.bind(&a.deviceGetTotalEccErrors, "nvmlDeviceGetTotalEccErrors")
	optional.bind(&a.deviceGetRemappedRows, "nvmlDeviceGetRemappedRows")
	optional.bind(&a.deviceGetComputeProcs, "nvmlDeviceGetComputeRunningProcesses_v3")
	return &a, nil
}

// cString returns the NUL-terminated string at the start of b.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
