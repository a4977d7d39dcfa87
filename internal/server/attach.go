package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vramseal/vramseal/attach"
	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/narration"
	"github.com/vramseal/vramseal/vram"
)

// Attacher is what an [AttachServer] needs of the residency manager.
// [ManagerAttacher] adapts a *vram.Manager; tests use fakes. All methods
// are called concurrently, from one goroutine per connection and from
// the manager's notifications.
type Attacher interface {
	// Attach leases a shard to h; see vram.Manager.Attach. The caller
	// owns the share's File.
	Attach(ctx context.Context, shardID string, h vram.Holder) (AttachLease, gpu.Share, error)
	// AttachDenied records a refused peer.
	AttachDenied(ctx context.Context, h vram.Holder, shardID, reason string)
	// Verify runs the execute gate.
	Verify(ctx context.Context, shardID string, mode vram.VerifyMode) (vram.VerifyResult, error)
	// Subscribe calls fn, which must not block, for every stop notice.
	Subscribe(fn func(vram.StopNotice)) (cancel func())
}

// AttachLease is one attachment; see vram.Lease.
type AttachLease interface {
	ID() string
	Shard() vram.ShardInfo
	// Detach ends the lease; a second call is a no-op.
	Detach(ctx context.Context, reason string) error
}

var _ AttachLease = (*vram.Lease)(nil)

// ManagerAttacher adapts m to [Attacher].
func ManagerAttacher(m *vram.Manager) Attacher { return managerAttacher{m} }

type managerAttacher struct{ *vram.Manager }

func (a managerAttacher) Attach(ctx context.Context, id string, h vram.Holder) (AttachLease, gpu.Share, error) {
	l, sh, err := a.Manager.Attach(ctx, id, h)
	if err != nil {
		return nil, sh, err
	}
	return l, sh, nil
}

// AttachOptions configure an [AttachServer]. Manager is required; every
// other zero value works.
type AttachOptions struct {
	// Manager holds the shards; required.
	Manager Attacher
	// AllowUIDs and AllowGIDs admit a peer whose uid, or gid, is listed.
	// Both empty means the daemon's own uid only.
	AllowUIDs, AllowGIDs []uint32
	// MaxConns bounds the open connections. Zero means 1024.
	MaxConns int
	// MaxAttachmentsPerConn bounds one connection's attachments. Zero
	// means 256.
	MaxAttachmentsPerConn int
	// QueueFrames bounds the frames waiting to be written to one
	// connection; a client that lets it fill is disconnected. Zero means
	// 64.
	QueueFrames int
	// WriteTimeout is the longest one frame may take to write. Zero means
	// 10 seconds.
	WriteTimeout time.Duration
	// FrameTimeout is how long a request's bytes may take once its first
	// has come. Zero means [attach.FrameTimeout].
	FrameTimeout time.Duration
	// Executable names a process's executable. Nil reads /proc/PID/exe.
	Executable func(pid int32) string
	// Narrator receives the protocol's narration; nil means none.
	Narrator *narration.Narrator
	// ObserveVerify, when set, is told of every verification asked over
	// the socket, as the HTTP API's are counted ([Server.ObserveVerify]).
	ObserveVerify func(res vram.VerifyResult, err error)
}

// The narration of the attach socket. The manager narrates attachments
// and detachments itself; these are the protocol's own events.
const (
	AttachActor           = "attach-server"
	ActionAttachListen    = "attach_listen"
	ActionAttachConnect   = "attach_connect"
	ActionAttachClose     = "attach_disconnect"
	ActionAttachRefused   = "attach_refused"
	ActionAttachBadFrame  = "attach_bad_frame"
	ActionAttachSlow      = "attach_slow_client"
	ActionAttachRequest   = "attach_request"
	ActionAttachDenied    = "attach_permission_denied"
	defaultMaxConns       = 1024
	defaultMaxAttachments = 256
	defaultQueueFrames    = 64
	defaultWriteTimeout   = 10 * time.Second
	// refusalWriteTimeout bounds the one error frame written to a
	// refused peer from the accept loop; a fresh socket's buffer takes it
	// at once.
	refusalWriteTimeout = 100 * time.Millisecond
)

