package replicate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/vramseal/vramseal/audit"
)

// Source is the local log a [Shipper] copies: [*audit.Log] is one. Its
// methods must be safe to call from another goroutine at any time.
type Source interface {
	// Dir is the log's directory, read with [audit.NewRecordReader].
	Dir() string
	// DurableSeq is the last record covered by an fsync.
	DurableSeq() uint64
	// PublicKey is the log's checkpoint public key; it names the log.
	PublicKey() *audit.PublicKey
}

var _ Source = (*audit.Log)(nil)

// Options configure a [Shipper]. The zero value works with
// [ConnOptions.URLs] set; each field says what zero means.
type Options struct {
	ConnOptions
	// Node names this machine in the subjects. Empty means the host name.
	Node string
	// Replicas is the stream's replica count when the shipper creates it.
	// Zero means 3 when the cluster has 3 or more servers, else 1.
	Replicas int
	// MaxBytes limits the stream's size when the shipper creates it. Zero
	// means no limit.
	MaxBytes int64
	// FailClosed makes [Shipper.Ready] fail while the stream is out of
	// reach or lags by more than MaxLag. Zero (fail-open) keeps the daemon
	// ready: the backlog waits in the local log.
	FailClosed bool
	// MaxLag is the lag that fails Ready under FailClosed. Zero means 30 s.
	MaxLag time.Duration
	// Poll is how often the shipper looks for new durable records. Zero
	// means 10 ms.
	Poll time.Duration
	// BatchRecords caps the records of one atomic batch. Zero means 1000,
	// the server's default limit (jetstream { limits { batch { max_msgs } } });
	// more needs that limit raised as far, and goes at most to
	// [MaxBatchRecords]. A batch also stops at 4 MiB of records. When the
	// server refuses a batch as too large, the shipper takes the limit the
	// server states (1000 if it states none), says so once, and sends the
	// same records again in smaller batches.
	BatchRecords int
	// AckTimeout bounds the wait for a batch's acknowledgement. Zero means
	// 5 s.
	AckTimeout time.Duration
	// RetryInterval is the pause after a failure. Zero means 1 s.
	RetryInterval time.Duration
	// Narrate, if not nil, is told of changes of state (connected,
	// disconnected, caught up, an error), at most once per change.
	Narrate func(level slog.Level, event, message string)
	// Clock is the time source. Nil means time.Now.
	Clock func() time.Time
}

func (o Options) resolved() Options {
	if o.Node == "" {
		if h, err := os.Hostname(); err == nil && h != "" {
			o.Node = h
		} else {
			o.Node = "unknown"
		}
	}
	if o.MaxLag <= 0 {
		o.MaxLag = 30 * time.Second
	}
	if o.Poll <= 0 {
		o.Poll = 10 * time.Millisecond
	}
	if o.BatchRecords <= 0 {
		o.BatchRecords = DefaultBatchRecords
	}
	o.BatchRecords = min(o.BatchRecords, MaxBatchRecords)
	if o.AckTimeout <= 0 {
		o.AckTimeout = 5 * time.Second
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = time.Second
	}
	if o.Narrate == nil {
		o.Narrate = func(slog.Level, string, string) {}
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	return o
}

// Batch sizes: the server's default limit on an atomic batch, and the
// most [Options.BatchRecords] can ask for.
const (
	DefaultBatchRecords = 1000
	MaxBatchRecords     = 10000
)

// Status is the state of a [Shipper], for health checks and metrics.
type Status struct {
	Stream, Subject string
	Connected       bool   // the connection is up
	Durable         uint64 // last durable record of the local log
	Acked           uint64 // last record the stream acknowledged
	AckedCheckpoint uint64 // tree size of the last checkpoint acknowledged
	// LagRecords is Durable - Acked; Lag is the age of the oldest durable
	// record not yet acknowledged (0 when caught up).
	LagRecords uint64
	Lag        time.Duration
	Shipped    uint64 // records acknowledged since start
	Errors     uint64 // failures since start
	LastError  string // the last failure, "" once shipping resumed
	Err        error  // the same failure, for errors.Is
	LastAck    time.Time
	FailClosed bool
	// Stopped is set when shipping stopped for good: the stream and the
	// local log disagree (see the package documentation).
	Stopped bool
}

// Shipper copies a local audit log to the stream. Start it with
// [Shipper.Run]; its other methods are safe for concurrent use.
type Shipper struct {
	src   Source
	o     Options
	logID string
	subj  string
	csubj string
	esubj string
	nc    *nats.Conn
	// closing is set before the connection is closed: the disconnection
	// that Close causes is not narrated.
	closing atomic.Bool

	// batch is the records of one batch: Options.BatchRecords until the
	// server refuses a batch as too large. Only Run's goroutine uses it.
	batch int

	mu     sync.Mutex
	st     Status
	behind time.Time // time of the oldest unacknowledged record (zero: unknown or none)
}

// New connects (in the background when the cluster cannot be reached yet)
// and returns a shipper of src. Call Run to ship and Close to disconnect.
func New(src Source, opts Options) (*Shipper, error) {
	o := opts.resolved()
	pk := src.PublicKey()
	if pk == nil {
		return nil, errors.New("replicate: the log has no checkpoint public key")
	}
	s := &Shipper{src: src, o: o, logID: pk.LogID(), batch: o.BatchRecords}
	s.subj, s.csubj, s.esubj = RecordsSubject(s.logID, o.Node), CheckpointsSubject(s.logID, o.Node), EpochsSubject(s.logID, o.Node)
	s.st = Status{Stream: o.stream(), Subject: s.subj, FailClosed: o.FailClosed}
	nc, err := connect(o.ConnOptions, true,
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if s.closing.Load() {
				return
			}
			msg := "audit replication: disconnected from NATS"
			if err != nil {
				msg += ": " + truncate(err.Error())
			}
			o.Narrate(slog.LevelWarn, "audit_replication_disconnected", msg+"; records wait in the local log")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			if s.closing.Load() {
				return
			}
			o.Narrate(slog.LevelInfo, "audit_replication_reconnected", "audit replication: reconnected to "+truncate(nc.ConnectedUrlRedacted()))
		}))
	if err != nil {
		return nil, err
	}
	s.nc = nc
	return s, nil
}

