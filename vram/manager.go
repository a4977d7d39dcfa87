// Package vram is vramseal's residency manager: it seals model shards into
// GPU memory, re-verifies them from device memory, releases them, answers
// capacity questions, and enforces the VRAM-only policy.
//
// A [Manager] owns a set of [gpu.Device]s. [Manager.Seal] streams a shard
// from an io.Reader into one device allocation while computing its flat
// SHA-256 digest and its chunk leaf hashes on the host, then signs a
// [seal.Seal]. [Manager.Verify] recomputes the leaf hashes from device
// memory (on the device when it can hash) and compares them with the sealed
// ones. Any integrity or policy failure moves the manager to Stopped: every
// later seal and verify (the execute gate) fails until [Manager.Reset].
package vram

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/gpu/sim"
	"github.com/vramseal/vramseal/narration"
	"github.com/vramseal/vramseal/seal"
	"github.com/vramseal/vramseal/tensor"
)

// Defaults used when the matching [Options] field is zero.
const (
	DefaultMaxShardBytes = 100 << 30
	DefaultSamples       = 16
	// copyBufferSize and stagingBuffers bound the host memory a seal uses
	// for streaming: stagingBuffers buffers of about copyBufferSize bytes.
	copyBufferSize = 4 << 20
	stagingBuffers = 3
)

// Options configure a [Manager]. The zero value works: one simulated
// device, an ephemeral random seal key, and a worker ID from the host name.
type Options struct {
	// Devices are the GPUs to manage, indexed by position. Nil means one
	// simulated device with the simulator's default capacity.
	Devices []gpu.Device
	// Key signs seals. The zero Key means a fresh random key for this
	// process (seals then verify only within it).
	Key seal.Key
	// WorkerID names this worker in seals and logs. Empty means
	// "worker-" plus the host name.
	WorkerID string
	// MaxShardBytes is the largest shard accepted. Zero means 100 GiB.
	MaxShardBytes int64
	// ChunkSize is the leaf size of the chunk tree. Zero means
	// [seal.DefaultChunkSize] (64 KiB).
	ChunkSize int64
	// Headroom is the number of bytes kept free on every device. Zero
	// means none.
	Headroom int64
	// Clock returns the current time. Nil means time.Now.
	Clock func() time.Time
	// Narrator receives the narration of every operation (the
	// manager's logger). Nil narrates nothing.
	Narrator *narration.Narrator
	// Audit receives the audit event of every operation that has one.
	// Nil records nothing. Critical events are durable before the
	// operation returns; see [Auditor] for failures.
	Audit Auditor
	// Rand is the source for generated shard IDs and sampled chunks. Nil
	// means a ChaCha8 generator keyed from crypto/rand and rekeyed from it
	// every 64 KiB of output (a read of the system source costs
	// microseconds; the execute gate draws from it every time).
	Rand io.Reader
	// Environ is the process environment the policy inspects, as
	// os.Environ returns it, at New and before every allocation. Nil means
	// the live environment, read each time (so a variable set later in
	// the process is caught at the next allocation).
	Environ []string
}

// State is the worker's state.
type State int

// Worker states.
const (
	Running State = iota
	Stopped
)

// String returns "running" or "stopped".
func (s State) String() string {
	if s == Stopped {
		return "stopped"
	}
	return "running"
}

// Manager keeps sealed shards resident. All methods are safe for
// concurrent use.
type Manager struct {
	opts    Options
	devices []*deviceState
	key     seal.Key
	clock   func() time.Time

	auditFailures atomic.Uint64
	scrub         scrubCounters
	subs          subscribers

	mu      sync.Mutex
	shards  map[string]*shard
	pending map[string]struct{} // IDs being sealed
	// revoked holds shards released with force whose memory waits for
	// their last lease to end.
	revoked map[*shard]struct{}
	// models are the models sealed by SealModel (and those being sealed).
	models map[string]*modelState
	// staged holds the sealed shards of models still being sealed: their
	// IDs stay in pending, and SealModel publishes or frees them all.
	staged map[string]*shard
	// resetMu serialises resets.
	resetMu    sync.Mutex
	state      State
	stopReason string
	// stops counts calls of stop, so that Reset can tell whether a failure
	// happened while it was recording the reset.
	stops uint64
	// laterFailures counts failures while already stopped.
	laterFailures int
	closed        bool
	closedCh      chan struct{} // closed by Close: wakes the scrub
}

