package cuda

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/ebitengine/purego"
	"github.com/vramseal/vramseal/gpu"
)

// Child processes. A test re-executes its own binary with childEnv set;
// TestMain then runs runChild instead of the tests. Children report on
// stdout, one "key value" line per fact, and on stderr why they failed.
const (
	childEnv = "VRAMSEAL_TEST_CHILD" // the child's mode: "import" or "protected-write"

	// For "import": the share is descriptor 3.
	childUUIDEnv  = "VRAMSEAL_TEST_CHILD_UUID"  // device to import on
	childMapEnv   = "VRAMSEAL_TEST_CHILD_MAP"   // Share.MapSize
	childGranEnv  = "VRAMSEAL_TEST_CHILD_GRAN"  // Share.Granularity
	childLenEnv   = "VRAMSEAL_TEST_CHILD_LEN"   // bytes to read and digest
	childWriteEnv = "VRAMSEAL_TEST_CHILD_WRITE" // 1: then write through the mapping
)

// runChild runs the child of mode and returns its exit status.
func runChild(mode string) int {
	var err error
	switch mode {
	case "import":
		err = childImport()
	case "protected-write":
		err = childProtectedWrite()
	default:
		err = fmt.Errorf("unknown child mode %q", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	return 0
}

// childLibrary is the driver a child loads: the fake driver the parent
// built, or the real one.
func childLibrary() string {
	for _, k := range []string{fakePathEnv, "VRAMSEAL_CUDA_LIBRARY"} {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	return "libcuda.so.1"
}

// consumerAPI holds the calls of a consumer process that gpu/cuda itself
// does not make.
type consumerAPI struct {
	importHandle func(h *uint64, osHandle uintptr, handleType int32) cuResult
	memcpyDtoH   func(dst unsafe.Pointer, src devptr, n uint64) cuResult
	memcpyHtoD   func(dst devptr, src unsafe.Pointer, n uint64) cuResult
}

// childImport is a consumer: it imports the share on descriptor 3 on the
// device with the given UUID, maps it read-only, copies the bytes back
// and prints their SHA-256 and its access flags, and then, if asked,
// copies one byte into the read-only mapping.
func childImport() error {
	// A CUDA context is current per thread.
	runtime.LockOSThread()
	path := childLibrary()
	api, err := loadDriver(path)
	if err != nil {
		return err
	}
	lib, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return err
	}
	var c consumerAPI
	b := binder{lib: lib}
	b.bind(&c.importHandle, "cuMemImportFromShareableHandle")
	b.bind(&c.memcpyDtoH, "cuMemcpyDtoH_v2")
	b.bind(&c.memcpyHtoD, "cuMemcpyHtoD_v2")
	if err := b.err(path); err != nil {
		return err
	}
	env := func(k string) uint64 {
		v, perr := strconv.ParseUint(os.Getenv(k), 10, 64)
		if perr != nil && err == nil {
			err = fmt.Errorf("%s: %w", k, perr)
		}
		return v
	}
	mapSize, gran, n := env(childMapEnv), env(childGranEnv), env(childLenEnv)
	if err != nil {
		return err
	}
	call := func(op string, r cuResult) error {
		if r != 0 {
			return newError(op, r)
		}
		return nil
	}
	if err := call("cuInit", api.init(0)); err != nil {
		return err
	}
	var count int32
	if err := call("cuDeviceGetCount", api.deviceGetCount(&count)); err != nil {
		return err
	}
	dev := int32(-1)
	for i := range count {
		var d int32
		var u [16]byte
		if call("cuDeviceGet", api.deviceGet(&d, i)) == nil && call("cuDeviceGetUuid_v2", api.deviceGetUUID(&u, d)) == nil &&
			formatUUID(u) == os.Getenv(childUUIDEnv) {
			dev = d
		}
	}
	if dev < 0 {
		return fmt.Errorf("no device with UUID %s", os.Getenv(childUUIDEnv))
	}
	var ctx uintptr
	if err := call("cuDevicePrimaryCtxRetain", api.primaryCtxRetain(&ctx, dev)); err != nil {
		return err
	}
	defer api.primaryCtxRelease(dev)
	if err := call("cuCtxSetCurrent", api.ctxSetCurrent(ctx)); err != nil {
		return err
	}
	var h uint64
	if err := call("cuMemImportFromShareableHandle", c.importHandle(&h, 3, memHandleTypePosixFD)); err != nil {
		return err
	}
	syscall.Close(3) // the driver keeps its own reference
	defer api.memRelease(h)
	var p devptr
	if err := call("cuMemAddressReserve", api.memAddressReserve(&p, mapSize, gran, 0, 0)); err != nil {
		return err
	}
	defer api.memAddressFree(p, mapSize)
	if err := call("cuMemMap", api.memMap(p, mapSize, 0, h, 0)); err != nil {
		return err
	}
	defer api.memUnmap(p, mapSize)
	desc := memAccessDesc{location: memLocation{typ: memLocationTypeDevice, id: dev}, flags: memAccessRead}
	if err := call("cuMemSetAccess", api.memSetAccess(p, mapSize, &desc, 1)); err != nil {
		return err
	}
	var flags uint64
	if err := call("cuMemGetAccess", api.memGetAccess(&flags, &desc.location, p)); err != nil {
		return err
	}
	buf := make([]byte, n)
	if err := call("cuMemcpyDtoH_v2", c.memcpyDtoH(unsafe.Pointer(unsafe.SliceData(buf)), p, n)); err != nil {
		return err
	}
	fmt.Printf("sha256 %x\naccess %d\n", sha256.Sum256(buf), flags)
	if os.Getenv(childWriteEnv) == "1" {
		if err := dieOnSegfault(); err != nil {
			return err
		}
		fmt.Println("writing")
		r := c.memcpyHtoD(p, unsafe.Pointer(unsafe.SliceData(buf)), 1)
		fmt.Printf("write %d\n", r)
	}
	return nil
}

// childProtectedWrite opens the fake driver, seals a buffer, protects it,
// checks that Write refuses, and then makes the device copy into the
// protected range behind the backend's back: the fake's read-only
// mapping must kill the process.
func childProtectedWrite() error {
	drv, err := Open(Options{LibraryPath: childLibrary(), NoNVML: true, LookupEnv: func(string) (string, bool) { return "", false }})
	if err != nil {
		return err
	}
	d := drv.Devices()[0]
	ctx := context.Background()
	data := bytes.Repeat([]byte{0x5c}, 4096)
	b, err := d.Alloc(ctx, int64(len(data)))
	if err != nil {
		return err
	}
	if err := d.Write(ctx, b, 0, data); err != nil {
		return err
	}
	if err := d.Protect(ctx, b); err != nil {
		return err
	}
	if err := d.Write(ctx, b, 0, data); !errors.Is(err, gpu.ErrReadOnly) {
		return fmt.Errorf("Write(protected) error = %v, want %v", err, gpu.ErrReadOnly)
	}
	fmt.Println("write refused")
	if err := dieOnSegfault(); err != nil {
		return err
	}
	buf := b.(*buffer)
	return d.do(ctx, func() error {
		r := d.drv.api.memcpyHtoDAsync(buf.ptr, unsafe.Pointer(unsafe.SliceData(data)), 1, d.stream)
		d.drv.api.streamSynchronize(d.stream)
		fmt.Printf("copy %d\n", r)
		return nil
	})
}

// dieOnSegfault restores the default action of SIGSEGV, so that a fault
// in C code kills the process with SIGSEGV (which the parent checks)
// rather than Go's crash report and exit status 2, and disables core
// dumps.
func dieOnSegfault() error {
	if err := syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{}); err != nil {
		return err
	}
	// struct kernel_sigaction: handler (SIG_DFL = 0), flags, restorer, mask.
	var sa [4]uint64
	if _, _, e := syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(syscall.SIGSEGV),
		uintptr(unsafe.Pointer(&sa)), 0, 8, 0, 0); e != 0 {
		return fmt.Errorf("rt_sigaction(SIGSEGV, SIG_DFL): %w", e)
	}
	return nil
}

// child is a finished child process: its stdout facts and how it ended.
type child struct {
	facts  map[string]string
	stdout string
	stderr string
	state  *os.ProcessState
}

// segfaulted reports whether the child was killed by SIGSEGV.
func (c child) segfaulted() bool {
	ws, ok := c.state.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGSEGV
}

// runChildProcess re-executes the test binary as a child of mode with
// the extra environment env and files as descriptors 3 and up, and
// waits for it (at most a minute).
func runChildProcess(t testing.TB, mode string, env []string, files ...*os.File) child {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	if fake.path != "" {
		cmd.Env = append(cmd.Env, fakePathEnv+"="+fake.path)
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = files
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("child %s: %v", mode, err)
	}
	c := child{facts: map[string]string{}, stdout: stdout.String(), stderr: stderr.String(), state: cmd.ProcessState}
	for line := range strings.Lines(c.stdout) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
			c.facts[k] = v
		} else if line = strings.TrimSpace(line); line != "" {
			c.facts[line] = ""
		}
	}
	return c
}

// String describes how the child ended, for test failures.
func (c child) String() string {
	return fmt.Sprintf("child %v; stdout %q; stderr %q", c.state, c.stdout, c.stderr)
}