// AttachServer serves the attach protocol (package attach) on a Unix
// socket. Its methods are safe for concurrent use.
type AttachServer struct {
	opts   AttachOptions
	m      Attacher
	ln     *net.UnixListener
	path   string
	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	unsub  func()

	serial  atomic.Uint64 // connection numbers, for narration
	refused atomic.Uint64 // connections over the bound

	mu       sync.Mutex
	conns    map[*attachConn]struct{}
	closing  bool
	wg       sync.WaitGroup // the accept loop and every connection
	stopOnce sync.Once
}

// ListenAttach creates the socket at path (mode 0660) and serves it
// until [AttachServer.Close]. A socket file left at path by an earlier
// daemon is removed; any other file there is an error, never removed.
func ListenAttach(path string, opts AttachOptions) (*AttachServer, error) {
	if opts.Manager == nil {
		return nil, errors.New("server: attach: no manager")
	}
	if len(opts.AllowUIDs) == 0 && len(opts.AllowGIDs) == 0 {
		opts.AllowUIDs = []uint32{uint32(os.Getuid())}
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = defaultMaxConns
	}
	if opts.MaxAttachmentsPerConn <= 0 {
		opts.MaxAttachmentsPerConn = defaultMaxAttachments
	}
	if opts.QueueFrames <= 0 {
		opts.QueueFrames = defaultQueueFrames
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = defaultWriteTimeout
	}
	if opts.FrameTimeout <= 0 {
		opts.FrameTimeout = attach.FrameTimeout
	}
	if opts.Executable == nil {
		opts.Executable = procExe
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("server: attach socket %s: a file that is not a socket is in the way", strconv.Quote(path))
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("server: attach socket: remove stale socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("server: attach socket: %w", err)
	}
	ln.SetUnlinkOnClose(false) // Close removes it, after the last connection
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		os.Remove(path)
		return nil, fmt.Errorf("server: attach socket: %w", err)
	}
	s := &AttachServer{opts: opts, m: opts.Manager, ln: ln, path: path, conns: make(map[*attachConn]struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.unsub = s.m.Subscribe(s.notice)
	s.narrate(s.ctx, slog.LevelInfo, ActionAttachListen, path, 0, "", nil,
		fmt.Sprintf("Listening for attach connections on %s", path),
		narration.Int("max_conns", int64(opts.MaxConns)))
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Path returns the socket's path.
func (s *AttachServer) Path() string { return s.path }

func procExe(pid int32) string {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(int(pid)) + "/exe")
	if err != nil {
		return ""
	}
	return exe
}

func (s *AttachServer) narrate(ctx context.Context, level slog.Level, action, target string, dur time.Duration, errKind string, err error, human string, attrs ...narration.Attr) {
	n := s.opts.Narrator
	if !n.Enabled(level, action) {
		return
	}
	e := narration.Event{Level: level, Actor: AttachActor, Action: action, Target: target, Human: human, Duration: dur, ErrorKind: errKind}
	if err != nil {
		e.Error = err.Error()
	}
	copy(e.Attrs[:], attrs)
	n.Emit(ctx, &e)
}

func (s *AttachServer) allowed(uid, gid uint32) bool {
	return slices.Contains(s.opts.AllowUIDs, uid) || slices.Contains(s.opts.AllowGIDs, gid)
}

func (s *AttachServer) accept() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: back off a little rather than spin.
			s.narrate(s.ctx, slog.LevelWarn, ActionAttachRefused, s.path, 0, "accept", err, "Could not accept an attach connection")
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		s.admit(conn)
	}
}

// refuse writes one error frame (id 0) and closes conn.
func refuse(conn *net.UnixConn, code, msg string) {
	if b, err := attach.Encode(&attach.Error{Code: code, Message: attach.CleanMessage(msg)}); err == nil {
		_ = conn.SetWriteDeadline(time.Now().Add(refusalWriteTimeout))
		_, _ = conn.Write(b)
	}
	conn.Close()
}