// Close disconnects. Run keeps retrying every RetryInterval until its
// context ends: cancel that context to stop it.
func (s *Shipper) Close() {
	s.closing.Store(true)
	s.nc.Close()
}

// Status returns the current state.
func (s *Shipper) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.Connected = s.nc.IsConnected()
	st.Durable = s.src.DurableSeq()
	if st.Durable > st.Acked {
		st.LagRecords = st.Durable - st.Acked
		if s.behind.IsZero() {
			// No batch read yet (NATS was out of reach): the lag counts
			// from when it was first seen.
			s.behind = s.o.Clock()
		}
		st.Lag = max(s.o.Clock().Sub(s.behind), 0)
	}
	return st
}

// Ready returns nil unless the shipper is fail-closed and the stream is out
// of reach, shipping stopped, or the lag is above [Options.MaxLag].
func (s *Shipper) Ready() error {
	if !s.o.FailClosed {
		return nil
	}
	st := s.Status()
	switch {
	case st.Stopped:
		return fmt.Errorf("audit replication stopped (fail-closed): %s", st.LastError)
	case !st.Connected:
		return errors.New("audit replication (fail-closed): not connected to NATS")
	case st.Lag > s.o.MaxLag:
		return fmt.Errorf("audit replication (fail-closed): %d records (%s) behind, more than %s", st.LagRecords, st.Lag.Round(time.Millisecond), s.o.MaxLag)
	}
	return nil
}

// errStopped marks a disagreement between the stream and the local log:
// shipping stops for good.
var errStopped = errors.New("replicate: stopped")

// Run ships until ctx ends (it then returns nil) or shipping stops for good
// (it returns why). Failures of the stream or the connection are counted,
// reported in Status and narrated, and retried every RetryInterval.
func (s *Shipper) Run(ctx context.Context) error {
	var lastErr string
	for {
		err := s.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		s.mu.Lock()
		s.st.Errors++
		s.st.LastError, s.st.Err = truncate(err.Error()), err
		if errors.Is(err, errStopped) {
			s.st.Stopped = true
		}
		s.mu.Unlock()
		if msg := truncate(err.Error()); msg != lastErr {
			lastErr = msg
			s.o.Narrate(slog.LevelError, "audit_replication_failed", "audit replication: "+msg)
		}
		if errors.Is(err, errStopped) {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(s.o.RetryInterval):
		}
	}
}

