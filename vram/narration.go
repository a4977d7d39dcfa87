package vram

import (
	"context"
	"log/slog"
	"time"

	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/narration"
)

// The narration actions of residency, one per row of the observability
// table in DESIGN.md. Each is emitted by exactly one place below.
const (
	ActionInit            = "init"
	ActionDeviceInit      = "device_init"
	ActionSeal            = "seal"
	ActionVerify          = "verify"
	ActionVerifyFailed    = "verify_failed"
	ActionAllocate        = "allocate"
	ActionAllocateFailed  = "allocate_failed"
	ActionDeallocate      = "deallocate"
	ActionPolicyViolation = "policy_violation"
	ActionDigest          = "digest"
	ActionSign            = "sign"
	ActionValidateFailed  = "validate_failed"
	ActionCapacityQuery   = "capacity_query"
	// ActionAuditFailed narrates an audit event that could not be recorded
	// (fail-open logs only; fail-closed refuses the operation).
	ActionAuditFailed = "audit_failed"
	// ActionReset narrates an operator's reset of a stopped worker.
	ActionReset = "reset"
)

// Actor is the narration actor of the residency manager.
const Actor = "vram-residency"

// narrate emits one event when the narrator wants it. Sentences are built
// only for enabled events.
func (m *Manager) narrate(ctx context.Context, level slog.Level, action, target string, dev gpu.Info, dur time.Duration, errKind string, err error, human func() string, attrs ...narration.Attr) {
	n := m.opts.Narrator
	if !n.Enabled(level, action) {
		return
	}
	e := narration.Event{
		Level: level, Actor: Actor, Action: action, Target: target, Human: human(),
		Duration: dur, WorkerID: m.opts.WorkerID, ErrorKind: errKind,
	}
	if dev.UUID != "" {
		e.Device = narration.GPU(dev.Index, dev.UUID)
	}
	if err != nil {
		e.Error = err.Error()
	}
	copy(e.Attrs[:], attrs)
	n.Emit(ctx, &e)
}

// shortIDLen is the longest shard ID written whole into a human sentence.
const shortIDLen = 24

// short abbreviates a long shard ID for human sentences, as git abbreviates
// commit IDs; the event's target always carries the whole ID.
func short(id string) string {
	if len(id) <= shortIDLen {
		return id
	}
	return id[:shortIDLen-1] + "…"
}
