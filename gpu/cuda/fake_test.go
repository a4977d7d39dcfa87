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
// binary by TestMain. Its state is global to the process, so tests that use
// it do not run in parallel with each other.
var fake struct {
	path  string // the built .so, "" when it could not be built
	skip  string // why not
	set   func(name string, v int64) int32
	get   func(name string) int64
	reset func()
}

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
// directory, once per test binary.
func buildFake() {
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	if _, err := exec.LookPath(cc); err != nil {
		fake.skip = fmt.Sprintf("fake CUDA driver needs a C compiler: %s not found", cc)
		return
	}
	src, err := filepath.Abs("testdata/fakecuda.c")
	if err != nil {
		fake.skip = err.Error()
		return
	}
	if _, err := os.Stat(src); err != nil {
		fake.skip = fmt.Sprintf("fake CUDA driver source missing (test binary run outside the source tree?): %v", err)
		return
	}
	dir, err := os.MkdirTemp("", "vramseal-fakecuda-")
	if err != nil {
		fake.skip = err.Error()
		return
	}
	fakeDir = dir
	out := filepath.Join(dir, "fakecuda.so")
	cmd := exec.Command(cc, "-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-pthread",
		"-I", filepath.Join(filepath.Dir(src), "..", "kernel"), "-o", out, src)
	if b, err := cmd.CombinedOutput(); err != nil {
		fake.skip = fmt.Sprintf("building fake CUDA driver: %v\n%s", err, b)
		return
	}
	lib, err := purego.Dlopen(out, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		fake.skip = fmt.Sprintf("loading fake CUDA driver: %v", err)
		return
	}
	purego.RegisterLibFunc(&fake.set, lib, "fake_set")
	purego.RegisterLibFunc(&fake.get, lib, "fake_get")
	purego.RegisterLibFunc(&fake.reset, lib, "fake_reset")
	fake.path = out
}

// knobs are fault settings of the fake driver (see testdata/fakecuda.c).
type knobs map[string]int64

// needFake skips t without the fake driver and resets its knobs to k.
func needFake(t testing.TB, k knobs) {
	t.Helper()
	fakeOnce.Do(buildFake)
	if fake.path == "" {
		t.Skip(fake.skip)
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
