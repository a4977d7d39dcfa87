package audit

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// faultFS injects errors into the writes or fsyncs of segment files once
// armed. A failing write first writes half of its bytes, as a full disk
// can.
type faultFS struct {
	OSFS
	suffix   string // files to fault; "" means segments
	mu       sync.Mutex
	armed    bool
	writeErr error
	syncErr  error
}

func (f *faultFS) arm(writeErr, syncErr error) {
	f.mu.Lock()
	f.armed, f.writeErr, f.syncErr = true, writeErr, syncErr
	f.mu.Unlock()
}

func (f *faultFS) fault() (w, s error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.armed {
		return nil, nil
	}
	return f.writeErr, f.syncErr
}

func (f *faultFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	file, err := f.OSFS.OpenFile(name, flag, perm)
	suffix := f.suffix
	if suffix == "" {
		suffix = segmentSuffix
	}
	if err != nil || !strings.HasSuffix(name, suffix) {
		return file, err
	}
	return &faultFile{File: file, fs: f}, nil
}

type faultFile struct {
	File
	fs *faultFS
}

func (f *faultFile) Write(p []byte) (int, error) {
	if w, _ := f.fs.fault(); w != nil {
		n, _ := f.File.Write(p[:len(p)/2])
		return n, w
	}
	return f.File.Write(p)
}

func (f *faultFile) Sync() error {
	if _, s := f.fs.fault(); s != nil {
		return s
	}
	return f.File.Sync()
}

func TestFaultInjection(t *testing.T) {
	for _, fault := range []struct {
		name          string
		write, syncEr error
	}{
		{"write ENOSPC", syscall.ENOSPC, nil},
		{"write EIO", syscall.EIO, nil},
		{"fsync ENOSPC", nil, syscall.ENOSPC},
		{"fsync EIO", nil, syscall.EIO},
	} {
		for _, policy := range []Policy{FailClosed, FailOpen} {
			t.Run(fault.name+"/"+policy.String(), func(t *testing.T) {
				ffs := &faultFS{}
				o := Options{FS: ffs, Policy: policy}
				dir, vk, l := newLog(t, o)
				ctx := context.Background()
				var durable []uint64
				for i := range 5 {
					e := testEvent(i)
					e.Severity = SeverityCritical
					durable = append(durable, mustAppend(t, l, e).Seq)
				}
				ffs.arm(fault.write, fault.syncEr)
				e := testEvent(99)
				e.Severity = SeverityCritical
				_, err := l.Append(ctx, e)
				if !errors.Is(err, ErrFailed) {
					t.Fatalf("Append during fault = %v, want ErrFailed", err)
				}
				if got := errors.Is(err, ErrNotRecorded); got != (policy == FailOpen) {
					t.Errorf("Append error matches ErrNotRecorded = %v under %v", got, policy)
				}
				// Latched: later appends fail at once, even without a fault.
				ffs.arm(nil, nil)
				if _, err := l.Append(ctx, testEvent(100)); !errors.Is(err, ErrFailed) {
					t.Errorf("Append after latch = %v, want ErrFailed", err)
				}
				h := l.Health()
				if h.OK || h.State != "failed" || h.Err == nil {
					t.Errorf("Health = %+v, want failed with error", h)
				}
				if s := l.Stats(); s.Failed < 1 {
					t.Errorf("Stats = %+v, want failures counted", s)
				}
				if err := l.Close(ctx); !errors.Is(err, ErrFailed) {
					t.Errorf("Close = %v, want ErrFailed", err)
				}
				// Reopen on the real file system: nothing half-written is
				// accepted, the acknowledged records are all there.
				l2, err := Open(dir, Options{})
				if err != nil {
					t.Fatalf("reopen = %v", err)
				}
				mustClose(t, l2)
				mustVerify(t, dir, vk)
				var seen []uint64
				var n99 bool
				Query(ctx, dir, Filter{Types: []string{"shard_sealed"}}, ReadOptions{}, func(r *Record) error {
					seen = append(seen, r.Seq)
					if f, _ := r.Field("n"); f.Int64() == 99 {
						n99 = true
					}
					return nil
				})
				if len(seen) != len(durable) || n99 {
					t.Errorf("records after reopen = %v (failed record present: %v), want %v", seen, n99, durable)
				}
			})
		}
	}
}

