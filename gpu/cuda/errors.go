package cuda

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/vramseal/vramseal/gpu"
)

// ErrUnavailable is wrapped by every [Open] error that means "no usable
// NVIDIA GPU here": the driver library is missing or lacks a symbol, cuInit
// fails, the driver is older than [MinDriverVersion], or there is no device.
// The CLI's --device auto branches on it to fall back to the simulated
// device, printing the error as the reason.
var ErrUnavailable = errors.New("cuda: no usable NVIDIA GPU")

// ErrPolicy is wrapped by the [*PolicyError] that [Device.Alloc] returns,
// with [Options.RefuseViolations], when the driver's answers break the
// VRAM-only policy. It is fatal, not retryable.
// It wraps [gpu.ErrPolicy].
var ErrPolicy = fmt.Errorf("cuda: VRAM-only policy violation: %w", gpu.ErrPolicy)

// errClosed is returned by calls on a device after [Driver.Close].
var errClosed = errors.New("cuda: device closed")

// Error is a failed CUDA driver call: the CUresult code, its name from
// cuda.h, and the driver function that returned it. It wraps
// [gpu.ErrOutOfMemory] for CUDA_ERROR_OUT_OF_MEMORY, [gpu.ErrDeviceLost]
// for the sticky errors after which the CUDA context is unusable (illegal
// address, launch failure, uncorrectable ECC error and their kin), and
// [ErrUnavailable] for errors that mean there is no usable device.
type Error struct {
	// Code is the CUresult value.
	Code int
	// Name is the CUresult name, for example "CUDA_ERROR_OUT_OF_MEMORY".
	Name string
	// Op is the driver function that failed, for example "cuMemAlloc_v2".
	Op string
	// Device is the CUDA ordinal of the device the call was for, or -1
	// for calls not tied to one (cuInit, cuDeviceGetCount).
	Device int
}

// Error names the device, the driver call and the CUresult with its code.
func (e *Error) Error() string {
	dev := ""
	if e.Device >= 0 {
		dev = "device " + strconv.Itoa(e.Device) + ": "
	}
	return "cuda: " + dev + e.Op + ": " + e.Name + " (" + strconv.Itoa(e.Code) + ")"
}

// Unwrap returns the gpu or cuda sentinel that the code maps to, or nil.
func (e *Error) Unwrap() error {
	switch {
	case e.Code == errOutOfMemory:
		return gpu.ErrOutOfMemory
	case isSticky(e.Code):
		return gpu.ErrDeviceLost
	case isUnavailable(e.Code):
		return ErrUnavailable
	}
	return nil
}

// newError returns the *Error for a non-zero CUresult r of op, a call not
// tied to a device.
func newError(op string, r cuResult) *Error {
	return &Error{Code: int(r), Name: resultName(int(r)), Op: op, Device: -1}
}

// errOutOfMemory is CUDA_ERROR_OUT_OF_MEMORY.
const errOutOfMemory = 2

// isSticky reports the CUresult codes after which the context is corrupt
// and every later call fails: the device is lost to this process. The CUDA
// Driver API documentation calls these errors "sticky".
func isSticky(code int) bool {
	switch code {
	case 214, // CUDA_ERROR_ECC_UNCORRECTABLE
		220, // CUDA_ERROR_NVLINK_UNCORRECTABLE
		700, // CUDA_ERROR_ILLEGAL_ADDRESS
		702, // CUDA_ERROR_LAUNCH_TIMEOUT
		709, // CUDA_ERROR_CONTEXT_IS_DESTROYED
		710, // CUDA_ERROR_ASSERT
		714, // CUDA_ERROR_HARDWARE_STACK_ERROR
		715, // CUDA_ERROR_ILLEGAL_INSTRUCTION
		716, // CUDA_ERROR_MISALIGNED_ADDRESS
		717, // CUDA_ERROR_INVALID_ADDRESS_SPACE
		718, // CUDA_ERROR_INVALID_PC
		719, // CUDA_ERROR_LAUNCH_FAILED
		999: // CUDA_ERROR_UNKNOWN
		return true
	}
	return false
}

