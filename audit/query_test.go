package audit

import (
	"context"
	"errors"
	"io/fs"
	"math"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestQuery(t *testing.T) {
	clk := newFakeClock()
	dir, _, l := newLog(t, Options{Clock: clk.Now, SegmentMaxBytes: 2000})
	ctx := context.Background()
	for i := range 20 {
		e := testEvent(i)
		if i%5 == 0 {
			e.Type, e.Severity, e.CorrelationID = "shard_verify_failed", SeverityHigh, "req-x"
			e.Fields[0] = String("shard_id", "s2")
		}
		mustAppend(t, l, e)
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Minute)
	}
	mustClose(t, l)
	var times []time.Time
	Query(ctx, dir, Filter{}, ReadOptions{}, func(r *Record) error { times = append(times, r.Time); return nil })
	if len(times) != 20 {
		t.Fatalf("Query = %d records, want 20", len(times))
	}
	count := func(f Filter) int {
		n := 0
		if err := Query(ctx, dir, f, ReadOptions{}, func(*Record) error { n++; return nil }); err != nil {
			t.Fatalf("Query(%+v) = %v", f, err)
		}
		return n
	}
	for _, tt := range []struct {
		name string
		f    Filter
		want int
	}{
		{"all", Filter{}, 20},
		{"type", Filter{Types: []string{"shard_verify_failed"}}, 4},
		{"severity", Filter{Severities: []Severity{SeverityHigh}}, 4},
		{"min severity", Filter{MinSeverity: SeverityMedium}, 4},
		{"cid", Filter{CorrelationID: "req-x"}, 4},
		{"field", Filter{Fields: []FieldMatch{{"shard_id", "s2"}}}, 4},
		{"field int", Filter{Fields: []FieldMatch{{"n", "7"}}}, 1},
		{"since", Filter{Since: times[10]}, 10},
		{"until", Filter{Until: times[5]}, 5},
		{"range", Filter{Since: times[3], Until: times[7]}, 4},
		{"none", Filter{Types: []string{"nope"}}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := count(tt.f); got != tt.want {
				t.Errorf("Query(%+v) = %d records, want %d", tt.f, got, tt.want)
			}
		})
	}
}

func TestTailEscapes(t *testing.T) {
	dir, _, l := newLog(t, Options{})
	mustAppend(t, l, Event{Type: "evil", Severity: SeverityHigh, CorrelationID: "c\x1b]0;x\x07", Fields: []Field{
		String("ansi", "\x1b[31mred"), String("bidi", "abc\u202edcba\u2066"), String("nl", "a\nb\r"),
		String("del", "x\x7fy\u0085"), Bytes("size", 3<<30),
	}})
	mustClose(t, l)
	var out []string
	if err := Tail(context.Background(), dir, 10, false, ReadOptions{}, func(r *Record) error {
		out = append(out, string(r.AppendText(nil)))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 {
		t.Fatalf("Tail = %d lines, want 1", len(out))
	}
	s := out[0]
	for _, bad := range []string{"\x1b", "\u202e", "\u2066", "\n", "\r", "\x7f", "\x07", "\u0085"} {
		if strings.Contains(s, bad) {
			t.Errorf("rendering %q contains raw %q", s, bad)
		}
	}
	for _, want := range []string{`\x1b[31mred`, `\u202e`, "size=3.0GiB"} {
		if !strings.Contains(s, want) {
			t.Errorf("rendering %q lacks %q", s, want)
		}
	}
}

func TestTailFollow(t *testing.T) {
	dir, _, l := newLog(t, Options{SegmentMaxBytes: 1500, FsyncInterval: -1})
	for i := range 3 {
		mustAppend(t, l, testEvent(i))
	}
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan int64, 100)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := Tail(ctx, dir, 2, true, ReadOptions{Poll: 2 * time.Millisecond}, func(r *Record) error {
			f, _ := r.Field("n")
			got <- f.Int64()
			return nil
		})
		if err != nil {
			t.Errorf("Tail = %v", err)
		}
	}()
	var seen []int64
	deadline := time.After(10 * time.Second)
	for len(seen) < 11 {
		if len(seen) == 2 { // the last two are shown; now append more
			for i := 3; i < 12; i++ { // crosses several rotations
				mustAppend(t, l, testEvent(i))
			}
			l.Flush(context.Background())
		}
		select {
		case n := <-got:
			seen = append(seen, n)
		case <-deadline:
			t.Fatalf("Tail -f saw %v, want 1..11", seen)
		}
	}
	cancel()
	wg.Wait()
	mustClose(t, l)
	for i, n := range seen {
		if n != int64(i+1) {
			t.Fatalf("Tail -f saw %v, want 1..11 in order", seen)
		}
	}
}

