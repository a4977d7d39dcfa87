package vram

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/narration/narrationtest"
)

var testHolder = Holder{PID: 4242, UID: 1000, GID: 1000, Exe: "/usr/bin/python3"}

// notices collects the stop notices of a manager.
type notices struct {
	mu  sync.Mutex
	got []StopNotice
}

func collect(m *Manager) *notices {
	n := &notices{}
	m.Subscribe(func(s StopNotice) {
		n.mu.Lock()
		n.got = append(n.got, s)
		n.mu.Unlock()
	})
	return n
}

func (n *notices) all() []StopNotice {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]StopNotice(nil), n.got...)
}

func attach(t *testing.T, m *Manager, id string, h Holder) (*Lease, gpu.Share) {
	t.Helper()
	l, sh, err := m.Attach(context.Background(), id, h)
	if err != nil {
		t.Fatalf("Attach(%q) error = %v", id, err)
	}
	t.Cleanup(func() { sh.File.Close() })
	return l, sh
}

func TestAttachMapsTheSealedBytes(t *testing.T) {
	m, _ := newTestManager(t, 1, 1<<22)
	data := randomBytes(7, 5*testChunk+99)
	sealBytes(t, m, "s", 0, data)
	l, sh := attach(t, m, "s", testHolder)
	if !strings.HasPrefix(l.ID(), "att-") || l.Shard().Seal.ShardID != "s" || l.Holder() != testHolder {
		t.Errorf("lease = %s %q %+v", l.ID(), l.Shard().Seal.ShardID, l.Holder())
	}
	mem, err := unix.Mmap(int(sh.File.Fd()), 0, int(sh.MapSize), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	if !bytes.Equal(mem[:len(data)], data) {
		t.Fatal("attached mapping differs from the sealed bytes")
	}
	if w, err := unix.Mmap(int(sh.File.Fd()), 0, int(sh.MapSize), unix.PROT_WRITE, unix.MAP_SHARED); err == nil {
		unix.Munmap(w)
		t.Fatal("a consumer got a writable mapping")
	}
	info, err := m.Shard("s")
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Attachments) != 1 || info.Attachments[0].ID != l.ID() || info.Attachments[0].Holder.PID != 4242 {
		t.Errorf("Shard().Attachments = %+v, want the one lease", info.Attachments)
	}
	if _, err := m.Verify(context.Background(), "s", Full); err != nil {
		t.Errorf("Verify(attached) = %v", err)
	}
}

