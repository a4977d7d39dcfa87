package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vramseal/vramseal/attach"
	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/gpu/sim"
	"github.com/vramseal/vramseal/narration"
	"github.com/vramseal/vramseal/seal"
	"github.com/vramseal/vramseal/vram"
)

// socketPath returns a short socket path (sun_path holds 108 bytes, less
// than t.TempDir may need).
func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vsa")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "a.sock")
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// realEnv is a manager on one simulated device with two sealed shards,
// served on an attach socket.
type realEnv struct {
	m    *vram.Manager
	dev  *sim.Device
	srv  *AttachServer
	data map[string][]byte
}

func newRealEnv(t *testing.T, opts AttachOptions) *realEnv {
	t.Helper()
	ctx := testCtx(t)
	devs, err := sim.New(sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := vram.New(ctx, vram.Options{Devices: []gpu.Device{devs[0]}, ChunkSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	e := &realEnv{m: m, dev: devs[0], data: map[string][]byte{}}
	for i, id := range []string{"shard-a", "shard-b"} {
		data := bytes.Repeat([]byte{byte('a' + i), 1, 2, 3, 4}, 5000) // 25000 bytes: 7 chunks
		if _, err := m.Seal(ctx, vram.SealRequest{ShardID: id, ModelRef: "model", Size: int64(len(data)), Data: bytes.NewReader(data)}); err != nil {
			t.Fatal(err)
		}
		e.data[id] = data
	}
	opts.Manager = ManagerAttacher(m)
	e.srv, err = ListenAttach(socketPath(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.srv.Close(context.Background()) })
	return e
}

func dial(t *testing.T, path string) *attach.Client {
	t.Helper()
	c, err := attach.Dial(testCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	var e *attach.Error
	if !errors.As(err, &e) || e.Code != code {
		t.Errorf("%s = %v, want an error frame %s", what, err, code)
	}
}

func TestAttachRealManager(t *testing.T) {
	e := newRealEnv(t, AttachOptions{})
	ctx := testCtx(t)
	c := dial(t, e.srv.Path())

	a, err := c.Attach(ctx, "shard-a", "req-1")
	if err != nil {
		t.Fatalf("Attach = %v", err)
	}
	defer a.File.Close()
	if a.CorrelationID != "req-1" || a.Seal.Size != 25000 || a.Mapping.Kind != attach.KindMemfd || !strings.HasPrefix(a.Attachment, "att-") {
		t.Errorf("Attach = %+v", a.Attached)
	}
	info, _ := e.m.Shard("shard-a")
	if a.Seal.TreeRoot != info.Seal.Root.String() || a.Seal.Digest != info.Seal.Digest.String() {
		t.Errorf("attached seal %+v differs from the manager's %+v", a.Seal, info.Seal)
	}
	b, unmap, err := attach.MapReadOnly(a)
	if err != nil {
		t.Fatalf("MapReadOnly = %v", err)
	}
	if !bytes.Equal(b, e.data["shard-a"]) {
		t.Error("the mapped bytes differ from the sealed ones")
	}
	unmap()
	if w, err := syscall.Mmap(int(a.File.Fd()), 0, int(a.Mapping.Size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED); err == nil {
		syscall.Munmap(w)
		t.Error("mmap(PROT_WRITE) of the attached descriptor succeeded")
	}

	v, err := c.Verify(ctx, "shard-a", "", 3, "")
	if err != nil || v.Mode != "sampled" || v.Chunks != 7 || v.ChunksChecked != 3 || v.CorrelationID == "" {
		t.Errorf("Verify(sampled) = %+v, %v", v, err)
	}
	v, err = c.Verify(ctx, "shard-a", attach.ModeFull, 0, "req-2")
	if err != nil || v.Mode != "full" || v.ChunksChecked != 7 || v.DetectionProbability != 1 || v.CorrelationID != "req-2" {
		t.Errorf("Verify(full) = %+v, %v", v, err)
	}
	_, err = c.Verify(ctx, "shard-b", "", 3, "")
	wantCode(t, "Verify(not attached)", err, attach.CodeNotAttached)
	_, err = c.Attach(ctx, "shard-zz", "")
	wantCode(t, "Attach(unknown)", err, attach.CodeNotFound)
	_, err = c.Attach(ctx, "shard-a", "")
	wantCode(t, "Attach(twice)", err, attach.CodeAlreadyAttached)

	if l, _ := e.m.Leases("shard-a"); len(l) != 1 {
		t.Errorf("Leases = %v, want 1", l)
	}
	if err := c.Detach(ctx, "shard-a", ""); err != nil {
		t.Errorf("Detach = %v", err)
	}
	if l, _ := e.m.Leases("shard-a"); len(l) != 0 {
		t.Errorf("Leases after detach = %v, want none", l)
	}
	err = c.Detach(ctx, "shard-a", "")
	wantCode(t, "Detach(twice)", err, attach.CodeNotAttached)
}

func TestAttachIntegrityStopsEveryAttachedConnection(t *testing.T) {
	e := newRealEnv(t, AttachOptions{})
	ctx := testCtx(t)
	c1, c2 := dial(t, e.srv.Path()), dial(t, e.srv.Path())
	for _, x := range []struct {
		c  *attach.Client
		id string
	}{{c1, "shard-a"}, {c2, "shard-b"}} {
		a, err := x.c.Attach(ctx, x.id, "")
		if err != nil {
			t.Fatal(err)
		}
		a.File.Close()
	}
	buf, _, _ := e.m.Buffer("shard-a")
	if err := e.dev.FlipBits(buf, 5000, 0x01); err != nil {
		t.Fatal(err)
	}
	_, err := c1.Verify(ctx, "shard-a", attach.ModeFull, 0, "")
	wantCode(t, "Verify(corrupted)", err, attach.CodeIntegrityFailed)
	var ae *attach.Error
	if errors.As(err, &ae) && (len(ae.ChangedChunks) != 1 || ae.ChangedChunks[0].FirstChunk != 1) {
		t.Errorf("changed chunks = %+v, want chunk 1", ae.ChangedChunks)
	}
	for i, c := range []*attach.Client{c1, c2} {
		select {
		case s := <-c.Stops():
			if s.Reason != attach.ReasonIntegrity || s.ShardID != "shard-a" || len(s.ChangedChunks) != 1 {
				t.Errorf("connection %d: stop = %+v", i+1, s)
			}
		case <-ctx.Done():
			t.Fatalf("connection %d: no stop push", i+1)
		}
	}
	_, err = c2.Verify(ctx, "shard-b", "", 0, "")
	wantCode(t, "Verify(after the stop)", err, attach.CodeWorkerStopped)
}

// fakeAttacher serves one shard whose bytes are a read-only temp file.
type fakeAttacher struct {
	file     string
	size     int64
	detaches chan string // reasons

	mu   sync.Mutex
	n    int
	subs []func(vram.StopNotice)
}

func newFake(t *testing.T) *fakeAttacher {
	file := filepath.Join(t.TempDir(), "shard")
	if err := os.WriteFile(file, bytes.Repeat([]byte("x"), 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	return &fakeAttacher{file: file, size: 4096, detaches: make(chan string, 1000)}
}

type fakeLease struct {
	f    *fakeAttacher
	id   string
	info vram.ShardInfo
	once sync.Once
}

func (l *fakeLease) ID() string            { return l.id }
func (l *fakeLease) Shard() vram.ShardInfo { return l.info }
func (l *fakeLease) Detach(ctx context.Context, reason string) error {
	l.once.Do(func() { l.f.detaches <- reason })
	return nil
}

func (f *fakeAttacher) Attach(ctx context.Context, id string, h vram.Holder) (AttachLease, gpu.Share, error) {
	if id == "missing" {
		return nil, gpu.Share{}, vram.ErrNotFound
	}
	if id == "audit" {
		return nil, gpu.Share{}, vram.ErrAuditFailed
	}
	file, err := os.Open(f.file)
	if err != nil {
		return nil, gpu.Share{}, err
	}
	f.mu.Lock()
	f.n++
	lid := "att-" + string(rune('0'+f.n%10)) + id
	f.mu.Unlock()
	info := vram.ShardInfo{Seal: seal.Seal{ShardID: id, ShardCount: 1, DeviceUUID: "GPU-fake", Size: f.size, ChunkSize: 4096,
		SealedAt: time.Unix(1, 0), WorkerID: "w", KeyID: "k"}, Chunks: 1}
	return &fakeLease{f: f, id: lid, info: info}, gpu.Share{File: file, Kind: gpu.ShareMemfd, MapSize: 4096, Granularity: 4096}, nil
}

func (f *fakeAttacher) AttachDenied(ctx context.Context, h vram.Holder, shardID, reason string) {}

func (f *fakeAttacher) Verify(ctx context.Context, id string, mode vram.VerifyMode) (vram.VerifyResult, error) {
	return vram.VerifyResult{ShardID: id, Mode: mode.String(), ChunksChecked: 1, Chunks: 1, DetectionProbability: 1}, nil
}

func (f *fakeAttacher) Subscribe(fn func(vram.StopNotice)) func() {
	f.mu.Lock()
	f.subs = append(f.subs, fn)
	f.mu.Unlock()
	return func() {}
}

func (f *fakeAttacher) notify(n vram.StopNotice) {
	f.mu.Lock()
	subs := f.subs
	f.mu.Unlock()
	for _, fn := range subs {
		fn(n)
	}
}

var _ Attacher = (*fakeAttacher)(nil)

func fakeServer(t *testing.T, opts AttachOptions) (*fakeAttacher, *AttachServer) {
	t.Helper()
	f := newFake(t)
	opts.Manager = f
	s, err := ListenAttach(socketPath(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return f, s
}

// rawConn is a client connection without the Client's checks.
func rawConn(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return c
}

// readResponse reads one frame; a frame with a descriptor has it closed.
func readResponse(t *testing.T, c *net.UnixConn) (attach.Response, error) {
	t.Helper()
	body, err := attach.ReadFrame(c, attach.MaxResponseFrame)
	if err != nil {
		return attach.Response{}, err
	}
	return attach.ParseResponse(body)
}

func wantClosed(t *testing.T, c *net.UnixConn) {
	t.Helper()
	// A daemon that closes with the rest of a bad frame unread resets
	// the connection.
	if _, err := readResponse(t, c); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("after the error frame: %v, want the end of the connection", err)
	}
}

func frame(body string) []byte {
	return append([]byte{0, 0, byte(len(body) >> 8), byte(len(body))}, body...)
}

func TestAttachBadFrames(t *testing.T) {
	for _, tt := range []struct {
		name  string
		in    []byte
		code  string
		fatal bool
	}{
		{"not json", frame(`hello`), attach.CodeBadFrame, true},
		{"empty", []byte{0, 0, 0, 0}, attach.CodeBadFrame, true},
		{"oversized", []byte{0, 0, 0x10, 0x01}, attach.CodeBadFrame, true},
		{"huge", []byte{0xff, 0xff, 0xff, 0xff}, attach.CodeBadFrame, true},
		{"truncated", []byte{0, 0, 0, 40, '{'}, attach.CodeBadFrame, true},
		{"duplicate", frame(`{"v":1,"op":"ping","id":1,"id":1}`), attach.CodeBadFrame, true},
		{"version 2", frame(`{"v":2,"op":"ping","id":1}`), attach.CodeUnsupportedVersion, true},
		{"unknown op", frame(`{"v":1,"op":"map","id":3}`), attach.CodeUnknownOp, false},
		{"bad shard", frame(`{"v":1,"op":"attach","id":3,"shard_id":"../x"}`), attach.CodeInvalidInput, false},
		{"audit", frame(`{"v":1,"op":"attach","id":3,"shard_id":"audit"}`), attach.CodeAuditUnavailable, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, s := fakeServer(t, AttachOptions{FrameTimeout: 200 * time.Millisecond})
			c := rawConn(t, s.Path())
			if _, err := c.Write(tt.in); err != nil {
				t.Fatal(err)
			}
			r, err := readResponse(t, c)
			if err != nil || r.Error == nil || r.Error.Code != tt.code {
				t.Fatalf("answer = %+v, %v, want an error frame %s", r, err, tt.code)
			}
			if tt.fatal {
				if r.ID != 0 {
					t.Errorf("fatal error id = %d, want 0", r.ID)
				}
				wantClosed(t, c)
				return
			}
			if r.ID != 3 {
				t.Errorf("error id = %d, want 3", r.ID)
			}
			c.Write(frame(`{"v":1,"op":"ping","id":4}`))
			if r, err := readResponse(t, c); err != nil || r.Pong == nil || r.ID != 4 {
				t.Errorf("ping after a non-fatal error = %+v, %v", r, err)
			}
		})
	}
}

func TestAttachRefusesDescriptors(t *testing.T) {
	_, s := fakeServer(t, AttachOptions{})
	c := rawConn(t, s.Path())
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := attach.WriteFrameWithFile(c, frame(`{"v":1,"op":"ping","id":1}`), f); err != nil {
		t.Fatal(err)
	}
	r, err := readResponse(t, c)
	if err != nil || r.Error == nil || r.Error.Code != attach.CodeBadFrame {
		t.Fatalf("answer = %+v, %v, want bad_frame", r, err)
	}
	wantClosed(t, c)
}

func TestAttachDeniedUID(t *testing.T) {
	_, s := fakeServer(t, AttachOptions{AllowUIDs: []uint32{uint32(os.Getuid()) + 1}})
	c := rawConn(t, s.Path())
	r, err := readResponse(t, c)
	if err != nil || r.Error == nil || r.Error.Code != attach.CodePermissionDenied {
		t.Fatalf("answer = %+v, %v, want permission_denied", r, err)
	}
	wantClosed(t, c)
}

func TestAttachConnectionBound(t *testing.T) {
	_, s := fakeServer(t, AttachOptions{MaxConns: 2})
	ctx := testCtx(t)
	for range 2 {
		if err := dial(t, s.Path()).Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
	c := dial(t, s.Path())
	wantCode(t, "Ping over the bound", c.Ping(ctx), attach.CodeTooManyConnections)
	wantCode(t, "Err over the bound", c.Err(), attach.CodeTooManyConnections)
}

func TestAttachDisconnectEndsLeases(t *testing.T) {
	f, s := fakeServer(t, AttachOptions{})
	ctx := testCtx(t)
	c := dial(t, s.Path())
	for _, id := range []string{"s1", "s2"} {
		a, err := c.Attach(ctx, id, "")
		if err != nil {
			t.Fatal(err)
		}
		a.File.Close()
	}
	c.Close()
	for range 2 {
		select {
		case r := <-f.detaches:
			if r != vram.DetachDisconnect {
				t.Errorf("Detach reason %q, want %q", r, vram.DetachDisconnect)
			}
		case <-ctx.Done():
			t.Fatal("the leases were not detached")
		}
	}
}

func TestAttachStopPushes(t *testing.T) {
	f, s := fakeServer(t, AttachOptions{})
	ctx := testCtx(t)
	c1, c2, idle := dial(t, s.Path()), dial(t, s.Path()), dial(t, s.Path())
	var lease1 string
	for i, c := range []*attach.Client{c1, c2} {
		a, err := c.Attach(ctx, "s1", "")
		if err != nil {
			t.Fatal(err)
		}
		a.File.Close()
		if i == 0 {
			lease1 = a.Attachment
		}
	}
	if err := idle.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	f.notify(vram.StopNotice{ShardID: "s1", Reason: vram.StopIntegrity, Message: "bad\nbytes", Changed: []vram.ChunkRange{{FirstChunk: 0, LastChunk: 0, Offset: 0, Length: 4096}}})
	for i, c := range []*attach.Client{c1, c2} {
		select {
		case st := <-c.Stops():
			if st.Reason != attach.ReasonIntegrity || st.Message != "bad?bytes" || len(st.ChangedChunks) != 1 {
				t.Errorf("connection %d: stop %+v", i+1, st)
			}
		case <-ctx.Done():
			t.Fatalf("connection %d: no stop", i+1)
		}
	}
	// A revocation goes to the holder of the lease only. Pushes and
	// answers are written in order, so once a ping is answered any stop
	// for that connection has arrived.
	f.notify(vram.StopNotice{ShardID: "s1", Reason: vram.StopRevoked, Leases: []string{lease1}})
	for i, c := range []*attach.Client{c1, c2, idle} {
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		var got []attach.Stop
		select {
		case st := <-c.Stops():
			got = append(got, st)
		default:
		}
		if want := i == 0; (len(got) == 1) != want {
			t.Errorf("connection %d: stops %+v after the revocation, want one: %v", i+1, got, want)
		}
	}
	// The idle connection, with no attachment, never saw the integrity stop.
	select {
	case st := <-idle.Stops():
		t.Errorf("unattached connection got %+v", st)
	default:
	}
}

func TestAttachSlowClientIsCutOff(t *testing.T) {
	f, s := fakeServer(t, AttachOptions{QueueFrames: 2, WriteTimeout: 100 * time.Millisecond})
	ctx := testCtx(t)
	slow := rawConn(t, s.Path())
	slow.Write(frame(`{"v":1,"op":"attach","id":1,"shard_id":"s1"}`))
	// Wait until the attachment is there: the lease's stop reaches it.
	fast := dial(t, s.Path())
	a, err := fast.Attach(ctx, "s2", "")
	if err != nil {
		t.Fatal(err)
	}
	a.File.Close()
	msg := strings.Repeat("m", attach.MaxMessageLen)
	for i := 0; ; i++ {
		f.notify(vram.StopNotice{Reason: vram.StopPolicy, Message: msg})
		// The fast client drains its pushes; the daemon answers it
		// throughout.
		for len(fast.Stops()) > 0 {
			<-fast.Stops()
		}
		if err := fast.Ping(ctx); err != nil {
			t.Fatalf("push %d: Ping = %v", i, err)
		}
		select {
		case r := <-f.detaches:
			if r != vram.DetachDisconnect {
				t.Errorf("Detach reason %q", r)
			}
			return // the slow client was cut off, its lease ended
		default:
		}
		if ctx.Err() != nil {
			t.Fatal("the slow client was never cut off")
		}
	}
}

func TestAttachCloseShutdown(t *testing.T) {
	f, s := fakeServer(t, AttachOptions{})
	ctx := testCtx(t)
	c := dial(t, s.Path())
	a, err := c.Attach(ctx, "s1", "")
	if err != nil {
		t.Fatal(err)
	}
	a.File.Close()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if st := <-c.Stops(); st.Reason != attach.ReasonShutdown {
		t.Errorf("stop = %+v, want shutdown", st)
	}
	<-c.Done()
	if r := <-f.detaches; r != vram.StopShutdown {
		t.Errorf("Detach reason %q, want shutdown", r)
	}
	if _, err := os.Lstat(s.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after Close: %v", err)
	}
}

func TestListenAttachPath(t *testing.T) {
	path := socketPath(t)
	os.WriteFile(path, []byte("keep"), 0o600)
	if _, err := ListenAttach(path, AttachOptions{Manager: newFake(t)}); err == nil {
		t.Fatal("ListenAttach over a regular file = nil error")
	}
	if b, _ := os.ReadFile(path); string(b) != "keep" {
		t.Fatal("ListenAttach removed a regular file")
	}
	os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // a stale socket file stays
	s, err := ListenAttach(path, AttachOptions{Manager: newFake(t)})
	if err != nil {
		t.Fatalf("ListenAttach over a stale socket = %v", err)
	}
	defer s.Close(context.Background())
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o660 {
		t.Errorf("socket mode = %v, %v, want 0660", st.Mode(), err)
	}
}

// The attach package keeps its own copies of the shard ID and correlation
// ID rules, so that it depends on neither vram nor narration.
func TestAttachRulesAgree(t *testing.T) {
	ids := []string{"", "a", strings.Repeat("a", 256), strings.Repeat("a", 257), strings.Repeat("c", 128), strings.Repeat("c", 129)}
	for b := 0; b < 256; b++ {
		ids = append(ids, "x"+string([]byte{byte(b)}))
	}
	for _, id := range ids {
		if got, want := attach.ValidShardID(id), vram.ValidateShardID(id) == nil; got != want {
			t.Errorf("attach.ValidShardID(%q) = %v, vram says %v", id, got, want)
		}
		if got, want := attach.ValidCorrelationID(id), narration.ValidCorrelationID(id); got != want {
			t.Errorf("attach.ValidCorrelationID(%q) = %v, narration says %v", id, got, want)
		}
	}
}