func TestPrune(t *testing.T) {
	clk := newFakeClock()
	o := Options{Clock: clk.Now, SegmentMaxBytes: 1500}
	dir, vk, l := newLog(t, o)
	for i := range 12 {
		mustAppend(t, l, testEvent(i))
		l.Flush(context.Background())
		clk.Advance(24 * time.Hour)
	}
	rep, err := l.Prune(context.Background(), clk.Now().Add(-5*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// The audit_pruned record is signed before Prune returns.
	if ck, err := LatestCheckpoint(dir, ReadOptions{}); err != nil || ck.Size != l.Stats().LastSeq {
		t.Errorf("LatestCheckpoint after Prune = %v; want the audit_pruned record (seq %d) signed", err, l.Stats().LastSeq)
		if ck != nil {
			t.Errorf("the latest checkpoint has tree size %d", ck.Size)
		}
	}
	mustClose(t, l)
	if rep.Segments == 0 || rep.Records == 0 {
		t.Fatalf("Prune = %+v, want segments deleted", rep)
	}
	vr := mustVerify(t, dir, vk)
	if vr.Pruned != rep.Segments || vr.FirstSeq != rep.ThroughSeq+1 {
		t.Errorf("Verify after prune = %+v, prune %+v", vr, rep)
	}
	var n int
	Query(context.Background(), dir, Filter{Types: []string{"audit_pruned"}}, ReadOptions{}, func(*Record) error { n++; return nil })
	if n != 1 {
		t.Errorf("audit_pruned records = %d, want 1", n)
	}
	// Retention by option at Open; then a second Open prunes nothing new.
	o.Retain = 2 * 24 * time.Hour
	l, err = Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	mustClose(t, l)
	mustVerify(t, dir, vk)
	// Marking more segments pruned in the manifest, without a record, is caught.
	m := loadTestManifest(t, dir)
	m.Pruned = append(m.Pruned, m.Segments[0])
	m.Segments = m.Segments[1:]
	if err := writeFileAtomic(OSFS{}, dir, manifestName, m.encode()); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, dir, vk, ManifestMismatch)
}

// blockFS makes the first segment fsync after arm wait until released. It
// blocks on a send, not a select with a default: a writer that reaches fsync
// before the test waits for it must still stop there.
type blockFS struct {
	OSFS
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

// waitEntered waits until the writer is blocked inside the armed fsync.
func (f *blockFS) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-f.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the writer never reached fsync")
	}
}

func (f *blockFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	file, err := f.OSFS.OpenFile(name, flag, perm)
	if err != nil || !strings.HasSuffix(name, segmentSuffix) {
		return file, err
	}
	return &blockingFile{File: file, b: f}, nil
}

type blockingFile struct {
	File
	b *blockFS
}

func (f *blockingFile) Sync() error {
	if f.b.armed.CompareAndSwap(true, false) {
		f.b.entered <- struct{}{}
		<-f.b.release
	}
	return f.File.Sync()
}

// spyFS reports segment fsyncs on a channel.
type spyFS struct {
	OSFS
	synced chan struct{}
}

func (f *spyFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	file, err := f.OSFS.OpenFile(name, flag, perm)
	if err != nil || !strings.HasSuffix(name, segmentSuffix) {
		return file, err
	}
	return &spyFile{File: file, s: f}, nil
}

type spyFile struct {
	File
	s *spyFS
}

func (f *spyFile) Sync() error {
	err := f.File.Sync()
	select {
	case f.s.synced <- struct{}{}:
	default:
	}
	return err
}

func TestBackpressure(t *testing.T) {
	bfs := &blockFS{entered: make(chan struct{}), release: make(chan struct{})}
	o := Options{QueueSize: 1, FS: bfs}
	_, _, l := newLog(t, o)
	bfs.armed.Store(true)
	ctx := context.Background()
	done := make(chan error, 1)
	go func() {
		_, err := l.Append(ctx, Event{Type: "first", Severity: SeverityCritical})
		done <- err
	}()
	bfs.waitEntered(t) // the writer is inside fsync
	if _, err := l.Append(ctx, testEvent(1)); err != nil {
		t.Fatalf("Append into the free slot = %v", err)
	}
	tctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	_, err := l.Append(tctx, testEvent(2))
	if !errors.Is(err, ErrBackpressure) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Append into a full queue = %v, want ErrBackpressure", err)
	}
	if s := l.Stats(); s.Dropped != 1 {
		t.Errorf("Stats.Dropped = %d, want 1", s.Dropped)
	}
	close(bfs.release)
	if err := <-done; err != nil {
		t.Errorf("critical Append = %v", err)
	}
	mustClose(t, l)
}

