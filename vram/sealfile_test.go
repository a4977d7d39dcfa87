package vram

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestSealFileRefusesFIFO seals a FIFO with no writer: a plain open(2)
// of it would block forever. SealFile must refuse it as invalid input at
// once; should it block anyway, the watchdog opens the FIFO for writing,
// which releases the open, and the test fails.
func TestSealFileRefusesFIFO(t *testing.T) {
	m, _ := newTestManager(t, 1, 1<<20)
	fifo := filepath.Join(t.TempDir(), "model.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	watchdog := time.AfterFunc(30*time.Second, func() {
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
	})
	_, err := m.SealFile(context.Background(), fifo, SealRequest{ShardID: "fifo"})
	if !watchdog.Stop() {
		t.Fatalf("SealFile blocked on a FIFO until the watchdog opened it for writing: %v", err)
	}
	if !errors.Is(err, ErrInvalidInput) {
		t.Errorf("SealFile(FIFO) = %v, want ErrInvalidInput", err)
	}
}
