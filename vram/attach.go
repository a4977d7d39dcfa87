package vram

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/narration"
)

// The audit event types of attachments.
const (
	// EventAttached records a consumer process mapping a shard. It is
	// durable before the consumer receives the descriptor.
	EventAttached = "vram_attached"
	// EventDetached records the end of an attachment.
	EventDetached = "vram_detached"
	// EventAttachDenied records a consumer that was refused (who and why).
	EventAttachDenied = "vram_attach_denied"
	// EventRevoked records an operator releasing a shard that consumers
	// still hold (release with force).
	EventRevoked = "vram_revoked"
)

// The narration actions of attachments.
const (
	ActionAttach       = "attach"
	ActionDetach       = "detach"
	ActionAttachDenied = "attach_denied"
	ActionRevoke       = "revoke"
)

// Reasons of a [StopNotice] and of [Lease.Detach].
const (
	StopIntegrity = "integrity"
	StopPolicy    = "policy"
	StopRevoked   = "revoked"
	StopShutdown  = "shutdown"

	DetachRequested  = "detach"
	DetachDisconnect = "disconnect"
)

// Holder is the consumer process of an attachment, as the kernel reports
// its credentials (SO_PEERCRED) and /proc names its executable.
type Holder struct {
	PID      int32
	UID, GID uint32
	// Exe is the executable's path, "" when unknown.
	Exe string
}

// String names the holder by pid and uid, for messages.
func (h Holder) String() string { return fmt.Sprintf("pid %d uid %d", h.PID, h.UID) }

// LeaseInfo describes one live attachment, for listings.
type LeaseInfo struct {
	ID         string
	Holder     Holder
	AttachedAt time.Time
	// Revoked is set once the shard was released with force: the lease
	// lasts until the consumer detaches, but the shard is gone.
	Revoked bool
}

// Lease is one consumer's attachment to a shard: the shard's memory stays
// allocated, and the shard cannot be released without force, until
// [Lease.Detach]. All methods are safe for concurrent use.
type Lease struct {
	m      *Manager
	s      *shard
	id     string
	holder Holder
	at     time.Time
	info   ShardInfo
	// ended is guarded by Manager.mu.
	ended bool
}

// ID returns the lease ID ("att-" and 16 hex digits) that audit records
// and listings use.
func (l *Lease) ID() string { return l.id }

// Shard returns the attached shard's description, seal and tensor map
// included.
func (l *Lease) Shard() ShardInfo { return l.info }

// Holder returns the consumer process.
func (l *Lease) Holder() Holder { return l.holder }

// StopNotice tells consumers to stop: the worker stopped (Reason
// [StopIntegrity] or [StopPolicy]), a shard was revoked ([StopRevoked],
// with the leases it ended), or the manager is closing ([StopShutdown]).
type StopNotice struct {
	ShardID string
	Reason  string
	Message string
	// Changed lists the changed chunks of an integrity failure.
	Changed []ChunkRange
	// Leases lists the IDs of the leases a revocation ended.
	Leases []string
}

// subscribers holds the functions [Manager.Subscribe] registered.
type subscribers struct {
	mu   sync.Mutex
	next int
	fns  map[int]func(StopNotice)
}

// Subscribe registers fn to be called with every [StopNotice]. fn is
// called from the goroutine that found the failure and must not block.
// The returned function removes fn.
func (m *Manager) Subscribe(fn func(StopNotice)) (cancel func()) {
	m.subs.mu.Lock()
	defer m.subs.mu.Unlock()
	if m.subs.fns == nil {
		m.subs.fns = make(map[int]func(StopNotice))
	}
	m.subs.next++
	k := m.subs.next
	m.subs.fns[k] = fn
	return func() {
		m.subs.mu.Lock()
		defer m.subs.mu.Unlock()
		delete(m.subs.fns, k)
	}
}

