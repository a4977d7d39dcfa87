package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestInterruptStopsUpload sends SIGINT and SIGTERM to `shard add` while
// the daemon it talks to (a listener that never answers) holds its
// request: the command must stop and exit 130 (interrupted).
func TestInterruptStopsUpload(t *testing.T) {
	bin := buildBinary(t)
	model := filepath.Join(t.TempDir(), "model.bin")
	if err := os.WriteFile(model, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, sig := range []os.Signal{os.Interrupt, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			accepted := make(chan net.Conn, 1)
			go func() {
				if c, err := ln.Accept(); err == nil {
					accepted <- c
				}
			}()
			cmd := exec.Command(bin, "shard", "add", model, "--addr", ln.Addr().String())
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			conn := <-accepted
			defer conn.Close()
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			err = cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 130 || !strings.Contains(out.String(), "stopped") {
				t.Errorf("shard add after %v: %v, want exit 130\n%s", sig, err, out.String())
			}
		})
	}
}
