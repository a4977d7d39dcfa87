package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Policy says what happens to the caller's operation once the log has
// failed.
type Policy uint8

const (
	// FailClosed (the zero value) makes [Log.Append] return errors that do
	// not match [ErrNotRecorded]: the caller must refuse the operation.
	FailClosed Policy = iota
	// FailOpen makes every error of [Log.Append] match [ErrNotRecorded]:
	// the operation goes on unrecorded; the failure is counted in [Stats]
	// and shown by [Log.Health].
	FailOpen
)

// String returns "fail-open" or "fail-closed".
func (p Policy) String() string {
	if p == FailOpen {
		return "fail-open"
	}
	return "fail-closed"
}

// Options configure [Init] and [Open]. The zero value works; each field
// says what zero means.
type Options struct {
	// Service, Node and Worker are written into every record. Zero Service
	// means "audit"; zero Node means the host name; zero Worker means "".
	Service, Node, Worker string
	// Policy chooses fail-closed (zero) or fail-open.
	Policy Policy
	// MaxFieldBytes caps each string value and the correlation ID, in
	// bytes of UTF-8. Zero means 1024; at most 65536.
	MaxFieldBytes int
	// MaxFields caps the fields of an event. Zero means 32; at most 256.
	MaxFields int
	// SegmentMaxBytes rotates a segment before it would grow past this
	// size. Zero means 100 MiB. Segments also rotate at UTC midnight.
	SegmentMaxBytes int64
	// EpochInterval is the longest an epoch key lives; the key also evolves
	// at every rotation. Zero means one hour.
	EpochInterval time.Duration
	// QueueSize bounds the events queued for the writer. Zero means 8192.
	QueueSize int
	// FsyncInterval is the longest a queued (not durable) record waits
	// before an fsync, even when the log is idle. Zero means 100 ms; a
	// negative value fsyncs after every batch.
	FsyncInterval time.Duration
	// CheckpointInterval is how often, at most, the manifest records the
	// durable end of the live segment. Zero means one second.
	CheckpointInterval time.Duration
	// DurableFrom is the lowest severity whose Append waits until the
	// record is durable. Zero means SeverityCritical (critical events are
	// always durable before Append returns).
	DurableFrom Severity
	// Retain deletes closed segments whose newest record is older than
	// this, at Open and at each rotation (see [Log.Prune]). Zero keeps
	// everything.
	Retain time.Duration
	// Clock returns the time written into records. Nil means time.Now.
	Clock func() time.Time
	// FS is the file system. Nil means [OSFS].
	FS FS
	// Rand is the source of the initial key and log ID for [Init]. Nil
	// means crypto/rand.
	Rand io.Reader
}