func TestReleaseWhileAttached(t *testing.T) {
	m, _ := newTestManager(t, 1, 1<<22)
	data := randomBytes(8, 3*testChunk)
	sealBytes(t, m, "s", 0, data)
	l1, _ := attach(t, m, "s", testHolder)
	other := Holder{PID: 7, UID: 1001, GID: 1001}
	l2, _ := attach(t, m, "s", other)

	err := m.Release(context.Background(), "s")
	var iu *InUseError
	if !errors.As(err, &iu) || !errors.Is(err, ErrInUse) || len(iu.Holders) != 2 {
		t.Fatalf("Release(attached) = %v, want an InUseError with 2 holders", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "pid 4242 uid 1000") || !strings.Contains(msg, "pid 7 uid 1001") {
		t.Errorf("InUseError = %q, want both holders named", msg)
	}
	if _, err := m.Shard("s"); err != nil {
		t.Fatalf("a refused release removed the shard: %v", err)
	}
	if err := l1.Detach(context.Background(), DetachRequested); err != nil {
		t.Fatal(err)
	}
	if err := l1.Detach(context.Background(), DetachRequested); err != nil {
		t.Errorf("second Detach = %v, want nil", err)
	}
	if err := m.Release(context.Background(), "s"); !errors.As(err, &iu) || len(iu.Holders) != 1 {
		t.Fatalf("Release(one holder left) = %v, want InUseError with 1 holder", err)
	}
	if err := l2.Detach(context.Background(), DetachDisconnect); err != nil {
		t.Fatal(err)
	}
	if err := m.Release(context.Background(), "s"); err != nil {
		t.Fatalf("Release(detached) = %v", err)
	}
}

func TestReleaseForceRevokes(t *testing.T) {
	m, _ := newTestManager(t, 1, 1<<22)
	n := collect(m)
	data := randomBytes(9, 4*testChunk)
	sealBytes(t, m, "s", 0, data)
	l, _ := attach(t, m, "s", testHolder)
	ctx := context.Background()
	if err := m.ReleaseForce(ctx, "s"); err != nil {
		t.Fatalf("ReleaseForce() = %v", err)
	}
	if _, err := m.Shard("s"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Shard(revoked) = %v, want ErrNotFound", err)
	}
	got := n.all()
	if len(got) != 1 || got[0].Reason != StopRevoked || got[0].ShardID != "s" || len(got[0].Leases) != 1 || got[0].Leases[0] != l.ID() {
		t.Fatalf("notices = %+v, want one revocation of the lease", got)
	}
	c, _ := m.Capacity(ctx, 0)
	if c.UsedBytes != int64(len(data)) {
		t.Errorf("UsedBytes while a revoked lease lives = %d, want %d", c.UsedBytes, len(data))
	}
	// The ID is free again: a new shard may take it while the old memory waits.
	sealBytes(t, m, "s", 0, data)
	if err := l.Detach(ctx, DetachDisconnect); err != nil {
		t.Fatal(err)
	}
	c, _ = m.Capacity(ctx, 0)
	if c.UsedBytes != int64(len(data)) {
		t.Errorf("UsedBytes after the last revoked lease = %d, want %d (the new shard only)", c.UsedBytes, len(data))
	}
	if err := m.ReleaseForce(ctx, "s"); err != nil {
		t.Fatalf("ReleaseForce(unattached) = %v", err)
	}
	if c, _ = m.Capacity(ctx, 0); c.UsedBytes != 0 {
		t.Errorf("UsedBytes at the end = %d, want 0", c.UsedBytes)
	}
}

func TestAttachRefused(t *testing.T) {
	m, devs := newTestManager(t, 1, 1<<22)
	sealBytes(t, m, "s", 0, randomBytes(10, 2*testChunk))
	ctx := context.Background()
	if _, _, err := m.Attach(ctx, "nope", testHolder); !errors.Is(err, ErrNotFound) {
		t.Errorf("Attach(unknown) = %v, want ErrNotFound", err)
	}
	if _, _, err := m.Attach(ctx, "../x", testHolder); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("Attach(bad ID) = %v, want ErrInvalidInput", err)
	}
	if _, _, err := m.Attach(ctx, "s", Holder{Exe: "a\x00b"}); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("Attach(bad exe) = %v, want ErrInvalidInput", err)
	}
	buf, _, _ := m.Buffer("s")
	if err := devs[0].FlipBits(buf, 3, 0x80); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Verify(ctx, "s", Full); err == nil {
		t.Fatal("Verify(corrupt) passed")
	}
	var se *StoppedError
	if _, _, err := m.Attach(ctx, "s", testHolder); !errors.As(err, &se) {
		t.Errorf("Attach(stopped) = %v, want StoppedError", err)
	}
	if info, _ := m.Shard("s"); len(info.Attachments) != 0 {
		t.Errorf("refused attaches left leases: %+v", info.Attachments)
	}
}

func TestStopNoticeNamesChangedChunks(t *testing.T) {
	m, devs := newTestManager(t, 1, 1<<22)
	n := collect(m)
	sealBytes(t, m, "s", 0, randomBytes(11, 8*testChunk))
	attach(t, m, "s", testHolder)
	buf, _, _ := m.Buffer("s")
	if err := devs[0].FlipBits(buf, 5*testChunk+1, 0x01); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Verify(context.Background(), "s", Sampled(2)); err == nil {
		// Two samples of eight may miss the chunk; the full pass cannot.
		if _, err := m.Verify(context.Background(), "s", Full); err == nil {
			t.Fatal("Verify(corrupt, full) passed")
		}
	}
	got := n.all()
	if len(got) != 1 || got[0].Reason != StopIntegrity || got[0].ShardID != "s" {
		t.Fatalf("notices = %+v, want one integrity stop", got)
	}
	if ch := got[0].Changed; len(ch) != 1 || ch[0].FirstChunk != 5 || ch[0].LastChunk != 5 {
		t.Errorf("notice changed chunks = %+v, want chunk 5", ch)
	}
}

