package replicate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vramseal/vramseal/audit"
)

// Kind names what is wrong with a node's copy in the stream, or between it
// and the node's local log.
type Kind string

// Kinds of [StreamError].
const (
	Malformed      Kind = "malformed"        // a message that is no record or checkpoint of the log
	WrongNode      Kind = "wrong node"       // a record written by another node (or log) than its subject says
	Gap            Kind = "gap"              // records missing from the stream
	Duplicate      Kind = "duplicate"        // a record or checkpoint repeated or out of order
	BadCheckpoint  Kind = "bad checkpoint"   // a checkpoint that does not verify: forged, altered, another key
	ChainBroken    Kind = "chain broken"     // audit.Verify of the copy failed
	LocalDiverged  Kind = "local diverged"   // the local log holds other records: forked or rewritten
	LocalTruncated Kind = "local truncated"  // the local log ends before the stream: truncated or rolled back
	LocalOther     Kind = "local mismatched" // the local log is of another log or cannot be read
)

// StreamError names what is wrong, and where: the node, the stream
// sequence of the message (0 if none) and the record's sequence number (the
// first where the copies differ, for the local kinds).
type StreamError struct {
	Kind      Kind
	LogID     string
	Node      string // the subject's node token
	StreamSeq uint64
	Seq       uint64
	Err       error
}

func (e *StreamError) Error() string {
	s := "replicate: " + string(e.Kind) + ": log " + e.LogID + " node " + e.Node
	if e.Seq > 0 {
		s += " seq " + strconv.FormatUint(e.Seq, 10)
	}
	if e.StreamSeq > 0 {
		s += " (stream seq " + strconv.FormatUint(e.StreamSeq, 10) + ")"
	}
	return s + ": " + e.Err.Error()
}

// Unwrap returns the evidence.
func (e *StreamError) Unwrap() error { return e.Err }

// VerifyOptions configure [Verify].
type VerifyOptions struct {
	ConnOptions
	// Node selects one node (its name or token). Empty means every node in
	// the stream.
	Node string
	// PublicKeys are the checkpoint public keys of the logs; a log without
	// one has its chain checked and its checkpoints only parsed (the
	// report says so).
	PublicKeys []*audit.PublicKey
	// Local is a node's local log directory to compare with its copy in
	// the stream. Empty means none.
	Local string
	// TempDir holds the copies while they are verified. Empty means the
	// system's.
	TempDir string
	// FetchTimeout bounds the wait for each batch of messages. Zero means
	// 5 s.
	FetchTimeout time.Duration
}

// NodeReport is what [Verify] found for one node's copy.
type NodeReport struct {
	LogID, Node        string
	Records            uint64 // records in the stream
	Checkpoints        int    // checkpoints in the stream
	CheckpointsChecked bool   // with the log's public key
	SignedSize         uint64 // tree size of the last checkpoint
	// Local is set when the node's local log was compared: LocalLast is
	// its last record, LocalAhead the records it holds beyond the stream
	// (not shipped yet).
	Local      bool
	LocalLast  uint64
	LocalAhead uint64
	// Err is the first problem, a [*StreamError]; nil when the copy
	// verified (and matched the local log).
	Err error
}