func (o Options) resolved() Options {
	if o.Service == "" {
		o.Service = "audit"
	}
	if o.Node == "" {
		if h, err := os.Hostname(); err == nil && h != "" {
			o.Node = h
		} else {
			o.Node = "unknown"
		}
	}
	if o.MaxFieldBytes <= 0 {
		o.MaxFieldBytes = 1024
	}
	o.MaxFieldBytes = min(o.MaxFieldBytes, maxStringBytes)
	if o.MaxFields <= 0 {
		o.MaxFields = 32
	}
	o.MaxFields = min(o.MaxFields, maxFieldsParse)
	if o.SegmentMaxBytes <= 0 {
		o.SegmentMaxBytes = 100 << 20
	}
	if o.EpochInterval <= 0 {
		o.EpochInterval = time.Hour
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 8192
	}
	if o.FsyncInterval == 0 {
		o.FsyncInterval = 100 * time.Millisecond
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = time.Second
	}
	if !o.DurableFrom.valid() {
		o.DurableFrom = SeverityCritical
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.FS == nil {
		o.FS = OSFS{}
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	return o
}

const lockName = "lock"

// maxIdentityBytes bounds Service, Node and Worker.
const maxIdentityBytes = 256

// validate checks what resolved cannot default: the identity written into
// every record must be one the verifier accepts.
func (o Options) validate() error {
	for _, f := range []struct{ name, v string }{{"Service", o.Service}, {"Node", o.Node}, {"Worker", o.Worker}} {
		if !utf8.ValidString(f.v) {
			return fmt.Errorf("audit: %s %q is not valid UTF-8", f.name, f.v)
		}
		if len(f.v) > maxIdentityBytes {
			return fmt.Errorf("audit: %s is %d bytes, more than %d", f.name, len(f.v), maxIdentityBytes)
		}
	}
	return nil
}

// Init creates the log directory dir (mode 0700; it may exist if empty) in
// format version 2: a fresh random initial key k_0 and log ID, the anchor
// of epoch 1 sealed with k_0, the sealing state at epoch 1 (holding k_1,
// never k_0), the checkpoint key and an empty manifest. It returns the
// verification key k_0, which the caller must move off the machine: the
// log keeps only the evolving current key.
func Init(dir string, opts Options) (*VerificationKey, error) {
	o := opts.resolved()
	if err := o.validate(); err != nil {
		return nil, err
	}
	fsys := o.FS
	if err := fsys.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("audit: init: %w", err)
	}
	if fi, err := fsys.Stat(dir); err != nil {
		return nil, fmt.Errorf("audit: init: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("audit: init %s: not a directory", dir)
	} else if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("audit: init %s: directory mode is %#o; an audit log directory must be 0700 (chmod 700 it, or let init create it)", dir, fi.Mode().Perm())
	}
	ents, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("audit: init: %w", err)
	}
	if len(ents) > 0 {
		return nil, fmt.Errorf("audit: init %s: directory is not empty", dir)
	}
	lk, err := fsys.Lock(filepath.Join(dir, lockName))
	if err != nil {
		return nil, fmt.Errorf("audit: init: %w", err)
	}
	defer lk.Close()
	var id [8]byte
	vk := &VerificationKey{version: formatVersion}
	if _, err := io.ReadFull(o.Rand, id[:]); err != nil {
		return nil, fmt.Errorf("audit: init: random log id: %w", err)
	}
	if _, err := io.ReadFull(o.Rand, vk.key[:]); err != nil {
		return nil, fmt.Errorf("audit: init: random key: %w", err)
	}
	vk.logID = hexString(id[:])
	// k_0 anchors epoch 1 and is never written here: the writer starts
	// from k_1, so the machine never holds the verification key.
	now := o.Clock().UTC()
	a := newAnchor(&vk.key, vk.logID, 1, 1, now, genesis)
	if err := appendAnchor(fsys, dir, vk.logID, &a); err != nil {
		return nil, fmt.Errorf("audit: init: %w", err)
	}
	st := &state{ver: formatVersion, logID: vk.logID, epoch: 1, key: vk.key.next(), started: now}
	defer clear(st.key[:])
	if err := writeFileAtomic(fsys, dir, stateName, st.encode()); err != nil {
		return nil, err
	}
	if _, _, err := loadSigningKey(fsys, dir, vk.logID, o.Rand); err != nil {
		return nil, fmt.Errorf("audit: init: %w", err)
	}
	m := &manifest{Ver: formatVersion, LogID: vk.logID}
	if err := writeFileAtomic(fsys, dir, manifestName, m.encode()); err != nil {
		return nil, err
	}
	return vk, nil
}

// Receipt says what became of an appended event. Seq is set only when the
// Append waited for durability (0 for a record that was queued).
type Receipt struct {
	Seq     uint64
	Durable bool
}

// Stats are counters since Open. Every event handed to Append is counted
// exactly once in Queued, Dropped, Rejected or Failed; queued events later
// lost to a failure are counted in Lost.
type Stats struct {
	Queued   uint64 // accepted by Append
	Written  uint64 // records written to a segment
	Durable  uint64 // records covered by a successful fsync
	Syncs    uint64 // fsyncs of segments (one per group commit)
	Batches  uint64 // group commits
	Dropped  uint64 // refused: queue full until the context ended
	Rejected uint64 // refused: invalid event
	Failed   uint64 // refused: log failed or closed
	Lost     uint64 // queued, then not recorded because the log failed
	LastSeq  uint64 // last sequence number written
	Epoch    uint64 // current key epoch
	Queue    int    // events waiting now
	// RetentionFailures counts automatic prunings (Options.Retain) that
	// failed; the log went on recording.
	RetentionFailures uint64
}

