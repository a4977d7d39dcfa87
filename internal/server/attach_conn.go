package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/vramseal/vramseal/attach"
	"github.com/vramseal/vramseal/narration"
	"github.com/vramseal/vramseal/vram"
)

// attachConn is one client connection. Its reader (serve) handles the
// requests in order; its writer sends the queued frames; pushes only
// queue. The reader owns the end: once the connection is done it waits
// for the writer, detaches every lease and leaves the server's set.
type attachConn struct {
	s      *AttachServer
	conn   *net.UnixConn
	holder vram.Holder
	num    uint64
	ctx    context.Context // the connection's narration context
	start  time.Time

	// sendMu makes queueing and the final drain exclusive, so that no
	// frame (and no descriptor) is queued after the drain.
	sendMu     sync.Mutex
	out        chan outFrame
	done       chan struct{} // closed by abort
	writerDone chan struct{}
	abortOnce  sync.Once

	mu     sync.Mutex
	leases map[string]AttachLease // by shard ID
}

// outFrame is an encoded frame, the descriptor it carries (closed once
// sent or dropped), and whether the connection ends after it.
type outFrame struct {
	b    []byte
	f    *os.File
	last bool
}

func (fr outFrame) drop() {
	if fr.f != nil {
		fr.f.Close()
	}
}

// abort ends the connection now; it never blocks.
func (c *attachConn) abort() {
	c.abortOnce.Do(func() {
		close(c.done)
		c.conn.Close()
	})
}

// send queues a frame without blocking. A full queue means the client
// does not read: it is disconnected, which ends its leases.
func (c *attachConn) send(fr outFrame, what string) bool {
	c.sendMu.Lock()
	select {
	case <-c.done:
		c.sendMu.Unlock()
		fr.drop()
		return false
	default:
	}
	select {
	case c.out <- fr:
		c.sendMu.Unlock()
		return true
	default:
		c.sendMu.Unlock()
		fr.drop()
		c.s.narrate(c.ctx, slog.LevelWarn, ActionAttachSlow, strconv.Itoa(int(c.holder.PID)), time.Since(c.start), "slow_client", nil,
			fmt.Sprintf("Disconnected pid %d: it let %d frames queue unread (dropped a %s)", c.holder.PID, cap(c.out), what),
			narration.Int("pid", int64(c.holder.PID)), narration.Int("queued_frames", int64(cap(c.out))))
		c.abort()
		return false
	}
}

func (c *attachConn) write() {
	defer close(c.writerDone)
	for {
		select {
		case <-c.done:
			return
		case fr := <-c.out:
			err := c.conn.SetWriteDeadline(time.Now().Add(c.s.opts.WriteTimeout))
			if err == nil {
				if fr.f != nil {
					err = attach.WriteFrameWithFile(c.conn, fr.b, fr.f)
				} else {
					_, err = c.conn.Write(fr.b)
				}
			}
			fr.drop() // the client has its own descriptor now
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					c.s.narrate(c.ctx, slog.LevelWarn, ActionAttachSlow, strconv.Itoa(int(c.holder.PID)), time.Since(c.start), "slow_client", err,
						fmt.Sprintf("Disconnected pid %d: a frame took over %s to write", c.holder.PID, narration.FormatDuration(c.s.opts.WriteTimeout)))
				}
				c.abort()
				return
			}
			if fr.last {
				c.abort()
				return
			}
		}
	}
}

func (c *attachConn) attachedCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.leases)
}

// concerned reports whether a stop notice goes to this connection: a
// worker stop or a shutdown to every connection with an attachment, a
// revocation to the holders of the revoked leases.
func (c *attachConn) concerned(n vram.StopNotice) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n.Reason != vram.StopRevoked {
		return len(c.leases) > 0
	}
	for _, l := range c.leases {
		for _, id := range n.Leases {
			if l.ID() == id {
				return true
			}
		}
	}
	return false
}

func (c *attachConn) serve() {
	defer c.s.wg.Done()
	go c.write()
	c.readLoop()
	// A fatal error's frame is queued with last set: the writer ends the
	// connection once it is sent, or when its write deadline passes.
	<-c.done
	<-c.writerDone
	c.sendMu.Lock()
	for len(c.out) > 0 { // nothing is queued once done is closed
		(<-c.out).drop()
	}
	c.sendMu.Unlock()
	reason := vram.DetachDisconnect
	c.s.mu.Lock()
	if c.s.closing {
		reason = vram.StopShutdown
	}
	c.s.mu.Unlock()
	c.mu.Lock()
	leases := c.leases
	c.leases = map[string]AttachLease{}
	c.mu.Unlock()
	ctx := context.WithoutCancel(c.ctx)
	for _, l := range leases {
		_ = l.Detach(ctx, reason) // the manager records and narrates it
	}
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
	c.s.narrate(c.ctx, slog.LevelInfo, ActionAttachClose, strconv.Itoa(int(c.holder.PID)), time.Since(c.start), "", nil,
		fmt.Sprintf("Closed attach connection from pid %d (%d attachments ended)", c.holder.PID, len(leases)),
		narration.Int("pid", int64(c.holder.PID)), narration.Int("detached", int64(len(leases))), narration.Str("reason", reason))
}