// Verify reads every node's copy from the stream (or the one
// [VerifyOptions.Node] names), checks that each message is the next record
// or checkpoint of that node's log, rebuilds the copy as a log with
// [audit.Copy] and verifies it with [audit.Verify] and the public key, and
// compares it with the local log of [VerifyOptions.Local]. It returns one
// report per node, sorted; the error is for a failure to read the stream at
// all.
func Verify(ctx context.Context, opts VerifyOptions) ([]NodeReport, error) {
	nc, err := connect(opts.ConnOptions, false)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("replicate: %w", err)
	}
	name := opts.stream()
	stream, err := js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("replicate: stream %s: %w", name, err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subjectPrefix+">"))
	if err != nil {
		return nil, fmt.Errorf("replicate: stream %s: %w", name, err)
	}
	type key struct{ logID, node string }
	nodes := map[key]bool{}
	var reports []NodeReport
	for subj := range info.State.Subjects {
		logID, node, _, ok := parseSubject(subj)
		if !ok {
			reports = append(reports, NodeReport{Node: truncate(subj), Err: &StreamError{Kind: Malformed, Node: truncate(subj),
				Err: errors.New("a subject that is not vramseal.audit.<log id>.<node>.records or .checkpoints")}})
			continue
		}
		if opts.Node == "" || Token(opts.Node) == node {
			nodes[key{logID, node}] = true
		}
	}
	keys := map[string]*audit.PublicKey{}
	for _, k := range opts.PublicKeys {
		keys[k.LogID()] = k
	}
	var localID string
	if opts.Local != "" {
		if k, err := audit.ReadPublicKey(opts.Local, nil); err == nil {
			localID = k.LogID()
		}
	}
	localSeen := false
	for k := range nodes {
		r := NodeReport{LogID: k.logID, Node: k.node}
		fetchTimeout := opts.FetchTimeout
		if fetchTimeout <= 0 {
			fetchTimeout = 5 * time.Second
		}
		tmp, err := os.MkdirTemp(opts.TempDir, "vramseal-replica-")
		if err != nil {
			return nil, fmt.Errorf("replicate: %w", err)
		}
		cdir := filepath.Join(tmp, "log")
		r.Err = verifyNode(ctx, js, name, k.logID, k.node, keys[k.logID], cdir, fetchTimeout, &r)
		if opts.Local != "" && localID == k.logID {
			localSeen = true
			if r.Err == nil {
				r.Err = compareLocal(ctx, cdir, opts.Local, &r)
			}
		}
		os.RemoveAll(tmp)
		reports = append(reports, r)
	}
	if opts.Local != "" && !localSeen {
		node := opts.Node
		if node == "" {
			node = "?"
		}
		r := NodeReport{LogID: localID, Node: Token(node), Local: true}
		r.Err = &StreamError{Kind: LocalOther, LogID: localID, Node: Token(node),
			Err: fmt.Errorf("the local log %s (log %s) has no copy in the stream", truncate(opts.Local), localID)}
		reports = append(reports, r)
	}
	sort.Slice(reports, func(i, j int) bool {
		if reports[i].LogID != reports[j].LogID {
			return reports[i].LogID < reports[j].LogID
		}
		return reports[i].Node < reports[j].Node
	})
	return reports, nil
}

// forEach calls fn with every message of subj in stream order.
func forEach(ctx context.Context, js jetstream.JetStream, stream, subj string, timeout time.Duration, fn func(jetstream.Msg, uint64) error) error {
	// A cluster that just lost a server may take a few seconds to elect
	// new leaders (requests then find no responders): retry the stream's
	// lookups and the consumer's creation for a while.
	var (
		last *jetstream.RawStreamMsg
		cons jetstream.Consumer
		err  error
	)
	for try := 0; ; try++ {
		var s jetstream.Stream
		if s, err = js.Stream(ctx, stream); err == nil {
			last, err = s.GetLastMsgForSubject(ctx, subj)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				return nil
			}
		}
		if err == nil {
			cons, err = js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}})
		}
		if err == nil {
			break
		}
		if try == 20 || ctx.Err() != nil || errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("replicate: read %s: %w", subj, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
	for stalls := 0; ; {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(timeout))
		if errors.Is(err, nats.ErrNoResponders) && stalls < 20 && ctx.Err() == nil {
			// A leader is being elected: the ordered consumer resumes
			// after the last message it delivered.
			stalls++
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("replicate: read %s: %w", subj, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("replicate: read %s: %w", subj, err)
			}
			if err := fn(m, md.Sequence.Stream); err != nil {
				return err
			}
			if md.Sequence.Stream >= last.Sequence {
				return nil
			}
		}
		if err := batch.Error(); err != nil {
			if errors.Is(err, nats.ErrNoResponders) && stalls < 20 && ctx.Err() == nil {
				stalls++
				continue
			}
			return fmt.Errorf("replicate: read %s: %w", subj, err)
		}
		if n == 0 {
			return fmt.Errorf("replicate: read %s: no message within %s before stream seq %d", subj, timeout, last.Sequence)
		}
	}
}

