package attach

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeDaemon serves one connection with the server helpers: attach
// answers with a read-only file holding data, ping with pong, and every
// request with fds is a bad frame.
type fakeDaemon struct {
	path string
	data []byte
	errs chan error
	push chan Stop
	ln   *net.UnixListener
}

func startFake(t *testing.T, data []byte) *fakeDaemon {
	t.Helper()
	d := &fakeDaemon{path: filepath.Join(t.TempDir(), "a.sock"), data: data, errs: make(chan error, 4), push: make(chan Stop, 4)}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: d.path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	d.ln = ln
	t.Cleanup(func() { ln.Close() })
	file := filepath.Join(t.TempDir(), "shard")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		conn, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		defer conn.Close()
		var wmu sync.Mutex
		write := func(frame []byte, f *os.File) {
			wmu.Lock()
			defer wmu.Unlock()
			if f != nil {
				WriteFrameWithFile(conn, frame, f)
				return
			}
			conn.Write(frame)
		}
		go func() {
			for s := range d.push {
				b, _ := Encode(&s)
				write(b, nil)
			}
		}()
		for {
			req, err := ReadRequest(conn, time.Second)
			if err != nil {
				d.errs <- err
				if pe := (*ProtocolError)(nil); errors.As(err, &pe) {
					b, _ := Encode(&Error{Code: pe.Code, Message: CleanMessage(pe.Msg)})
					write(b, nil)
				}
				return
			}
			switch req.Op {
			case OpPing:
				b, _ := Encode(&Pong{ID: req.ID})
				write(b, nil)
			case OpAttach:
				a := sampleAttached()
				a.ID, a.ShardID, a.Seal.ShardID, a.Seal.Size = req.ID, req.ShardID, req.ShardID, int64(len(d.data))
				a.Tensors = nil
				f, err := os.Open(file)
				if err != nil {
					d.errs <- err
					return
				}
				b, _ := Encode(a)
				write(b, f)
				f.Close()
			default:
				b, _ := Encode(&Error{ID: req.ID, Code: CodeNotAttached, Message: "no"})
				write(b, nil)
			}
		}
	}()
	return d
}

func TestClientAttachMapPing(t *testing.T) {
	data := []byte("sealed weights, 33 bytes of them.")
	d := startFake(t, data)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, d.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Concurrent requests are matched with their answers.
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 10 {
		wg.Add(2)
		go func() { defer wg.Done(); errs <- c.Ping(ctx) }()
		go func() {
			defer wg.Done()
			a, err := c.Attach(ctx, "shard-1", "corr-1")
			if err == nil {
				a.File.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent request: %v", err)
		}
	}

	a, err := c.Attach(ctx, "shard-2", "")
	if err != nil {
		t.Fatalf("Attach = %v", err)
	}
	defer a.File.Close()
	b, unmap, err := MapReadOnly(a)
	if err != nil {
		t.Fatalf("MapReadOnly = %v", err)
	}
	if string(b) != string(data) {
		t.Errorf("mapped %q, want %q", b, data)
	}
	if err := unmap(); err != nil {
		t.Errorf("unmap = %v", err)
	}
	if _, err := syscall.Mmap(int(a.File.Fd()), 0, int(a.Mapping.Size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED); err == nil {
		t.Error("mmap(PROT_WRITE) of the descriptor succeeded")
	}
	cuda := *a
	cuda.Mapping.Kind = KindCUDAVMM
	if _, _, err := MapReadOnly(&cuda); err == nil {
		t.Error("MapReadOnly(cuda_vmm_fd) = nil error")
	}

	var ae *Error
	if err := c.Detach(ctx, "shard-2", ""); !errors.As(err, &ae) || ae.Code != CodeNotAttached {
		t.Errorf("Detach = %v, want an error frame not_attached", err)
	}

	d.push <- Stop{Reason: ReasonShutdown, Message: "bye"}
	select {
	case s := <-c.Stops():
		if s.Reason != ReasonShutdown {
			t.Errorf("stop = %+v", s)
		}
	case <-ctx.Done():
		t.Fatal("no stop push")
	}
}

func TestClientClosedByDaemon(t *testing.T) {
	d := startFake(t, []byte("x"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, d.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A frame with a descriptor is a bad frame for the daemon.
	f, _ := os.Open(os.DevNull)
	defer f.Close()
	frame, _ := Encode(Request{V: 1, Op: OpPing, ID: 99})
	if err := WriteFrameWithFile(c.conn, frame, f); err != nil {
		t.Fatal(err)
	}
	if err := <-d.errs; !errors.Is(err, ErrBadFrame) {
		t.Errorf("daemon read %v, want a bad frame", err)
	}
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("connection did not end")
	}
	var ae *Error
	if !errors.As(c.Err(), &ae) || ae.Code != CodeBadFrame {
		t.Errorf("Err() = %v, want the daemon's bad_frame", c.Err())
	}
	if err := c.Ping(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Ping after close = %v, want ErrClosed", err)
	}
}

func TestReadRequestTruncated(t *testing.T) {
	d := startFake(t, []byte("x"))
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: d.path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte{0, 0, 0, 9, '{'}) // then nothing: the daemon's 1 s runs out
	if err := <-d.errs; !errors.Is(err, ErrBadFrame) {
		t.Errorf("daemon read %v, want a bad frame", err)
	}
}

func TestPeerCred(t *testing.T) {
	d := startFake(t, []byte("x"))
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: d.path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pid, uid, gid, err := PeerCred(conn)
	if err != nil || pid != int32(os.Getpid()) || uid != uint32(os.Getuid()) || gid != uint32(os.Getgid()) {
		t.Errorf("PeerCred = %d, %d, %d, %v; want this process", pid, uid, gid, err)
	}
}
