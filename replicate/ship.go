package replicate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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
	// SignedSize is the tree size of the last checkpoint written since
	// the log was opened (0 before the first).
	SignedSize() uint64
	// Epoch is the current key epoch, anchored before its first record.
	Epoch() uint64
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
	// MaxMessageBytes caps the data of one message, which holds as many
	// whole records as fit. Zero means [DefaultMessageBytes]; the server's
	// max_payload and the stream's max_msg_size lower it (less room for
	// the headers).
	MaxMessageBytes int
	// AckTimeout bounds the wait for a message's acknowledgement. Zero
	// means 5 s.
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
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = DefaultMessageBytes
	}
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

// DefaultMessageBytes is the most record data a message holds unless
// [Options.MaxMessageBytes] says otherwise: NATS's default max_payload.
const DefaultMessageBytes = 1 << 20

// headerRoom is what a record message's headers take at most, kept free
// of the server's max_payload.
const headerRoom = 512

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
	s := &Shipper{src: src, o: o, logID: pk.LogID()}
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
			// No records read yet (NATS was out of reach): the lag counts
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
	// What is known to be in the local log and not in the stream yet:
	// the shipper reads anchors only when the epoch changed, and
	// checkpoints only when there is a new one (pending: one seen that
	// covered records not shipped yet), at most every checkpointPoll
	// while records keep coming.
	var (
		lastCkptLook time.Time
		anchored     = epoch // the stream has the anchors up to this epoch
		pending      uint64
		ckLooked     bool
	)
	msgBytes := s.messageBytes(stream)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		durable := s.src.DurableSeq()
		worked := false
		// The anchors first: a record's epoch is anchored before the
		// record is written, so the stream never holds a record of an
		// epoch whose anchor it lacks. The epoch is read after durable:
		// no record up to durable is of a later one.
		if ep := s.src.Epoch(); ep > anchored {
			if epStream, err = s.shipAnchors(ctx, ar, epStream); err != nil {
				return err
			}
			anchored = ep
		}
		if rr.Next() <= durable {
			block, first, last, err := rr.ReadBlock(ctx, msgBytes, durable)
			if err != nil {
				return fmt.Errorf("replicate: read the local log: %w", err)
			}
			if len(block) > msgBytes {
				return fmt.Errorf("replicate: record %d is %d bytes, more than a message holds (%d): raise the servers' max_payload (and the stream's max_msg_size)", first, len(block), msgBytes)
			}
			if len(block) > 0 {
				s.mu.Lock()
				if s.behind.IsZero() {
					s.behind = recordTime(firstLine(block))
				}
				s.mu.Unlock()
				seqNum, err := s.publishRecords(ctx, block, first, last, ackedStream)
				if err != nil {
					return fmt.Errorf("replicate: records %d to %d: %w", first, last, err)
				}
				ackedStream, acked = seqNum, last
				s.mu.Lock()
				s.st.Acked, s.st.Shipped, s.st.LastAck = acked, s.st.Shipped+(last-first+1), s.o.Clock()
				if acked >= s.src.DurableSeq() {
					s.behind = time.Time{}
				} else {
					s.behind = recordTime(lastLine(block)) // the next record is no older
				}
				s.mu.Unlock()
				worked = true
			}
		}
		newer := s.src.SignedSize() > ckSize || pending > ckSize
		if now := time.Now(); !ckLooked || newer && (!worked || now.Sub(lastCkptLook) >= checkpointPoll) {
			lastCkptLook, ckLooked = now, true
			ckSize, ckStream, pending, err = s.shipCheckpoints(ctx, cr, ckSize, ckStream, acked)
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

// errLater stops a read at a checkpoint whose records are not in the
// stream yet.
var errLater = errors.New("replicate: later")

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
		return nil, fmt.Errorf("refused by the server: %s (err_code %d)", desc, a.Error.ErrCode)
	}
	return &a, nil
}

// publishRecords publishes block, the lines of records first to last, as
// one message that must follow stream sequence after on the subject, and
// returns its stream sequence.
func (s *Shipper) publishRecords(ctx context.Context, block []byte, first, last, after uint64) (uint64, error) {
	m := nats.NewMsg(s.subj)
	m.Data = block
	m.Header.Set(jetstream.MsgIDHeader, recordsMsgID(s.logID, first, last))
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(after, 10))
	actx, cancel := context.WithTimeout(ctx, s.o.AckTimeout)
	defer cancel()
	resp, err := s.nc.RequestMsgWithContext(actx, m)
	if err != nil {
		return 0, fmt.Errorf("no acknowledgement: %w", err)
	}
	a, err := parseAck(resp.Data)
	if err != nil {
		return 0, err
	}
	return a.Seq, nil
}

// recordsMsgID is the Nats-Msg-Id of the message of records first to
// last: "<log id>-<first>", or "<log id>-<first>-<last>" for more than one.
func recordsMsgID(logID string, first, last uint64) string {
	id := logID + "-" + strconv.FormatUint(first, 10)
	if last != first {
		id += "-" + strconv.FormatUint(last, 10)
	}
	return id
}

// messageBytes returns the most record data a message may hold: the
// option, less where the server's max_payload or the stream's
// max_msg_size is smaller.
func (s *Shipper) messageBytes(stream jetstream.Stream) int {
	n := s.o.MaxMessageBytes
	if p := s.nc.MaxPayload(); p > 0 {
		n = min(n, int(p)-headerRoom)
	}
	if info := stream.CachedInfo(); info != nil && info.Config.MaxMsgSize > 0 {
		n = min(n, int(info.Config.MaxMsgSize)-headerRoom)
	}
	return max(n, 1)
}

// firstLine and lastLine return the first and the last line of a block of
// records.
func firstLine(block []byte) []byte {
	if i := bytes.IndexByte(block, '\n'); i >= 0 {
		return block[:i]
	}
	return block
}

func lastLine(block []byte) []byte {
	return block[bytes.LastIndexByte(block, '\n')+1:]
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
	line := lastLine(m.Data)
	r, err := audit.ParseRecord(line)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: the last message of %s (stream seq %d) does not end with a record: %w", errStopped, s.subj, m.Sequence, err)
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
	if local != nil && string(local) != string(line) {
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
// only acknowledged records, and returns the new size and stream sequence,
// and the size of the first checkpoint left for later (0 if none).
func (s *Shipper) shipCheckpoints(ctx context.Context, cr *audit.CheckpointReader, size, streamSeq, acked uint64) (_, _, later uint64, _ error) {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return size, streamSeq, 0, err
	}
	err = cr.Read(ctx, func(ck *audit.Checkpoint) error {
		if ck.Size > acked {
			later = ck.Size
			return errLater
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
	if err != nil && !errors.Is(err, errLater) {
		return size, streamSeq, 0, err
	}
	return size, streamSeq, later, nil
}