// verifyNode checks one node's messages and rebuilds and verifies its copy
// in dir.
func verifyNode(ctx context.Context, js jetstream.JetStream, stream, logID, node string, pk *audit.PublicKey, dir string, timeout time.Duration, r *NodeReport) error {
	fail := func(kind Kind, sseq, seq uint64, format string, args ...any) error {
		return &StreamError{Kind: kind, LogID: logID, Node: node, StreamSeq: sseq, Seq: seq, Err: fmt.Errorf(format, args...)}
	}
	c, err := audit.NewCopy(dir, logID, audit.ReadOptions{})
	if err != nil {
		return err
	}
	var lastEpoch uint64
	err = forEach(ctx, js, stream, EpochsSubject(logID, node), timeout, func(m jetstream.Msg, sseq uint64) error {
		e, err := audit.AnchorEpoch(m.Data(), logID)
		if err != nil {
			return fail(Malformed, sseq, 0, "not an epoch anchor: %w", err)
		}
		switch {
		case e <= lastEpoch:
			return fail(Duplicate, sseq, 0, "the anchor of epoch %d again (after %d)", e, lastEpoch)
		case e > lastEpoch+1:
			return fail(Gap, sseq, 0, "the anchor of epoch %d follows that of epoch %d", e, lastEpoch)
		}
		if err := c.AddAnchor(m.Data()); err != nil {
			return fail(Malformed, sseq, 0, "%w", err)
		}
		lastEpoch = e
		return nil
	})
	if err != nil {
		c.Close()
		return err
	}
	var lastSize uint64
	err = forEach(ctx, js, stream, CheckpointsSubject(logID, node), timeout, func(m jetstream.Msg, sseq uint64) error {
		var size uint64
		if pk != nil {
			ck, err := audit.ParseCheckpoint(m.Data(), pk)
			if err != nil {
				return fail(BadCheckpoint, sseq, 0, "%w", err)
			}
			size = ck.Size
		}
		if err := c.AddCheckpoint(m.Data()); err != nil {
			return fail(BadCheckpoint, sseq, 0, "%w", err)
		}
		if pk == nil {
			size = lastSize + 1 // sizes are checked by audit.Verify only with the key
		}
		if size <= lastSize {
			return fail(Duplicate, sseq, 0, "checkpoint of tree size %d after one of %d", size, lastSize)
		}
		lastSize = size
		r.Checkpoints++
		return nil
	})
	if err != nil {
		c.Close()
		return err
	}
	r.CheckpointsChecked = pk != nil
	if pk != nil {
		r.SignedSize = lastSize
	}
	err = forEach(ctx, js, stream, RecordsSubject(logID, node), timeout, func(m jetstream.Msg, sseq uint64) error {
		// A message holds one or more whole records, one per line.
		data, first := m.Data(), c.Last()+1
		if len(m.Data()) == 0 || m.Data()[len(m.Data())-1] == '\n' {
			return fail(Malformed, sseq, first, "a message of records that is empty or ends with a newline")
		}
		for len(data) > 0 {
			line := firstLine(data)
			data = data[min(len(line)+1, len(data)):]
			if err := addRecord(c, line, logID, node, sseq, fail); err != nil {
				return err
			}
			r.Records++
		}
		if id := m.Headers().Get(jetstream.MsgIDHeader); id != "" && id != recordsMsgID(logID, first, c.Last()) {
			return fail(Malformed, sseq, first, "message id %q does not name its records %d to %d", truncate(id), first, c.Last())
		}
		return nil
	})
	if cerr := c.Close(); err == nil && cerr != nil {
		err = fail(BadCheckpoint, 0, 0, "%w", cerr)
	}
	if err != nil {
		return err
	}
	if r.Records == 0 {
		return nil
	}
	rep, err := audit.Verify(ctx, dir, audit.VerifyOptions{PublicKey: pk})
	if err != nil {
		var ve *audit.VerifyError
		seq := uint64(0)
		if errors.As(err, &ve) {
			seq = ve.Seq
			if ve.Problem == audit.CheckpointMismatch {
				return fail(BadCheckpoint, 0, seq, "%w", err)
			}
		}
		return fail(ChainBroken, 0, seq, "%w", err)
	}
	if pk != nil {
		r.SignedSize = rep.SignedSize
	}
	return nil
}

