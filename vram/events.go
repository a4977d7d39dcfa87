package vram

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/narration"
)

// Auditor records audit events. *[audit.Log] implements it. Append must
// return only once a critical event is durable; an error matching
// [audit.ErrNotRecorded] means the log is fail-open and the operation goes
// on, any other error means the operation must be refused.
type Auditor interface {
	Append(ctx context.Context, e audit.Event) (audit.Receipt, error)
}

// The audit event types of residency.
const (
	EventSealed             = "vram_sealed"
	EventVerified           = "seal_verified"
	EventVerificationFailed = "seal_verification_failed"
	EventAllocated          = "vram_allocated"
	EventAllocationFailed   = "vram_allocation_failed"
	EventDeallocated        = "vram_deallocated"
	EventPolicyViolation    = "policy_violation"
	// EventReset records an operator returning a stopped worker to
	// running, with the reason given.
	EventReset = "worker_reset"
)

// ActionWorkerStopped is the action_taken of integrity and policy failures.
const ActionWorkerStopped = "worker_stopped"

// record appends one audit event. It returns nil when the event was
// recorded or when the log is fail-open (the failure is then counted and
// narrated); otherwise an error wrapping [ErrAuditFailed], and the caller
// must refuse or undo its operation. Recording ignores the caller's
// cancellation: an operation that happened is recorded even if the client
// went away.
func (m *Manager) record(ctx context.Context, e audit.Event) error {
	if m.opts.Audit == nil {
		return nil
	}
	e.CorrelationID = narration.CorrelationID(ctx)
	_, err := m.opts.Audit.Append(context.WithoutCancel(ctx), e)
	if err == nil {
		return nil
	}
	m.auditFailures.Add(1)
	open := errors.Is(err, audit.ErrNotRecorded)
	m.narrate(ctx, slog.LevelError, ActionAuditFailed, e.Type, noDevice, 0, "audit", err, func() string {
		if open {
			return fmt.Sprintf("Audit event %s was not recorded; continuing (fail-open)", e.Type)
		}
		return fmt.Sprintf("Audit event %s was not recorded; refusing the operation (fail-closed)", e.Type)
	})
	if open {
		return nil
	}
	return fmt.Errorf("%w: %s: %w", ErrAuditFailed, e.Type, err)
}

// AuditFailures returns how many audit events could not be recorded.
func (m *Manager) AuditFailures() uint64 { return m.auditFailures.Load() }

// rangesField renders changed chunk ranges for the audit log:
// "17-18,30" (chunk indexes, inclusive).
func rangesField(rs []ChunkRange) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteByte(',')
		}
		if r.FirstChunk == r.LastChunk {
			fmt.Fprintf(&b, "%d", r.FirstChunk)
		} else {
			fmt.Fprintf(&b, "%d-%d", r.FirstChunk, r.LastChunk)
		}
		if b.Len() > 900 {
			fmt.Fprintf(&b, ",+%d more", len(rs)-i-1)
			break
		}
	}
	return b.String()
}
