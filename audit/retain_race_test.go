package audit

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRetentionDuringAppends prunes (by option at every rotation, and by
// Prune calls) while eight goroutines append: records written after an
// audit_pruned record in the same batch must not go back in time, and the
// log must verify.
func TestRetentionDuringAppends(t *testing.T) {
	dir, vk, l := newLog(t, Options{Retain: 5 * time.Millisecond, SegmentMaxBytes: 2000, QueueSize: 256})
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 150 {
				e := testEvent(g*1000 + i)
				if i%10 == 0 {
					e.Severity = SeverityCritical
				}
				if _, err := l.Append(ctx, e); err != nil {
					t.Errorf("Append = %v", err)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 20 {
			if _, err := l.Prune(ctx, time.Now().Add(-time.Millisecond)); err != nil {
				t.Errorf("Prune = %v", err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	wg.Wait()
	st := l.Stats()
	mustClose(t, l)
	if st.RetentionFailures != 0 {
		t.Errorf("Stats.RetentionFailures = %d", st.RetentionFailures)
	}
	rep := mustVerify(t, dir, vk)
	if rep.Pruned == 0 {
		t.Errorf("Verify = %+v: nothing was pruned, so the test proved nothing", rep)
	}
}

func TestIdentityOptionsValidated(t *testing.T) {
	for _, o := range []Options{
		{Service: "svc\xff"},
		{Node: strings.Repeat("n", maxIdentityBytes+1)},
		{Worker: "w\xc3"},
	} {
		dir := filepath.Join(t.TempDir(), "log")
		if _, err := Init(dir, o); err == nil {
			t.Errorf("Init with %+v succeeded", o)
		}
		if _, err := os.Stat(filepath.Join(dir, stateName)); err == nil {
			t.Errorf("Init with bad options %+v wrote a log", o)
		}
	}
	dir, _, l := newLog(t, Options{})
	mustClose(t, l)
	if _, err := Open(dir, Options{Service: "svc\xff"}); err == nil {
		t.Error("Open with an invalid Service succeeded")
	}
}

func TestInitRefusesOpenDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "log")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	_, err := Init(dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "0700") {
		t.Fatalf("Init on a 0755 directory = %v, want a refusal naming 0700", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Init(dir, Options{}); err != nil {
		t.Fatalf("Init on an empty 0700 directory = %v", err)
	}
}

// TestOpenChecksClosedSegments: Open refuses a log whose newest closed
// segment changed (same size), whose checksum file was edited, or that
// holds a segment file the manifest does not list; it accepts the file a
// pruning cut short left behind.
func TestOpenChecksClosedSegments(t *testing.T) {
	build := func(t *testing.T) (string, *manifest) {
		dir, _, l := newLog(t, Options{SegmentMaxBytes: 1500})
		for i := range 20 {
			mustAppend(t, l, testEvent(i))
		}
		mustClose(t, l)
		m := loadTestManifest(t, dir)
		if len(m.Segments) < 3 || !m.Segments[len(m.Segments)-2].Closed {
			t.Fatalf("want several closed segments, manifest has %d", len(m.Segments))
		}
		return dir, m
	}
	wantCorrupt := func(t *testing.T, dir string, p Problem) {
		t.Helper()
		l, err := Open(dir, Options{})
		if err == nil {
			l.Close(context.Background())
			t.Fatalf("Open accepted the damaged log, want %v", p)
		}
		var ce *CorruptionError
		if !errors.As(err, &ce) || ce.Problem != p {
			t.Fatalf("Open = %v, want a CorruptionError %v", err, p)
		}
	}
	t.Run("newest closed segment modified", func(t *testing.T) {
		dir, m := build(t)
		path := filepath.Join(dir, m.Segments[len(m.Segments)-2].Name)
		b, _ := os.ReadFile(path)
		b[len(b)/2] ^= 0x01
		os.WriteFile(path, b, 0o600)
		wantCorrupt(t, dir, Modified)
	})
	t.Run("checksum file edited", func(t *testing.T) {
		dir, m := build(t)
		path := filepath.Join(dir, m.Segments[0].Name+checksumSuffix)
		b, _ := os.ReadFile(path)
		b[0] = map[bool]byte{true: 'b', false: 'a'}[b[0] == 'a']
		os.WriteFile(path, b, 0o600)
		wantCorrupt(t, dir, ChecksumMismatch)
	})
	t.Run("unlisted segment file", func(t *testing.T) {
		dir, m := build(t)
		b, _ := os.ReadFile(filepath.Join(dir, m.Segments[0].Name))
		os.WriteFile(filepath.Join(dir, "audit-20990101-00000000000000009999.ndjson"), b, 0o600)
		wantCorrupt(t, dir, Inserted)
	})
	t.Run("leftover of a pruning", func(t *testing.T) {
		dir, m := build(t)
		old := m.Segments[0]
		b, _ := os.ReadFile(filepath.Join(dir, old.Name))
		l, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Prune(context.Background(), time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		mustClose(t, l)
		if loadTestManifest(t, dir).Pruned == nil {
			t.Fatal("nothing was pruned")
		}
		os.WriteFile(filepath.Join(dir, old.Name), b, 0o600) // as if the delete never happened
		l, err = Open(dir, Options{})
		if err != nil {
			t.Fatalf("Open after a cut-short pruning = %v", err)
		}
		mustClose(t, l)
	})
}
