package audit

import (
	"context"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newLog initializes and opens a log in a temporary directory.
func newLog(t testing.TB, o Options) (string, *VerificationKey, *Log) {
	t.Helper()
	dir := t.TempDir() + "/log"
	vk, err := Init(dir, o)
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	l, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return dir, vk, l
}

func testEvent(i int) Event {
	return Event{Type: "shard_sealed", Severity: SeverityInfo, CorrelationID: "req-1", Fields: []Field{
		String("shard_id", "s1"), Int("n", int64(i)), Bool("ok", true), Bytes("size", 1<<20),
		Digest("root", [32]byte{1, 2, 3}),
	}}
}

func mustAppend(t testing.TB, l *Log, e Event) Receipt {
	t.Helper()
	r, err := l.Append(context.Background(), e)
	if err != nil {
		t.Fatalf("Append(%s) = %v", e.Type, err)
	}
	return r
}

func mustClose(t testing.TB, l *Log) {
	t.Helper()
	if err := l.Close(context.Background()); err != nil {
		t.Fatalf("Close = %v", err)
	}
}

// mustVerify verifies dir with the verification key and, when the log has
// a checkpoint public key, with that too.
func mustVerify(t testing.TB, dir string, vk *VerificationKey) *VerifyReport {
	t.Helper()
	rep, err := Verify(context.Background(), dir, VerifyOptions{Key: vk})
	if err != nil {
		t.Fatalf("Verify = %v", err)
	}
	if pk, err := ReadPublicKey(dir, nil); err == nil {
		prep, err := Verify(context.Background(), dir, VerifyOptions{PublicKey: pk})
		if err != nil {
			t.Fatalf("Verify(public key) = %v", err)
		}
		if prep.Records != rep.Records || !prep.CheckpointsChecked {
			t.Fatalf("Verify(public key) = %+v, Verify(verification key) = %+v", prep, rep)
		}
	}
	return rep
}
