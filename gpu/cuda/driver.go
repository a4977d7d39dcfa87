package cuda

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
)

// MinDriverVersion is the oldest CUDA driver API version [Open] accepts,
// as cuDriverGetVersion reports it (1000*major + 10*minor): 11.4, the
// first with cuDeviceGetUuid_v2. The embedded PTX (ISA 7.0) needs 11.0.
const MinDriverVersion = 11040

// Default staging and launch sizes; see [Options].
const (
	DefaultStagingBytes = 8 << 20
	defaultBlockThreads = 128
)

// envVars are the environment variables recorded in [Facts.Env] at
// [Open]: the ones that choose devices or can move allocations to host
// memory (unified or managed memory, MPS, allocator settings).
var envVars = []string{
	"CUDA_VISIBLE_DEVICES",
	"CUDA_DEVICE_ORDER",
	"NVIDIA_VISIBLE_DEVICES",
	"GGML_CUDA_ENABLE_UNIFIED_MEMORY",
	"CUDA_MANAGED_FORCE_DEVICE_ALLOC",
	"CUDA_MODULE_LOADING",
	"CUDA_LAUNCH_BLOCKING",
	"CUDA_CACHE_DISABLE",
	"CUDA_FORCE_PTX_JIT",
	"CUDA_MPS_PIPE_DIRECTORY",
	"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE",
	"PYTORCH_CUDA_ALLOC_CONF",
	"PYTORCH_NO_CUDA_MEMORY_CACHING",
}

// Options configures [Open]. The zero value loads the system's driver.
type Options struct {
	// LibraryPath is the CUDA driver library to load; "" means
	// "libcuda.so.1", found by the dynamic loader's search path.
	LibraryPath string
	// NVMLPath is the NVML library to load; "" means "libnvidia-ml.so.1".
	// NVML is optional: when it cannot be loaded or initialized, devices
	// work and [Facts.NVML] is nil with the reason in [Facts.NVMLErrors].
	NVMLPath string
	// NoNVML skips NVML even when it is present.
	NoNVML bool
	// StagingBytes is the size of each of the two pinned host staging
	// buffers per device that [Device.Write] streams through; 0 means
	// [DefaultStagingBytes]. Values under 4 KiB are raised to 4 KiB.
	StagingBytes int
	// MaxLaunchChunks caps the chunks hashed by one kernel launch; 0 means
	// as many as the staging buffer holds hashes for (StagingBytes/32).
	// [Device.LeafHashes] launches as often as needed.
	MaxLaunchChunks int
	// RefuseViolations makes [Device.Alloc] free and refuse, with a
	// [*PolicyError], any allocation that breaks the VRAM-only policy.
	// False (the default) allocates and reports the violations in
	// [Device.AllocReport], leaving the decision to the caller: vramseal's
	// residency manager checks the pointer facts and free memory itself
	// and records a violation in the audit log before refusing.
	RefuseViolations bool
	// LookupEnv reads the environment variables recorded in [Facts.Env];
	// nil means os.LookupEnv.
	LookupEnv func(key string) (string, bool)
}

// Driver is the loaded CUDA driver and its devices. Close it to release
// the devices; the libraries themselves stay loaded for the life of the
// process (unloading libcuda while its threads run is not safe).
type Driver struct {
	api     *driverAPI
	nvml    *nvmlAPI
	nvmlErr error
	version int
	nvmlVer string
	env     map[string]string
	devices []*Device

	closeOnce sync.Once
	closeErr  error
}

// Open loads the CUDA driver (and NVML when present), initializes it and
// starts one worker per device: a goroutine locked to its own OS thread
// that makes every driver call for that device, with the device's primary
// context current. Devices therefore work in parallel, and a context never
// has to follow a goroutine between threads.
//
// Open's errors wrap [ErrUnavailable] when there is no usable GPU (missing
// library or symbol, cuInit failure, driver older than
// [MinDriverVersion], no device); they never crash the process.
func Open(opts Options) (*Driver, error) {
	path := opts.LibraryPath
	if path == "" {
		path = "libcuda.so.1"
	}
	api, err := loadDriver(path)
	if err != nil {
		return nil, err
	}
	if r := api.init(0); r != 0 {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, newError("cuInit", r))
	}
	var v int32
	if r := api.driverGetVersion(&v); r != 0 {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, newError("cuDriverGetVersion", r))
	}
	if v < MinDriverVersion {
		return nil, fmt.Errorf("%w: driver supports CUDA %s, need %s or later",
			ErrUnavailable, versionString(int(v)), versionString(MinDriverVersion))
	}
	lookup := opts.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	env := make(map[string]string)
	for _, k := range envVars {
		if val, ok := lookup(k); ok {
			env[k] = val
		}
	}
	var n int32
	if r := api.deviceGetCount(&n); r != 0 {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, newError("cuDeviceGetCount", r))
	}
	if n == 0 {
		why := "no CUDA device"
		if vis, ok := env["CUDA_VISIBLE_DEVICES"]; ok {
			why += fmt.Sprintf(" (CUDA_VISIBLE_DEVICES=%q)", vis)
		}
		return nil, fmt.Errorf("%w: %s", ErrUnavailable, why)
	}

	drv := &Driver{api: api, version: int(v), env: env}
	drv.openNVML(opts)
	for i := range int(n) {
		d, err := startDevice(drv, i, opts)
		if err != nil {
			return nil, errors.Join(err, drv.Close())
		}
		drv.devices = append(drv.devices, d)
	}
	return drv, nil
}

// openNVML loads and initializes NVML unless opts says not to; failures
// are recorded, not returned.
func (drv *Driver) openNVML(opts Options) {
	if opts.NoNVML {
		drv.nvmlErr = errors.New("cuda: NVML disabled by options")
		return
	}
	path := opts.NVMLPath
	if path == "" {
		path = "libnvidia-ml.so.1"
	}
	api, err := loadNVML(path)
	if err != nil {
		drv.nvmlErr = err
		return
	}
	if r := api.init(); r != 0 {
		drv.nvmlErr = &NVMLError{Code: int(r), Op: "nvmlInit_v2"}
		return
	}
	drv.nvml = api
	if api.systemGetDriverVersion != nil {
		var buf [96]byte
		if api.systemGetDriverVersion(&buf[0], uint32(len(buf))) == 0 {
			drv.nvmlVer = cString(buf[:])
		}
	}
}

// Devices returns the devices in CUDA ordinal order (as
// CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER arrange them).
func (drv *Driver) Devices() []*Device { return append([]*Device(nil), drv.devices...) }

// Version returns the CUDA driver API version, for example 12040 for 12.4.
func (drv *Driver) Version() int { return drv.version }

// Close stops every device worker, frees what the devices still hold
// (buffers, staging memory, which is zeroed first, kernel module, streams)
// and releases the primary contexts and NVML. Calls on the devices
// afterwards fail. Close is idempotent.
func (drv *Driver) Close() error {
	drv.closeOnce.Do(func() {
		var errs []error
		for _, d := range drv.devices {
			errs = append(errs, d.close())
		}
		if drv.nvml != nil {
			if r := drv.nvml.shutdown(); r != 0 {
				errs = append(errs, &NVMLError{Code: int(r), Op: "nvmlShutdown"})
			}
		}
		drv.closeErr = errors.Join(errs...)
	})
	return drv.closeErr
}

// versionString formats a cuDriverGetVersion value as "major.minor".
func versionString(v int) string {
	return strconv.Itoa(v/1000) + "." + strconv.Itoa(v%1000/10)
}
