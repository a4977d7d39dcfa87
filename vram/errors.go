package vram

import (
	"errors"
	"fmt"
	"strings"

	"github.com/vramseal/vramseal/narration"
	"github.com/vramseal/vramseal/seal"
)

// Sentinel errors. Callers branch on them with errors.Is.
var (
	// ErrInvalidInput is returned by every method for malformed requests
	// (bad shard IDs, sizes, device indexes, modes). It is not retryable;
	// the HTTP API maps it to 400.
	ErrInvalidInput = errors.New("vram: invalid input")
	// ErrNotFound is returned for a shard ID that is not resident.
	ErrNotFound = errors.New("vram: shard not found")
	// ErrExists is returned by [Manager.Seal] for a shard ID already resident
	// or being sealed.
	ErrExists = errors.New("vram: shard already exists")
	// ErrInsufficientVRAM is wrapped by [*CapacityError]. It is retryable.
	ErrInsufficientVRAM = errors.New("vram: insufficient VRAM")
	// ErrIntegrity is wrapped by [*IntegrityError]. It is fatal: the
	// manager is stopped.
	ErrIntegrity = errors.New("vram: integrity check failed")
	// ErrPolicy is wrapped by [*PolicyError]. It is fatal.
	ErrPolicy = errors.New("vram: VRAM-only policy violated")
	// ErrStopped is wrapped by [*StoppedError], returned by every seal and
	// verify once the manager is stopped, until [Manager.Reset].
	ErrStopped = errors.New("vram: worker stopped")
	// ErrAuditFailed is returned when an operation's audit event could not
	// be recorded and the audit log is fail-closed: the operation was
	// refused (or undone). It is retryable once the log is repaired.
	ErrAuditFailed = errors.New("vram: audit event not recorded")
	// ErrNotStopped is returned by [Manager.Reset] of a running worker:
	// nothing is reset and nothing is recorded.
	ErrNotStopped = errors.New("vram: the worker is running: there is nothing to reset")
	// ErrClosed is returned after [Manager.Close].
	ErrClosed = errors.New("vram: manager closed")
)

// CapacityError reports that a device cannot hold a shard. It is retryable:
// capacity frees up when other shards are released.
type CapacityError struct {
	Device    int
	Requested int64 // bytes asked for
	Available int64 // bytes usable on the device (free minus headroom)
	Headroom  int64 // bytes kept free by policy
	// Capacity is the most the device could ever hold (its total memory
	// minus headroom); 0 means unknown.
	Capacity int64
}

// Error says what was requested and what is available, in binary units,
// and whether waiting can help.
func (e *CapacityError) Error() string {
	msg := fmt.Sprintf("vram: insufficient VRAM on GPU %d: requested %s, only %s available (headroom %s)",
		e.Device, narration.FormatBytes(e.Requested), narration.FormatBytes(e.Available), narration.FormatBytes(e.Headroom))
	if !e.Retryable() {
		msg += fmt.Sprintf("; the GPU holds at most %s, so it never fits there", narration.FormatBytes(e.Capacity))
	}
	return msg
}

// Unwrap returns [ErrInsufficientVRAM].
func (e *CapacityError) Unwrap() error { return ErrInsufficientVRAM }

// Retryable reports whether the request may succeed later, once other
// shards are released: false when it exceeds what the device can ever hold.
func (e *CapacityError) Retryable() bool { return e.Capacity == 0 || e.Requested <= e.Capacity }

// Verification failure reasons, as recorded in the audit log.
const (
	ReasonDigestMismatch   = "digest_mismatch"
	ReasonSignatureInvalid = "signature_invalid"
	ReasonNotSealed        = "not_sealed"
	ReasonDeviceError      = "device_error"
)

// ChunkRange is a run of consecutive changed chunks and the bytes they cover.
type ChunkRange struct {
	FirstChunk int64 `json:"first_chunk"`
	LastChunk  int64 `json:"last_chunk"`
	Offset     int64 `json:"offset"`
	Length     int64 `json:"length"`
}

// String renders the range with its byte offsets.
func (r ChunkRange) String() string {
	if r.FirstChunk == r.LastChunk {
		return fmt.Sprintf("chunk %d (bytes %d-%d)", r.FirstChunk, r.Offset, r.Offset+r.Length-1)
	}
	return fmt.Sprintf("chunks %d-%d (bytes %d-%d)", r.FirstChunk, r.LastChunk, r.Offset, r.Offset+r.Length-1)
}

