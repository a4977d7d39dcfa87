package cli

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNonRegularInputRefused runs digest, seal and shard add on a FIFO
// with no writer. A plain open(2) of it blocks forever; each command must
// instead refuse it at once as bad input. Should one block anyway, the
// watchdog opens the FIFO for writing, which releases the open, and the
// test fails.
func TestNonRegularInputRefused(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "model.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	for _, args := range [][]string{
		{"digest", fifo},
		{"seal", "--device", "sim", "--sim-capacity", "1MiB", fifo},
		{"shard", "add", fifo, "--addr", "127.0.0.1:1"},
		{"model", "add", dir, "--signature", fifo, "--public-key", fifo, "--addr", "127.0.0.1:1"},
		{"digest", dir},
	} {
		t.Run(args[0], func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				_, _, err := runCLI(t, args...)
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				if w, oerr := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); oerr == nil {
					w.Close()
				}
				t.Fatalf("%v blocked on a FIFO; released after %v: %v", args, 30*time.Second, <-done)
			}
			if ExitCode(err) != 2 || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("%v = %v (exit %d), want exit 2 saying it is not a regular file", args, err, ExitCode(err))
			}
		})
	}
}

// TestCtxReaderStopsBlockedRead cancels a read blocked on a pipe that
// nobody writes to.
func TestCtxReaderStopsBlockedRead(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	defer r.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cr, stop := newCtxReader(ctx, r)
	defer stop()
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(cr)
		done <- err
	}()
	// One byte proves the reader is reading before the cancel.
	if _, err := w.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("read after cancel = %v, want context.Canceled", err)
	}
	if got := ExitCode(context.Canceled); got != 130 {
		t.Errorf("ExitCode(context.Canceled) = %d, want 130", got)
	}
}