type deviceState struct {
	index int
	dev   gpu.Device
	info  gpu.Info // facts at start

	// allocMu serialises the capacity check and the allocation on this
	// device, so that concurrent seals cannot both pass the check: exactly
	// the ones that fit succeed.
	allocMu sync.Mutex
	// Guarded by Manager.mu.
	used     int64 // bytes of sealed shards
	reserved int64 // bytes allocated for seals in progress
}

type shard struct {
	seal seal.Seal
	// tree holds the sealed leaf hashes and the tree above them. It is
	// built in the background after the seal (about 10 ms per GiB, off the
	// seal's critical path); read it only after treeReady is closed.
	tree      *leafTree
	treeErr   error
	treeReady chan struct{}
	buf       gpu.Buffer
	dev       *deviceState
	busy      sync.WaitGroup // verifications in flight; Release waits
	// leases are the live attachments, and revoked marks a shard released
	// with force while attached; both guarded by Manager.mu.
	leases  map[string]*Lease
	revoked bool
	// tensors is the shard's tensor map (nil when it has none).
	tensors *tensor.Map
	// quarantined is the failure that quarantined the shard ("" when it
	// is not): a shard that failed verification refuses verify and attach
	// until it is released, even after a reset. Guarded by Manager.mu.
	quarantined string
	// model is the ID of the model the shard belongs to ("" for a shard
	// sealed on its own).
	model string
	// verifying counts the verifications ([Manager.Verify]) in flight, and
	// lastMode and lastAt say which pass (a mode, or "scrub") succeeded
	// last and when; all guarded by Manager.mu.
	verifying int
	lastMode  string
	lastAt    time.Time
}

// New checks the VRAM-only policy on every device and the environment and
// returns a running manager. It refuses to start, with a *[PolicyError],
// when any device is integrated or the environment asks a GPU runtime to
// put weights in host memory.
func New(ctx context.Context, opts Options) (*Manager, error) {
	if opts.MaxShardBytes == 0 {
		opts.MaxShardBytes = DefaultMaxShardBytes
	}
	if opts.MaxShardBytes < 0 {
		return nil, invalid("max shard size %d is negative", opts.MaxShardBytes)
	}
	if opts.ChunkSize == 0 {
		opts.ChunkSize = seal.DefaultChunkSize
	}
	if opts.ChunkSize < 0 || opts.ChunkSize > 1<<30 {
		return nil, invalid("chunk size %d outside 1..1 GiB", opts.ChunkSize)
	}
	if opts.Headroom < 0 {
		return nil, invalid("headroom %d is negative", opts.Headroom)
	}
	if opts.Rand == nil {
		opts.Rand = &keyedRand{}
	}
	if opts.WorkerID == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "local"
		}
		opts.WorkerID = "worker-" + host
	}
	if err := validateText("worker ID", opts.WorkerID, 256, true); err != nil {
		return nil, err
	}
	if opts.Devices == nil {
		devs, err := sim.New(sim.Options{})
		if err != nil {
			return nil, err
		}
		for _, d := range devs {
			opts.Devices = append(opts.Devices, d)
		}
	}
	if len(opts.Devices) == 0 {
		return nil, invalid("no devices")
	}
	m := &Manager{
		opts:     opts,
		key:      opts.Key,
		clock:    opts.Clock,
		shards:   make(map[string]*shard),
		pending:  make(map[string]struct{}),
		revoked:  make(map[*shard]struct{}),
		models:   make(map[string]*modelState),
		staged:   make(map[string]*shard),
		closedCh: make(chan struct{}),
	}
	if m.clock == nil {
		m.clock = time.Now
	}
	if m.key.IsZero() {
		secret := make([]byte, 32)
		if _, err := io.ReadFull(rand.Reader, secret); err != nil {
			return nil, fmt.Errorf("vram: generate ephemeral seal key: %w", err)
		}
		k, err := seal.DeriveKey(secret)
		clear(secret)
		if err != nil {
			return nil, err
		}
		m.key = k
	}
	start := time.Now()
	if err := m.checkEnv(); err != nil {
		return nil, m.violation(ctx, start, "", err, "refused_to_start")
	}
	var total uint64
	for i, d := range opts.Devices {
		if d == nil {
			return nil, invalid("device %d is nil", i)
		}
		t0 := time.Now()
		info, err := d.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("vram: GPU %d: read device info: %w", i, err)
		}
		if err := checkDevice(i, info); err != nil {
			return nil, m.violation(ctx, start, "", err, "refused_to_start")
		}
		m.devices = append(m.devices, &deviceState{index: i, dev: d, info: info})
		total += info.TotalBytes
		m.narrate(ctx, slog.LevelInfo, ActionDeviceInit, fmt.Sprintf("GPU%d", i), info, time.Since(t0), "", nil, func() string {
			return fmt.Sprintf("Initialized GPU %d (%s) with %s VRAM via the %s driver", i, info.Name, narration.FormatBytes(clampInt64(info.TotalBytes)), info.Driver)
		}, narration.Str("driver", info.Driver), narration.Bytes("vram_bytes", clampInt64(info.TotalBytes)))
	}
	m.narrate(ctx, slog.LevelInfo, ActionInit, opts.WorkerID, noDevice, time.Since(start), "", nil, func() string {
		return fmt.Sprintf("Started VRAM residency manager with %d GPU(s) and %s total VRAM", len(m.devices), narration.FormatBytes(clampInt64(total)))
	}, narration.Int("devices", int64(len(m.devices))), narration.Bytes("total_vram_bytes", clampInt64(total)), narration.Str("key_id", m.key.ID()))
	return m, nil
}

