package cuda

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ebitengine/purego"
	"github.com/vramseal/vramseal/gpu"
)

// fake is the fake CUDA driver (testdata/fakecuda.c), built once per test
// binary by the first needFake. Its state is global to the process, so
// tests that use it do not run in parallel with each other.
var fake struct {
	path  string // the built .so, "" when it could not be built
	err   error  // why not; wraps errFakeMissing when it cannot be built here
	set   func(name string, v int64) int32
	get   func(name string) int64
	reset func()
	flip  func(ptr devptr, off int64, mask int32) int32
}

// errFakeMissing marks a fake driver that cannot be built here (no C
// compiler, or the test binary runs outside the source tree), as opposed
// to one that is broken. Only the former skips, and only while
// $VRAMSEAL_REQUIRE_FAKECUDA is not 1 (.ci/run sets it).
var errFakeMissing = errors.New("fake CUDA driver cannot be built here")

// requireFakeEnv names the environment variable that turns a missing C
// compiler into a test failure, so that CI cannot skip the backend's tests.
const requireFakeEnv = "VRAMSEAL_REQUIRE_FAKECUDA"

// fakeDir holds the built fake driver; TestMain removes it.
var fakeDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if fakeDir != "" {
		os.RemoveAll(fakeDir)
	}
	os.Exit(code)
}

var fakeOnce sync.Once

// buildFake compiles the fake driver with gcc (or $CC) into a temporary
// directory and loads it, once per test binary.
func buildFake() {
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	src, err := filepath.Abs("testdata/fakecuda.c")
	if err != nil {
		fake.err = err
		return
	}
	dir, err := os.MkdirTemp("", "vramseal-fakecuda-")
	if err != nil {
		fake.err = err
		return
	}
	fakeDir = dir
	out, err := compileFake(cc, src, dir)
	if err != nil {
		fake.err = err
		return
	}
	lib, err := purego.Dlopen(out, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		fake.err = fmt.Errorf("loading fake CUDA driver: %w", err)
		return
	}
	purego.RegisterLibFunc(&fake.set, lib, "fake_set")
	purego.RegisterLibFunc(&fake.get, lib, "fake_get")
	purego.RegisterLibFunc(&fake.reset, lib, "fake_reset")
	purego.RegisterLibFunc(&fake.flip, lib, "fake_flip")
	fake.path = out
}

// compileFake compiles src, the fake driver's source, with the C compiler
// cc into dir and returns the library's path. The error wraps
// errFakeMissing when cc or src does not exist; any other error means the
// build is broken.
func compileFake(cc, src, dir string) (string, error) {
	if _, err := exec.LookPath(cc); err != nil {
		return "", fmt.Errorf("%w: it needs a C compiler: %s not found (install gcc or set $CC)", errFakeMissing, cc)
	}
	if _, err := os.Stat(src); err != nil {
		return "", fmt.Errorf("%w: source missing (test binary run outside the source tree?): %v", errFakeMissing, err)
	}
	out := filepath.Join(dir, "fakecuda.so")
	cmd := exec.Command(cc, "-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-pthread",
		"-I", filepath.Join(filepath.Dir(src), "..", "kernel"), "-o", out, src)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building fake CUDA driver with %s: %w\n%s", cc, err, b)
	}
	return out, nil
}

// fakeSkips reports whether tests skip, rather than fail, for err from
// buildFake: only when the fake cannot be built here and require is false.
func fakeSkips(err error, require bool) bool {
	return errors.Is(err, errFakeMissing) && !require
}

// knobs are fault settings of the fake driver (see testdata/fakecuda.c).
type knobs map[string]int64

// needFake resets the fake driver's knobs to k. Without the fake it fails
// t, or skips it when fakeSkips says so.
func needFake(t testing.TB, k knobs) {
	t.Helper()
	fakeOnce.Do(buildFake)
	if fake.err != nil {
		if fakeSkips(fake.err, os.Getenv(requireFakeEnv) == "1") {
			t.Skip(fake.err)
		}
		if errors.Is(fake.err, errFakeMissing) {
			t.Fatalf("%v; %s=1 requires it", fake.err, requireFakeEnv)
		}
		t.Fatal(fake.err)
	}
	fake.reset()
	for name, v := range k {
		if fake.set(name, v) != 0 {
			t.Fatalf("fake_set(%q) failed: unknown knob", name)
		}
	}
	t.Cleanup(func() {
		if n, used := fake.get("live_allocs"), fake.get("used"); n != 0 || used != 0 {
			t.Errorf("test left %d device allocations (%d bytes charged) in the fake driver", n, used)
		}
		fake.reset()
	})
}

// openFake opens the fake driver with knobs k and closes it at the end of
// the test, checking that everything was released.
func openFake(t testing.TB, k knobs, opts Options) *Driver {
	t.Helper()
	needFake(t, k)
	opts.LibraryPath = fake.path
	if opts.NVMLPath == "" {
		opts.NVMLPath = fake.path
	}
	if opts.LookupEnv == nil {
		opts.LookupEnv = func(string) (string, bool) { return "", false }
	}
	allocs, pinned := fake.get("live_allocs"), fake.get("live_pinned")
	drv, err := Open(opts)
	if err != nil {
		t.Fatalf("Open(fake) error = %v", err)
	}
	t.Cleanup(func() {
		if err := drv.Close(); err != nil && !errors.Is(err, gpu.ErrDeviceLost) {
			t.Errorf("Close() error = %v", err)
		}
		if got := fake.get("live_allocs"); got != allocs {
			t.Errorf("after Close: %d live device allocations, want %d", got, allocs)
		}
		if got := fake.get("live_pinned"); got != pinned {
			t.Errorf("after Close: %d live pinned buffers, want %d", got, pinned)
		}
		if got := fake.get("no_context"); got != 0 {
			t.Errorf("fake driver refused %d calls made without a current context", got)
		}
	})
	return drv
}

// TestFakeBuildFailures checks that only a fake driver that cannot be
// built here skips the tests, and then only without
// $VRAMSEAL_REQUIRE_FAKECUDA: a compiler that fails is a test failure.
func TestFakeBuildFailures(t *testing.T) {
	src, err := filepath.Abs("testdata/fakecuda.c")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		cc, src string
		missing bool // err wraps errFakeMissing
	}{
		{"no compiler", "/nonexistent/cc", src, true},
		{"no source", "false", "/nonexistent/fakecuda.c", true},
		{"compiler fails", "false", src, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := exec.LookPath(tt.cc); err != nil && !tt.missing {
				t.Skipf("needs %s: %v", tt.cc, err)
			}
			out, err := compileFake(tt.cc, tt.src, t.TempDir())
			if err == nil {
				t.Fatalf("compileFake(%q, %q) = %q, want error", tt.cc, tt.src, out)
			}
			if got := errors.Is(err, errFakeMissing); got != tt.missing {
				t.Errorf("compileFake(%q, %q) error = %v; wraps errFakeMissing = %v, want %v", tt.cc, tt.src, err, got, tt.missing)
			}
			for _, require := range []bool{false, true} {
				if got, want := fakeSkips(err, require), tt.missing && !require; got != want {
					t.Errorf("fakeSkips(%v, require %v) = %v, want %v", err, require, got, want)
				}
			}
		})
	}
}
