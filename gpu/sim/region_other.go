//go:build !linux

package sim

import (
	"errors"
	"os"
)

// region is the host memory behind one simulated allocation. Outside
// Linux there is no memfd: the memory is ordinary Go memory, protection
// is bookkeeping only, and shares cannot be exported.
type region struct {
	data      []byte
	protected bool
}

var pageSize = int64(os.Getpagesize())

func roundPages(size int64) int64 { return (size + pageSize - 1) / pageSize * pageSize }

func newRegion(size int64) (*region, error) {
	return &region{data: make([]byte, roundPages(size))}, nil
}

func (r *region) protect() error  { r.protected = true; return nil }
func (r *region) writable() error { return nil }
func (r *region) sealed() bool    { return r.protected }

func (r *region) share() (*os.File, error) {
	return nil, errors.New("sim: exporting shares needs Linux (memfd)")
}

func (r *region) release() error { return nil }
