package cuda

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/seal"
)

// TestVMMLayout checks the Go mirrors of cuda.h's VMM structures, which
// the driver reads and writes by offset.
func TestVMMLayout(t *testing.T) {
	var p memAllocationProp
	var a memAccessDesc
	for _, tt := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(CUmemLocation)", unsafe.Sizeof(memLocation{}), 8},
		{"sizeof(CUmemAllocationProp)", unsafe.Sizeof(p), 32},
		{"offsetof(CUmemAllocationProp, requestedHandleTypes)", unsafe.Offsetof(p.requestedHandleTypes), 4},
		{"offsetof(CUmemAllocationProp, location)", unsafe.Offsetof(p.location), 8},
		{"offsetof(CUmemAllocationProp, win32HandleMetaData)", unsafe.Offsetof(p.win32HandleMetaData), 16},
		{"offsetof(CUmemAllocationProp, allocFlags)", unsafe.Offsetof(p.allocFlags), 24},
		{"sizeof(CUmemAccessDesc)", unsafe.Sizeof(a), 12},
		{"offsetof(CUmemAccessDesc, flags)", unsafe.Offsetof(a.flags), 8},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %d, want %d", tt.name, tt.got, tt.want)
		}
	}
}

// TestVMMAllocation checks that Alloc goes through cuMemCreate,
// cuMemAddressReserve, cuMemMap and cuMemSetAccess in whole granules,
// reports the allocation's properties, and that Free undoes it all.
func TestVMMAllocation(t *testing.T) {
	drv := openFake(t, nil, Options{})
	d := drv.Devices()[1]
	ctx := t.Context()
	creates, used := fake.get("vmm_creates"), fake.get("used")
	const size = 3<<20 + 1
	b, err := d.Alloc(ctx, size)
	if err != nil {
		t.Fatalf("Alloc(%d) error = %v", size, err)
	}
	for _, c := range []struct {
		name string
		want int64
	}{{"vmm_creates", creates + 1}, {"vmm_live", 1}, {"vmm_mappings", 1}, {"vmm_reserved", 1}, {"used", used + 4<<20}} {
		if got := fake.get(c.name); got != c.want {
			t.Errorf("after Alloc(%d): fake %s = %d, want %d", size, c.name, got, c.want)
		}
	}
	rep, err := d.AllocReport(b)
	if err != nil {
		t.Fatal(err)
	}
	want := VMMFacts{AllocationType: 1, LocationType: 1, LocationID: 1, HandleTypes: 1, MapSize: 4 << 20, Granularity: fakeGranule}
	if rep.VMM != want || len(rep.Violations) != 0 || rep.Facts.ReadOnly {
		t.Errorf("AllocReport() = VMM %+v, violations %q, read-only %v; want %+v, none, false", rep.VMM, rep.Violations, rep.Facts.ReadOnly, want)
	}
	f, err := d.Facts(ctx)
	if err != nil || f.AllocationGranularity != fakeGranule {
		t.Errorf("Facts().AllocationGranularity = %d, %v, want %d", f.AllocationGranularity, err, fakeGranule)
	}
	if err := d.Free(ctx, b); err != nil {
		t.Fatalf("Free() error = %v", err)
	}
	for _, c := range []string{"vmm_live", "vmm_mappings", "vmm_reserved"} {
		if got := fake.get(c); got != 0 {
			t.Errorf("after Free: fake %s = %d, want 0", c, got)
		}
	}
	if got := fake.get("used"); got != used {
		t.Errorf("after Free: fake used = %d, want %d", got, used)
	}
}

// TestAllocCleanup fails each step of the VMM allocation in turn and
// checks the error and that nothing is left: no handle, reservation,
// mapping or charged memory.
func TestAllocCleanup(t *testing.T) {
	for _, tt := range []struct {
		knob string
		op   string
		oom  bool
	}{
		{"fail_alloc", "cuMemCreate", true},
		{"fail_map", "cuMemMap", true},
		{"fail_access", "cuMemSetAccess", false},
	} {
		t.Run(tt.knob, func(t *testing.T) {
			drv := openFake(t, nil, Options{})
			d := drv.Devices()[0]
			used, live := fake.get("used"), fake.get("live_allocs")
			fake.set(tt.knob, 1)
			_, err := d.Alloc(t.Context(), 5<<20)
			var ce *Error
			if !errors.As(err, &ce) || ce.Op != tt.op || errors.Is(err, gpu.ErrOutOfMemory) != tt.oom {
				t.Fatalf("Alloc() error = %v, want a %s error (out of memory: %v)", err, tt.op, tt.oom)
			}
			if strings.Contains(err.Error(), "0x") {
				t.Errorf("Alloc() error %q shows an address", err)
			}
			for _, c := range []struct {
				name string
				want int64
			}{{"used", used}, {"live_allocs", live}, {"vmm_live", 0}, {"vmm_mappings", 0}, {"vmm_reserved", 0}} {
				if got := fake.get(c.name); got != c.want {
					t.Errorf("after failed Alloc: fake %s = %d, want %d", c.name, got, c.want)
				}
			}
			if _, err := d.Alloc(t.Context(), 5<<20); err != nil {
				t.Errorf("Alloc() after a transient failure error = %v", err)
			}
		})
	}
}