// Health is the state of the log for health checks.
type Health struct {
	OK       bool
	State    string // "ok", "failed" or "closed"
	Err      error  // the failure that latched the log, if any
	Policy   Policy
	LastSync time.Time // last successful fsync of a segment
	Queue    int
	QueueCap int
	// RetentionErr is the last automatic pruning's failure, nil when it
	// succeeded or never ran. It does not make the log unhealthy.
	RetentionErr error
}

// Log is an open audit log: one writer per directory. Its methods are safe
// for concurrent use.
type Log struct {
	dir   string
	fs    FS
	o     Options
	fixed []byte // encoded service, node, worker
	lock  io.Closer
	ver   int // the log's format version, fixed at Open

	mu     sync.RWMutex // Append holds it shared while enqueuing
	closed bool

	q    chan *request
	stop chan struct{}
	done chan struct{}

	failed   atomic.Pointer[error]
	failedCh chan struct{} // closed when the log latches failed
	// retainErr is the last failure of automatic retention (nil once a
	// later pruning succeeds); retainFailures counts them.
	retainErr      atomic.Pointer[error]
	retainFailures atomic.Uint64

	queued, written, durable, syncs, batches  atomic.Uint64
	dropped, rejected, refused, lost, lastSeq atomic.Uint64
	epoch                                     atomic.Uint64
	lastSync                                  atomic.Int64
	durableSeq                                atomic.Uint64 // see [Log.DurableSeq]

	w  writer      // owned by the writer goroutine after Open
	tw *treeWriter // the tree and checkpoints, fed by the writer goroutine
}

type request struct {
	buf   []byte
	wait  bool
	flush bool
	seq   uint64
	op    func() error // run by the writer goroutine (Prune)
	done  chan error
}

var reqPool = sync.Pool{New: func() any {
	return &request{buf: make([]byte, 0, 512), done: make(chan error, 1)}
}}

// writer is the state of the writer goroutine.
type writer struct {
	st      *state
	seal    sealer
	man     *manifest
	seg     segmentInfo // live segment as written
	durSeg  segmentInfo // live segment as durable
	f       File
	size    int64
	synced  int64
	hash    hash.Hash
	lastSeq uint64
	lastMAC [32]byte
	lastT   time.Time
	day     time.Time // UTC day of the live segment

	unsynced     uint64 // records written, not yet fsynced
	lastSyncReal time.Time
	ckptDirty    bool
	lastCkpt     time.Time
	wbuf         []byte
	batch        []*request
	waiters      []*request

	// The signed checkpoints, written by the tree writer (Log.tw).
	durTree  uint64 // records durable at the last fsync of the segment
	sentSize uint64 // tree size of the last checkpoint asked for
}

