package audit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// crashCopy copies a log directory as a crash would leave it: every file
// as it is, but each segment cut to its first keep records (the ones that
// were fsynced).
func crashCopy(t *testing.T, src string, keep uint64) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "crash")
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(e.Name(), ".ndjson") {
			cut := 0
			for n := uint64(0); n < keep; n++ {
				i := bytes.IndexByte(b[cut:], '\n')
				if i < 0 {
					break
				}
				cut += i + 1
			}
			b = b[:cut]
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// A key change on the epoch interval makes the epoch's records durable
// before it anchors the next epoch: a crash that loses what was never
// fsynced leaves a log that opens, appends and verifies.
func TestEpochAnchoredAfterItsRecordsAreDurable(t *testing.T) {
	clk := newFakeClock()
	o := Options{Clock: clk.Now, FsyncInterval: time.Hour, CheckpointInterval: time.Hour, EpochInterval: time.Minute}
	dir, vk, l := newLog(t, o)
	mustAppend(t, l, Event{Type: "x", Severity: SeverityCritical})
	for i := range 3 {
		mustAppend(t, l, testEvent(i)) // written, not fsynced
	}
	waitWritten(t, l, 4)
	deadline := time.Now().Add(5 * time.Second)
	ep := l.Stats().Epoch
	clk.Advance(2 * time.Minute)
	mustAppend(t, l, testEvent(9)) // moves to the next epoch first
	for l.Stats().Epoch == ep && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := l.DurableSeq(); got < 4 {
		t.Fatalf("after the key change %d records are durable, want the 4 of the old epoch", got)
	}
	crash := crashCopy(t, dir, l.DurableSeq())
	mustClose(t, l)
	l2, err := Open(crash, o)
	if err != nil {
		t.Fatalf("Open after the crash = %v", err)
	}
	mustAppend(t, l2, Event{Type: "y", Severity: SeverityCritical})
	mustClose(t, l2)
	if _, err := Verify(context.Background(), crash, VerifyOptions{Key: vk}); err != nil {
		t.Errorf("Verify after the crash = %v", err)
	}
	if _, err := Open(crash, o); err != nil {
		t.Errorf("second Open after the crash = %v", err)
	}
}

// Whoever holds the current state cannot cut the records of earlier
// epochs: the anchors after the cut, sealed with keys that thief never
// had, name records the log no longer holds.
func TestCutBeforeTheCurrentEpochFails(t *testing.T) {
	clk := newFakeClock()
	o := Options{Clock: clk.Now}
	dir, vk, l := newLog(t, o)
	for range 3 {
		for range 3 {
			mustAppend(t, l, Event{Type: "x", Severity: SeverityCritical})
		}
		mustClose(t, l)
		var err error
		if l, err = Open(dir, o); err != nil { // a new segment and epoch
			t.Fatal(err)
		}
	}
	mustClose(t, l)
	mustVerify(t, dir, vk)
	man, err := loadManifest(OSFS{}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(man.Segments) < 3 {
		t.Fatalf("%d segments, want several epochs' worth", len(man.Segments))
	}
	for _, s := range man.Segments[1:] {
		for _, suf := range []string{"", checksumSuffix, checkpointsSuffix} {
			os.Remove(filepath.Join(dir, s.Name+suf))
		}
	}
	man.Segments = man.Segments[:1]
	if err := writeFileAtomic(OSFS{}, dir, manifestName, man.encode()); err != nil {
		t.Fatal(err)
	}
	pk, err := ReadPublicKey(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, opts := range map[string]VerifyOptions{"verification key": {Key: vk}, "public key": {PublicKey: pk}} {
		_, err := Verify(context.Background(), dir, opts)
		var ve *VerifyError
		if !errors.As(err, &ve) || ve.Problem != Truncated || ve.Location.File != epochsName {
			t.Errorf("Verify with the %s after a cut = %v, want the cut found at the epochs file", name, err)
		}
	}
}

// Open makes the previous run's records durable before it closes their
// segment: a sync that fails there fails Open, and nothing is signed.
func TestOpenSyncsTheRecoveredSegment(t *testing.T) {
	dir, _, l := newLog(t, Options{})
	mustAppend(t, l, Event{Type: "x", Severity: SeverityCritical})
	mustClose(t, l)
	ffs := &faultFS{}
	ffs.arm(nil, syscall.EIO)
	if _, err := Open(dir, Options{FS: ffs}); !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "sync") {
		t.Fatalf("Open with a failing sync of the recovered segment = %v, want the EIO", err)
	}
	ffs.arm(nil, nil)
	l2, err := Open(dir, Options{FS: ffs})
	if err != nil {
		t.Fatalf("Open once sync works = %v", err)
	}
	mustClose(t, l2)
}
