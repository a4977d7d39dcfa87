package attach

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// ErrClosed is returned by the [Client]'s methods once the connection is
// closed, by [Client.Close] or by the daemon; [Client.Err] says why.
var ErrClosed = errors.New("attach: connection closed")

// Client is a connection to a daemon's attach socket. Its methods may be
// called from several goroutines at once: requests are matched with
// their answers by id, and one goroutine reads every frame.
type Client struct {
	conn  *net.UnixConn
	stops chan Stop

	writeMu sync.Mutex // one frame at a time

	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan Response
	closed  bool
	err     error // why the connection ended
	done    chan struct{}
}

// Attachment is an attached answer and the descriptor that came with it.
type Attachment struct {
	Attached
	// File is the shard's memory; the caller owns it and closes it. See
	// [MapReadOnly] and the package comment for how to map it.
	File *os.File
}

// stopQueue is how many unread stop pushes a Client keeps; later ones are
// dropped (by then the client has had many reasons to stop).
const stopQueue = 64

// maxQueuedFDs bounds descriptors received ahead of their frames; only a
// broken daemon sends more.
const maxQueuedFDs = 8

// Dial connects to the daemon's attach socket at path.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("attach: dial: %w", err)
	}
	cl := &Client{
		conn:    c.(*net.UnixConn),
		stops:   make(chan Stop, stopQueue),
		pending: make(map[int64]chan Response),
		done:    make(chan struct{}),
	}
	go cl.read()
	return cl, nil
}

// Stops returns the channel of stop pushes. It is closed when the
// connection ends.
func (c *Client) Stops() <-chan Stop { return c.stops }

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended, or nil while it is open: an
// [*Error] the daemon sent before closing (permission_denied,
// too_many_connections, bad_frame...), a [*ProtocolError] for a frame
// from the daemon that breaks the protocol, [ErrClosed] after Close, or
// the read error.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection; the daemon then detaches every shard it
// attached. Descriptors already returned in Attachments stay open.
func (c *Client) Close() error {
	c.fail(ErrClosed)
	<-c.done
	return nil
}

// fail ends the connection with err as the reason, once.
func (c *Client) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	c.err = err
	c.conn.Close()
}

// read is the one reader: it splits the stream into frames, queues the
// descriptors in the order they came, gives the oldest to each attached
// frame, and routes answers and pushes.
func (c *Client) read() {
	var fds []*os.File
	defer func() {
		for _, f := range fds {
			f.Close()
		}
		c.mu.Lock()
		for id, ch := range c.pending {
			close(ch)
			delete(c.pending, id)
		}
		c.mu.Unlock()
		close(c.stops)
		close(c.done)
	}()
	var buf []byte
	chunk := make([]byte, 64<<10)
	oob := make([]byte, syscall.CmsgSpace(4)) // room for one descriptor
	for {
		n, oobn, flags, _, err := c.conn.ReadMsgUnix(chunk, oob)
		n, oobn = max(n, 0), max(oobn, 0)
		for _, fd := range parseRights(oob[:oobn]) {
			fds = append(fds, os.NewFile(uintptr(fd), "attach-shard"))
		}
		if flags&syscall.MSG_CTRUNC != 0 || len(fds) > maxQueuedFDs {
			c.fail(badFrame("the daemon sent more descriptors than frames"))
			return
		}
		if err == nil && n == 0 {
			err = ErrClosed
		}
		buf = append(buf, chunk[:n]...)
		for len(buf) >= headerLen {
			size, lerr := checkLength([headerLen]byte(buf[:headerLen]), MaxResponseFrame)
			if lerr != nil {
				c.fail(lerr)
				return
			}
			if len(buf) < headerLen+size {
				break
			}
			r, perr := ParseResponse(buf[headerLen : headerLen+size])
			buf = buf[headerLen+size:]
			if perr != nil {
				c.fail(perr)
				return
			}
			var f *os.File
			if r.Op == OpAttached {
				if len(fds) == 0 {
					c.fail(badFrame("an attached frame came without a descriptor"))
					return
				}
				f, fds = fds[0], fds[1:]
			}
			c.route(r, f)
		}
		if len(buf) == 0 {
			buf = nil // do not keep a large frame's array
		}
		if err != nil {
			if len(buf) > 0 {
				err = badFrame("truncated frame: the connection ended inside a frame")
			}
			c.fail(err)
			return
		}
	}
}