// Open opens the log in dir for appending: it takes the directory lock,
// checks the manifest and the segments, recovers a torn tail of the live
// segment, closes that segment, evolves the key and starts a new segment.
// It returns a [*CorruptionError] when the log does not check out, and an
// error matching [ErrLocked] or [ErrNotInitialized].
func Open(dir string, opts Options) (*Log, error) {
	o := opts.resolved()
	if err := o.validate(); err != nil {
		return nil, err
	}
	l := &Log{dir: dir, fs: o.FS, o: o,
		q: make(chan *request, o.QueueSize), stop: make(chan struct{}), done: make(chan struct{}),
		failedCh: make(chan struct{})}
	l.fixed = appendFixed(nil, o.Service, o.Node, o.Worker)
	if _, err := l.fs.Stat(filepath.Join(dir, stateName)); errors.Is(err, os.ErrNotExist) {
		if _, err := l.fs.Stat(filepath.Join(dir, manifestName)); err == nil {
			return nil, corrupt(stateName, 0, 0, 0, Deleted, "%s is missing from %s, which holds a log (%s): restore it, or verify the log and start a new one",
				stateName, dir, manifestName)
		}
		return nil, fmt.Errorf("%w: %s has no %s", ErrNotInitialized, dir, stateName)
	}
	lk, err := l.fs.Lock(filepath.Join(dir, lockName))
	if err != nil {
		return nil, fmt.Errorf("audit: open: %w", err)
	}
	l.lock = lk
	cut, err := l.recover()
	var keyCreated bool
	if err == nil {
		keyCreated, err = l.openSigning(context.Background())
	}
	if err != nil {
		if l.w.f != nil {
			l.w.f.Close()
		}
		if l.tw != nil {
			l.tw.stop()
		}
		if l.w.st != nil {
			clear(l.w.st.key[:])
		}
		lk.Close()
		return nil, err
	}
	l.ver = l.w.man.Ver
	l.epoch.Store(l.w.st.epoch)
	l.lastSeq.Store(l.w.lastSeq)
	l.durableSeq.Store(l.w.lastSeq)
	l.lastSync.Store(time.Now().UnixNano())
	l.w.lastSyncReal, l.w.lastCkpt = time.Now(), time.Now()
	l.tw.start()
	go l.run()
	ctx := context.Background()
	if keyCreated {
		_, err := l.Append(ctx, Event{Type: "audit_checkpoint_key", Severity: SeverityHigh, Fields: []Field{
			String("public_key", l.tw.key.pub.String()), String("reason", "the log had no checkpoint key: created at open"),
		}})
		if err != nil {
			l.Close(ctx)
			return nil, fmt.Errorf("audit: open: record the new checkpoint key: %w", err)
		}
	}
	if cut != nil {
		_, err := l.Append(ctx, Event{Type: "audit_recovered", Severity: SeverityCritical, Fields: []Field{
			String("segment", cut.segment), Int("offset", cut.offset), Bytes("cut", cut.n),
			String("broken_file", cut.broken), Int("last_seq", int64(cut.lastSeq)),
		}})
		if err != nil {
			l.Close(ctx)
			return nil, fmt.Errorf("audit: open: record recovery: %w", err)
		}
	}
	if o.Retain > 0 {
		if _, err := l.Prune(ctx, o.Clock().Add(-o.Retain)); err != nil {
			l.Close(ctx)
			return nil, err
		}
	}
	return l, nil
}

func (l *Log) policyErr(err error) error {
	if l.o.Policy == FailOpen {
		return fmt.Errorf("%w: %w", ErrNotRecorded, err)
	}
	return err
}

// Append records e. A critical event (or one at or above
// [Options.DurableFrom], or one with [Event.Durable] set) returns once it is durable, with its sequence
// number; any other returns once queued. When the queue is full Append
// waits until ctx ends, then returns an error matching [ErrBackpressure].
// An invalid event matches [ErrInvalidEvent]; a failed log [ErrFailed]. Under
// [FailOpen] every error also matches [ErrNotRecorded].
func (l *Log) Append(ctx context.Context, e Event) (Receipt, error) {
	if err := e.validate(l.o.MaxFieldBytes, l.o.MaxFields); err != nil {
		l.rejected.Add(1)
		return Receipt{}, l.policyErr(err)
	}
	if e.Type == prunedType {
		// Verify counts audit_pruned records as the cover of pruned
		// segments: only the log writes them.
		l.rejected.Add(1)
		return Receipt{}, l.policyErr(fmt.Errorf("%w: event type %s is written only by the log", ErrInvalidEvent, prunedType))
	}
	if f := l.failed.Load(); f != nil {
		l.refused.Add(1)
		return Receipt{}, l.policyErr(*f)
	}
	r := reqPool.Get().(*request)
	r.buf = appendBody(r.buf[:0], &e, l.fixed)
	if len(r.buf) > maxLineBytes-400 {
		l.rejected.Add(1)
		return Receipt{}, l.policyErr(fmt.Errorf("%w: event %s encodes to %d bytes", ErrInvalidEvent, e.Type, len(r.buf)))
	}
	wait := e.Severity >= l.o.DurableFrom || e.Durable
	r.wait, r.flush, r.seq = wait, false, 0
	if err := l.enqueue(ctx, r); err != nil {
		return Receipt{}, l.policyErr(err)
	}
	l.queued.Add(1)
	if !wait {
		return Receipt{}, nil // r now belongs to the writer
	}
	select {
	case err := <-r.done:
		seq := r.seq
		reqPool.Put(r)
		if err != nil {
			return Receipt{}, l.policyErr(err)
		}
		return Receipt{Seq: seq, Durable: true}, nil
	case <-ctx.Done():
		return Receipt{}, l.policyErr(fmt.Errorf("audit: append %s: not confirmed durable (it may still be written): %w", e.Type, ctx.Err()))
	}
}