func TestCloseEndsLeases(t *testing.T) {
	o := newObserved(t, audit.FailClosed, 1<<22)
	n := collect(o.m)
	sealBytes(t, o.m, "s", 0, randomBytes(12, 2*testChunk))
	l, _ := attach(t, o.m, "s", testHolder)
	if err := o.m.Close(context.Background()); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if got := n.all(); len(got) != 1 || got[0].Reason != StopShutdown {
		t.Errorf("notices = %+v, want one shutdown", got)
	}
	if err := l.Detach(context.Background(), DetachRequested); err != nil {
		t.Errorf("Detach after Close = %v", err)
	}
	r := o.requireRecord(t, EventDetached, "s", audit.SeverityMedium, "")
	if fieldText(r, "reason") != StopShutdown || fieldText(r, "lease_id") != l.ID() {
		t.Errorf("detach record = %v", r.Fields)
	}
	o.requireRecord(t, EventDeallocated, "s", audit.SeverityMedium, "")
}

func TestAttachAudit(t *testing.T) {
	o := newObserved(t, audit.FailClosed, 1<<22)
	sealBytes(t, o.m, "s", 0, randomBytes(13, 2*testChunk))
	l, sh, err := o.m.Attach(withCorrelation("req-att"), "s", testHolder)
	if err != nil {
		t.Fatal(err)
	}
	sh.File.Close()
	r := o.requireRecord(t, EventAttached, "s", audit.SeverityHigh, "req-att")
	requireFields(t, r, "lease_id", "pid", "uid", "gid", "executable", "access", "share_kind", "gpu_device", "tree_root")
	if fieldText(r, "access") != "read" || fieldText(r, "pid") != "4242" || fieldText(r, "executable") != "/usr/bin/python3" {
		t.Errorf("attach record = %v", r.Fields)
	}
	if err := l.Detach(withCorrelation("req-det"), DetachRequested); err != nil {
		t.Fatal(err)
	}
	r = o.requireRecord(t, EventDetached, "s", audit.SeverityMedium, "req-det")
	requireFields(t, r, "lease_id", "pid", "uid", "gid", "executable", "access", "reason", "held_us")
	o.m.AttachDenied(withCorrelation("req-den"), Holder{PID: 9, UID: 65534, GID: 65534}, "s", "uid 65534 is not allowed\x1b[31m")
	r = o.requireRecord(t, EventAttachDenied, "s", audit.SeverityHigh, "req-den")
	if got := fieldText(r, "reason"); strings.ContainsRune(got, 0x1b) || !strings.HasPrefix(got, "uid 65534 is not allowed") {
		t.Errorf("denied reason = %q, want it printable", got)
	}
	o.rec.ByCorrelationID("req-att").RequireOne(narrationMatch(ActionAttach, "s"))
	o.rec.ByCorrelationID("req-det").RequireOne(narrationMatch(ActionDetach, "s"))
	o.rec.ByCorrelationID("req-den").RequireOne(narrationMatch(ActionAttachDenied, "s"))
}

func TestAttachFailClosedAudit(t *testing.T) {
	o := newObserved(t, audit.FailClosed, 1<<22)
	sealBytes(t, o.m, "s", 0, randomBytes(14, 2*testChunk))
	if err := o.log.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := o.m.Attach(context.Background(), "s", testHolder); !errors.Is(err, ErrAuditFailed) {
		t.Fatalf("Attach(audit closed) = %v, want ErrAuditFailed", err)
	}
	if info, _ := o.m.Shard("s"); len(info.Attachments) != 0 {
		t.Errorf("an unrecorded attach left a lease: %+v", info.Attachments)
	}
}

func narrationMatch(action, target string) narrationtest.Match {
	return narrationtest.Match{Action: action, Target: target}
}