// notify calls every subscriber with n.
func (m *Manager) notify(n StopNotice) {
	m.subs.mu.Lock()
	fns := make([]func(StopNotice), 0, len(m.subs.fns))
	for _, fn := range m.subs.fns {
		fns = append(fns, fn)
	}
	m.subs.mu.Unlock()
	for _, fn := range fns {
		fn(n)
	}
}

// newLeaseID returns "att-" and 16 random hex digits.
func newLeaseID(r io.Reader) (string, error) {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("vram: generate lease ID: %w", err)
	}
	return "att-" + hex.EncodeToString(b[:]), nil
}

func holderFields(h Holder) []audit.Field {
	return []audit.Field{
		audit.Int("pid", int64(h.PID)),
		audit.Int("uid", int64(h.UID)),
		audit.Int("gid", int64(h.GID)),
		audit.String("executable", h.Exe),
	}
}

// Attach gives a consumer process the shard's memory: it records the
// attachment (durably, before it returns) and returns the lease and a
// share of the shard's read-only allocation. The caller owns share.File and
// must close it once it has passed it on. Attach fails while the worker is
// stopped (*[StoppedError]), for an unknown shard ([ErrNotFound]), after
// [Manager.Close] ([ErrClosed]) and when a fail-closed audit log cannot
// record the attachment ([ErrAuditFailed]); nothing is then held.
func (m *Manager) Attach(ctx context.Context, id string, h Holder) (*Lease, gpu.Share, error) {
	start := time.Now()
	if err := ValidateShardID(id); err != nil {
		return nil, gpu.Share{}, m.rejected(ctx, start, "attach", "", err)
	}
	if err := validateText("executable path", h.Exe, 4096, false); err != nil {
		return nil, gpu.Share{}, m.rejected(ctx, start, "attach", id, err)
	}
	if err := m.gate(); err != nil {
		return nil, gpu.Share{}, err
	}
	lid, err := newLeaseID(m.opts.Rand)
	if err != nil {
		return nil, gpu.Share{}, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, gpu.Share{}, ErrClosed
	}
	s, ok := m.shards[id]
	if !ok {
		m.mu.Unlock()
		return nil, gpu.Share{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if s.quarantined != "" {
		m.mu.Unlock()
		return nil, gpu.Share{}, &QuarantinedError{ShardID: id, Reason: s.quarantined}
	}
	l := &Lease{m: m, s: s, id: lid, holder: h, at: m.clock().UTC(), info: s.info()}
	if s.leases == nil {
		s.leases = make(map[string]*Lease)
	}
	s.leases[lid] = l
	m.mu.Unlock()

	share, err := s.dev.dev.Export(ctx, s.buf)
	if err != nil {
		m.dropLease(ctx, l)
		return nil, gpu.Share{}, fmt.Errorf("vram: export shard %q on GPU %d: %w", id, s.dev.index, err)
	}
	fields := append([]audit.Field{
		audit.String("shard_id", id),
		audit.String("lease_id", lid),
	}, holderFields(h)...)
	fields = append(fields,
		audit.String("access", "read"),
		audit.String("share_kind", share.Kind),
		audit.Int("gpu_device", int64(s.dev.index)),
		audit.Digest("tree_root", s.seal.Root),
	)
	if err := m.record(ctx, audit.Event{Type: EventAttached, Severity: audit.SeverityHigh, Durable: true, Fields: fields}); err != nil {
		share.File.Close()
		m.dropLease(ctx, l)
		return nil, gpu.Share{}, err
	}
	// A failure that stopped the worker while the attachment was being
	// recorded was pushed to the consumers attached then; this one would
	// miss it, so it is refused and ended.
	if err := m.gate(); err != nil {
		share.File.Close()
		_ = l.Detach(ctx, StopShutdown)
		return nil, gpu.Share{}, err
	}
	m.narrate(ctx, slog.LevelInfo, ActionAttach, id, s.dev.info, time.Since(start), "", nil, func() string {
		return fmt.Sprintf("Attached shard '%s' read-only to pid %d (uid %d), %s of VRAM on GPU %d", short(id), h.PID, h.UID, narration.FormatBytes(s.seal.Size), s.dev.index)
	}, narration.Str("lease_id", lid), narration.Int("pid", int64(h.PID)), narration.Int("uid", int64(h.UID)),
		narration.Str("access", "read"), narration.Str("share_kind", share.Kind))
	return l, share, nil
}

// dropLease forgets a lease that never took effect (nothing recorded it),
// and frees a revoked shard's memory if it was the last one.
func (m *Manager) dropLease(ctx context.Context, l *Lease) {
	if _, last := l.end(); last {
		m.freeRevoked(ctx, l.s)
	}
}

// end marks the lease ended and forgets it. It reports whether the lease
// was live until now, and whether it was the last lease of a revoked
// shard, whose memory the caller must then free.
func (l *Lease) end() (live, last bool) {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	if l.ended {
		return false, false
	}
	l.ended = true
	delete(l.s.leases, l.id)
	return true, l.s.revoked && len(l.s.leases) == 0
}

// Detach ends the lease with a reason ([DetachRequested],
// [DetachDisconnect], [StopRevoked], [StopShutdown]) and records it. The
// last lease of a revoked shard frees its memory. A second Detach is a
// no-op.
func (l *Lease) Detach(ctx context.Context, reason string) error {
	start := time.Now()
	m, s := l.m, l.s
	live, last := l.end()
	if !live {
		return nil
	}
	held := m.clock().Sub(l.at)
	fields := append([]audit.Field{
		audit.String("shard_id", s.seal.ShardID),
		audit.String("lease_id", l.id),
	}, holderFields(l.holder)...)
	fields = append(fields,
		audit.String("access", "read"),
		audit.String("reason", reason),
		audit.Int("held_us", held.Microseconds()),
	)
	err := m.record(ctx, audit.Event{Type: EventDetached, Severity: audit.SeverityMedium, Fields: fields})
	m.narrate(ctx, slog.LevelInfo, ActionDetach, s.seal.ShardID, s.dev.info, time.Since(start), "", nil, func() string {
		return fmt.Sprintf("Detached shard '%s' from pid %d (%s) after %s", short(s.seal.ShardID), l.holder.PID, strings.ReplaceAll(reason, "_", " "), narration.FormatDuration(held))
	}, narration.Str("lease_id", l.id), narration.Int("pid", int64(l.holder.PID)), narration.Str("reason", reason))
	if last {
		m.freeRevoked(ctx, s)
	}
	return err
}

// freeRevoked frees the memory of a revoked shard whose last lease ended.
func (m *Manager) freeRevoked(ctx context.Context, s *shard) {
	m.mu.Lock()
	delete(m.revoked, s)
	m.mu.Unlock()
	s.busy.Wait()
	_ = m.freeBuffer(context.WithoutCancel(ctx), s.dev, s.seal.ShardID, s.buf, s.seal.Size, "revoked", true, time.Now())
}

// AttachDenied records and narrates a consumer that was refused, with the
// shard it asked for ("" when it was refused before asking) and why.
func (m *Manager) AttachDenied(ctx context.Context, h Holder, shardID, reason string) {
	if ValidateShardID(shardID) != nil {
		shardID = ""
	}
	if validateText("executable path", h.Exe, 4096, false) != nil {
		h.Exe = ""
	}
	reason = sanitizeReason(reason)
	fields := append([]audit.Field{audit.String("shard_id", shardID)}, holderFields(h)...)
	fields = append(fields, audit.String("access", "read"), audit.String("reason", reason))
	_ = m.record(ctx, audit.Event{Type: EventAttachDenied, Severity: audit.SeverityHigh, Fields: fields})
	m.narrate(ctx, slog.LevelWarn, ActionAttachDenied, shardID, noDevice, 0, "permission", nil, func() string {
		return fmt.Sprintf("Refused attach by pid %d (uid %d): %s", h.PID, h.UID, reason)
	}, narration.Int("pid", int64(h.PID)), narration.Int("uid", int64(h.UID)), narration.Str("reason", reason))
}

// sanitizeReason keeps a caller's reason printable and short.
func sanitizeReason(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == 0x2028 || r == 0x2029 {
			return -1
		}
		return r
	}, s)
	if len(s) > 256 {
		s = s[:256]
	}
	return strings.ToValidUTF8(s, "")
}