func (l *Log) enqueue(ctx context.Context, r *request) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		l.refused.Add(1)
		return ErrClosed
	}
	select {
	case l.q <- r:
		return nil
	default:
	}
	select {
	case l.q <- r:
		return nil
	case <-ctx.Done():
		l.dropped.Add(1)
		return fmt.Errorf("%w: %w", ErrBackpressure, ctx.Err())
	case <-l.failedCh:
		l.refused.Add(1)
		return *l.failed.Load()
	}
}

// Flush returns once every record queued before it is durable.
func (l *Log) Flush(ctx context.Context) error {
	return l.await(ctx, &request{flush: true, wait: true, done: make(chan error, 1)})
}

// Close writes and syncs what is queued, records the durable end in the
// manifest and releases the directory. It returns the latched failure, if
// any. If ctx ends first, Close returns its error; the writer finishes in
// the background and releases the directory when it is done.
func (l *Log) Close(ctx context.Context) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	select {
	case <-l.done:
	case <-ctx.Done():
		// The writer is still draining: the directory stays locked until
		// it has finished, so that no second writer can start meanwhile.
		go func() {
			<-l.done
			l.lock.Close()
		}()
		return ctx.Err()
	}
	l.lock.Close()
	if f := l.failed.Load(); f != nil {
		return *f
	}
	return nil
}

// FormatVersion returns the log's format version: that of new logs for a
// log made by [Init], an older one for a log that was made with it (a log
// keeps its version).
func (l *Log) FormatVersion() int { return l.ver }

// Stats returns the counters.
func (l *Log) Stats() Stats {
	return Stats{
		Queued: l.queued.Load(), Written: l.written.Load(), Durable: l.durable.Load(),
		Syncs: l.syncs.Load(), Batches: l.batches.Load(), Dropped: l.dropped.Load(),
		Rejected: l.rejected.Load(), Failed: l.refused.Load(), Lost: l.lost.Load(),
		LastSeq: l.lastSeq.Load(), Epoch: l.epoch.Load(), Queue: len(l.q),
		RetentionFailures: l.retainFailures.Load(),
	}
}

// Health reports whether the log is recording.
func (l *Log) Health() Health {
	h := Health{OK: true, State: "ok", Policy: l.o.Policy, Queue: len(l.q), QueueCap: cap(l.q),
		LastSync: time.Unix(0, l.lastSync.Load())}
	if e := l.retainErr.Load(); e != nil {
		h.RetentionErr = *e
	}
	if f := l.failed.Load(); f != nil {
		h.OK, h.State, h.Err = false, "failed", *f
	} else {
		l.mu.RLock()
		if l.closed {
			h.OK, h.State = false, "closed"
		}
		l.mu.RUnlock()
	}
	return h
}

// latch marks the log failed. The writer does not retry an fsync on the same
// file (after a failed fsync the kernel may have dropped the dirty pages);
// it cuts the file back to its last durable size, best effort, so that no
// half-written batch is found later, and closes it.
func (l *Log) latch(err error) {
	if l.failed.Load() != nil {
		return
	}
	e := fmt.Errorf("%w: %w", ErrFailed, err)
	l.failed.Store(&e)
	close(l.failedCh)
	w := &l.w
	if w.f != nil {
		w.f.Truncate(w.synced)
		w.f.Close()
		w.f = nil
	}
	l.lost.Add(w.unsynced + uint64(bytes.Count(w.wbuf, []byte{'\n'})))
	w.unsynced = 0
	w.wbuf = w.wbuf[:0]
}

func (l *Log) now() time.Time {
	t := l.o.Clock().UTC()
	if t.Before(l.w.lastT) {
		t = l.w.lastT // records never go back in time, even if the clock does
	}
	return t
}

func (l *Log) tickEvery() time.Duration {
	d := min(l.o.CheckpointInterval, time.Second)
	if l.o.FsyncInterval > 0 {
		d = min(d, l.o.FsyncInterval/2)
	}
	return max(d, time.Millisecond)
}

