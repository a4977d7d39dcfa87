package vram

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/narration/narrationtest"
)

// runScrub starts m.Scrub in the background and returns a function that
// stops it and returns its error.
func runScrub(t *testing.T, m *Manager, opts ScrubOptions) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(withCorrelation("scrubber"))
	done := make(chan error, 1)
	go func() { done <- m.Scrub(ctx, opts) }()
	stopped := false
	var err error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Scrub did not return after its context was cancelled")
			}
		}
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestScrubCleanPass(t *testing.T) {
	o := newObserved(t, audit.FailClosed, 4<<20)
	sealBytes(t, o.m, "a", 0, randomBytes(21, 30*testChunk+5))
	sealBytes(t, o.m, "b", 0, randomBytes(22, 7*testChunk))
	stop := runScrub(t, o.m, ScrubOptions{BytesPerSecond: 1 << 30, BatchBytes: 4 * testChunk, Interval: time.Hour})
	eventually(t, "one scrub pass", func() bool { return o.m.ScrubStats().Passes >= 1 })
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Scrub returned %v, want context.Canceled", err)
	}
	st := o.m.ScrubStats()
	if st.Passes != 1 || st.Chunks != 38 || st.Bytes != 37*testChunk+5 || st.Failures != 0 || st.LastPass.IsZero() {
		t.Errorf("ScrubStats = %+v, want 1 pass over 38 chunks, %d bytes", st, 37*testChunk+5)
	}
	for _, id := range []string{"a", "b"} {
		var n int
		for _, r := range o.records(t) {
			if r.Type == EventVerified && fieldText(r, "shard_id") == id && fieldText(r, "mode") == "scrub" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("shard %s: %d seal_verified records with mode scrub, want 1", id, n)
		}
	}
	o.rec.ByCorrelationID("scrubber").RequireOne(narrationtest.Match{Action: ActionScrub})
	if s, _ := o.m.State(); s != Running {
		t.Errorf("state after a clean scrub = %v", s)
	}
}

func TestScrubFindsUnsampledCorruption(t *testing.T) {
	o := newObserved(t, audit.FailClosed, 4<<20)
	sealBytes(t, o.m, "a", 0, randomBytes(23, 10*testChunk))
	sealBytes(t, o.m, "b", 0, randomBytes(24, 64*testChunk))
	buf, _, _ := o.m.Buffer("b")
	if err := o.devs[0].FlipBits(buf, 33*testChunk+100, 0x10); err != nil {
		t.Fatal(err)
	}
	opts := ScrubOptions{BytesPerSecond: 1 << 30, BatchBytes: 8 * testChunk, Interval: 5 * time.Millisecond}
	stop := runScrub(t, o.m, opts)
	eventually(t, "the scrub to stop the worker", func() bool { s, _ := o.m.State(); return s == Stopped })
	// The stop comes before the full pass that locates the change and
	// before the record: cancelling the scrub now could cut that pass
	// short, so wait for the record first.
	eventually(t, "the scrub to record the failure", func() bool {
		for _, r := range o.records(t) {
			if r.Type == EventVerificationFailed {
				return true
			}
		}
		return false
	})
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Scrub = %v", err)
	}
	r := o.requireRecord(t, EventVerificationFailed, "b", audit.SeverityCritical, "scrubber")
	if fieldText(r, "mode") != "scrub" || fieldText(r, "failed_chunks") != "33" || fieldText(r, "actual_root") == "<missing>" {
		t.Errorf("seal_verification_failed fields = %v", r.Fields)
	}
	if _, err := o.m.Verify(context.Background(), "a", Sampled(1)); !errors.Is(err, ErrStopped) {
		t.Errorf("execute gate after a scrub failure = %v, want ErrStopped", err)
	}
	if st := o.m.ScrubStats(); st.Failures != 1 || st.Passes != 0 {
		t.Errorf("ScrubStats = %+v, want 1 failure and no completed pass", st)
	}

	// Repaired and reset, the scrub goes on and completes a pass.
	if err := o.devs[0].FlipBits(buf, 33*testChunk+100, 0x10); err != nil {
		t.Fatal(err)
	}
	if err := o.m.Reset(context.Background(), "chunk 33 restored from the registry"); err != nil {
		t.Fatal(err)
	}
	runScrub(t, o.m, opts)
	eventually(t, "a pass after the reset", func() bool { return o.m.ScrubStats().Passes >= 1 })
}

func TestScrubPacing(t *testing.T) {
	m, _ := newTestManager(t, 1, 4<<20)
	sealBytes(t, m, "a", 0, randomBytes(25, 512*testChunk)) // 2 MiB
	const rate = 4 << 20                                    // a pass takes about 0.5 s
	start := time.Now()
	runScrub(t, m, ScrubOptions{BytesPerSecond: rate, BatchBytes: 64 * testChunk, Interval: time.Hour})
	eventually(t, "one paced pass", func() bool { return m.ScrubStats().Passes >= 1 })
	// Eight batches of 256 KiB: the first goes at once, each later one
	// waits 62.5 ms.
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Errorf("a 2 MiB pass at 4 MiB/s took %v, want at least 400 ms", took)
	}
}

func TestScrubDoesNotHoldRelease(t *testing.T) {
	m, _ := newTestManager(t, 1, 4<<20)
	sealBytes(t, m, "a", 0, randomBytes(26, 512*testChunk))
	runScrub(t, m, ScrubOptions{BytesPerSecond: 1 << 20, BatchBytes: 16 * testChunk, Interval: time.Hour})
	eventually(t, "the scrub to start", func() bool { return m.ScrubStats().Chunks > 0 })
	start := time.Now()
	if err := m.Release(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	// A full pass at 1 MiB/s takes 2 s; release waits for one batch at most.
	if took := time.Since(start); took > time.Second {
		t.Errorf("Release during a scrub took %v", took)
	}
	eventually(t, "the scrub to finish its pass without the shard", func() bool { return m.ScrubStats().Passes >= 1 })
	if s, _ := m.State(); s != Running {
		t.Errorf("releasing a shard mid-scrub stopped the worker: %v", s)
	}
}

func TestScrubOptionsAndClose(t *testing.T) {
	m, _ := newTestManager(t, 1, 1<<20)
	if err := m.Scrub(context.Background(), ScrubOptions{}); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("Scrub without a rate = %v, want ErrInvalidInput", err)
	}
	sealBytes(t, m, "a", 0, randomBytes(27, 3*testChunk))
	done := make(chan error, 1)
	// After its pass the scrub sleeps for an hour: Close must wake it.
	go func() {
		done <- m.Scrub(context.Background(), ScrubOptions{BytesPerSecond: 1 << 30, Interval: time.Hour})
	}()
	eventually(t, "a pass", func() bool { return m.ScrubStats().Passes >= 1 })
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Scrub after Close = %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Scrub kept sleeping after Close")
	}
}
