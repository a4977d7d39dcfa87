package sim

import (
	"context"
	"fmt"

	"github.com/vramseal/vramseal/gpu"
)

// Protect makes the buffer read-only: this process's mapping of its memfd
// becomes PROT_READ and the memfd is sealed against writes, growth and
// shrinking (F_SEAL_FUTURE_WRITE, F_SEAL_GROW, F_SEAL_SHRINK, F_SEAL_SEAL),
// so that no mapping made from an exported share can be writable.
// Afterwards [Device.Write] fails with an error wrapping [gpu.ErrReadOnly];
// hashing and [Device.FlipBits] keep working. A second Protect is a no-op.
func (d *Device) Protect(ctx context.Context, b gpu.Buffer) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sim: protect: %w", err)
	}
	h, a, err := d.lookup("protect", b)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.freed {
		return fmt.Errorf("sim: protect %v: %w", h, gpu.ErrInvalidBuffer)
	}
	if a.protected {
		return nil
	}
	if err := a.region.protect(); err != nil {
		return fmt.Errorf("sim: protect %v: %w", h, err)
	}
	a.protected = true
	return nil
}

// Export returns a share of a protected buffer: a new read-only descriptor
// of its sealed memfd, of kind [gpu.ShareMemfd], whose MapSize is the
// buffer's size rounded up to whole pages. It fails with an error wrapping
// [gpu.ErrNotProtected] before [Device.Protect].
func (d *Device) Export(ctx context.Context, b gpu.Buffer) (gpu.Share, error) {
	if err := ctx.Err(); err != nil {
		return gpu.Share{}, fmt.Errorf("sim: export: %w", err)
	}
	h, a, err := d.lookup("export", b)
	if err != nil {
		return gpu.Share{}, err
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.freed {
		return gpu.Share{}, fmt.Errorf("sim: export %v: %w", h, gpu.ErrInvalidBuffer)
	}
	if !a.protected || !a.region.sealed() {
		return gpu.Share{}, fmt.Errorf("sim: export %v: %w", h, gpu.ErrNotProtected)
	}
	f, err := a.region.share()
	if err != nil {
		return gpu.Share{}, fmt.Errorf("sim: export %v: %w", h, err)
	}
	return gpu.Share{File: f, Kind: gpu.ShareMemfd, MapSize: roundPages(a.size), Granularity: pageSize}, nil
}