// session resumes from the stream's last records and checkpoint and ships
// until something fails.
func (s *Shipper) session(ctx context.Context) error {
	for !s.nc.IsConnected() {
		if s.nc.IsClosed() {
			return errors.New("replicate: connection closed")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(s.o.Poll * 10):
		}
	}
	js, err := jetstream.New(s.nc)
	if err != nil {
		return fmt.Errorf("replicate: %w", err)
	}
	stream, err := ensureStream(ctx, js, s.nc, s.o.stream(), s.o.Replicas, s.o.MaxBytes)
	if err != nil {
		return err
	}
	acked, ackedStream, err := s.resumeRecords(ctx, stream)
	if err != nil {
		return err
	}
	ckSize, ckStream, err := s.resumeCheckpoints(ctx, stream)
	if err != nil {
		return err
	}
	epoch, epStream, err := s.resumeAnchors(ctx, stream)
	if err != nil {
		return err
	}
	ar := audit.NewAnchorReader(s.src.Dir(), epoch, audit.ReadOptions{})
	s.mu.Lock()
	wasBehind := s.st.LastError != ""
	s.st.Acked, s.st.AckedCheckpoint, s.st.LastError, s.st.Err = acked, ckSize, "", nil
	s.mu.Unlock()
	if wasBehind {
		s.o.Narrate(slog.LevelInfo, "audit_replication_resumed",
			fmt.Sprintf("audit replication: resumed after record %d on %s (%d records to catch up)", acked, s.subj, s.src.DurableSeq()-min(acked, s.src.DurableSeq())))
	}
	rr := audit.NewRecordReader(s.src.Dir(), acked+1, audit.ReadOptions{})
	defer func() { rr.Close() }()
	cr, err := audit.NewCheckpointReader(s.src.Dir(), ckSize, audit.ReadOptions{})
	if err != nil {
		return fmt.Errorf("replicate: %w", err)
	}
	var lastCkptLook time.Time
	batch := make([]*nats.Msg, 0, min(s.batch, 4096))
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		durable := s.src.DurableSeq()
		worked := false
		// The anchors first: a record's epoch is anchored before the
		// record is written, so the stream never holds a record of an
		// epoch whose anchor it lacks.
		if epStream, err = s.shipAnchors(ctx, ar, epStream); err != nil {
			return err
		}
		if rr.Next() <= durable {
			clear(batch)
			batch = batch[:0]
			var bytes int
			var first, last time.Time
			_, err := rr.Read(ctx, s.batch, durable, func(seq uint64, line []byte) error {
				if len(batch) > 0 && bytes+len(line) > maxBatchBytes {
					return errBatchFull
				}
				m := nats.NewMsg(s.subj)
				m.Data = append([]byte(nil), line...)
				m.Header.Set(jetstream.MsgIDHeader, s.logID+"-"+strconv.FormatUint(seq, 10))
				batch = append(batch, m)
				bytes += len(line)
				return nil
			})
			if err != nil && !errors.Is(err, errBatchFull) {
				return fmt.Errorf("replicate: read the local log: %w", err)
			}
			if len(batch) > 0 {
				first, last = recordTime(batch[0].Data), recordTime(batch[len(batch)-1].Data)
				s.mu.Lock()
				if s.behind.IsZero() {
					s.behind = first
				}
				s.mu.Unlock()
				seqNum, err := s.publishBatch(ctx, batch, ackedStream)
				var tl *tooLargeError
				if errors.As(err, &tl) && tl.limit < len(batch) {
					// Nothing of the batch was stored: send the same
					// records again, in batches the server takes.
					s.o.Narrate(slog.LevelWarn, "audit_replication_batch_reduced", fmt.Sprintf(
						"audit replication: the server takes atomic batches of at most %d records, not %d; shipping %d at a time (for larger batches raise jetstream { limits { batch { max_msgs } } } on every server and restart vramseal serve)", tl.limit, len(batch), tl.limit))
					s.batch = tl.limit
					rr.Close()
					rr = audit.NewRecordReader(s.src.Dir(), acked+1, audit.ReadOptions{})
					continue
				}
				if err != nil {
					return fmt.Errorf("replicate: records %d to %d: %w", acked+1, acked+uint64(len(batch)), err)
				}
				ackedStream = seqNum
				acked += uint64(len(batch))
				s.mu.Lock()
				s.st.Acked, s.st.Shipped, s.st.LastAck = acked, s.st.Shipped+uint64(len(batch)), s.o.Clock()
				if acked >= s.src.DurableSeq() {
					s.behind = time.Time{}
				} else {
					s.behind = last // the next record is no older
				}
				s.mu.Unlock()
				worked = true
			}
		}
		if now := time.Now(); now.Sub(lastCkptLook) >= checkpointPoll || !worked && ckSize < acked {
			lastCkptLook = now
			ckSize, ckStream, err = s.shipCheckpoints(ctx, cr, ckSize, ckStream, acked)
			if err != nil {
				return err
			}
		}
		if !worked {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(s.o.Poll):
			}
		}
	}
}

