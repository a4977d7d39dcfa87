package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"
)

// openInput opens the model file at path for reading and refuses anything
// but a regular file (exit status 2). The open does not block: a FIFO
// with no writer would hold a plain open(2) forever, and a device node
// could have side effects, so the file is opened with O_NONBLOCK (which
// regular files ignore) and checked with fstat before any read.
func openInput(path string) (*os.File, fs.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, quotePathError(err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, quotePathError(err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, &ExitError{Code: 2, Err: fmt.Errorf("%s is %s, not a regular file", safeText(path), fileKind(st.Mode()))}
	}
	return f, st, nil
}

// fileKind names what a non-regular file is, for the refusal.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	}
	return "a special file"
}

// quotePathError rewrites the path of an *fs.PathError with [safeText], so
// a file name with control characters never reaches the terminal raw;
// errors.Is still sees the cause.
func quotePathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return &fs.PathError{Op: pe.Op, Path: safeText(pe.Path), Err: pe.Err}
	}
	return err
}

// ctxReader stops reading once ctx is done: every Read checks it, and a
// Read already blocked on a pollable file (a pipe) is woken by a read
// deadline in the past. Regular files never block for long, so the check
// between reads is what interrupts them.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

// newCtxReader returns r wrapped in a [ctxReader] and a function that
// must be called when reading is over.
func newCtxReader(ctx context.Context, r io.Reader) (io.Reader, func()) {
	stop := func() bool { return false }
	if f, ok := r.(interface{ SetReadDeadline(time.Time) error }); ok {
		stop = context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Now()) })
	}
	return &ctxReader{ctx: ctx, r: r}, func() { stop() }
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	if err != nil && c.ctx.Err() != nil {
		err = c.ctx.Err()
	}
	return n, err
}