// noDevice marks narration that concerns no single GPU.
var noDevice gpu.Info

// violation stops the worker and records a VRAM-only policy violation in
// the audit log and the narration. id is the shard being sealed, or "" for
// violations found at start. It returns err.
func (m *Manager) violation(ctx context.Context, start time.Time, id string, err error, action string) error {
	var pe *PolicyError
	if !errors.As(err, &pe) {
		return err
	}
	m.stop(pe.Error())
	m.notify(StopNotice{ShardID: id, Reason: StopPolicy, Message: pe.Error()})
	dev := noDevice
	if pe.Device >= 0 && pe.Device < len(m.devices) {
		dev = m.devices[pe.Device].info
	}
	var fields []audit.Field
	target := pe.Violation
	if id != "" {
		fields = append(fields, audit.String("shard_id", id))
		target = id
	}
	_ = m.record(ctx, audit.Event{Type: EventPolicyViolation, Severity: audit.SeverityCritical, Fields: append(fields,
		audit.String("policy", "vram_only"),
		audit.String("violation", pe.Violation),
		audit.String("details", pe.Details),
		audit.String("action_taken", action),
		audit.Int("gpu_device", int64(pe.Device)),
	)})
	m.narrate(ctx, slog.LevelError, ActionPolicyViolation, target, dev, time.Since(start), "policy", err, func() string {
		where := ""
		if pe.Device >= 0 {
			where = fmt.Sprintf(" on GPU %d", pe.Device)
		}
		return fmt.Sprintf("CRITICAL: VRAM-only policy violated%s (%s); %s", where, pe.Violation, strings.ReplaceAll(action, "_", " "))
	}, narration.Str("policy", "vram_only"), narration.Str("violation", pe.Violation), narration.Str("action_taken", action))
	return err
}

// rejected narrates an input validation failure and returns err.
func (m *Manager) rejected(ctx context.Context, start time.Time, op, target string, err error) error {
	m.narrate(ctx, slog.LevelWarn, ActionValidateFailed, target, noDevice, time.Since(start), "invalid_input", err, func() string {
		return fmt.Sprintf("Rejected %s request: invalid input", op)
	}, narration.Str("operation", op))
	return err
}

// Key returns the manager's seal key (which never formats its bytes).
func (m *Manager) Key() seal.Key { return m.key }

// WorkerID returns the worker ID recorded in seals.
func (m *Manager) WorkerID() string { return m.opts.WorkerID }

// MaxShardBytes returns the largest shard a seal accepts.
func (m *Manager) MaxShardBytes() int64 { return m.opts.MaxShardBytes }

