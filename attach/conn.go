package attach

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// FrameTimeout is how long the rest of a request may take to arrive once
// its first byte has.
const FrameTimeout = 10 * time.Second

// maxStrayFDs is the most descriptors one read can bring along; more are
// dropped (and closed) by the kernel.
const maxStrayFDs = 16

// ReadRequest reads and parses one request from a client connection, for
// a daemon. It waits for the frame's first byte without a deadline
// (closing conn ends the wait), then gives the rest timeout (zero means
// [FrameTimeout]). It reads no byte past the frame, so it may be called
// again for the next one.
//
// It returns io.EOF when the peer closed the connection between frames,
// the errors of [ParseRequest], and a [*ProtocolError] with code
// bad_frame for a bad length, a frame cut short by the end of the stream
// or by the timeout, or a descriptor sent along (it is closed). Other
// errors (a closed conn) are returned as they are. It sets conn's read
// deadline.
func ReadRequest(conn *net.UnixConn, timeout time.Duration) (Request, error) {
	if timeout <= 0 {
		timeout = FrameTimeout
	}
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		return Request{}, err
	}
	var h [headerLen]byte
	n, err := readMsg(conn, h[:1])
	if err != nil {
		return Request{}, err
	}
	if n == 0 {
		return Request{}, io.EOF
	}
	if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return Request{}, err
	}
	if err := readFull(conn, h[1:], timeout); err != nil {
		return Request{}, err
	}
	size := binary.BigEndian.Uint32(h[:])
	if size == 0 {
		return Request{}, badFrame("empty frame: the length is 0")
	}
	if size > MaxRequestFrame {
		return Request{}, badFrame("frame of %d bytes exceeds the limit of %d", size, MaxRequestFrame)
	}
	body := make([]byte, size)
	if err := readFull(conn, body, timeout); err != nil {
		return Request{}, err
	}
	return ParseRequest(body)
}

func readFull(conn *net.UnixConn, p []byte, timeout time.Duration) error {
	for len(p) > 0 {
		n, err := readMsg(conn, p)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return badFrame("truncated frame: the rest did not arrive within %v", timeout)
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return badFrame("truncated frame: the connection ended inside a frame")
		}
		p = p[n:]
	}
	return nil
}

// readMsg reads into p with room for descriptors, closes any that came,
// and then fails with bad_frame. n is 0 at the end of the stream.
func readMsg(conn *net.UnixConn, p []byte) (int, error) {
	oob := make([]byte, syscall.CmsgSpace(4*maxStrayFDs))
	n, oobn, flags, _, err := conn.ReadMsgUnix(p, oob)
	n, oobn = max(n, 0), max(oobn, 0)
	if oobn > 0 || flags&syscall.MSG_CTRUNC != 0 {
		for _, fd := range parseRights(oob[:oobn]) {
			syscall.Close(fd)
		}
		return 0, badFrame("the client sent a file descriptor; the daemon accepts none")
	}
	return n, err
}

// parseRights returns the descriptors in the SCM_RIGHTS messages of oob.
func parseRights(oob []byte) []int {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if m.Header.Level == syscall.SOL_SOCKET && m.Header.Type == syscall.SCM_RIGHTS {
			r, err := syscall.ParseUnixRights(&m)
			if err == nil {
				fds = append(fds, r...)
			}
		}
	}
	return fds
}

// WriteFrameWithFile writes an encoded frame (from [Encode]) with f's
// descriptor in an SCM_RIGHTS control message. The descriptor goes with
// the first sendmsg, which carries the frame's first byte; a frame too
// long for the socket buffer continues with plain writes. The caller
// keeps f and closes it afterwards (the peer has its own descriptor).
func WriteFrameWithFile(conn *net.UnixConn, frame []byte, f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("attach: send descriptor: %w", err)
	}
	var n int
	var werr error
	// Send inside Control, so that the descriptor stays valid until the
	// kernel has taken its reference.
	if err := rc.Control(func(fd uintptr) {
		n, _, werr = conn.WriteMsgUnix(frame, syscall.UnixRights(int(fd)), nil)
	}); err != nil {
		return fmt.Errorf("attach: send descriptor: %w", err)
	}
	if werr != nil {
		return werr
	}
	if n < len(frame) {
		_, werr = conn.Write(frame[n:])
	}
	return werr
}

// PeerCred returns the credentials of conn's peer as the kernel recorded
// them at connect (SO_PEERCRED).
func PeerCred(conn *net.UnixConn) (pid int32, uid, gid uint32, err error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("attach: peer credentials: %w", err)
	}
	var cred *syscall.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, 0, 0, fmt.Errorf("attach: peer credentials: %w", err)
	}
	if cerr != nil {
		return 0, 0, 0, fmt.Errorf("attach: peer credentials: %w", cerr)
	}
	return cred.Pid, cred.Uid, cred.Gid, nil
}
