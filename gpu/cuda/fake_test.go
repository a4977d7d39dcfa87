package cuda

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/ebitengine/purego"
	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/gpu/cuda/cudatest"
)

// fake is the fake CUDA driver (gpu/cuda/cudatest), built once per test
// binary by the first needFake. Its state is global to the process, so
// tests that use it do not run in parallel with each other.
var fake struct {
	path  string // the built .so, "" when it could not be built
	err   error  // why not; wraps cudatest.ErrNoCompiler without a compiler
	set   func(name string, v int64) int32
	get   func(name string) int64
	reset func()
	flip  func(ptr devptr, off int64, mask int32) int32
}

// fakeGranule is the fake driver's allocation granularity.
const fakeGranule = 2 << 20

// fakePathEnv passes the built fake driver to a child process (see
// child_test.go), which then loads it instead of building its own.
const fakePathEnv = "VRAMSEAL_TEST_FAKECUDA_SO"

// fakeDir holds the built fake driver; TestMain removes it.
var fakeDir string

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(runChild(mode))
	}
	code := m.Run()
	if fakeDir != "" {
		os.RemoveAll(fakeDir)
	}
	os.Exit(code)
}

var fakeOnce sync.Once

// buildFake compiles the fake driver with cudatest.Build into a
// temporary directory and loads it, once per test binary.
func buildFake() {
	path := os.Getenv(fakePathEnv)
	if path == "" {
		dir, err := os.MkdirTemp("", "vramseal-fakecuda-")
		if err != nil {
			fake.err = err
			return
		}
		fakeDir = dir
		path, err = cudatest.Build("", dir)
		if err != nil {
			fake.err = err
			return
		}
	}
	lib, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		fake.err = fmt.Errorf("loading fake CUDA driver: %w", err)
		return
	}
	purego.RegisterLibFunc(&fake.set, lib, "fake_set")
	purego.RegisterLibFunc(&fake.get, lib, "fake_get")
	purego.RegisterLibFunc(&fake.reset, lib, "fake_reset")
	purego.RegisterLibFunc(&fake.flip, lib, "fake_flip")
	fake.path = path
}

// knobs are fault settings of the fake driver (see
// cudatest/testdata/fakecuda.c).
type knobs map[string]int64

// needFake resets the fake driver's knobs to k. Without the fake it fails
// t, or skips it when cudatest.Skips says so.
func needFake(t testing.TB, k knobs) {
	t.Helper()
	fakeOnce.Do(buildFake)
	if fake.err != nil {
		if cudatest.Skips(fake.err) {
			t.Skip(fake.err)
		}
		if errors.Is(fake.err, cudatest.ErrNoCompiler) {
			t.Fatalf("%v; %s=1 requires it", fake.err, cudatest.RequireEnv)
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
		for _, c := range []string{"vmm_live", "vmm_mappings", "vmm_reserved"} {
			if n := fake.get(c); n != 0 {
				t.Errorf("test left %s = %d in the fake driver, want 0", c, n)
			}
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