// checkpointPoll is how often the shipper looks for new local checkpoints
// while records keep coming; the writer signs one at most every checkpoint
// interval (one second by default).
const checkpointPoll = 100 * time.Millisecond

// maxBatchBytes caps the data of one batch (a record line is at most 1 MiB).
const maxBatchBytes = 4 << 20

var errBatchFull = errors.New("replicate: batch full")

// recordTime returns a record line's time, or the zero time if it does
// not parse.
func recordTime(line []byte) time.Time {
	r, err := audit.ParseRecord(line)
	if err != nil {
		return time.Time{}
	}
	return r.Time
}

// pubAck is the server's answer to a publish (JSPubAckResponse).
type pubAck struct {
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
	Stream    string `json:"stream"`
	Seq       uint64 `json:"seq"`
	Duplicate bool   `json:"duplicate"`
	BatchSize int    `json:"count"`
}

// tooLargeError is a batch refused for having more messages than the
// server's limit, with the limit the server states ("atomic publish batch
// is too large: 1000"), or 1000 when it states none that makes sense.
type tooLargeError struct {
	limit int
	desc  string
}

func (e *tooLargeError) Error() string {
	return "replicate: the batch is larger than the server allows: server: " + e.desc + " (err_code 10199)"
}

func tooLarge(desc string) *tooLargeError {
	limit := DefaultBatchRecords
	if i := strings.LastIndexByte(desc, ':'); i >= 0 {
		if n, err := strconv.Atoi(strings.TrimSpace(desc[i+1:])); err == nil && n >= 1 && n <= MaxBatchRecords {
			limit = n
		}
	}
	return &tooLargeError{limit: limit, desc: desc}
}

// errStreamFull matches a refusal because the stream reached its limits.
var errStreamFull = errors.New("replicate: the stream is full")

// parseAck decodes an acknowledgement.
func parseAck(data []byte) (*pubAck, error) {
	var a pubAck
	if err := json.Unmarshal(data, &a); err != nil {
		return nil, fmt.Errorf("unreadable acknowledgement: %w", err)
	}
	if a.Error != nil {
		desc := truncate(a.Error.Description)
		// 10047 is JSStreamStoreFailedF; the server says "maximum bytes
		// exceeded" or "maximum messages exceeded" for a full stream.
		if a.Error.ErrCode == 10047 || a.Error.ErrCode == 10077 {
			return nil, fmt.Errorf("%w: server: %s (err_code %d): the records wait in the local log; raise the stream's max_bytes", errStreamFull, desc, a.Error.ErrCode)
		}
		// 10199 is JSAtomicPublishTooLargeBatchErrF.
		if a.Error.ErrCode == 10199 {
			return nil, tooLarge(desc)
		}
		return nil, fmt.Errorf("refused by the server: %s (err_code %d)", desc, a.Error.ErrCode)
	}
	return &a, nil
}

// publishBatch publishes msgs as one atomic batch that must follow stream
// sequence after on the subject, and returns the stream sequence of its
// last message.
func (s *Shipper) publishBatch(ctx context.Context, msgs []*nats.Msg, after uint64) (uint64, error) {
	id := nuid.Next()
	for i, m := range msgs {
		m.Header.Set("Nats-Batch-Id", id)
		m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		if i == 0 {
			m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(after, 10))
		}
		if i < len(msgs)-1 {
			if err := s.nc.PublishMsg(m); err != nil {
				return 0, err
			}
		}
	}
	last := msgs[len(msgs)-1]
	last.Header.Set("Nats-Batch-Commit", "1")
	actx, cancel := context.WithTimeout(ctx, s.o.AckTimeout)
	defer cancel()
	resp, err := s.nc.RequestMsgWithContext(actx, last)
	if err != nil {
		return 0, fmt.Errorf("no acknowledgement: %w", err)
	}
	a, err := parseAck(resp.Data)
	if err != nil {
		return 0, err
	}
	if a.BatchSize != len(msgs) {
		return 0, fmt.Errorf("acknowledged %d messages of a batch of %d", a.BatchSize, len(msgs))
	}
	return a.Seq, nil
}

// lastMsg returns the last message of subj, or nil when it has none.
func lastMsg(ctx context.Context, stream jetstream.Stream, subj string) (*jetstream.RawStreamMsg, error) {
	m, err := stream.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("replicate: read the last message of %s: %w", subj, err)
	}
	return m, nil
}

