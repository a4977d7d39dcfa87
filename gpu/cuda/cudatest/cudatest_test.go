package cudatest

import (
	"errors"
	"os/exec"
	"testing"

	"github.com/ebitengine/purego"
)

func TestBuildFake(t *testing.T) {
	path := BuildFake(t)
	lib, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		t.Fatalf("Dlopen(%s) error = %v", path, err)
	}
	for _, sym := range []string{
		"cuInit", "cuMemCreate", "cuMemAddressReserve", "cuMemMap", "cuMemSetAccess", "cuMemGetAccess",
		"cuMemExportToShareableHandle", "cuMemImportFromShareableHandle", "cuMemUnmap", "cuMemAddressFree",
		"cuMemRelease", "cuMemcpyDtoH_v2", "cuDeviceGetUuid_v2", "fake_set", "fake_get", "fake_flip",
	} {
		if _, err := purego.Dlsym(lib, sym); err != nil {
			t.Errorf("fake driver lacks %s: %v", sym, err)
		}
	}
}

// TestBuildFailures checks that only a missing compiler may skip: a
// compiler that fails is an error that does not wrap ErrNoCompiler.
func TestBuildFailures(t *testing.T) {
	for _, tt := range []struct {
		name    string
		cc      string
		missing bool
	}{
		{"no compiler", "/nonexistent/cc", true},
		{"compiler fails", "false", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := exec.LookPath(tt.cc); err != nil && !tt.missing {
				t.Skipf("needs %s: %v", tt.cc, err)
			}
			out, err := Build(tt.cc, t.TempDir())
			if err == nil {
				t.Fatalf("Build(%q) = %q, want error", tt.cc, out)
			}
			if got := errors.Is(err, ErrNoCompiler); got != tt.missing {
				t.Errorf("Build(%q) error = %v; wraps ErrNoCompiler = %v, want %v", tt.cc, err, got, tt.missing)
			}
			for _, require := range []string{"", "1"} {
				t.Setenv(RequireEnv, require)
				if got, want := Skips(err), tt.missing && require != "1"; got != want {
					t.Errorf("Skips(%v) with %s=%q = %v, want %v", err, RequireEnv, require, got, want)
				}
			}
		})
	}
}