func (s *AttachServer) admit(conn *net.UnixConn) {
	num := s.serial.Add(1)
	ctx := narration.WithCorrelationID(s.ctx, "attach-conn-"+strconv.FormatUint(num, 10))
	pid, uid, gid, err := attach.PeerCred(conn)
	if err != nil {
		s.narrate(ctx, slog.LevelWarn, ActionAttachRefused, s.path, 0, "peer_credentials", err, "Refused an attach connection: no peer credentials")
		refuse(conn, attach.CodeInternal, "the daemon could not read the peer's credentials")
		return
	}
	h := vram.Holder{PID: pid, UID: uid, GID: gid, Exe: s.opts.Executable(pid)}
	if !s.allowed(uid, gid) {
		reason := fmt.Sprintf("uid %d and gid %d are not allowed on the attach socket", uid, gid)
		s.m.AttachDenied(ctx, h, "", reason)
		s.narrate(ctx, slog.LevelWarn, ActionAttachDenied, strconv.Itoa(int(pid)), 0, attach.CodePermissionDenied, nil,
			fmt.Sprintf("Refused attach connection from pid %d: uid %d is not allowed", pid, uid),
			narration.Int("pid", int64(pid)), narration.Int("uid", int64(uid)), narration.Int("gid", int64(gid)))
		refuse(conn, attach.CodePermissionDenied, reason)
		return
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		refuse(conn, attach.CodeShuttingDown, "the daemon is stopping")
		return
	}
	if len(s.conns) >= s.opts.MaxConns {
		s.mu.Unlock()
		// Narrate the 1st, 2nd, 4th, 8th... refusal, so that a flood
		// shows with its size but does not flood the log.
		if n := s.refused.Add(1); n&(n-1) == 0 {
			s.narrate(ctx, slog.LevelWarn, ActionAttachRefused, strconv.Itoa(int(pid)), 0, attach.CodeTooManyConnections, nil,
				fmt.Sprintf("Refused attach connection from pid %d: %d connections open (%d refused so far)", pid, s.opts.MaxConns, n),
				narration.Int("pid", int64(pid)), narration.Int("refused_total", int64(n)))
		}
		refuse(conn, attach.CodeTooManyConnections, fmt.Sprintf("the daemon has its maximum of %d attach connections", s.opts.MaxConns))
		return
	}
	c := &attachConn{s: s, conn: conn, holder: h, num: num, ctx: ctx, start: time.Now(),
		out: make(chan outFrame, s.opts.QueueFrames), done: make(chan struct{}), writerDone: make(chan struct{}),
		leases: make(map[string]AttachLease)}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.narrate(ctx, slog.LevelInfo, ActionAttachConnect, strconv.Itoa(int(pid)), 0, "", nil,
		fmt.Sprintf("Accepted attach connection from pid %d (uid %d)", pid, uid),
		narration.Int("pid", int64(pid)), narration.Int("uid", int64(uid)), narration.Str("executable", h.Exe))
	go c.serve()
}

// notice pushes a stop notice to the connections it concerns, without
// blocking: a connection whose queue is full is closed.
func (s *AttachServer) notice(n vram.StopNotice) {
	st := &attach.Stop{ShardID: n.ShardID, Reason: n.Reason, Message: attach.CleanMessage(n.Message), ChangedChunks: protoRanges(n.Changed)}
	if !attach.ValidShardID(st.ShardID) {
		st.ShardID = ""
	}
	frame, err := attach.Encode(st)
	if err != nil {
		st.ChangedChunks = nil // a frame too long for its ranges still stops
		frame, _ = attach.Encode(st)
	}
	s.mu.Lock()
	targets := make([]*attachConn, 0, len(s.conns))
	for c := range s.conns {
		targets = append(targets, c)
	}
	s.mu.Unlock()
	for _, c := range targets {
		if c.concerned(n) {
			c.send(outFrame{b: frame}, "stop")
		}
	}
}

// Close stops accepting, pushes a stop with reason shutdown to every
// connection that holds an attachment, closes every connection (which
// detaches its leases with reason shutdown) and removes the socket. It
// waits for the connections until ctx ends, then cuts them off.
func (s *AttachServer) Close(ctx context.Context) error {
	first := false
	s.stopOnce.Do(func() { first = true })
	if !first {
		return nil
	}
	s.mu.Lock()
	s.closing = true
	conns := make([]*attachConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	err := s.ln.Close()
	s.unsub()
	stop, _ := attach.Encode(&attach.Stop{Reason: attach.ReasonShutdown, Message: "the vramseal daemon is stopping"})
	for _, c := range conns {
		if c.attachedCount() > 0 {
			c.send(outFrame{b: stop, last: true}, "stop")
		} else {
			c.abort()
		}
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		for _, c := range conns {
			c.abort()
		}
		<-done
	}
	s.cancel()
	if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
		err = rerr
	}
	return err
}

func protoRanges(rs []vram.ChunkRange) []attach.ChunkRange {
	if len(rs) == 0 {
		return nil
	}
	out := make([]attach.ChunkRange, len(rs))
	for i, r := range rs {
		out[i] = attach.ChunkRange(r)
	}
	return out
}