func TestNoVMM(t *testing.T) {
	needFake(t, knobs{"no_vmm": 1})
	drv, err := Open(Options{LibraryPath: fake.path, NoNVML: true})
	if err == nil {
		drv.Close()
		t.Fatal("Open() without VMM succeeded")
	}
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "virtual memory management") {
		t.Errorf("Open() without VMM error = %v, want %v naming virtual memory management", err, ErrUnavailable)
	}
}

// TestProtect checks Protect on the fake: Write refuses, the driver
// reports the mapping read-only, the leaf kernel still reads it, and a
// fault injected behind the driver's back still lands and is caught.
func TestProtect(t *testing.T) {
	drv := openFake(t, nil, Options{})
	d := drv.Devices()[0]
	ctx := t.Context()
	b, data := setup(t, d, 256<<10)
	if err := d.Protect(ctx, b); err != nil {
		t.Fatalf("Protect() error = %v", err)
	}
	if err := d.Write(ctx, b, 0, []byte{1}); !errors.Is(err, gpu.ErrReadOnly) {
		t.Errorf("Write(protected) error = %v, want %v", err, gpu.ErrReadOnly)
	}
	f, err := d.PointerFacts(ctx, b)
	if err != nil || !f.ReadOnly || f.MemoryType != gpu.MemoryDevice || !f.Mapped || f.DeviceOrdinal != 0 {
		t.Errorf("PointerFacts(protected) = %+v, %v, want read-only mapped device memory on device 0", f, err)
	}
	const chunk = 64 << 10
	want := seal.Leaves(data, chunk)
	got := make([][gpu.HashSize]byte, len(want))
	if err := d.LeafHashes(ctx, b, chunk, allChunks(int64(len(want))), got); err != nil {
		t.Fatalf("LeafHashes(protected) error = %v", err)
	}
	for i := range want {
		if got[i] != [gpu.HashSize]byte(want[i]) {
			t.Fatalf("LeafHashes(protected)[%d] = %x, want %x", i, got[i], want[i])
		}
	}
	if r := fake.flip(b.(*buffer).ptr, 3*chunk+5, 0x10); r != 0 {
		t.Fatalf("fake_flip(protected) = %d, want 0", r)
	}
	if err := d.LeafHashes(ctx, b, chunk, allChunks(int64(len(want))), got); err != nil {
		t.Fatalf("LeafHashes(after flip) error = %v", err)
	}
	for i := range want {
		if changed := got[i] != [gpu.HashSize]byte(want[i]); changed != (i == 3) {
			t.Errorf("after a flip in chunk 3: chunk %d changed = %v", i, changed)
		}
	}
}

// TestProtectedWriteFaults checks that the fake's mapping of a protected
// buffer is really read-only: a copy into it, made behind the backend's
// back in a child process, kills the child with SIGSEGV.
func TestProtectedWriteFaults(t *testing.T) {
	needFake(t, nil)
	c := runChildProcess(t, "protected-write", nil)
	if c.facts["write"] != "refused" {
		t.Fatalf("Write(protected) was not refused: %v", c)
	}
	if !c.segfaulted() {
		t.Errorf("copy into a protected buffer did not kill the child with SIGSEGV: %v", c)
	}
}

