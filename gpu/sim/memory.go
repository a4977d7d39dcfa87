package sim

import (
	"context"
	"fmt"

	"github.com/vramseal/vramseal/gpu"
)

// Write copies p into the buffer at off. A range outside the buffer,
// including one whose end overflows int64, returns an error wrapping
// [gpu.ErrOutOfRange] and writes nothing. After [Device.FailWrites] it
// returns the injected error and writes nothing. Writes to one buffer run
// one at a time; writes to different buffers run in parallel.
func (d *Device) Write(ctx context.Context, b gpu.Buffer, off int64, p []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sim: write: %w", err)
	}
	h, a, err := d.lookup("write", b)
	if err != nil {
		return err
	}
	if err := gpu.CheckRange(a.size, off, int64(len(p))); err != nil {
		return fmt.Errorf("sim: write %v: %w", h, err)
	}
	d.mu.Lock()
	injected := d.faults.writeErr
	d.mu.Unlock()
	if injected != nil {
		return fmt.Errorf("sim: write %d bytes at offset %d of %v: injected fault: %w", len(p), off, h, injected)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.freed {
		return fmt.Errorf("sim: write %v: %w", h, gpu.ErrInvalidBuffer)
	}
	if a.protected {
		return fmt.Errorf("sim: write %v: %w", h, gpu.ErrReadOnly)
	}
	copy(a.data[off:], p)
	return nil
}

// Peek copies len(p) bytes of the buffer at off into p. It is for tests
// only: a real device never hands model bytes back to the host, and
// vramseal's manager does not call it. Ranges are checked as in
// [Device.Write].
func (d *Device) Peek(b gpu.Buffer, off int64, p []byte) error {
	h, a, err := d.lookup("peek", b)
	if err != nil {
		return err
	}
	if err := gpu.CheckRange(a.size, off, int64(len(p))); err != nil {
		return fmt.Errorf("sim: peek %v: %w", h, err)
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.freed {
		return fmt.Errorf("sim: peek %v: %w", h, gpu.ErrInvalidBuffer)
	}
	copy(p, a.data[off:])
	return nil
}

// FlipBits XORs the byte at off in the buffer with mask, as a memory fault
// or an attacker with device access would, also in a protected buffer:
// the simulated device's own mapping is made writable for the flip and
// read-only again, while consumers' mappings stay read-only throughout.
// Ranges are checked as in [Device.Write].
func (d *Device) FlipBits(b gpu.Buffer, off int64, mask byte) error {
	h, a, err := d.lookup("flip bits in", b)
	if err != nil {
		return err
	}
	if err := gpu.CheckRange(a.size, off, 1); err != nil {
		return fmt.Errorf("sim: flip bits in %v: %w", h, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.freed {
		return fmt.Errorf("sim: flip bits in %v: %w", h, gpu.ErrInvalidBuffer)
	}
	if !a.protected {
		a.data[off] ^= mask
		return nil
	}
	if err := a.region.writable(); err != nil {
		return fmt.Errorf("sim: flip bits in %v: %w", h, err)
	}
	a.data[off] ^= mask
	if err := a.region.protect(); err != nil {
		return fmt.Errorf("sim: flip bits in %v: %w", h, err)
	}
	return nil
}