// ChunkSize returns the chunk size used for new seals.
func (m *Manager) ChunkSize() int64 { return m.opts.ChunkSize }

// Devices returns the current facts of every managed device.
func (m *Manager) Devices(ctx context.Context) ([]gpu.Info, error) {
	out := make([]gpu.Info, 0, len(m.devices))
	for _, d := range m.devices {
		info, err := d.dev.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("vram: GPU %d: %w", d.index, err)
		}
		out = append(out, info)
	}
	return out, nil
}

// State returns the worker state and, when stopped, the reason.
func (m *Manager) State() (State, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stateLocked()
}

// stateLocked is State for a caller that holds m.mu.
func (m *Manager) stateLocked() (State, string) {
	if m.laterFailures > 0 {
		return m.state, fmt.Sprintf("%s (and %d later failures)", m.stopReason, m.laterFailures)
	}
	return m.state, m.stopReason
}

// stop moves the manager to Stopped, keeping the first reason.
func (m *Manager) stop(reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stops++
	if m.state != Stopped {
		m.state = Stopped
		m.stopReason = reason
		return
	}
	m.laterFailures++
}

// Reset returns a stopped manager to Running. The reason is required: it
// is what the operator did about the failure. A running manager is left
// alone: Reset returns [ErrNotStopped] and records nothing. Quarantined
// shards stay refused after a reset ([Manager.Quarantined] lists them).
func (m *Manager) Reset(ctx context.Context, reason string) error {
	start := time.Now()
	if err := validateText("reset reason", reason, 1024, true); err != nil {
		return m.rejected(ctx, start, "reset", m.opts.WorkerID, err)
	}
	// One reset at a time: a second one waits and finds the worker
	// running.
	m.resetMu.Lock()
	defer m.resetMu.Unlock()
	// The state, its reason and the failure count are read together, so
	// a failure that lands now is either in the recorded reason or makes
	// the reset fail below.
	m.mu.Lock()
	was, why := m.stateLocked()
	gen := m.stops
	m.mu.Unlock()
	if was == Running {
		return ErrNotStopped
	}
	if err := m.record(ctx, audit.Event{Type: EventReset, Severity: audit.SeverityHigh, Fields: []audit.Field{
		audit.String("reason", reason),
		audit.String("previous_state", was.String()),
		audit.String("stop_reason", why),
		audit.String("worker_id", m.opts.WorkerID),
	}}); err != nil {
		return err
	}
	m.mu.Lock()
	if m.stops != gen {
		// A failure stopped the worker while the reset was being recorded:
		// it was not part of what the operator dealt with.
		err := &StoppedError{Reason: "a new failure happened during the reset: " + m.stopReason}
		m.mu.Unlock()
		return err
	}
	m.state = Running
	m.stopReason = ""
	m.laterFailures = 0
	m.mu.Unlock()
	quarantined := m.Quarantined()
	m.narrate(ctx, slog.LevelWarn, ActionReset, m.opts.WorkerID, noDevice, time.Since(start), "", nil, func() string {
		if len(quarantined) > 0 {
			return fmt.Sprintf("Operator reset worker from %s to running; %d quarantined shard(s) stay refused", was, len(quarantined))
		}
		return fmt.Sprintf("Operator reset worker from %s to running", was)
	}, narration.Str("reason", reason), narration.Str("quarantined", strings.Join(quarantined, ",")))
	return nil
}

// Quarantined returns, sorted, the IDs of the resident shards that failed
// verification and refuse verify and attach until they are released.
func (m *Manager) Quarantined() []string {
	m.mu.Lock()
	out := []string{}
	for id, s := range m.shards {
		if s.quarantined != "" {
			out = append(out, id)
		}
	}
	m.mu.Unlock()
	sort.Strings(out)
	return out
}

// gate returns an error when the manager is closed or stopped: the execute
// gate that every seal and verify passes.
func (m *Manager) gate() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if m.state == Stopped {
		return &StoppedError{Reason: m.stopReason}
	}
	return nil
}

