package sim

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// region is the host memory behind one simulated allocation: a memfd of
// the allocation's size rounded up to whole pages, mapped shared and
// writable into this process. The mapping stands for the device's own
// access to its memory; consumers get the memfd itself (see
// [region.share]).
type region struct {
	f    *os.File
	data []byte // the whole mapping: len is the page-rounded size
}

// seals are what [region.protect] adds to the memfd: no writes through
// write(2) or any mapping made afterwards, no growth, no shrinking, and no
// change to the seals. F_SEAL_FUTURE_WRITE rather than F_SEAL_WRITE keeps
// this process's own mapping, made before the seal, as the simulated
// device's write path for fault injection ([Device.FlipBits]); every other
// mapping of the file can only be read.
const seals = unix.F_SEAL_FUTURE_WRITE | unix.F_SEAL_GROW | unix.F_SEAL_SHRINK | unix.F_SEAL_SEAL

// pageSize is the mapping granularity of a region.
var pageSize = int64(os.Getpagesize())

// roundPages rounds size up to whole pages.
func roundPages(size int64) int64 { return (size + pageSize - 1) / pageSize * pageSize }

// newRegion creates a zeroed region of at least size bytes.
func newRegion(size int64) (*region, error) {
	n := roundPages(size)
	fd, err := unix.MemfdCreate("vramseal-sim", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("sim: memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "vramseal-sim")
	if err := unix.Ftruncate(fd, n); err != nil {
		f.Close()
		return nil, fmt.Errorf("sim: size memfd to %d bytes: %w", n, err)
	}
	data, err := unix.Mmap(fd, 0, int(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("sim: map %d bytes: %w", n, err)
	}
	return &region{f: f, data: data}, nil
}

// protect makes this process's mapping read-only and seals the memfd.
// Seals already present (a reused region) are kept.
func (r *region) protect() error {
	if err := unix.Mprotect(r.data, unix.PROT_READ); err != nil {
		return fmt.Errorf("sim: make mapping read-only: %w", err)
	}
	have, err := unix.FcntlInt(r.f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		return fmt.Errorf("sim: read memfd seals: %w", err)
	}
	if have&seals == seals {
		return nil
	}
	if _, err := unix.FcntlInt(r.f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		return fmt.Errorf("sim: seal memfd: %w", err)
	}
	return nil
}

// writable makes this process's mapping writable again, for fault
// injection and for reuse of a freed region.
func (r *region) writable() error {
	if err := unix.Mprotect(r.data, unix.PROT_READ|unix.PROT_WRITE); err != nil {
		return fmt.Errorf("sim: make mapping writable: %w", err)
	}
	return nil
}

// sealed reports whether the seals that forbid writes are on the memfd.
func (r *region) sealed() bool {
	have, err := unix.FcntlInt(r.f.Fd(), unix.F_GET_SEALS, 0)
	return err == nil && have&seals == seals
}

// share returns a new read-only descriptor of the memfd: the file reopened
// O_RDONLY through /proc/self/fd, so that even a writable mapping is
// refused for lack of write access, on top of the seals. Where /proc is
// not mounted it falls back to a duplicate, which the seals still keep
// from being written.
func (r *region) share() (*os.File, error) {
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(int(r.f.Fd())), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		fd, err = unix.FcntlInt(r.f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("sim: duplicate memfd: %w", err)
		}
	}
	return os.NewFile(uintptr(fd), "vramseal-sim-share"), nil
}

// release unmaps the region and closes its memfd. Consumers that still
// map the file keep their pages until they unmap.
func (r *region) release() error {
	err := unix.Munmap(r.data)
	if cerr := r.f.Close(); err == nil {
		err = cerr
	}
	return err
}
