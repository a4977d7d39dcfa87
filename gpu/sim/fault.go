package sim

// faults are the injected faults of one device, guarded by Device.mu.
type faults struct {
	failAlloc    bool
	allocErr     error
	writeErr     error
	hashErr      error
	integrated   bool
	managed      bool
	hostMapped   bool
	wrongOrdinal bool
	hostFallback bool
}

// FailNextAlloc makes the next [Device.Alloc] fail with an error wrapping
// err, or wrapping [gpu.ErrOutOfMemory] when err is nil. Later allocations
// succeed again.
func (d *Device) FailNextAlloc(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.faults.failAlloc, d.faults.allocErr = true, err
}

// FailWrites makes every [Device.Write] fail with an error wrapping err,
// writing nothing, until it is called with nil.
func (d *Device) FailWrites(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.faults.writeErr = err
}

// FailHashing makes every [Device.LeafHashes] fail with an error wrapping
// err (for example [gpu.ErrDeviceLost]) until it is called with nil.
func (d *Device) FailHashing(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.faults.hashErr = err
}

// SetIntegrated makes [Device.Info] report an integrated device, one that
// shares memory with the host.
func (d *Device) SetIntegrated(on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.faults.integrated = on
}

// SetManaged makes [Device.PointerFacts] report unified, managed memory
// (which may migrate to the host) for new and existing allocations.
func (d *Device) SetManaged(on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.faults.managed = on
}

// SetHostMapped makes [Device.PointerFacts] report allocations that are
// accessible from the host, for new and existing allocations.
func (d *Device) SetHostMapped(on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.faults.hostMapped = on
}

// SetWrongOrdinal makes [Device.PointerFacts] report the ordinal of another
// device (this index + 1) for new and existing allocations.
func (d *Device) SetWrongOrdinal(on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.faults.wrongOrdinal = on
}

// SetHostFallback simulates a driver that silently places allocations in
// host memory: while on, new allocations succeed whatever the free device
// capacity (up to a host pool as large as the device), do not lower the
// FreeBytes that [Device.Info] reports, and report host memory that the
// host can access in [Device.PointerFacts].
// Allocations keep the placement they were made with.
func (d *Device) SetHostFallback(on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.faults.hostFallback = on
}