// resumeRecords reads the subject's last record: the shipper goes on after
// it. It checks that the local log holds the same record there.
func (s *Shipper) resumeRecords(ctx context.Context, stream jetstream.Stream) (seq, streamSeq uint64, err error) {
	m, err := lastMsg(ctx, stream, s.subj)
	if m == nil || err != nil {
		return 0, 0, err
	}
	r, err := audit.ParseRecord(m.Data)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: the last message of %s (stream seq %d) is not a record: %w", errStopped, s.subj, m.Sequence, err)
	}
	if durable := s.src.DurableSeq(); r.Seq > durable {
		return 0, 0, fmt.Errorf("%w: the stream holds record %d of log %s, the local log only %d: the local log was truncated, rolled back or replaced",
			errStopped, r.Seq, s.logID, durable)
	}
	var local []byte
	rr := audit.NewRecordReader(s.src.Dir(), r.Seq, audit.ReadOptions{})
	defer rr.Close()
	if _, err := rr.Read(ctx, 1, r.Seq, func(_ uint64, line []byte) error {
		local = append([]byte(nil), line...)
		return nil
	}); err != nil && !errors.Is(err, audit.ErrPruned) {
		return 0, 0, fmt.Errorf("replicate: read local record %d: %w", r.Seq, err)
	}
	if local != nil && string(local) != string(m.Data) {
		return 0, 0, fmt.Errorf("%w: record %d differs between the stream and the local log: the local log was forked or rewritten", errStopped, r.Seq)
	}
	return r.Seq, m.Sequence, nil
}

// resumeCheckpoints reads the subject's last checkpoint.
func (s *Shipper) resumeCheckpoints(ctx context.Context, stream jetstream.Stream) (size, streamSeq uint64, err error) {
	m, err := lastMsg(ctx, stream, s.csubj)
	if m == nil || err != nil {
		return 0, 0, err
	}
	ck, err := audit.ParseCheckpoint(m.Data, s.src.PublicKey())
	if err != nil {
		return 0, 0, fmt.Errorf("%w: the last message of %s (stream seq %d): %w", errStopped, s.csubj, m.Sequence, err)
	}
	return ck.Size, m.Sequence, nil
}

// resumeAnchors reads the subject's last epoch anchor.
func (s *Shipper) resumeAnchors(ctx context.Context, stream jetstream.Stream) (epoch, streamSeq uint64, err error) {
	m, err := lastMsg(ctx, stream, s.esubj)
	if m == nil || err != nil {
		return 0, 0, err
	}
	e, err := audit.AnchorEpoch(m.Data, s.logID)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: the last message of %s (stream seq %d): %w", errStopped, s.esubj, m.Sequence, err)
	}
	return e, m.Sequence, nil
}

// shipAnchors publishes the local log's new epoch anchors, one at a time.
func (s *Shipper) shipAnchors(ctx context.Context, ar *audit.AnchorReader, streamSeq uint64) (uint64, error) {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return streamSeq, err
	}
	err = ar.Read(ctx, func(epoch uint64, line []byte) error {
		actx, cancel := context.WithTimeout(ctx, s.o.AckTimeout)
		defer cancel()
		a, err := js.Publish(actx, s.esubj, line, jetstream.WithMsgID(s.logID+"-epoch-"+strconv.FormatUint(epoch, 10)),
			jetstream.WithExpectLastSequencePerSubject(streamSeq))
		if err != nil {
			return fmt.Errorf("replicate: epoch anchor %d: %w", epoch, err)
		}
		streamSeq = a.Sequence
		return nil
	})
	return streamSeq, err
}

// shipCheckpoints publishes the local checkpoints above size that cover
// only acknowledged records.
func (s *Shipper) shipCheckpoints(ctx context.Context, cr *audit.CheckpointReader, size, streamSeq, acked uint64) (uint64, uint64, error) {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return size, streamSeq, err
	}
	err = cr.Read(ctx, func(ck *audit.Checkpoint) error {
		if ck.Size > acked {
			return errBatchFull // later: its records are not in the stream yet
		}
		actx, cancel := context.WithTimeout(ctx, s.o.AckTimeout)
		defer cancel()
		a, err := js.Publish(actx, s.csubj, ck.Note, jetstream.WithMsgID(s.logID+"-checkpoint-"+strconv.FormatUint(ck.Size, 10)),
			jetstream.WithExpectLastSequencePerSubject(streamSeq))
		if err != nil {
			return fmt.Errorf("replicate: checkpoint %d: %w", ck.Size, err)
		}
		size, streamSeq = ck.Size, a.Sequence
		s.mu.Lock()
		s.st.AckedCheckpoint = size
		s.mu.Unlock()
		return nil
	})
	if err != nil && !errors.Is(err, errBatchFull) {
		return size, streamSeq, err
	}
	return size, streamSeq, nil
}
