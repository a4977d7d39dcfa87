package cuda

import (
	"context"
	"fmt"
	"maps"

	"github.com/vramseal/vramseal/gpu"
)

// Facts are what the CUDA driver and NVML say about a device, for the
// operator's "devices" view, the audit record at start, and gpu-check's
// report. They contain no addresses.
type Facts struct {
	// Info is the device's [gpu.Info], with current free memory.
	Info gpu.Info
	// DriverAPIVersion is cuDriverGetVersion's value, for example 12040.
	DriverAPIVersion int
	// ComputeCapability is "major.minor", for example "9.0".
	ComputeCapability string
	// PCIBusID is the device's PCI address, for example "0000:17:00.0".
	PCIBusID string
	// Multiprocessors is the number of streaming multiprocessors.
	Multiprocessors int
	// ECCEnabled reports CU_DEVICE_ATTRIBUTE_ECC_ENABLED.
	ECCEnabled bool
	// PageableMemoryAccessUsesHostPageTables reports ATS (the device walks
	// the host's page tables), as on Grace Hopper.
	PageableMemoryAccessUsesHostPageTables bool
	// ConcurrentManagedAccess reports that managed memory can migrate on
	// demand, which is how managed weights would end up in host memory.
	ConcurrentManagedAccess bool
	// AllocationGranularity is the device's minimum CUDA virtual memory
	// allocation granularity in bytes (2 MiB on current GPUs): buffers
	// are allocated, mapped and exported in whole granules.
	AllocationGranularity int64
	// KernelError is why the leaf kernel could not be loaded ("" when
	// Info.CanHash is true).
	KernelError string
	// Env holds the recorded environment variables that were set when the
	// driver was opened (see the package documentation).
	Env map[string]string
	// NVML holds NVML's facts; nil when NVML is absent or failed.
	NVML *NVMLFacts
	// NVMLErrors lists why NVML or some of its queries gave no answer.
	NVMLErrors []string
}

// NVMLFacts are NVML's view of a device.
type NVMLFacts struct {
	// Name, UUID and DriverVersion (the display driver, "550.54.15").
	Name, UUID, DriverVersion string
	// Memory is nvmlDeviceGetMemoryInfo_v2 in bytes: Reserved is held by
	// the driver and firmware, Used excludes it.
	MemoryTotal, MemoryReserved, MemoryFree, MemoryUsed uint64
	// ECCCurrent and ECCPending are the ECC mode now and after reboot.
	ECCCurrent, ECCPending bool
	// ECC error counts (nvmlDeviceGetTotalEccErrors): volatile since the
	// driver loaded, aggregate over the device's life.
	ECCVolatileCorrected, ECCVolatileUncorrected   uint64
	ECCAggregateCorrected, ECCAggregateUncorrected uint64
	// Row remapping (nvmlDeviceGetRemappedRows, Ampere and later).
	RemappedRowsCorrectable, RemappedRowsUncorrectable uint32
	RemappedRowsPending, RemappedRowsFailure           bool
	// Processes are the compute processes using the device, this one
	// included.
	Processes []Process
}

// Process is one compute process on a device.
type Process struct {
	PID uint32
	// UsedBytes is its device memory; 0 when NVML cannot tell (for
	// example inside a container without the host PID namespace).
	UsedBytes uint64
}

// readFacts fills d.static from the driver and NVML; it runs on the worker
// during setup.
func (d *Device) readFacts() error {
	api := d.drv.api
	dev := d.cuDev
	var name [256]byte
	if err := d.check("cuDeviceGetName", api.deviceGetName(&name[0], int32(len(name)), dev)); err != nil {
		return err
	}
	var uuid [16]byte
	if err := d.check("cuDeviceGetUuid_v2", api.deviceGetUUID(&uuid, dev)); err != nil {
		return err
	}
	var total uint64
	if err := d.check("cuDeviceTotalMem_v2", api.deviceTotalMem(&total, dev)); err != nil {
		return err
	}
	attr := func(a int32) (int, error) {
		var v int32
		err := d.check("cuDeviceGetAttribute", api.deviceGetAttribute(&v, a, dev))
		return int(v), err
	}
	var vals [8]int
	for i, a := range []int32{attrIntegrated, attrPageableMemoryAccess, attrPageableMemoryUsesHostTables,
		attrConcurrentManagedAccess, attrECCEnabled, attrMultiprocessorCount, attrComputeCapabilityMajor,
		attrComputeCapabilityMinor} {
		v, err := attr(a)
		if err != nil {
			return err
		}
		vals[i] = v
	}
	var bus [32]byte
	if err := d.check("cuDeviceGetPCIBusId", api.deviceGetPCIBusID(&bus[0], int32(len(bus)), dev)); err != nil {
		return err
	}
	drvVersion := d.drv.nvmlVer
	if drvVersion == "" {
		drvVersion = "cuda " + versionString(d.drv.version)
	}
	d.static = Facts{
		Info: gpu.Info{
			Index:                d.ordinal,
			Name:                 cString(name[:]),
			UUID:                 formatUUID(uuid),
			Driver:               "cuda",
			DriverVersion:        drvVersion,
			TotalBytes:           total,
			Integrated:           vals[0] != 0,
			PageableMemoryAccess: vals[1] != 0,
		},
		DriverAPIVersion:                       d.drv.version,
		PageableMemoryAccessUsesHostPageTables: vals[2] != 0,
		ConcurrentManagedAccess:                vals[3] != 0,
		ECCEnabled:                             vals[4] != 0,
		Multiprocessors:                        vals[5],
		ComputeCapability:                      fmt.Sprintf("%d.%d", vals[6], vals[7]),
		PCIBusID:                               cString(bus[:]),
		Env:                                    d.drv.env,
	}
	if n := d.drv.nvml; n != nil {
		if r := n.deviceGetHandleByUUID(d.static.Info.UUID, &d.nvmlDev); r != 0 {
			d.nvmlDev = 0
			d.static.NVMLErrors = append(d.static.NVMLErrors, (&NVMLError{Code: int(r), Op: "nvmlDeviceGetHandleByUUID"}).Error())
		}
	} else if d.drv.nvmlErr != nil {
		d.static.NVMLErrors = append(d.static.NVMLErrors, d.drv.nvmlErr.Error())
	}
	return nil
}

