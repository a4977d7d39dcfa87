package server

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/vramseal/vramseal/audit"
)

// failingFS is the operating system's file system whose files, once the
// fault is armed, fail every write or every fsync, as a full or broken
// disk does.
type failingFS struct {
	audit.OSFS
	writeErr, syncErr atomic.Pointer[error]
}

var _ audit.FS = (*failingFS)(nil)

func (f *failingFS) arm(writeErr, syncErr error) {
	if writeErr != nil {
		f.writeErr.Store(&writeErr)
	}
	if syncErr != nil {
		f.syncErr.Store(&syncErr)
	}
}

func (f *failingFS) OpenFile(name string, flag int, perm fs.FileMode) (audit.File, error) {
	file, err := f.OSFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &failingFile{File: file, fs: f}, nil
}

type failingFile struct {
	audit.File
	fs *failingFS
}

func (f *failingFile) Write(p []byte) (int, error) {
	if err := f.fs.writeErr.Load(); err != nil {
		return 0, *err
	}
	return f.File.Write(p)
}

func (f *failingFile) Sync() error {
	if err := f.fs.syncErr.Load(); err != nil {
		return *err
	}
	return f.File.Sync()
}

// TestAuditFailure checks what the API does once the audit log cannot
// write: a fail-closed log refuses seals and verifications with 503
// audit_unavailable and makes the daemon unready; a fail-open log lets
// them through and counts the lost records.
func TestAuditFailure(t *testing.T) {
	tests := []struct {
		name              string
		policy            audit.Policy
		writeErr, syncErr error
	}{
		{"closed/write ENOSPC", audit.FailClosed, syscall.ENOSPC, nil},
		{"closed/fsync EIO", audit.FailClosed, nil, syscall.EIO},
		{"open/write ENOSPC", audit.FailOpen, syscall.ENOSPC, nil},
		{"open/fsync EIO", audit.FailOpen, nil, syscall.EIO},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ffs := &failingFS{}
			log := openAudit(t, audit.Options{Policy: tt.policy, FS: ffs})
			f := newAuditedFixture(t, 1<<20, log, func(o *Options) {
				o.Ready = AuditReady(log.Health)
				o.Collectors = append(o.Collectors, NewAuditCollector(log.Stats, log.Health))
			})
			data := bytes.Repeat([]byte{5}, 9000)
			if r := upload(t, f, "shard_id=before&model_ref=m", data); r.status != 201 {
				t.Fatalf("upload before the fault = %d %s", r.status, r.raw)
			}
			if r := f.call(t, "GET", "/readyz", "", nil); r.status != 200 {
				t.Fatalf("GET /readyz before the fault = %d %s", r.status, r.raw)
			}

			ffs.arm(tt.writeErr, tt.syncErr)
			closed := tt.policy == audit.FailClosed
			r := upload(t, f, "shard_id=after&model_ref=m", data)
			if closed {
				e, _ := r.body["error"].(map[string]any)
				if r.status != 503 || errCode(r) != CodeAuditFailed || e["retryable"] != true || r.header.Get("Retry-After") == "" {
					t.Errorf("upload during the fault = %d %s (Retry-After %q), want 503 %s, retryable", r.status, r.raw, r.header.Get("Retry-After"), CodeAuditFailed)
				}
			} else if r.status != 201 {
				t.Errorf("upload during the fault = %d %s, want 201 (fail-open)", r.status, r.raw)
			}
			// The execute gate cannot pass unrecorded either.
			r = f.call(t, "POST", "/v1/shards/before/verify", "application/json", strings.NewReader(`{"mode":"full"}`))
			if closed && (r.status != 503 || errCode(r) != CodeAuditFailed) {
				t.Errorf("verify during the fault = %d %s, want 503 %s", r.status, r.raw, CodeAuditFailed)
			} else if !closed && r.status != 200 {
				t.Errorf("verify during the fault = %d %s, want 200 (fail-open)", r.status, r.raw)
			}

			// A refused seal holds no VRAM.
			c, err := f.m.Capacity(context.Background(), 0)
			if err != nil {
				t.Fatal(err)
			}
			wantUsed := int64(2 * len(data))
			if closed {
				wantUsed = int64(len(data))
			}
			if c.UsedBytes != wantUsed || c.ReservedBytes != 0 {
				t.Errorf("capacity after the fault = %+v, want %d used and nothing reserved", c, wantUsed)
			}

			r = f.call(t, "GET", "/readyz", "", nil)
			if closed && (r.status != 503 || !strings.Contains(r.raw, "audit log failed")) {
				t.Errorf("GET /readyz during the fault = %d %s, want 503 naming the audit log", r.status, r.raw)
			} else if !closed && r.status != 200 {
				t.Errorf("GET /readyz during the fault = %d %s, want 200 (fail-open)", r.status, r.raw)
			}
			if r := f.call(t, "GET", "/healthz", "", nil); r.status != 200 {
				t.Errorf("GET /healthz during the fault = %d %s, want 200: the process is alive", r.status, r.raw)
			}

			fams := scrape(t, f)
			if got := one(t, fams, "vramseal_audit_healthy", nil); got != 0 {
				t.Errorf("vramseal_audit_healthy = %v, want 0", got)
			}
			if got := one(t, fams, "vramseal_audit_write_errors_total", nil); got < 1 {
				t.Errorf("vramseal_audit_write_errors_total = %v, want at least 1", got)
			}
			if got := one(t, fams, "vramseal_worker_stopped", nil); got != 0 {
				t.Errorf("vramseal_worker_stopped = %v, want 0: an audit failure is not an integrity failure", got)
			}
		})
	}
}

func TestAuditReady(t *testing.T) {
	boom := errors.New("disk on fire")
	tests := []struct {
		name string
		h    audit.Health
		want string // "" means ready
	}{
		{"ok closed", audit.Health{OK: true, State: "ok", Policy: audit.FailClosed}, ""},
		{"failed closed", audit.Health{State: "failed", Err: boom, Policy: audit.FailClosed}, "audit log failed (fail-closed): disk on fire"},
		{"closed closed", audit.Health{State: "closed", Policy: audit.FailClosed}, "audit log closed (fail-closed)"},
		{"failed open", audit.Health{State: "failed", Err: boom, Policy: audit.FailOpen}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := AuditReady(func() audit.Health { return tt.h })()
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("AuditReady(%+v)() = %q, want %q", tt.h, got, tt.want)
			}
			if err != nil && tt.h.Err != nil && !errors.Is(err, tt.h.Err) {
				t.Errorf("AuditReady(%+v)() = %v, does not wrap %v", tt.h, err, tt.h.Err)
			}
		})
	}
}