func (c *Client) route(r Response, f *os.File) {
	if r.Op == OpStop {
		select {
		case c.stops <- *r.Stop:
		default:
		}
		return
	}
	if r.ID == 0 && r.Op == OpError {
		// The daemon's last word before it closes the connection.
		c.fail(r.Error)
		return
	}
	r.file = f
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.pending[r.ID]
	if !ok {
		// An answer to a request whose caller gave up.
		r.closeFile()
		return
	}
	delete(c.pending, r.ID)
	// Sent under mu, so that a caller giving up either finds the answer
	// or is sure it will not come. The channel is buffered: no blocking.
	ch <- r
}

// call sends req with a fresh id and waits for its answer. An error frame
// is returned as an [*Error].
func (c *Client) call(ctx context.Context, req Request) (Response, error) {
	ch := make(chan Response, 1)
	c.mu.Lock()
	if c.closed {
		err := c.err
		c.mu.Unlock()
		return Response{}, fmt.Errorf("%w: %w", ErrClosed, err)
	}
	c.nextID++
	req.V, req.ID = Version, c.nextID
	c.pending[req.ID] = ch
	c.mu.Unlock()
	frame, err := Encode(req)
	if err != nil {
		c.forget(req.ID)
		return Response{}, err
	}
	c.writeMu.Lock()
	dl, _ := ctx.Deadline()
	_ = c.conn.SetWriteDeadline(dl)
	_, err = c.conn.Write(frame)
	c.writeMu.Unlock()
	if err != nil {
		// A daemon that refused the connection (too_many_connections,
		// permission_denied) has written why and closed it: the reader
		// has that frame still to route, and it says more than the
		// write error. Wait for the reader, briefly, then give the
		// daemon's reason when there is one.
		t := time.NewTimer(time.Second)
		select {
		case <-c.done:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		// A partial frame leaves the stream unusable.
		c.fail(err)
		c.forget(req.ID)
		var de *Error
		if errors.As(c.Err(), &de) {
			return Response{}, de
		}
		return Response{}, fmt.Errorf("attach: send %s: %w", req.Op, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return Response{}, fmt.Errorf("%w: %w", ErrClosed, c.Err())
		}
		if r.Error != nil {
			return Response{}, r.Error
		}
		if r.Op != answerOp(req.Op) {
			c.fail(badFrame("a %s request was answered with %s", req.Op, r.Op))
			r.closeFile()
			return Response{}, c.Err()
		}
		return r, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, req.ID)
		select {
		case r, ok := <-ch: // routed meanwhile
			if ok {
				r.closeFile()
			}
		default:
		}
		c.mu.Unlock()
		return Response{}, ctx.Err()
	}
}

func (c *Client) forget(id int64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

func (r *Response) closeFile() {
	if r.file != nil {
		r.file.Close()
	}
}

func answerOp(op string) string {
	switch op {
	case OpAttach:
		return OpAttached
	case OpVerify:
		return OpVerified
	case OpDetach:
		return OpDetached
	default:
		return OpPong
	}
}

// Attach maps a shard: it returns the attached answer and the descriptor.
// correlationID may be empty. If ctx ends before the answer, the
// descriptor that comes later is closed, and the shard stays attached
// until this connection detaches it or closes.
func (c *Client) Attach(ctx context.Context, shardID, correlationID string) (*Attachment, error) {
	r, err := c.call(ctx, Request{Op: OpAttach, ShardID: shardID, CorrelationID: correlationID})
	if err != nil {
		return nil, err
	}
	return &Attachment{Attached: *r.Attached, File: r.file}, nil
}

// Verify runs the execute gate on an attached shard. mode is
// [ModeSampled], [ModeFull] or empty (sampled); samples is 0 (the
// default) or the sampled chunk count. A failed gate is an [*Error] with
// code integrity_failed or worker_stopped.
func (c *Client) Verify(ctx context.Context, shardID, mode string, samples int, correlationID string) (*Verified, error) {
	r, err := c.call(ctx, Request{Op: OpVerify, ShardID: shardID, Mode: mode, Samples: samples, CorrelationID: correlationID})
	if err != nil {
		return nil, err
	}
	return r.Verified, nil
}

// Detach ends this connection's attachment to a shard.
func (c *Client) Detach(ctx context.Context, shardID, correlationID string) error {
	_, err := c.call(ctx, Request{Op: OpDetach, ShardID: shardID, CorrelationID: correlationID})
	return err
}

// Ping asks the daemon for a pong.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.call(ctx, Request{Op: OpPing})
	return err
}