// IntegrityError reports a shard whose device bytes or seal do not verify.
// It is fatal: the manager moves to Stopped.
type IntegrityError struct {
	ShardID string
	Device  int
	// Reason is one of the Reason* constants.
	Reason string
	// Changed lists the changed chunks (digest_mismatch only).
	Changed []ChunkRange
	// ExpectedRoot is the sealed tree root; ActualRoot the root recomputed
	// from device memory. A sampled mismatch is followed by one full pass,
	// so ActualRoot and Changed cover the whole shard; ActualRoot is zero
	// (unknown) when no full pass over the device succeeded, as for
	// signature_invalid, not_sealed and device_error.
	ExpectedRoot, ActualRoot seal.Hash
	// Err is the underlying cause for signature_invalid and device_error.
	Err error
	// Tensors names what the changed chunks touch in the shard's tensor
	// map, in file order: each tensor with its dtype, shape and the byte
	// range inside it, and non-tensor bytes (header, padding, trailing) as
	// such, at most [MaxTensorHits] entries; MoreTensors counts the rest.
	// Empty when the shard has no tensor map.
	Tensors     []string
	MoreTensors int
}

// MaxTensorHits bounds [IntegrityError.Tensors], so that a shard changed
// everywhere still gives a short report.
const MaxTensorHits = 8

// Error names the shard, the GPU, the reason and the changed chunks.
func (e *IntegrityError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "vram: shard %q on GPU %d failed verification (%s)", e.ShardID, e.Device, e.Reason)
	if len(e.Changed) > 0 {
		b.WriteString(": ")
		b.WriteString(FormatRanges(e.Changed, 4))
		b.WriteString(" changed")
	}
	if len(e.Tensors) > 0 {
		b.WriteString(", in ")
		b.WriteString(e.TensorSummary())
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns [ErrIntegrity] and the cause.
func (e *IntegrityError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrIntegrity, e.Err}
	}
	return []error{ErrIntegrity}
}

// TensorSummary renders [IntegrityError.Tensors] on one line:
// "tensor a (F16 [2 3], bytes 0-11); header (bytes 0-99) (+3 more)".
func (e *IntegrityError) TensorSummary() string {
	s := strings.Join(e.Tensors, "; ")
	if e.MoreTensors > 0 {
		s += fmt.Sprintf(" (+%d more)", e.MoreTensors)
	}
	return s
}

// FormatRanges renders at most max ranges, e.g. "chunks 17-18, chunk 40 (+2 more)",
// without byte offsets, for short messages.
func FormatRanges(rs []ChunkRange, max int) string {
	var b strings.Builder
	for i, r := range rs {
		if i == max {
			fmt.Fprintf(&b, " (+%d more)", len(rs)-max)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		if r.FirstChunk == r.LastChunk {
			fmt.Fprintf(&b, "chunk %d", r.FirstChunk)
		} else {
			fmt.Fprintf(&b, "chunks %d-%d", r.FirstChunk, r.LastChunk)
		}
	}
	return b.String()
}

// PolicyError reports a violation of the VRAM-only policy. It is fatal.
type PolicyError struct {
	// Violation is a short snake_case name: integrated_device,
	// managed_memory, host_mapped_memory, wrong_device, not_device_memory,
	// free_memory_unchanged, unified_memory_env.
	Violation string
	// Device is the GPU index, or -1 when the violation is not per device.
	Device int
	// Details says what was seen and what to do, without pointers.
	Details string
}

// Error names the violation and what to do about it.
func (e *PolicyError) Error() string {
	if e.Device >= 0 {
		return fmt.Sprintf("vram: VRAM-only policy violated on GPU %d (%s): %s", e.Device, e.Violation, e.Details)
	}
	return fmt.Sprintf("vram: VRAM-only policy violated (%s): %s", e.Violation, e.Details)
}

// Unwrap returns [ErrPolicy].
func (e *PolicyError) Unwrap() error { return ErrPolicy }

// StoppedError is returned while the manager is stopped.
type StoppedError struct {
	// Reason says why the worker stopped (the first failure).
	Reason string
}

// Error says why the worker stopped.
func (e *StoppedError) Error() string {
	return "vram: worker stopped: " + e.Reason +
		"; release the failed shard (vramseal shard rm ID), then reset the worker (vramseal reset --reason TEXT)"
}

// Unwrap returns [ErrStopped].
func (e *StoppedError) Unwrap() error { return ErrStopped }

// Retryable reports whether err may succeed if retried later: true only
// for insufficient VRAM. Integrity, policy and stopped errors are fatal.
func Retryable(err error) bool {
	return errors.Is(err, ErrInsufficientVRAM)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidInput}, args...)...)
}

// QuarantinedError is returned by [Manager.Verify] and [Manager.Attach] for
// a shard that failed a verification or scrub. A reset does not lift it:
// only a release (and a new seal under the same ID) does.
type QuarantinedError struct {
	ShardID string
	// Reason is the failure that quarantined the shard.
	Reason string
}

// Error names the shard, the failure and what to do.
func (e *QuarantinedError) Error() string {
	return fmt.Sprintf("vram: shard %q is quarantined after a failed verification (%s): release it and seal it again", e.ShardID, e.Reason)
}

// Unwrap returns [ErrIntegrity].
func (e *QuarantinedError) Unwrap() error { return ErrIntegrity }