// TestCloseTimeoutKeepsLock: a Close whose context ends while the writer
// is still busy returns at once, but the directory stays locked until the
// writer has finished, so no second writer can open it meanwhile.
func TestCloseTimeoutKeepsLock(t *testing.T) {
	bfs := &blockFS{entered: make(chan struct{}), release: make(chan struct{})}
	dir, _, l := newLog(t, Options{FS: bfs})
	bfs.armed.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := l.Append(context.Background(), Event{Type: "first", Severity: SeverityCritical})
		done <- err
	}()
	bfs.waitEntered(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := l.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with a busy writer = %v, want DeadlineExceeded", err)
	}
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("Open while the first writer drains = %v, want ErrLocked", err)
	}
	close(bfs.release)
	if err := <-done; err != nil {
		t.Errorf("critical Append = %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		l2, err := Open(dir, Options{})
		if err == nil {
			mustClose(t, l2)
			return
		}
		if !errors.Is(err, ErrLocked) || time.Now().After(deadline) {
			t.Fatalf("Open after the writer finished = %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestIdleFsync(t *testing.T) {
	spy := &spyFS{synced: make(chan struct{}, 100)}
	_, _, l := newLog(t, Options{FS: spy, FsyncInterval: 10 * time.Millisecond})
	defer mustClose(t, l)
	mustAppend(t, l, testEvent(1)) // queued, not durable
	select {
	case <-spy.synced:
	case <-time.After(10 * time.Second):
		t.Fatal("idle log never fsynced its queued record")
	}
	// The spy reports the fsync just before the writer counts it.
	deadline := time.Now().Add(10 * time.Second)
	for l.Stats().Durable != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("Stats = %+v, want 1 durable", l.Stats())
		}
		runtime.Gosched()
	}
}

func TestConcurrentAppenders(t *testing.T) {
	dir, vk, l := newLog(t, Options{SegmentMaxBytes: 64 << 10, QueueSize: 64})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				e := testEvent(g*1000 + i)
				if i%10 == 0 {
					e.Severity = SeverityCritical
				}
				mustAppend(t, l, e)
			}
		}()
	}
	go func() { // Stats and Health race with the writer
		for range 100 {
			l.Stats()
			l.Health()
		}
	}()
	wg.Wait()
	mustClose(t, l)
	if rep := mustVerify(t, dir, vk); rep.Records != 2400 {
		t.Errorf("Verify = %+v, want 2400 records", rep)
	}
}

// TestVerifyWhileWriting runs Verify (with both keys, so the signed
// checkpoints too) against a log that is being appended to and rotated: it
// must never report a problem.
func TestVerifyWhileWriting(t *testing.T) {
	dir, vk, l := newLog(t, Options{SegmentMaxBytes: 8 << 10, FsyncInterval: -1, CheckpointInterval: time.Millisecond})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 5000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			mustAppend(t, l, testEvent(i))
		}
	}()
	for range 15 {
		if _, err := Verify(context.Background(), dir, VerifyOptions{Key: vk, PublicKey: l.PublicKey()}); err != nil {
			t.Errorf("Verify while writing = %v", err)
			break
		}
	}
	close(stop)
	<-done
	mustClose(t, l)
	mustVerify(t, dir, vk)
}

func TestFieldAppendHuman(t *testing.T) {
	var dig [32]byte
	for i := range dig {
		dig[i] = byte(i)
	}
	tests := []struct {
		f    Field
		want string
	}{
		{Bytes("size", 3<<29), "1.5GiB"},
		{Bytes("size", 512), "512B"},
		{Int("duration_us", 0), "0s"},
		{Int("duration_us", 1), "1µs"},
		{Int("duration_us", 850), "850µs"},
		{Int("held_us", 1_520_000), "1.52s"},
		{Int("held_us", 184_000_000), "3m04s"},
		{Int("duration_us", math.MaxInt64), "9223372036854775807"}, // beyond a time.Duration
		{Int("chunks", 850), "850"},
		{Int("status", -1), "-1"},
		{Bool("sampled", true), "true"},
		{String("note", "two words\tx"), `"two words\tx"`},
		{String("mode", "full"), "full"},
		{Digest("digest", dig), "sha256:0001020304050607..."},
	}
	for _, tt := range tests {
		if got := string(tt.f.AppendHuman(nil)); got != tt.want {
			t.Errorf("%s.AppendHuman() = %q, want %q", tt.f.Key, got, tt.want)
		}
	}
}