// TestFaultLosesQueuedCounted: queued (non-critical) events that the
// failing writer could not record are counted as lost, never silently
// dropped, and a fail-open log lets the caller go on.
func TestFaultLosesQueuedCounted(t *testing.T) {
	ffs := &faultFS{}
	_, _, l := newLog(t, Options{FS: ffs, Policy: FailOpen, FsyncInterval: time.Hour})
	ctx := context.Background()
	ffs.arm(syscall.EIO, nil)
	const n = 20
	for i := range n {
		if _, err := l.Append(ctx, testEvent(i)); err != nil && !errors.Is(err, ErrNotRecorded) {
			t.Fatalf("fail-open Append = %v, want nil or ErrNotRecorded", err)
		}
	}
	e := testEvent(n)
	e.Severity = SeverityCritical
	if _, err := l.Append(ctx, e); !errors.Is(err, ErrNotRecorded) {
		t.Fatalf("critical Append on a failing fail-open log = %v, want ErrNotRecorded", err)
	}
	// The latched log refuses the critical event at once, while the
	// writer may still be draining the queue: the counts are final once
	// Close has returned.
	if err := l.Close(ctx); !errors.Is(err, ErrFailed) {
		t.Errorf("Close = %v, want ErrFailed", err)
	}
	s := l.Stats()
	if s.Durable != 0 || s.Lost+s.Failed != n+1 || s.Lost == 0 || s.Queue != 0 {
		t.Errorf("Stats = %+v: want all %d events counted as lost (queued, then failed) or failed", s, n+1)
	}
}

// TestFaultMetadata: a failed fsync of the manifest (at the checkpoint of
// Close) or of the state (at an epoch change) latches the log too, and the
// log reopens and verifies.
func TestFaultMetadata(t *testing.T) {
	for _, target := range []string{manifestName + ".tmp", stateName + ".tmp"} {
		t.Run(target, func(t *testing.T) {
			clk := newFakeClock()
			ffs := &faultFS{suffix: target}
			o := Options{FS: ffs, Clock: clk.Now}
			dir, vk, l := newLog(t, o)
			ctx := context.Background()
			for i := range 3 {
				e := testEvent(i)
				e.Severity = SeverityCritical
				mustAppend(t, l, e)
			}
			ffs.arm(nil, syscall.EIO)
			clk.Advance(2 * time.Hour) // the next batch changes epoch
			e := testEvent(3)
			e.Severity = SeverityCritical
			_, appendErr := l.Append(ctx, e)
			closeErr := l.Close(ctx)
			if !errors.Is(appendErr, ErrFailed) && !errors.Is(closeErr, ErrFailed) {
				t.Fatalf("Append = %v, Close = %v, want ErrFailed from one", appendErr, closeErr)
			}
			l2, err := Open(dir, Options{})
			if err != nil {
				t.Fatalf("reopen = %v", err)
			}
			mustClose(t, l2)
			if rep := mustVerify(t, dir, vk); rep.Records < 3 {
				t.Errorf("Verify = %+v, want the 3 durable records", rep)
			}
		})
	}
}

// TestFaultTreeWriter: a failed write or fsync of the tree file or of a
// checkpoint file latches the log like a failed segment write; reopened on a
// sound disk, the log rebuilds its tree, signs its records and verifies.
func TestFaultTreeWriter(t *testing.T) {
	for _, tt := range []struct {
		name, suffix      string
		writeErr, syncErr error
	}{
		{"tree write", treeName, syscall.ENOSPC, nil},
		{"tree fsync", treeName, nil, syscall.EIO},
		{"checkpoint write", checkpointsSuffix, syscall.ENOSPC, nil},
		{"checkpoint fsync", checkpointsSuffix, nil, syscall.EIO},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ffs := &faultFS{suffix: tt.suffix}
			dir, vk, l := newLog(t, Options{FS: ffs})
			mustAppend(t, l, testEvent(1))
			ffs.arm(tt.writeErr, tt.syncErr)
			mustAppend(t, l, Event{Type: "durable", Severity: SeverityCritical})
			err := l.Close(context.Background())
			if !errors.Is(err, ErrFailed) || !errors.Is(err, cmpErr(tt.writeErr, tt.syncErr)) {
				t.Fatalf("Close = %v, want ErrFailed wrapping the fault", err)
			}
			l, err = Open(dir, Options{})
			if err != nil {
				t.Fatalf("Open after the fault = %v", err)
			}
			mustClose(t, l)
			rep := mustVerify(t, dir, vk)
			if rep.LastSeq < 2 {
				t.Errorf("Verify = %+v, want the durable record kept", rep)
			}
		})
	}
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