func (c *attachConn) readLoop() {
	for {
		req, err := attach.ReadRequest(c.conn, c.s.opts.FrameTimeout)
		if err != nil {
			var pe *attach.ProtocolError
			if !errors.As(err, &pe) {
				if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
					c.s.narrate(c.ctx, slog.LevelWarn, ActionAttachClose, strconv.Itoa(int(c.holder.PID)), time.Since(c.start), "read", err,
						fmt.Sprintf("Attach connection from pid %d failed while reading", c.holder.PID))
				}
				c.abort()
				return
			}
			fatal := pe.Fatal()
			level := slog.LevelInfo
			if fatal {
				level = slog.LevelWarn
			}
			c.s.narrate(c.ctx, level, ActionAttachBadFrame, strconv.Itoa(int(c.holder.PID)), 0, pe.Code, pe,
				fmt.Sprintf("Answered a request from pid %d with %s", c.holder.PID, pe.Code), narration.Bool("closed", fatal))
			c.send(errorFrame(pe.ID, pe.Code, pe.Msg, "", "", fatal), "error")
			if fatal {
				return
			}
			continue
		}
		c.handle(req)
	}
}

func errorFrame(id int64, code, msg, shardID, corr string, last bool) outFrame {
	b, _ := attach.Encode(&attach.Error{ID: id, Code: code, Message: attach.CleanMessage(msg), ShardID: shardID, CorrelationID: corr})
	return outFrame{b: b, last: last}
}

// handle answers one well-formed request.
func (c *attachConn) handle(req attach.Request) {
	start := time.Now()
	corr := req.CorrelationID
	if corr == "" && req.Op != attach.OpPing {
		corr = narration.NewCorrelationID()
	}
	ctx := c.s.ctx
	if corr != "" {
		ctx = narration.WithCorrelationID(ctx, corr)
	}
	var fr outFrame
	var err error
	switch req.Op {
	case attach.OpAttach:
		fr, err = c.attach(ctx, req, corr)
	case attach.OpVerify:
		fr, err = c.verify(ctx, req, corr, start)
	case attach.OpDetach:
		fr, err = c.detach(ctx, req)
	case attach.OpPing:
		fr.b, err = attach.Encode(&attach.Pong{ID: req.ID})
	}
	level := slog.LevelInfo
	if req.Op == attach.OpPing {
		level = slog.LevelDebug
	}
	if err != nil {
		e := protoError(err)
		e.ID, e.ShardID, e.CorrelationID = req.ID, req.ShardID, corr
		b, eerr := attach.Encode(e)
		if eerr != nil {
			e.ChangedChunks = nil
			b, _ = attach.Encode(e)
		}
		fr = outFrame{b: b}
		c.s.narrate(ctx, slog.LevelWarn, ActionAttachRequest, req.ShardID, time.Since(start), e.Code, err,
			fmt.Sprintf("Refused %s from pid %d: %s", req.Op, c.holder.PID, e.Code),
			narration.Str("op", req.Op), narration.Int("pid", int64(c.holder.PID)))
	} else {
		c.s.narrate(ctx, level, ActionAttachRequest, req.ShardID, time.Since(start), "", nil,
			fmt.Sprintf("Answered %s from pid %d", req.Op, c.holder.PID),
			narration.Str("op", req.Op), narration.Int("pid", int64(c.holder.PID)))
	}
	c.send(fr, req.Op)
}

// codeError is an answer the server decides itself.
type codeError struct {
	code string
	msg  string
}

func (e *codeError) Error() string { return "server: attach: " + e.msg }