// run is the writer goroutine.
func (l *Log) run() {
	defer close(l.done)
	tick := time.NewTicker(l.tickEvery())
	defer tick.Stop()
	w := &l.w
	for {
		select {
		case r := <-l.q:
			w.batch = append(w.batch[:0], r)
		drain:
			for len(w.batch) < 4096 {
				select {
				case r := <-l.q:
					w.batch = append(w.batch, r)
				default:
					break drain
				}
			}
			l.process(w.batch)
		case <-tick.C:
			l.tick()
		case <-l.stop:
			for {
				select {
				case r := <-l.q:
					l.process([]*request{r})
					continue
				default:
				}
				break
			}
			l.shutdown()
			return
		}
	}
}

// fail refuses a queued request that was never written: it is lost
// (counted), and a waiting caller is told why.
func (l *Log) fail(r *request, err error) {
	if !r.flush && r.op == nil {
		l.lost.Add(1)
	}
	if r.wait {
		r.done <- err
	} else {
		reqPool.Put(r)
	}
}

// process writes one batch with one write and at most one fsync (plus one
// per rotation inside the batch).
func (l *Log) process(batch []*request) {
	w := &l.w
	l.treeFailed()
	if f := l.failed.Load(); f != nil {
		for _, r := range batch {
			l.fail(r, *f)
		}
		return
	}
	now := l.now()
	if err := l.maybeRotate(now); err != nil {
		l.latch(err)
		for _, r := range batch {
			l.fail(r, *l.failed.Load())
		}
		return
	}
	w.wbuf = w.wbuf[:0]
	w.waiters = w.waiters[:0]
	sync := l.o.FsyncInterval < 0
	var err error
	for _, r := range batch {
		if r.flush {
			sync = true
			w.waiters = append(w.waiters, r)
			continue
		}
		if r.op != nil {
			if err == nil {
				if err = l.writeOut(true); err != nil {
					l.latch(err)
					err = *l.failed.Load()
				}
			}
			if err != nil {
				r.done <- err
				continue
			}
			r.done <- r.op()
			if f := l.failed.Load(); f != nil {
				err = *f
			}
			continue
		}
		if err == nil && w.seg.Records > 0 && w.size+int64(len(w.wbuf)+len(r.buf)+400) > l.o.SegmentMaxBytes {
			if err = l.writeOut(true); err == nil {
				err = l.rotate(now)
			}
			if err != nil {
				l.latch(err)
				err = *l.failed.Load()
			}
		}
		if err != nil {
			l.fail(r, err)
			continue
		}
		seq := l.encodeRecord(r.buf, now)
		if r.wait {
			r.seq = seq
			w.waiters = append(w.waiters, r)
			sync = true
		} else {
			reqPool.Put(r)
		}
	}
	if err != nil {
		for _, r := range w.waiters {
			r.done <- err
		}
		return
	}
	if !sync && time.Since(w.lastSyncReal) >= l.o.FsyncInterval {
		sync = true
	}
	if err := l.writeOut(sync); err != nil {
		l.latch(err)
		for _, r := range w.waiters {
			r.done <- *l.failed.Load()
		}
		return
	}
	l.batches.Add(1)
	for _, r := range w.waiters {
		r.done <- nil
	}
	w.waiters = w.waiters[:0]
	if w.ckptDirty && time.Since(w.lastCkpt) >= l.o.CheckpointInterval {
		if err := l.checkpoint(); err != nil {
			l.latch(err)
		}
	}
}

// encodeRecord seals body into the pending buffer as the next record.
func (l *Log) encodeRecord(body []byte, now time.Time) uint64 {
	w := &l.w
	if now.Before(w.lastT) {
		// A record written inside this batch (retention's audit_pruned,
		// a rotation) may carry a later time than the batch's: times
		// never go backwards.
		now = w.lastT
	}
	seq := w.lastSeq + 1
	w.wbuf = w.seal.appendLine(w.wbuf, seq, now, body, &w.lastMAC)
	w.lastSeq, w.lastMAC, w.lastT = seq, w.seal.sum, now
	s := &w.seg
	if s.Records == 0 {
		s.FirstMAC, s.FirstTime = w.lastMAC, now
		s.FirstEpoch = w.seal.epoch
	}
	s.Records++
	s.LastSeq, s.LastMAC, s.LastTime, s.LastEpoch = seq, w.lastMAC, now, w.seal.epoch
	return seq
}