// TestExportImport exports a protected buffer to a child process that
// imports it, maps it read-only and reads it back; a second child also
// writes through its mapping, which must fail, and the leaves still
// match.
func TestExportImport(t *testing.T) {
	drv := openFake(t, nil, Options{})
	exports, imports := fake.get("vmm_exports"), fake.get("vmm_imports")
	e := checkVMM(t, drv.Devices()[1], 3<<20+12345, true)
	if fake.get("vmm_exports") != exports+2 || fake.get("vmm_imports") != imports {
		t.Errorf("exports %d, imports in this process %d; want %d and %d (imports happen in the children)",
			fake.get("vmm_exports"), fake.get("vmm_imports"), exports+2, imports)
	}
	if e.ConsumerWrite != "SIGSEGV" {
		t.Errorf("consumer write = %q, want SIGSEGV (the fake's read-only mapping)", e.ConsumerWrite)
	}
}

// vmmEntry is the report of checkVMM, part of TestGPUVMM's JSON report.
type vmmEntry struct {
	Size                 int64    `json:"size"`
	MapSize              int64    `json:"map_size"`
	Granularity          int64    `json:"granularity"`
	AllocationType       int      `json:"allocation_type"`
	LocationType         int      `json:"location_type"`
	LocationID           int      `json:"location_id"`
	HandleTypes          int      `json:"handle_types"`
	Violations           []string `json:"policy_violations,omitempty"`
	ReadOnly             bool     `json:"read_only_after_protect"`
	WriteRefused         bool     `json:"write_refused_after_protect"`
	ExportBeforeProtect  string   `json:"export_before_protect_error"`
	ImportDigestMatch    bool     `json:"import_digest_match"`
	ImportAccess         string   `json:"import_access_flags"`
	ConsumerWrite        string   `json:"consumer_write"` // "SIGSEGV", "CUresult N", or how else the child ended
	ConsumerWriteBlocked bool     `json:"consumer_write_blocked"`
	LeavesMatchAfter     bool     `json:"leaves_match_after_consumer_write"`
}

// checkVMM checks one shard's life on d: allocate through VMM, write,
// Protect, Export, import in a child process (read-only, bytes equal),
// a write through a second child's mapping (must fail), and the leaf
// hashes (the gate) afterwards.
func checkVMM(t *testing.T, d *Device, size int64, isFake bool) *vmmEntry {
	ctx := t.Context()
	e := &vmmEntry{Size: size}
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{5}).Read(data)
	b, err := d.Alloc(ctx, size)
	if err != nil {
		t.Fatalf("Alloc(%d) error = %v", size, err)
	}
	defer d.Free(ctx, b)
	rep, _ := d.AllocReport(b)
	v := rep.VMM
	e.MapSize, e.Granularity, e.AllocationType, e.LocationType, e.LocationID, e.HandleTypes, e.Violations =
		v.MapSize, v.Granularity, v.AllocationType, v.LocationType, v.LocationID, v.HandleTypes, rep.Violations
	if len(rep.Violations) > 0 {
		t.Errorf("Alloc(%d) breaks the VRAM-only policy: %q", size, rep.Violations)
	}
	if err := d.Write(ctx, b, 0, data); err != nil {
		t.Fatalf("Write() error = %v", err)
	}
	if _, err := d.Export(ctx, b); !errors.Is(err, gpu.ErrNotProtected) {
		t.Errorf("Export(unprotected) error = %v, want %v", err, gpu.ErrNotProtected)
	} else {
		e.ExportBeforeProtect = err.Error()
	}
	if err := d.Protect(ctx, b); err != nil {
		t.Fatalf("Protect() error = %v", err)
	}
	f, err := d.PointerFacts(ctx, b)
	e.ReadOnly = err == nil && f.ReadOnly
	if !e.ReadOnly {
		t.Errorf("PointerFacts(protected) = %+v, %v, want ReadOnly", f, err)
	}
	err = d.Write(ctx, b, 0, data[:1])
	if e.WriteRefused = errors.Is(err, gpu.ErrReadOnly); !e.WriteRefused {
		t.Errorf("Write(protected) error = %v, want %v", err, gpu.ErrReadOnly)
	}
	in, err := d.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	consumer := func(write bool) child {
		sh, err := d.Export(ctx, b)
		if err != nil {
			t.Fatalf("Export() error = %v", err)
		}
		defer sh.File.Close()
		if sh.Kind != gpu.ShareCUDAVMM || sh.MapSize != v.MapSize || sh.Granularity != v.Granularity {
			t.Errorf("Export() = kind %q, map size %d, granularity %d; want %q, %d, %d",
				sh.Kind, sh.MapSize, sh.Granularity, gpu.ShareCUDAVMM, v.MapSize, v.Granularity)
		}
		env := []string{
			childUUIDEnv + "=" + in.UUID,
			childMapEnv + "=" + strconv.FormatInt(sh.MapSize, 10),
			childGranEnv + "=" + strconv.FormatInt(sh.Granularity, 10),
			childLenEnv + "=" + strconv.FormatInt(size, 10),
		}
		if write {
			env = append(env, childWriteEnv+"=1")
		}
		return runChildProcess(t, "import", env, sh.File)
	}
	digest := sha256.Sum256(data)
	c := consumer(false)
	e.ImportAccess = c.facts["access"]
	e.ImportDigestMatch = c.facts["sha256"] == hex.EncodeToString(digest[:])
	if !c.state.Success() || !e.ImportDigestMatch || e.ImportAccess != "1" {
		t.Errorf("consumer: digest match %v, access %q (want 1, read-only): %v", e.ImportDigestMatch, e.ImportAccess, c)
	}

	c = consumer(true)
	switch {
	case c.segfaulted():
		e.ConsumerWrite, e.ConsumerWriteBlocked = "SIGSEGV", true
	case c.facts["write"] != "":
		e.ConsumerWrite = "CUresult " + c.facts["write"]
		e.ConsumerWriteBlocked = c.facts["write"] != "0"
	default:
		e.ConsumerWrite = c.state.String()
	}
	if _, ok := c.facts["writing"]; !ok || c.facts["sha256"] != hex.EncodeToString(digest[:]) {
		t.Errorf("writing consumer did not get to its write with the right bytes: %v", c)
	}
	if !e.ConsumerWriteBlocked {
		t.Errorf("consumer write through a read-only mapping: %s, want it refused: %v", e.ConsumerWrite, c)
	}
	const chunk = seal.DefaultChunkSize
	want := seal.Leaves(data, chunk)
	got := make([][gpu.HashSize]byte, len(want))
	if err := d.LeafHashes(ctx, b, chunk, allChunks(int64(len(want))), got); err != nil {
		t.Fatalf("LeafHashes() after the consumers error = %v", err)
	}
	e.LeavesMatchAfter = true
	for i := range want {
		if got[i] != [gpu.HashSize]byte(want[i]) {
			e.LeavesMatchAfter = false
			t.Errorf("after the consumers: leaf %d = %x, want %x", i, got[i], want[i])
			break
		}
	}
	if isFake && !c.segfaulted() {
		t.Errorf("the fake's read-only mapping did not stop the consumer's write with SIGSEGV: %v", c)
	}
	return e
}