// ShardInfo describes a resident shard. It never holds device pointers.
type ShardInfo struct {
	Seal   seal.Seal
	Chunks int64
	// Attachments are the shard's live leases, oldest first ([Manager.Shard]
	// and [Manager.Shards] fill it in; elsewhere it is nil).
	Attachments []LeaseInfo
	// Format is "safetensors" when the shard has a tensor map, else "".
	Format string
	// Tensors is the tensor map, sorted by offset (nil when there is
	// none). Offsets count from the start of the shard. Read only.
	Tensors []tensor.Tensor
	// Quarantined is the verification failure that quarantined the shard,
	// or "" when it is not quarantined ([Manager.Shard] and
	// [Manager.Shards] fill it in).
	Quarantined string
	// Backend is the driver of the shard's GPU ("sim" or "cuda").
	Backend string
	// Verifying reports a verification of the shard in flight;
	// LastVerifiedMode ("full", "sampled" or "scrub") and LastVerifiedAt
	// describe the last that succeeded ("" and zero when none has yet).
	// [Manager.Shard] and [Manager.Shards] fill them in.
	Verifying        bool
	LastVerifiedMode string
	LastVerifiedAt   time.Time
}

func (s *shard) info() ShardInfo {
	info := ShardInfo{Seal: s.seal, Chunks: gpu.ChunkCount(s.seal.Size, s.seal.ChunkSize), Backend: s.dev.info.Driver}
	if s.tensors != nil {
		info.Format, info.Tensors = s.tensors.Format, s.tensors.Tensors
	}
	return info
}

// status is s.info with what changes while the shard is resident:
// attachments, quarantine and verification. The caller holds Manager.mu.
func (s *shard) status() ShardInfo {
	info := s.info()
	info.Attachments = s.leaseInfos()
	info.Quarantined = s.quarantined
	info.Verifying = s.verifying > 0
	info.LastVerifiedMode, info.LastVerifiedAt = s.lastMode, s.lastAt
	return info
}

// verified notes a successful pass over s in mode.
func (m *Manager) verified(s *shard, mode string) {
	m.mu.Lock()
	s.lastMode, s.lastAt = mode, m.clock().UTC()
	m.mu.Unlock()
}

