// Package python_test runs the Python client (clients/python) against a
// real vramseal daemon: it builds the binary, starts `vramseal serve` with
// an attach socket, and runs the Python integration module
// (tests/test_integration.py) with /usr/bin/python3, which must exit 0.
//
// Set VRAMSEAL_REQUIRE_PYTHON=1 to turn a missing interpreter, or a daemon
// without an attach socket, into a failure instead of a skip.
package python_test

import (
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vramseal/vramseal/gpu/cuda/cudatest"
	"github.com/vramseal/vramseal/internal/daemontest"
)

const python = "/usr/bin/python3"

func require() bool { return os.Getenv("VRAMSEAL_REQUIRE_PYTHON") == "1" }

// skipOrFail skips the test, or fails it when VRAMSEAL_REQUIRE_PYTHON=1.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if require() {
		t.Fatalf(format+" (VRAMSEAL_REQUIRE_PYTHON=1)", args...)
	}
	t.Skipf(format, args...)
}

// needPython skips (or fails) when Debian's interpreter with numpy is absent.
func needPython(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test builds the binary and runs Python; skipped with -short")
	}
	if _, err := os.Stat(python); err != nil {
		skipOrFail(t, "%s not found: the Python client's integration tests need it", python)
	}
	if out, err := exec.Command(python, "-c", "import numpy").CombinedOutput(); err != nil {
		skipOrFail(t, "%s cannot import numpy: %v\n%s", python, err, out)
	}
}

// buildBinary compiles vramseal into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	return daemontest.Build(t, "../../cmd/vramseal")
}

// fixture returns testdata/models/NAME at the repository's root (the
// real-format model fixtures).
func fixture(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "testdata", "models", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("model fixture: %v", err)
	}
	return p
}

// daemon is a running `vramseal serve` and its attach socket.
type daemon struct {
	*daemontest.Daemon
	socket string
}

// startDaemon runs `vramseal serve` with its attach socket in a directory
// others may traverse (so a test can chmod the socket for a consumer of
// another uid). The daemon prints its address once the socket listens.
func startDaemon(t *testing.T, bin string, extra ...string) *daemon {
	t.Helper()
	dir := t.TempDir()
	sockDir := filepath.Join(dir, "sock")
	if err := os.Mkdir(sockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(sockDir, "attach.sock")
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data"),
		"--log-format", "json", "--attach-socket", socket}, extra...)
	return &daemon{Daemon: daemontest.Start(t, bin, args...), socket: socket}
}

// runPython runs the integration module against d with env added.
func runPython(t *testing.T, bin string, d *daemon, env ...string) {
	t.Helper()
	dir := t.TempDir()
	random := filepath.Join(dir, "random.bin")
	b := make([]byte, 3<<20+4321)
	rand.Read(b)
	if err := os.WriteFile(random, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(python, "-m", "unittest", "-v", "test_integration")
	cmd.Dir = "tests"
	cmd.Env = append(os.Environ(),
		"PYTHONPATH=..",
		"VRAMSEAL_IT_SOCKET="+d.socket,
		"VRAMSEAL_IT_ADDR=http://"+d.Addr,
		"VRAMSEAL_IT_BIN="+bin,
		"VRAMSEAL_IT_SAFETENSORS="+fixture(t, "single.safetensors"),
		"VRAMSEAL_IT_SAFETENSORS_DIR="+fixture(t, "tiny-llama"),
		"VRAMSEAL_IT_RANDOM="+random,
	)
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	t.Logf("python -m unittest test_integration:\n%s", out)
	if err != nil {
		t.Fatalf("Python integration tests failed: %v\ndaemon:\n%s", err, d.Output())
	}
}

func TestPythonClientSim(t *testing.T) {
	needPython(t)
	bin := buildBinary(t)
	d := startDaemon(t, bin, "--device", "sim", "--sim-capacity", "256MiB", "--enable-test-faults")
	runPython(t, bin, d, "VRAMSEAL_IT_FAULTS=1")
}

// TestPythonClientFakeCUDA runs the same client against the fake CUDA
// driver: the daemon exports cuda_vmm_fd descriptors and the Python
// client loads the same .so through VRAMSEAL_CUDA_LIBRARY and reads the
// bytes with cuMemcpyDtoH_v2.
func TestPythonClientFakeCUDA(t *testing.T) {
	needPython(t)
	bin := buildBinary(t)
	lib := buildFakeCUDA(t)
	d := startDaemon(t, bin, "--device", "cuda", "--cuda-library", lib)
	runPython(t, bin, d, "VRAMSEAL_IT_CUDA=1", "VRAMSEAL_CUDA_LIBRARY="+lib)
}

// buildFakeCUDA compiles the fake CUDA driver (gpu/cuda/cudatest), which
// the daemon and the Python client then load as their libcuda.
func buildFakeCUDA(t *testing.T) string {
	t.Helper()
	return cudatest.BuildFake(t)
}

// TestPythonUnit runs the client's unit tests (frames, descriptors,
// numpy and torch views, read-only mappings, the ctypes CUDA path against
// a checking stand-in), which need no daemon.
func TestPythonUnit(t *testing.T) {
	needPython(t)
	cmd := exec.Command(python, "-m", "unittest", "discover", "-s", "tests", "-t", "tests")
	cmd.Env = append(os.Environ(), "PYTHONPATH=.")
	for _, k := range []string{"VRAMSEAL_IT_SOCKET"} {
		cmd.Env = append(cmd.Env, k+"=")
	}
	out, err := cmd.CombinedOutput()
	t.Logf("python -m unittest discover:\n%s", out)
	if err != nil {
		t.Fatalf("Python unit tests failed: %v", err)
	}
}