// do runs op on the writer goroutine, between batches.
func (l *Log) do(ctx context.Context, op func() error) error {
	return l.await(ctx, &request{op: op, wait: true, done: make(chan error, 1)})
}

// await queues r and waits for the writer to answer it.
func (l *Log) await(ctx context.Context, r *request) error {
	if err := l.enqueue(ctx, r); err != nil {
		return err
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writeOut writes the pending buffer and, if sync, fsyncs the segment.
func (l *Log) writeOut(sync bool) error {
	w := &l.w
	if len(w.wbuf) > 0 {
		n, err := w.f.Write(w.wbuf)
		w.size += int64(n)
		w.hash.Write(w.wbuf[:n])
		if err == nil && n < len(w.wbuf) {
			err = io.ErrShortWrite
		}
		recs := uint64(bytes.Count(w.wbuf[:n], []byte{'\n'}))
		w.unsynced += recs
		l.written.Add(recs)
		l.lastSeq.Store(w.lastSeq)
		if err != nil {
			l.lost.Add(uint64(bytes.Count(w.wbuf[n:], []byte{'\n'})))
			w.wbuf = w.wbuf[:0]
			return fmt.Errorf("audit: write %s: %w", w.seg.Name, err)
		}
		l.tw.send(w.wbuf)
		w.wbuf = w.wbuf[:0]
	}
	if sync && w.size != w.synced {
		if err := w.f.Sync(); err != nil {
			return fmt.Errorf("audit: fsync %s: %w", w.seg.Name, err)
		}
		w.synced = w.size
		l.durable.Add(w.unsynced)
		w.unsynced = 0
		l.syncs.Add(1)
		w.lastSyncReal = time.Now()
		l.lastSync.Store(w.lastSyncReal.UnixNano())
		w.durSeg = w.seg
		w.durSeg.Size = w.size
		w.ckptDirty = true
		w.durTree = w.lastSeq // everything encoded is written, and now durable
		if w.durTree > 0 {
			l.tw.mark(w.durTree)
		}
		l.durableSeq.Store(w.lastSeq)
	}
	return nil
}

// tick runs on the writer's timer: the idle fsync, the epoch bound, the day
// rotation and the checkpoint.
func (l *Log) tick() {
	w := &l.w
	if l.failed.Load() != nil || l.treeFailed() {
		return
	}
	err := func() error {
		if w.size != w.synced && time.Since(w.lastSyncReal) >= l.o.FsyncInterval {
			if err := l.writeOut(true); err != nil {
				return err
			}
		}
		if err := l.maybeRotate(l.now()); err != nil {
			return err
		}
		if w.ckptDirty && time.Since(w.lastCkpt) >= l.o.CheckpointInterval {
			return l.checkpoint()
		}
		return nil
	}()
	if err != nil {
		l.latch(err)
	}
}

// maybeRotate rotates at a UTC day change and evolves the key when the
// epoch is older than EpochInterval. All written bytes are durable before.
func (l *Log) maybeRotate(now time.Time) error {
	w := &l.w
	if w.seg.Records > 0 && !sameDay(now, w.day) {
		if err := l.writeOut(true); err != nil {
			return err
		}
		return l.rotate(now)
	}
	if now.Sub(w.st.started) >= l.o.EpochInterval {
		return l.evolve(now)
	}
	return nil
}

func sameDay(a, b time.Time) bool {
	ay, am, ad := a.UTC().Date()
	by, bm, bd := b.UTC().Date()
	return ay == by && am == bm && ad == bd
}

// evolve moves to the next epoch: the new state replaces the old one on disk
// (durably) before any record uses the new key, and the old key is erased
// from memory. Go cannot promise that no copy of it survives in freed
// memory; the disk copy is gone once the rename is durable.
func (l *Log) evolve(now time.Time) error {
	w := &l.w
	if now.Before(w.lastT) {
		now = w.lastT // an epoch never starts before a record of the one before it
	}
	now = now.UTC()
	// Every record of this epoch is durable before the next one is
	// anchored: an anchor naming records a crash could still take back
	// would start the next epoch past the end of the log.
	if w.f != nil {
		if err := l.writeOut(true); err != nil {
			return err
		}
	}
	if w.st.ver >= formatVersion {
		// The anchor of the next epoch, sealed with this epoch's key, is
		// durable before the state moves on (see the package doc).
		a := newAnchor(&w.st.key, w.st.logID, w.st.epoch+1, w.lastSeq+1, now, w.lastMAC)
		if err := appendAnchor(l.fs, l.dir, w.st.logID, &a); err != nil {
			return err
		}
	}
	ns := &state{ver: w.st.ver, logID: w.st.logID, epoch: w.st.epoch + 1, started: now, key: w.st.key.next()}
	if err := writeFileAtomic(l.fs, l.dir, stateName, ns.encode()); err != nil {
		clear(ns.key[:])
		return err
	}
	clear(w.st.key[:])
	w.st = ns
	mk := ns.key.macKey()
	w.seal.mac = newMAC(&mk)
	clear(mk[:])
	w.seal.epoch = ns.epoch
	l.epoch.Store(ns.epoch)
	return nil
}

// rotate closes the live segment (checksum file, manifest) and starts the
// next one under a new epoch. The live segment must be durable.
func (l *Log) rotate(now time.Time) error {
	w := &l.w
	// The closed segment ends with a durable checkpoint of its last record.
	if err := l.signDurable(true); err != nil {
		return err
	}
	closed := w.seg
	closed.Closed, closed.Size = true, w.size
	w.hash.Sum(closed.SHA256[:0])
	if err := writeFileAtomic(l.fs, l.dir, closed.Name+checksumSuffix, checksumLine(closed.SHA256, closed.Name)); err != nil {
		return err
	}
	if err := l.evolve(now); err != nil {
		return err
	}
	next := segmentInfo{Name: segmentName(now, w.lastSeq+1), FirstSeq: w.lastSeq + 1, LastSeq: w.lastSeq,
		FirstEpoch: w.st.epoch, LastEpoch: w.st.epoch}
	w.man.Segments[len(w.man.Segments)-1] = closed
	w.man.Segments = append(w.man.Segments, next)
	if err := writeFileAtomic(l.fs, l.dir, manifestName, w.man.encode()); err != nil {
		return err
	}
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	if err := l.startSegment(next, now); err != nil {
		return err
	}
	if l.o.Retain > 0 {
		// Retention failing does not fail the log: records still go
		// to the new segment. It is counted and shown in Health, and
		// tried again at the next rotation.
		if _, err := l.pruneLocked(now.Add(-l.o.Retain)); err != nil {
			l.retainFailures.Add(1)
			l.retainErr.Store(&err)
		} else {
			l.retainErr.Store(nil)
		}
	}
	return nil
}

// startSegment creates the file of the live segment s (already in the
// manifest) and makes its directory entry durable.
func (l *Log) startSegment(s segmentInfo, now time.Time) error {
	w := &l.w
	f, err := l.fs.OpenFile(filepath.Join(l.dir, s.Name), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("audit: create segment: %w", err)
	}
	if err := syncDir(l.fs, l.dir); err != nil {
		f.Close()
		return fmt.Errorf("audit: create segment %s: sync directory: %w", s.Name, err)
	}
	w.f, w.seg, w.durSeg, w.size, w.synced, w.day = f, s, s, 0, 0, now.UTC()
	w.hash = sha256.New()
	w.ckptDirty = false
	return nil
}

// checkpoint records the durable end of the live segment in the manifest
// and signs a checkpoint of the tree over the durable records.
func (l *Log) checkpoint() error {
	w := &l.w
	w.man.Segments[len(w.man.Segments)-1] = w.durSeg
	if err := writeFileAtomic(l.fs, l.dir, manifestName, w.man.encode()); err != nil {
		return err
	}
	if err := l.signDurable(false); err != nil {
		return err
	}
	w.ckptDirty = false
	w.lastCkpt = time.Now()
	return nil
}

// shutdown flushes and checkpoints at Close.
func (l *Log) shutdown() {
	w := &l.w
	if l.failed.Load() == nil {
		if err := l.writeOut(true); err != nil {
			l.latch(err)
		} else if err := l.checkpoint(); err != nil {
			l.latch(err)
		} else if err := l.signDurable(true); err != nil {
			l.latch(err)
		}
	}
	l.tw.stop()
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	if w.st != nil {
		clear(w.st.key[:])
	}
	w.seal.mac = nil
}