// Leases returns the live attachments of a shard, oldest first; a
// revoked shard is no longer listed by ID and gives [ErrNotFound].
func (m *Manager) Leases(id string) ([]LeaseInfo, error) {
	if err := ValidateShardID(id); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.shards[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return s.leaseInfos(), nil
}

// leaseInfos lists s's leases, oldest first. Manager.mu must be held.
func (s *shard) leaseInfos() []LeaseInfo {
	out := make([]LeaseInfo, 0, len(s.leases))
	for _, l := range s.leases {
		out = append(out, LeaseInfo{ID: l.id, Holder: l.holder, AttachedAt: l.at, Revoked: s.revoked})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].AttachedAt.Equal(out[j].AttachedAt) {
			return out[i].AttachedAt.Before(out[j].AttachedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// InUseError is returned by [Manager.Release] for a shard that consumers
// hold: it names them. Release with force revokes their leases.
type InUseError struct {
	ShardID string
	Holders []LeaseInfo
}

// Error names the shard and its holders.
func (e *InUseError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "vram: shard %q is attached by %d process", e.ShardID, len(e.Holders))
	if len(e.Holders) != 1 {
		b.WriteString("es")
	}
	b.WriteString(" (")
	for i, h := range e.Holders {
		if i == 8 {
			fmt.Fprintf(&b, ", and %d more", len(e.Holders)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(h.Holder.String())
	}
	b.WriteString("); stop them, or release with force to revoke their attachments")
	return b.String()
}

// Unwrap returns [ErrInUse].
func (e *InUseError) Unwrap() error { return ErrInUse }

// ErrInUse is wrapped by the *[InUseError] of [Manager.Release].
var ErrInUse = errors.New("vram: shard is attached")

// ReleaseForce releases a shard even while consumers hold it: the shard
// leaves the list at once, its holders are told to stop (a [StopNotice]
// with reason [StopRevoked]), and its memory stays allocated, and counted
// as used, until the last lease ends. Without holders it is [Manager.Release].
func (m *Manager) ReleaseForce(ctx context.Context, id string) error {
	return m.releaseReason(ctx, id, true, "released")
}

// revoke records and announces the revocation of a shard's leases.
func (m *Manager) revoke(ctx context.Context, s *shard, holders []LeaseInfo, start time.Time) error {
	id := s.seal.ShardID
	ids := make([]string, len(holders))
	pids := make([]string, len(holders))
	for i, h := range holders {
		ids[i] = h.ID
		pids[i] = strconv.Itoa(int(h.Holder.PID))
	}
	err := m.record(ctx, audit.Event{Type: EventRevoked, Severity: audit.SeverityHigh, Fields: []audit.Field{
		audit.String("shard_id", id),
		audit.Int("leases", int64(len(holders))),
		audit.String("holder_pids", strings.Join(pids, ",")),
		audit.Bytes("vram_bytes", s.seal.Size),
		audit.Int("gpu_device", int64(s.dev.index)),
	}})
	m.notify(StopNotice{ShardID: id, Reason: StopRevoked, Leases: ids,
		Message: fmt.Sprintf("shard %q was released by an operator; stop using its memory and detach", id)})
	m.narrate(ctx, slog.LevelWarn, ActionRevoke, id, s.dev.info, time.Since(start), "", nil, func() string {
		return fmt.Sprintf("Revoked shard '%s' from %d attached process(es); %s stays allocated until they detach", short(id), len(holders), narration.FormatBytes(s.seal.Size))
	}, narration.Int("leases", int64(len(holders))))
	return err
}