// addRecord adds the record line of the message at stream sequence sseq
// to the copy c, after checking that it is the next record of the log and
// node.
func addRecord(c *audit.Copy, line []byte, logID, node string, sseq uint64, fail func(Kind, uint64, uint64, string, ...any) error) error {
	rec, err := audit.ParseRecord(line)
	if err != nil {
		return fail(Malformed, sseq, c.Last()+1, "not a record: %w", err)
	}
	if want := logID + "-" + strconv.FormatUint(rec.Seq, 10); rec.ID != want {
		return fail(WrongNode, sseq, rec.Seq, "record of log %q in the subject of log %s", truncate(rec.ID), logID)
	}
	if Token(rec.Node) != node {
		return fail(WrongNode, sseq, rec.Seq, "written by node %q, the subject is node %s's", truncate(rec.Node), node)
	}
	switch next := c.Last() + 1; {
	case rec.Seq < next:
		return fail(Duplicate, sseq, rec.Seq, "record %d again (after %d)", rec.Seq, c.Last())
	case rec.Seq > next:
		missing := fmt.Sprintf("records %d to %d are", next, rec.Seq-1)
		if rec.Seq-1 == next {
			missing = fmt.Sprintf("record %d is", next)
		}
		return fail(Gap, sseq, next, "%s missing: seq %d follows %d", missing, rec.Seq, c.Last())
	}
	if err := c.AddRecord(line); err != nil {
		return fail(Malformed, sseq, rec.Seq, "%w", err)
	}
	return nil
}

// compareLocal compares the verified copy in cdir with the local log in
// local, record by record, from the local log's first record.
func compareLocal(ctx context.Context, cdir, local string, r *NodeReport) error {
	r.Local = true
	fail := func(kind Kind, seq uint64, format string, args ...any) error {
		return &StreamError{Kind: kind, LogID: r.LogID, Node: r.Node, Seq: seq, Err: fmt.Errorf(format, args...)}
	}
	lr := audit.NewRecordReader(local, 0, audit.ReadOptions{})
	cr := audit.NewRecordReader(cdir, 0, audit.ReadOptions{})
	defer func() { lr.Close(); cr.Close() }()
	var chunk [][]byte
	var first uint64
	for {
		chunk, first = chunk[:0], 0
		if _, err := lr.Read(ctx, 1024, 0, func(seq uint64, line []byte) error {
			if first == 0 {
				first = seq
			}
			chunk = append(chunk, bytes.Clone(line))
			return nil
		}); err != nil {
			return fail(LocalOther, lr.Next(), "read the local log: %w", err)
		}
		if len(chunk) == 0 {
			r.LocalLast = max(lr.Next(), 1) - 1
			break
		}
		if cr.Next() < first {
			cr.Close()
			cr = audit.NewRecordReader(cdir, first, audit.ReadOptions{})
		}
		i := 0
		var diff uint64
		if _, err := cr.Read(ctx, len(chunk), 0, func(seq uint64, line []byte) error {
			if diff == 0 && !bytes.Equal(line, chunk[i]) {
				diff = seq
			}
			i++
			return nil
		}); err != nil {
			return fail(LocalOther, cr.Next(), "read the copy: %w", err)
		}
		if diff != 0 {
			return fail(LocalDiverged, diff, "the local log and the stream hold different records from seq %d: the local log was forked or rewritten", diff)
		}
		if i < len(chunk) {
			r.LocalAhead += uint64(len(chunk) - i)
		}
	}
	if r.LocalLast < r.Records {
		return fail(LocalTruncated, r.LocalLast+1, "the local log ends at seq %d, the stream holds %d records: the local log was truncated or rolled back", r.LocalLast, r.Records)
	}
	if ck, err := audit.LatestCheckpoint(local, audit.ReadOptions{}); err == nil && ck.Size < r.SignedSize {
		return fail(LocalTruncated, ck.Size+1, "the local log's newest checkpoint is of %d records, the stream holds one of %d: the local log was rolled back", ck.Size, r.SignedSize)
	}
	return nil
}