func (c *attachConn) attach(ctx context.Context, req attach.Request, corr string) (outFrame, error) {
	c.mu.Lock()
	_, dup := c.leases[req.ShardID]
	n := len(c.leases)
	c.mu.Unlock()
	if dup {
		return outFrame{}, &codeError{attach.CodeAlreadyAttached, "shard " + strconv.Quote(req.ShardID) + " is already attached on this connection"}
	}
	if n >= c.s.opts.MaxAttachmentsPerConn {
		return outFrame{}, &codeError{attach.CodeTooManyAttachments, fmt.Sprintf("this connection has its maximum of %d attachments", c.s.opts.MaxAttachmentsPerConn)}
	}
	lease, share, err := c.s.m.Attach(ctx, req.ShardID, c.holder)
	if err != nil {
		return outFrame{}, err
	}
	info := lease.Shard()
	sl := info.Seal
	a := &attach.Attached{ID: req.ID, ShardID: req.ShardID, Attachment: lease.ID(), CorrelationID: corr,
		Seal: attach.Seal{ShardID: sl.ShardID, ModelRef: sl.ModelRef, ShardIndex: sl.ShardIndex, ShardCount: sl.ShardCount,
			GPU: sl.DeviceIndex, GPUUUID: sl.DeviceUUID, Size: sl.Size, ChunkSize: sl.ChunkSize,
			Digest: sl.Digest.String(), TreeRoot: sl.Root.String(), SealedAt: sl.SealedAt.UTC(), KeyID: sl.KeyID, WorkerID: sl.WorkerID},
		Mapping: attach.Mapping{Kind: share.Kind, Size: share.MapSize, Granularity: share.Granularity}}
	if len(info.Tensors) > 0 {
		a.Tensors = make([]attach.Tensor, len(info.Tensors))
		for i, t := range info.Tensors {
			a.Tensors[i] = attach.Tensor{Name: t.Name, DType: t.DType, Shape: t.Shape, Offset: t.Offset, Length: t.Length}
		}
	}
	b, err := attach.Encode(a)
	if err != nil {
		share.File.Close()
		_ = lease.Detach(context.WithoutCancel(ctx), vram.DetachRequested)
		return outFrame{}, err
	}
	c.mu.Lock()
	c.leases[req.ShardID] = lease
	c.mu.Unlock()
	return outFrame{b: b, f: share.File}, nil
}

func (c *attachConn) lease(shardID string) AttachLease {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leases[shardID]
}

func notAttached(id string) error {
	return &codeError{attach.CodeNotAttached, "shard " + strconv.Quote(id) + " is not attached on this connection"}
}

func (c *attachConn) verify(ctx context.Context, req attach.Request, corr string, start time.Time) (outFrame, error) {
	if c.lease(req.ShardID) == nil {
		return outFrame{}, notAttached(req.ShardID)
	}
	mode := vram.Sampled(attach.DefaultSamples)
	if req.Samples > 0 {
		mode = vram.Sampled(req.Samples)
	}
	if req.Mode == attach.ModeFull {
		mode = vram.Full
	}
	res, err := c.s.m.Verify(ctx, req.ShardID, mode)
	if f := c.s.opts.ObserveVerify; f != nil {
		f(res, err)
	}
	if err != nil {
		return outFrame{}, err
	}
	b, err := attach.Encode(&attach.Verified{ID: req.ID, ShardID: res.ShardID, Mode: res.Mode, ChunksChecked: res.ChunksChecked,
		Chunks: res.Chunks, DetectionProbability: res.DetectionProbability, DurationMicros: res.Duration.Microseconds(), CorrelationID: corr})
	return outFrame{b: b}, err
}

func (c *attachConn) detach(ctx context.Context, req attach.Request) (outFrame, error) {
	c.mu.Lock()
	l := c.leases[req.ShardID]
	delete(c.leases, req.ShardID)
	c.mu.Unlock()
	if l == nil {
		return outFrame{}, notAttached(req.ShardID)
	}
	// The lease has ended whatever the audit log says; the manager
	// narrates a record it could not write.
	_ = l.Detach(ctx, vram.DetachRequested)
	b, err := attach.Encode(&attach.Detached{ID: req.ID, ShardID: req.ShardID})
	return outFrame{b: b}, err
}

// protoError maps an error of the manager or the server to an error
// frame's code and message.
func protoError(err error) *attach.Error {
	e := &attach.Error{Code: attach.CodeInternal, Message: attach.CleanMessage(err.Error())}
	var ce *codeError
	var ie *vram.IntegrityError
	switch {
	case errors.As(err, &ce):
		e.Code, e.Message = ce.code, attach.CleanMessage(ce.msg)
	case errors.As(err, &ie):
		e.Code, e.ChangedChunks = attach.CodeIntegrityFailed, protoRanges(ie.Changed)
	case errors.Is(err, vram.ErrStopped), errors.Is(err, vram.ErrPolicy):
		e.Code = attach.CodeWorkerStopped
	case errors.Is(err, vram.ErrNotFound):
		e.Code = attach.CodeNotFound
	case errors.Is(err, vram.ErrAuditFailed):
		e.Code = attach.CodeAuditUnavailable
	case errors.Is(err, vram.ErrInvalidInput):
		e.Code = attach.CodeInvalidInput
	case errors.Is(err, vram.ErrClosed), errors.Is(err, context.Canceled):
		e.Code = attach.CodeShuttingDown
	}
	return e
}
