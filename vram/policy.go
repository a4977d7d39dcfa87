package vram

import (
	"fmt"
	"os"
	"strings"

	"github.com/vramseal/vramseal/gpu"
)

// unifiedMemoryEnv lists environment variables known to make GPU runtimes
// place weights in unified (host-backed) memory when set to a true value.
var unifiedMemoryEnv = []string{
	"GGML_CUDA_ENABLE_UNIFIED_MEMORY", // llama.cpp / ggml: cudaMallocManaged for weights
	"TF_FORCE_UNIFIED_MEMORY",         // TensorFlow: unified memory for GPU allocations
}

// checkEnv refuses environment settings that move weights to host memory:
// in Options.Environ when given, otherwise in the live environment.
func (m *Manager) checkEnv() error {
	lookup := os.LookupEnv
	if env := m.opts.Environ; env != nil {
		lookup = func(name string) (string, bool) {
			for _, kv := range env {
				if k, v, ok := strings.Cut(kv, "="); ok && k == name {
					return v, true
				}
			}
			return "", false
		}
	}
	for _, name := range unifiedMemoryEnv {
		if v, ok := lookup(name); ok && truthy(v) {
			return &PolicyError{Violation: "unified_memory_env", Device: -1,
				Details: fmt.Sprintf("%s is set; it lets the GPU runtime keep weights in host memory: unset it", name)}
		}
	}
	return nil
}

func truthy(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", "0", "false", "no", "off":
		return false
	}
	return true
}

// checkDevice refuses devices that share memory with the host.
func checkDevice(i int, info gpu.Info) error {
	if info.Integrated {
		return &PolicyError{Violation: "integrated_device", Device: i,
			Details: fmt.Sprintf("%s shares memory with the host, so weights would not be in dedicated VRAM: use a discrete GPU", info.Name)}
	}
	return nil
}

// checkAllocation checks the pointer facts of a fresh allocation on the
// manager's GPU i, whose backend ordinal is ordinal, and the drop in free
// memory it caused.
func checkAllocation(i, ordinal int, f gpu.PointerFacts, size int64, freeBefore, freeAfter uint64) error {
	switch {
	case f.Managed || f.MemoryType == gpu.MemoryUnified:
		return &PolicyError{Violation: "managed_memory", Device: i, Details: "the allocation is managed (unified) memory that can migrate to the host"}
	case f.MemoryType != gpu.MemoryDevice:
		return &PolicyError{Violation: "not_device_memory", Device: i, Details: fmt.Sprintf("the allocation is %s memory, not device memory", f.MemoryType)}
	case f.HostAccessible:
		return &PolicyError{Violation: "host_mapped_memory", Device: i, Details: "the allocation is mapped into host memory"}
	case f.DeviceOrdinal != ordinal:
		return &PolicyError{Violation: "wrong_device", Device: i, Details: fmt.Sprintf("the allocation belongs to device ordinal %d, not %d", f.DeviceOrdinal, ordinal)}
	case !f.Mapped:
		return &PolicyError{Violation: "not_mapped", Device: i, Details: "the allocation is not mapped in the device address space"}
	}
	if freeAfter > freeBefore || freeBefore-freeAfter < uint64(size) {
		return &PolicyError{Violation: "free_memory_unchanged", Device: i,
			Details: fmt.Sprintf("free device memory dropped by %d bytes for a %d-byte allocation", int64(freeBefore)-int64(freeAfter), size)}
	}
	return nil
}

// refusedAllocation turns a backend's own policy refusal into the
// manager's violation, naming it as the manager's checks would.
func refusedAllocation(i, ordinal int, info gpu.Info, r *gpu.PolicyRefusal, size int64, cause error) error {
	if r.Integrated {
		info.Integrated = true
		return checkDevice(i, info)
	}
	if err := checkAllocation(i, ordinal, r.Facts, size, r.FreeBefore, r.FreeAfter); err != nil {
		return err
	}
	return &PolicyError{Violation: "backend_refused", Device: i, Details: cause.Error()}
}
