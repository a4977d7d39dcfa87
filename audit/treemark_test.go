package audit

import (
	"context"
	"testing"
	"time"
)

// TestCheckpointBehindWrittenRecords appends a steady stream of records
// that are written before they are durable, with short checkpoint and
// fsync intervals: a checkpoint then covers the durable records while the
// tree has already taken in later written ones, and must still be signed.
func TestCheckpointBehindWrittenRecords(t *testing.T) {
	dir, vk, l := newLog(t, Options{CheckpointInterval: time.Millisecond, FsyncInterval: 2 * time.Millisecond})
	deadline := time.Now().Add(400 * time.Millisecond)
	n := 0
	for time.Now().Before(deadline) {
		if _, err := l.Append(context.Background(), testEvent(n)); err != nil {
			t.Fatalf("Append %d = %v", n, err)
		}
		n++
		if n%50 == 0 {
			time.Sleep(100 * time.Microsecond)
		}
	}
	if h := l.Health(); h.Err != nil {
		t.Fatalf("log failed after %d records: %v", n, h.Err)
	}
	mustClose(t, l)
	if rep := mustVerify(t, dir, vk); rep.Records < uint64(n) {
		t.Errorf("verified %d records, appended %d", rep.Records, n)
	}
}
