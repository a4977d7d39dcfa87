package sim

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/vramseal/vramseal/gpu"
)

// buffer is the opaque handle of one allocation. It is a plain value with
// no pointer in it, so no formatting path, not even %p or the printing of
// an unexported field that holds it, can show an address.
type buffer struct {
	dev   uint64 // serial of the owning Device
	id    uint64 // buffer number, unique per device, from 1
	size  int64
	index int // device ordinal
}

var _ gpu.Buffer = buffer{}

// Size is the allocation's length in bytes.
func (h buffer) Size() int64 { return h.size }

// DeviceIndex is the ordinal of the device that owns the allocation.
func (h buffer) DeviceIndex() int { return h.index }

// String describes the buffer by number, size and device.
func (h buffer) String() string {
	return fmt.Sprintf("sim buffer #%d (%d bytes on GPU %d)", h.id, h.size, h.index)
}

// GoString describes the buffer as %#v prints it.
func (h buffer) GoString() string {
	return fmt.Sprintf("sim.Buffer{ID: %d, Size: %d, Device: %d}", h.id, h.size, h.index)
}

// Format prints [buffer.GoString] for %#v and [buffer.String] for every
// other verb, so that %x or %d never print the handle's fields.
func (h buffer) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, h.GoString())
		return
	}
	io.WriteString(f, h.String())
}

// LogValue logs the buffer as its description.
func (h buffer) LogValue() slog.Value { return slog.StringValue(h.String()) }

// MarshalText encodes the buffer as its description, for JSON and other
// text encodings.
func (h buffer) MarshalText() ([]byte, error) { return []byte(h.String()), nil }
