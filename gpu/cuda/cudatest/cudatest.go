// Package cudatest builds the fake CUDA driver that gpu/cuda's tests run
// against, for the tests of any package: a shared library that stands in
// for libcuda.so.1 and libnvidia-ml.so.1 over host memory, with CUDA
// virtual memory management over memfd, mmap and mprotect, so that a
// consumer process (Go through purego, Python through ctypes) can import
// an exported allocation and map it read-only for real.
//
// The C source, testdata/fakecuda.c, is embedded together with the leaf kernel it
// runs on the CPU, so a test binary builds the fake from any directory.
// Its comment documents every exported function, the fault knobs
// (fake_set, fake_reset), the counters (fake_get) and fake_flip.
//
// Building needs a C compiler: $CC, or gcc. Without one [BuildFake]
// skips the test, unless $VRAMSEAL_REQUIRE_FAKECUDA is 1 (as .ci/run sets
// it), which makes a missing compiler a failure; a compiler that fails on
// the source is always a failure.
package cudatest

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vramseal/vramseal/gpu/cuda/kernel"
)

//go:embed testdata/fakecuda.c
var source string

// RequireEnv names the environment variable that, set to 1, turns a
// missing C compiler into a test failure, so that CI cannot skip the
// tests that need the fake driver.
const RequireEnv = "VRAMSEAL_REQUIRE_FAKECUDA"

// ErrNoCompiler is wrapped by [Build]'s error when the C compiler does not
// exist, the one reason a test may skip rather than fail.
var ErrNoCompiler = errors.New("cudatest: the fake CUDA driver needs a C compiler")

// Build writes the fake driver's source into dir and compiles it with the
// C compiler cc ("" means $CC, or gcc when that is unset) into a shared
// library there, returning the library's path. The error wraps
// [ErrNoCompiler] when cc cannot be found; any other error means the
// build is broken and carries the compiler's output.
func Build(cc, dir string) (string, error) {
	if cc == "" {
		cc = os.Getenv("CC")
	}
	if cc == "" {
		cc = "gcc"
	}
	if _, err := exec.LookPath(cc); err != nil {
		return "", fmt.Errorf("%w: %s not found (install gcc or set $CC)", ErrNoCompiler, cc)
	}
	src := filepath.Join(dir, "fakecuda.c")
	for name, text := range map[string]string{src: source, filepath.Join(dir, "leafhash.cu"): kernel.Source()} {
		if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
			return "", fmt.Errorf("cudatest: %w", err)
		}
	}
	out := filepath.Join(dir, "fakecuda.so")
	cmd := exec.Command(cc, "-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-pthread", "-I", dir, "-o", out, src)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("cudatest: building the fake CUDA driver with %s: %w\n%s", cc, err, b)
	}
	return out, nil
}

// BuildFake builds the fake driver into t.TempDir() with [Build] and
// returns the library's path. It skips t when there is no C compiler and
// $VRAMSEAL_REQUIRE_FAKECUDA is not 1, and fails t on every other error.
// Each call compiles anew (about a second); a test binary that needs the
// fake in many tests builds it once, for example in TestMain with
// [Build].
func BuildFake(t testing.TB) string {
	t.Helper()
	path, err := Build("", t.TempDir())
	if err != nil {
		if Skips(err) {
			t.Skip(err)
		}
		if errors.Is(err, ErrNoCompiler) {
			t.Fatalf("%v; %s=1 requires it", err, RequireEnv)
		}
		t.Fatal(err)
	}
	return path
}

// Skips reports whether a test should skip, rather than fail, because
// [Build] returned err: only when there is no C compiler and
// $VRAMSEAL_REQUIRE_FAKECUDA is not 1.
func Skips(err error) bool {
	return errors.Is(err, ErrNoCompiler) && os.Getenv(RequireEnv) != "1"
}