// isUnavailable reports codes that mean the driver or device cannot be used
// at all, so that the caller should fall back to another backend.
func isUnavailable(code int) bool {
	switch code {
	case 3, // CUDA_ERROR_NOT_INITIALIZED
		4,   // CUDA_ERROR_DEINITIALIZED
		34,  // CUDA_ERROR_STUB_LIBRARY
		46,  // CUDA_ERROR_DEVICE_UNAVAILABLE
		100, // CUDA_ERROR_NO_DEVICE
		101, // CUDA_ERROR_INVALID_DEVICE
		102, // CUDA_ERROR_DEVICE_NOT_LICENSED
		802, // CUDA_ERROR_SYSTEM_NOT_READY
		803, // CUDA_ERROR_SYSTEM_DRIVER_MISMATCH
		804: // CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE
		return true
	}
	return false
}

// resultName returns the cuda.h name of a CUresult; codes newer than this
// table are named "CUDA_ERROR_<code>".
func resultName(code int) string {
	if n, ok := resultNames[code]; ok {
		return n
	}
	return "CUDA_ERROR_" + strconv.Itoa(code)
}

// resultNames is the CUresult enumeration of cuda.h (CUDA 12.x).
var resultNames = map[int]string{
	0: "CUDA_SUCCESS", 1: "CUDA_ERROR_INVALID_VALUE", 2: "CUDA_ERROR_OUT_OF_MEMORY",
	3: "CUDA_ERROR_NOT_INITIALIZED", 4: "CUDA_ERROR_DEINITIALIZED", 5: "CUDA_ERROR_PROFILER_DISABLED",
	6: "CUDA_ERROR_PROFILER_NOT_INITIALIZED", 7: "CUDA_ERROR_PROFILER_ALREADY_STARTED",
	8: "CUDA_ERROR_PROFILER_ALREADY_STOPPED", 34: "CUDA_ERROR_STUB_LIBRARY",
	46: "CUDA_ERROR_DEVICE_UNAVAILABLE", 100: "CUDA_ERROR_NO_DEVICE", 101: "CUDA_ERROR_INVALID_DEVICE",
	102: "CUDA_ERROR_DEVICE_NOT_LICENSED", 200: "CUDA_ERROR_INVALID_IMAGE", 201: "CUDA_ERROR_INVALID_CONTEXT",
	202: "CUDA_ERROR_CONTEXT_ALREADY_CURRENT", 205: "CUDA_ERROR_MAP_FAILED", 206: "CUDA_ERROR_UNMAP_FAILED",
	207: "CUDA_ERROR_ARRAY_IS_MAPPED", 208: "CUDA_ERROR_ALREADY_MAPPED", 209: "CUDA_ERROR_NO_BINARY_FOR_GPU",
	210: "CUDA_ERROR_ALREADY_ACQUIRED", 211: "CUDA_ERROR_NOT_MAPPED", 212: "CUDA_ERROR_NOT_MAPPED_AS_ARRAY",
	213: "CUDA_ERROR_NOT_MAPPED_AS_POINTER", 214: "CUDA_ERROR_ECC_UNCORRECTABLE",
	215: "CUDA_ERROR_UNSUPPORTED_LIMIT", 216: "CUDA_ERROR_CONTEXT_ALREADY_IN_USE",
	217: "CUDA_ERROR_PEER_ACCESS_UNSUPPORTED", 218: "CUDA_ERROR_INVALID_PTX",
	219: "CUDA_ERROR_INVALID_GRAPHICS_CONTEXT", 220: "CUDA_ERROR_NVLINK_UNCORRECTABLE",
	221: "CUDA_ERROR_JIT_COMPILER_NOT_FOUND", 222: "CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
	223: "CUDA_ERROR_JIT_COMPILATION_DISABLED", 224: "CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY",
	225: "CUDA_ERROR_UNSUPPORTED_DEVSIDE_SYNC", 300: "CUDA_ERROR_INVALID_SOURCE",
	301: "CUDA_ERROR_FILE_NOT_FOUND", 302: "CUDA_ERROR_SHARED_OBJECT_SYMBOL_NOT_FOUND",
	303: "CUDA_ERROR_SHARED_OBJECT_INIT_FAILED", 304: "CUDA_ERROR_OPERATING_SYSTEM",
	400: "CUDA_ERROR_INVALID_HANDLE", 401: "CUDA_ERROR_ILLEGAL_STATE", 402: "CUDA_ERROR_LOSSY_QUERY",
	500: "CUDA_ERROR_NOT_FOUND", 600: "CUDA_ERROR_NOT_READY", 700: "CUDA_ERROR_ILLEGAL_ADDRESS",
	701: "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", 702: "CUDA_ERROR_LAUNCH_TIMEOUT",
	703: "CUDA_ERROR_LAUNCH_INCOMPATIBLE_TEXTURING", 704: "CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED",
	705: "CUDA_ERROR_PEER_ACCESS_NOT_ENABLED", 708: "CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE",
	709: "CUDA_ERROR_CONTEXT_IS_DESTROYED", 710: "CUDA_ERROR_ASSERT", 711: "CUDA_ERROR_TOO_MANY_PEERS",
	712: "CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED", 713: "CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED",
	714: "CUDA_ERROR_HARDWARE_STACK_ERROR", 715: "CUDA_ERROR_ILLEGAL_INSTRUCTION",
	716: "CUDA_ERROR_MISALIGNED_ADDRESS", 717: "CUDA_ERROR_INVALID_ADDRESS_SPACE", 718: "CUDA_ERROR_INVALID_PC",
	719: "CUDA_ERROR_LAUNCH_FAILED", 720: "CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE",
	800: "CUDA_ERROR_NOT_PERMITTED", 801: "CUDA_ERROR_NOT_SUPPORTED", 802: "CUDA_ERROR_SYSTEM_NOT_READY",
	803: "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH", 804: "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE",
	805: "CUDA_ERROR_MPS_CONNECTION_FAILED", 806: "CUDA_ERROR_MPS_RPC_FAILURE",
	807: "CUDA_ERROR_MPS_SERVER_NOT_READY", 808: "CUDA_ERROR_MPS_MAX_CLIENTS_REACHED",
	809: "CUDA_ERROR_MPS_MAX_CONNECTIONS_REACHED", 810: "CUDA_ERROR_MPS_CLIENT_TERMINATED",
	811: "CUDA_ERROR_CDP_NOT_SUPPORTED", 812: "CUDA_ERROR_CDP_VERSION_MISMATCH",
	900: "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", 901: "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED",
	902: "CUDA_ERROR_STREAM_CAPTURE_MERGE", 903: "CUDA_ERROR_STREAM_CAPTURE_UNMATCHED",
	904: "CUDA_ERROR_STREAM_CAPTURE_UNJOINED", 905: "CUDA_ERROR_STREAM_CAPTURE_ISOLATION",
	906: "CUDA_ERROR_STREAM_CAPTURE_IMPLICIT", 907: "CUDA_ERROR_CAPTURED_EVENT",
	908: "CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD", 909: "CUDA_ERROR_TIMEOUT",
	910: "CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE", 911: "CUDA_ERROR_EXTERNAL_DEVICE",
	912: "CUDA_ERROR_INVALID_CLUSTER_SIZE", 913: "CUDA_ERROR_FUNCTION_NOT_LOADED",
	914: "CUDA_ERROR_INVALID_RESOURCE_TYPE", 915: "CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION",
	999: "CUDA_ERROR_UNKNOWN",
}