// Shard returns the resident shard with the given ID.
func (m *Manager) Shard(id string) (ShardInfo, error) {
	if err := ValidateShardID(id); err != nil {
		return ShardInfo{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.shards[id]
	if !ok {
		return ShardInfo{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return s.status(), nil
}

// Shards returns every resident shard, sorted by ID.
func (m *Manager) Shards() []ShardInfo {
	m.mu.Lock()
	out := make([]ShardInfo, 0, len(m.shards))
	for _, s := range m.shards {
		out = append(out, s.status())
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Seal.ShardID < out[j].Seal.ShardID })
	return out
}

// Release frees a shard's device memory. It waits for verifications of the
// shard in flight. A shard that consumers hold is not released: the error
// is an *[InUseError] naming them ([Manager.ReleaseForce] revokes them).
func (m *Manager) Release(ctx context.Context, id string) error {
	return m.releaseReason(ctx, id, false, "released")
}

// release takes a shard off the list and frees its memory. An attached
// shard is refused with an *[InUseError], or with force revoked: its
// memory then waits for the last lease to end.
// The reason is recorded with the deallocation.
func (m *Manager) releaseReason(ctx context.Context, id string, force bool, reason string) error {
	start := time.Now()
	if err := ValidateShardID(id); err != nil {
		return m.rejected(ctx, start, "release", "", err)
	}
	m.mu.Lock()
	s, ok := m.shards[id]
	if !ok {
		m.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	holders := s.leaseInfos()
	if len(holders) > 0 && !force {
		m.mu.Unlock()
		return &InUseError{ShardID: id, Holders: holders}
	}
	m.unlist(s, holders)
	m.mu.Unlock()
	return m.finishRelease(ctx, s, holders, reason, start)
}

// unlist takes a shard off the list; one with holders is marked revoked.
// The caller holds m.mu.
func (m *Manager) unlist(s *shard, holders []LeaseInfo) {
	delete(m.shards, s.seal.ShardID)
	m.dropEmptyModel(s.model)
	if len(holders) > 0 {
		s.revoked = true
		m.revoked[s] = struct{}{}
	}
}

// finishRelease frees an unlisted shard's memory, or revokes its holders
// (the memory then waits for the last lease).
func (m *Manager) finishRelease(ctx context.Context, s *shard, holders []LeaseInfo, reason string, start time.Time) error {
	if len(holders) > 0 {
		return m.revoke(ctx, s, holders, start)
	}
	s.busy.Wait()
	return m.freeBuffer(ctx, s.dev, s.seal.ShardID, s.buf, s.seal.Size, reason, true, start)
}

// dropEmptyModel forgets a model none of whose shards is resident any
// more; the caller holds m.mu.
func (m *Manager) dropEmptyModel(id string) {
	ms, ok := m.models[id]
	if !ok || ms.pending {
		return
	}
	for _, sid := range ms.shards {
		if s, ok := m.shards[sid]; ok && s.model == id {
			return
		}
	}
	delete(m.models, id)
}

// freeBuffer frees a shard's allocation, takes its bytes off the device's
// sealed (used) or in-progress (reserved) count, and records and narrates
// the release with its reason. If the device refuses the free, the bytes
// stay counted, so a leaked allocation shows in [Manager.Capacity].
func (m *Manager) freeBuffer(ctx context.Context, d *deviceState, id string, buf gpu.Buffer, size int64, reason string, sealed bool, start time.Time) error {
	// Free under allocMu so that a concurrent allocation's free-memory
	// check does not see this release.
	d.allocMu.Lock()
	err := d.dev.Free(context.WithoutCancel(ctx), buf)
	d.allocMu.Unlock()
	if err != nil {
		return fmt.Errorf("vram: free %d bytes of shard %q on GPU %d (still counted as used): %w", size, id, d.index, err)
	}
	m.mu.Lock()
	if sealed {
		d.used -= size
	} else {
		d.reserved -= size
	}
	remaining := d.used
	m.mu.Unlock()
	rerr := m.record(ctx, audit.Event{Type: EventDeallocated, Severity: audit.SeverityMedium, Fields: []audit.Field{
		audit.String("shard_id", id),
		audit.Bytes("freed_bytes", size),
		audit.Bytes("remaining_used", remaining),
		audit.Int("gpu_device", int64(d.index)),
		audit.String("reason", reason),
	}})
	m.narrate(ctx, slog.LevelInfo, ActionDeallocate, id, d.info, time.Since(start), "", nil, func() string {
		return fmt.Sprintf("Released shard '%s': freed %s VRAM on GPU %d", short(id), narration.FormatBytes(size), d.index)
	}, narration.Bytes("freed_bytes", size), narration.Bytes("remaining_used", remaining), narration.Str("reason", reason))
	// The memory is free whatever the audit log says; report a fail-closed
	// failure so the caller knows the record is missing.
	return rerr
}

// Close ends every attachment (consumers are told with a [StopNotice] of
// reason [StopShutdown]) and releases every shard. The manager refuses
// work afterwards.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	if !m.closed {
		close(m.closedCh)
	}
	m.closed = true
	ids := make([]string, 0, len(m.shards))
	var leases []*Lease
	for id, s := range m.shards {
		ids = append(ids, id)
		for _, l := range s.leases {
			leases = append(leases, l)
		}
	}
	for s := range m.revoked {
		for _, l := range s.leases {
			leases = append(leases, l)
		}
	}
	m.mu.Unlock()
	if len(leases) > 0 {
		m.notify(StopNotice{Reason: StopShutdown, Message: "the vramseal daemon is stopping"})
	}
	var first error
	for _, l := range leases {
		if err := l.Detach(ctx, StopShutdown); err != nil && first == nil {
			first = err
		}
	}
	for _, id := range ids {
		// A shard released meanwhile by another caller is not an error.
		if err := m.Release(ctx, id); err != nil && !errors.Is(err, ErrNotFound) && first == nil {
			first = err
		}
	}
	return first
}

// Buffer returns the device buffer of a resident shard and its GPU index,
// for fault injection in tests and for diagnostics. The buffer is an
// opaque handle: it never formats a device address.
func (m *Manager) Buffer(id string) (gpu.Buffer, int, error) {
	if err := ValidateShardID(id); err != nil {
		return nil, 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.shards[id]
	if !ok {
		return nil, 0, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return s.buf, s.dev.index, nil
}
