package attach

import (
	"errors"
	"fmt"
	"math"
	"syscall"
)

// MapReadOnly maps an attachment of kind memfd into this process,
// read-only and shared: the very memory that was sealed, not a copy. It
// returns the shard's bytes (seal.size of them; the mapping itself is
// mapping.size) and the function that unmaps them. The descriptor may be
// closed once it returns. A cuda_vmm_fd attachment is mapped with the
// CUDA driver instead (see the package comment), so it is an error here.
func MapReadOnly(a *Attachment) ([]byte, func() error, error) {
	if a == nil || a.File == nil {
		return nil, nil, errors.New("attach: map: no descriptor")
	}
	if a.Mapping.Kind != KindMemfd {
		return nil, nil, fmt.Errorf("attach: map: kind %s is mapped with the CUDA driver, not mmap", quote(a.Mapping.Kind))
	}
	if a.Mapping.Size < a.Seal.Size || a.Seal.Size <= 0 || a.Mapping.Size > math.MaxInt {
		return nil, nil, fmt.Errorf("attach: map: mapping size %d cannot hold the shard's %d bytes", a.Mapping.Size, a.Seal.Size)
	}
	rc, err := a.File.SyscallConn()
	if err != nil {
		return nil, nil, fmt.Errorf("attach: map: %w", err)
	}
	var b []byte
	var merr error
	if err := rc.Control(func(fd uintptr) {
		b, merr = syscall.Mmap(int(fd), 0, int(a.Mapping.Size), syscall.PROT_READ, syscall.MAP_SHARED)
	}); err != nil {
		return nil, nil, fmt.Errorf("attach: map: %w", err)
	}
	if merr != nil {
		return nil, nil, fmt.Errorf("attach: map %d bytes: %w", a.Mapping.Size, merr)
	}
	return b[:a.Seal.Size:a.Seal.Size], func() error { return syscall.Munmap(b) }, nil
}