// PolicyError reports an allocation whose driver facts break the VRAM-only
// policy (see the package documentation), refused because of
// [Options.RefuseViolations]. [Device.Alloc] frees the allocation before
// returning it. It wraps [ErrPolicy].
type PolicyError struct {
	// Device is the CUDA ordinal of the device.
	Device int
	// Size is the requested allocation size in bytes.
	Size int64
	// Violations names each broken rule, for example
	// "memory type host, want device" or "free memory dropped by 0 bytes,
	// want >= 4194304".
	Violations []string
	// Refusal holds the facts behind the violations, for the caller's own
	// policy check (see [gpu.PolicyRefusal]).
	Refusal gpu.PolicyRefusal
}

// Error lists every violation found on the allocation.
func (e *PolicyError) Error() string {
	return fmt.Sprintf("cuda: device %d: allocation of %d bytes breaks the VRAM-only policy: %s",
		e.Device, e.Size, strings.Join(e.Violations, "; "))
}

// Unwrap returns [ErrPolicy] (which wraps [gpu.ErrPolicy]) and the
// [*gpu.PolicyRefusal].
func (e *PolicyError) Unwrap() []error { return []error{ErrPolicy, &e.Refusal} }

// NVMLError is a failed NVML call: the nvmlReturn_t code and the function.
// NVML is optional, so these errors only appear in [Facts.NVMLErrors].
type NVMLError struct {
	Code int
	Op   string
}

