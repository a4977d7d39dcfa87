// Package daemontest builds the vramseal binary and runs `vramseal serve`
// for end-to-end tests, so that each such test starts the daemon the same
// way: the binary built without cgo, the daemon's stderr kept for failure
// messages, and its HTTP address read from its "serving on" line.
package daemontest

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"
)

// Build compiles the vramseal command at pkg (a package path relative to
// the calling test's directory, such as "../../cmd/vramseal") without cgo
// into a temporary directory and returns the binary's path.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "vramseal")
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// Daemon is a running `vramseal serve`.
type Daemon struct {
	// Addr is the HTTP address the daemon serves on (host:port).
	Addr string
	// Cmd is the daemon's process.
	Cmd *exec.Cmd
	// Exited receives the result of the process's Wait, once.
	Exited <-chan error
	done   chan struct{} // closed once the process has exited

	mu     sync.Mutex // guards stderr, written by the scanner goroutine
	stderr bytes.Buffer
}

var servingRE = regexp.MustCompile(`serving on http://(127\.0\.0\.1:\d+)`)

// Start runs bin with args, which must make it serve on 127.0.0.1 (for
// example "serve --listen 127.0.0.1:0 ..."), and waits up to 30 seconds
// for its "serving on" line; everything the daemon sets up before it (the
// attach socket included) is ready then. The daemon is killed when the
// test ends.
func Start(t testing.TB, bin string, args ...string) *Daemon {
	t.Helper()
	cmd := exec.Command(bin, args...)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	exited := make(chan error, 1)
	d := &Daemon{Cmd: cmd, Exited: exited, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { exited <- cmd.Wait(); pw.Close(); close(d.done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-d.done })
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			d.mu.Lock()
			d.stderr.WriteString(sc.Text() + "\n")
			d.mu.Unlock()
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil && !sent {
				found <- m[1]
				sent = true
			}
		}
		close(found)
	}()
	select {
	case addr, ok := <-found:
		if !ok {
			t.Fatalf("daemon exited before serving:\n%s", d.Output())
		}
		d.Addr = addr
	case <-time.After(30 * time.Second):
		t.Fatalf("daemon did not start:\n%s", d.Output())
	}
	return d
}

// Output returns what the daemon has written to stderr so far.
func (d *Daemon) Output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}
