package audit

import (
	"context"
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