// formatUUID formats a CUuuid the way nvidia-smi and NVML print it.
func formatUUID(u [16]byte) string {
	return fmt.Sprintf("GPU-%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// Facts returns the device's facts, with current free memory and, when
// NVML is available, current memory, ECC, row-remapping and process facts.
func (d *Device) Facts(ctx context.Context) (Facts, error) {
	var f Facts
	err := d.do(ctx, func() error {
		f = d.static
		f.Env = maps.Clone(d.static.Env)
		f.NVMLErrors = append([]string(nil), d.static.NVMLErrors...)
		if d.kernelErr != nil {
			f.KernelError = d.kernelErr.Error()
		}
		if err := d.usable(); err != nil {
			return err
		}
		free, _, err := d.memInfo()
		if err != nil {
			return err
		}
		f.Info.FreeBytes = free
		if d.nvmlDev != 0 {
			f.NVML = d.nvmlFacts(&f.NVMLErrors)
		}
		return nil
	})
	return f, err
}

// nvmlFacts queries NVML; a query that fails is noted in errs and left out.
func (d *Device) nvmlFacts(errs *[]string) *NVMLFacts {
	n, h := d.drv.nvml, d.nvmlDev
	f := &NVMLFacts{DriverVersion: d.drv.nvmlVer}
	ok := func(op string, r int32) bool {
		if r != 0 {
			*errs = append(*errs, (&NVMLError{Code: int(r), Op: op}).Error())
		}
		return r == 0
	}
	var s [96]byte
	if n.deviceGetName != nil && ok("nvmlDeviceGetName", n.deviceGetName(h, &s[0], uint32(len(s)))) {
		f.Name = cString(s[:])
	}
	if n.deviceGetUUID != nil && ok("nvmlDeviceGetUUID", n.deviceGetUUID(h, &s[0], uint32(len(s)))) {
		f.UUID = cString(s[:])
	}
	if n.deviceGetMemoryInfoV2 != nil {
		m := nvmlMemoryV2{version: nvmlMemoryV2Version}
		if ok("nvmlDeviceGetMemoryInfo_v2", n.deviceGetMemoryInfoV2(h, &m)) {
			f.MemoryTotal, f.MemoryReserved, f.MemoryFree, f.MemoryUsed = m.total, m.reserved, m.free, m.used
		}
	}
	if n.deviceGetEccMode != nil {
		var cur, pending int32
		if ok("nvmlDeviceGetEccMode", n.deviceGetEccMode(h, &cur, &pending)) {
			f.ECCCurrent, f.ECCPending = cur != 0, pending != 0
		}
	}
	if n.deviceGetTotalEccErrors != nil {
		// nvmlMemoryErrorType_t: 0 corrected, 1 uncorrected;
		// nvmlEccCounterType_t: 0 volatile, 1 aggregate.
		for _, q := range []struct {
			errType, counter int32
			dst              *uint64
		}{
			{0, 0, &f.ECCVolatileCorrected}, {1, 0, &f.ECCVolatileUncorrected},
			{0, 1, &f.ECCAggregateCorrected}, {1, 1, &f.ECCAggregateUncorrected},
		} {
			if !ok("nvmlDeviceGetTotalEccErrors", n.deviceGetTotalEccErrors(h, q.errType, q.counter, q.dst)) {
				break
			}
		}
	}
	if n.deviceGetRemappedRows != nil {
		var corr, unc, pending, failed uint32
		if ok("nvmlDeviceGetRemappedRows", n.deviceGetRemappedRows(h, &corr, &unc, &pending, &failed)) {
			f.RemappedRowsCorrectable, f.RemappedRowsUncorrectable = corr, unc
			f.RemappedRowsPending, f.RemappedRowsFailure = pending != 0, failed != 0
		}
	}
	if n.deviceGetComputeProcs != nil {
		procs := make([]nvmlProcessInfo, 64)
		count := uint32(len(procs))
		if ok("nvmlDeviceGetComputeRunningProcesses_v3", n.deviceGetComputeProcs(h, &count, &procs[0])) {
			for _, p := range procs[:min(int(count), len(procs))] {
				used := p.usedGpuMemory
				if used == ^uint64(0) { // NVML_VALUE_NOT_AVAILABLE
					used = 0
				}
				f.Processes = append(f.Processes, Process{PID: p.pid, UsedBytes: used})
			}
		}
	}
	return f
}