// TestGPUVMM runs checkVMM on the real GPU (VRAMSEAL_CUDA=1): a shard in
// VMM memory, exported to and imported by a second process, mapped
// read-only there, and a write through that mapping refused. With
// VRAMSEAL_CUDA_VMM_REPORT it writes its JSON report there.
func TestGPUVMM(t *testing.T) {
	d := needGPU(t)
	writeVMMReport(t, os.Getenv("VRAMSEAL_CUDA_VMM_REPORT"), checkVMM(t, d, 64<<20+12345, false))
}

// TestGPUVMMWithFake runs TestGPUVMM's checks against the fake driver,
// so that they cannot rot unnoticed in CI.
func TestGPUVMMWithFake(t *testing.T) {
	drv := openFake(t, nil, Options{})
	path := t.TempDir() + "/vmm.json"
	writeVMMReport(t, path, checkVMM(t, drv.Devices()[0], 4<<20+7, true))
	var back vmmReport
	if b, err := os.ReadFile(path); err != nil || json.Unmarshal(b, &back) != nil || back.VMM == nil ||
		!back.VMM.ImportDigestMatch || !back.VMM.ConsumerWriteBlocked {
		t.Errorf("report %s does not read back with a matching import and a blocked write: %v", path, err)
	}
}

// vmmReport is the JSON report of TestGPUVMM.
type vmmReport struct {
	Schema string    `json:"schema"`
	VMM    *vmmEntry `json:"vmm_share"`
}

// writeVMMReport writes e's report to path ("" for none).
func writeVMMReport(t *testing.T, path string, e *vmmEntry) {
	if path == "" {
		return
	}
	b, err := json.MarshalIndent(vmmReport{Schema: "vramseal-gpu-vmm/1", VMM: e}, "", "  ")
	if err == nil {
		err = os.WriteFile(path, append(b, '\n'), 0o644)
	}
	if err != nil {
		t.Errorf("writing %s: %v", path, err)
	}
}