// Error names the NVML call and the nvmlReturn_t with its code.
func (e *NVMLError) Error() string {
	name, ok := nvmlNames[e.Code]
	if !ok {
		name = "NVML_ERROR_" + strconv.Itoa(e.Code)
	}
	return "cuda: " + e.Op + ": " + name + " (" + strconv.Itoa(e.Code) + ")"
}

// nvmlNames names the nvmlReturn_t codes of nvml.h.
var nvmlNames = map[int]string{
	1: "NVML_ERROR_UNINITIALIZED", 2: "NVML_ERROR_INVALID_ARGUMENT", 3: "NVML_ERROR_NOT_SUPPORTED",
	4: "NVML_ERROR_NO_PERMISSION", 5: "NVML_ERROR_ALREADY_INITIALIZED", 6: "NVML_ERROR_NOT_FOUND",
	7: "NVML_ERROR_INSUFFICIENT_SIZE", 8: "NVML_ERROR_INSUFFICIENT_POWER", 9: "NVML_ERROR_DRIVER_NOT_LOADED",
	10: "NVML_ERROR_TIMEOUT", 11: "NVML_ERROR_IRQ_ISSUE", 12: "NVML_ERROR_LIBRARY_NOT_FOUND",
	13: "NVML_ERROR_FUNCTION_NOT_FOUND", 14: "NVML_ERROR_CORRUPTED_INFOROM", 15: "NVML_ERROR_GPU_IS_LOST",
	16: "NVML_ERROR_RESET_REQUIRED", 17: "NVML_ERROR_OPERATING_SYSTEM", 18: "NVML_ERROR_LIB_RM_VERSION_MISMATCH",
	19: "NVML_ERROR_IN_USE", 20: "NVML_ERROR_MEMORY", 21: "NVML_ERROR_NO_DATA",
	22: "NVML_ERROR_VGPU_ECC_NOT_SUPPORTED", 23: "NVML_ERROR_INSUFFICIENT_RESOURCES",
	24: "NVML_ERROR_FREQ_NOT_SUPPORTED", 25: "NVML_ERROR_ARGUMENT_VERSION_MISMATCH",
	26: "NVML_ERROR_DEPRECATED", 27: "NVML_ERROR_NOT_READY", 28: "NVML_ERROR_GPU_NOT_FOUND",
	29: "NVML_ERROR_INVALID_STATE", 999: "NVML_ERROR_UNKNOWN",
}
