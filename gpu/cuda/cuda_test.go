package cuda

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/gpu/gputest"
	"github.com/vramseal/vramseal/seal"
)

func TestConformance(t *testing.T) {
	for _, ordinal := range []int{0, 1} {
		t.Run(strings.Replace("device N", "N", string(rune('0'+ordinal)), 1), func(t *testing.T) {
			gputest.Run(t, func(t *testing.T) gpu.Device {
				return openFake(t, nil, Options{StagingBytes: 64 << 10}).Devices()[ordinal]
			})
		})
	}
}

// TestLeafKernel runs the leaf kernel's C source (compiled for the host
// inside the fake driver) on every kind of chunk: aligned and unaligned
// starts, tails of every length mod 64, and the block-boundary cases of the
// 0x00 prefix (chunk lengths 55, 56, 63, 64, 119, 120, ...).
func TestLeafKernel(t *testing.T) {
	drv := openFake(t, nil, Options{StagingBytes: 64 << 10, MaxLaunchChunks: 100})
	d := drv.Devices()[0]
	ctx := t.Context()
	r := rand.New(rand.NewPCG(1, 2))
	for _, tt := range []struct{ size, chunk int64 }{
		{1, 1}, {1, 64}, {3, 1}, {200, 3}, {1000, 55}, {1000, 56}, {1000, 57},
		{4096, 63}, {4096, 64}, {4096, 65}, {4096, 119}, {4096, 120}, {4096, 127}, {4096, 128},
		{10000, 191}, {10000, 1000}, {10001, 1001}, {1 << 20, 65536}, {1<<20 + 7, 65536},
		{1<<20 - 1, 65535}, {3 << 20, 65537}, {200000, 200000}, {200001, 4 << 20},
	} {
		data := make([]byte, tt.size)
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		b, err := d.Alloc(ctx, tt.size)
		if err != nil {
			t.Fatalf("Alloc(%d) error = %v", tt.size, err)
		}
		if err := d.Write(ctx, b, 0, data); err != nil {
			t.Fatalf("Write(%d bytes) error = %v", tt.size, err)
		}
		want := seal.Leaves(data, tt.chunk)
		chunks := make([]int64, len(want))
		for i := range chunks {
			chunks[i] = int64(i)
		}
		got := make([][gpu.HashSize]byte, len(chunks))
		if err := d.LeafHashes(ctx, b, tt.chunk, chunks, got); err != nil {
			t.Fatalf("LeafHashes(size %d, chunk %d) error = %v", tt.size, tt.chunk, err)
		}
		for i := range want {
			if got[i] != [gpu.HashSize]byte(want[i]) {
				t.Errorf("LeafHashes(size %d, chunk %d)[%d] = %x, want %x", tt.size, tt.chunk, i, got[i], want[i])
				break
			}
		}
		if err := d.Free(ctx, b); err != nil {
			t.Fatalf("Free() error = %v", err)
		}
	}
}

func TestOpenUnavailable(t *testing.T) {
	needFake(t, nil)
	for _, tt := range []struct {
		name  string
		path  string
		knobs knobs
		code  int    // CUresult in the error chain, 0 for none
		text  string // in the message
	}{
		{"missing library", "/nonexistent/libcuda.so.1", nil, 0, "load /nonexistent/libcuda.so.1"},
		{"not a driver", "libc.so.6", nil, 0, "lacks cuInit"},
		{"cuInit fails", fake.path, knobs{"init_error": 100}, 100, "CUDA_ERROR_NO_DEVICE"},
		{"stub library", fake.path, knobs{"init_error": 34}, 34, "CUDA_ERROR_STUB_LIBRARY"},
		{"old driver", fake.path, knobs{"driver_version": 11020}, 0, "CUDA 11.2, need 11.4"},
		{"no device", fake.path, knobs{"devices": 0}, 0, "no CUDA device"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			needFake(t, tt.knobs)
			drv, err := Open(Options{LibraryPath: tt.path, NoNVML: true})
			if err == nil {
				drv.Close()
				t.Fatalf("Open() succeeded, want error")
			}
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("Open() error = %v, want %v", err, ErrUnavailable)
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("Open() error = %q, want it to contain %q", err, tt.text)
			}
			var ce *Error
			if got := errors.As(err, &ce); got != (tt.code != 0) || (got && ce.Code != tt.code) {
				t.Errorf("Open() error = %v, want *Error with code %d: %v", err, tt.code, got)
			}
		})
	}
}

func TestErrorMapping(t *testing.T) {
	for _, tt := range []struct {
		code int
		name string
		is   error
	}{
		{2, "CUDA_ERROR_OUT_OF_MEMORY", gpu.ErrOutOfMemory},
		{100, "CUDA_ERROR_NO_DEVICE", ErrUnavailable},
		{214, "CUDA_ERROR_ECC_UNCORRECTABLE", gpu.ErrDeviceLost},
		{700, "CUDA_ERROR_ILLEGAL_ADDRESS", gpu.ErrDeviceLost},
		{719, "CUDA_ERROR_LAUNCH_FAILED", gpu.ErrDeviceLost},
		{218, "CUDA_ERROR_INVALID_PTX", nil},
		{1, "CUDA_ERROR_INVALID_VALUE", nil},
		{4242, "CUDA_ERROR_4242", nil},
	} {
		err := newError("cuOp", cuResult(tt.code))
		if err.Name != tt.name {
			t.Errorf("newError(%d).Name = %q, want %q", tt.code, err.Name, tt.name)
		}
		if got := err.Unwrap(); got != tt.is {
			t.Errorf("newError(%d).Unwrap() = %v, want %v", tt.code, got, tt.is)
		}
		if want := "cuda: cuOp: " + tt.name; !strings.HasPrefix(err.Error(), want) {
			t.Errorf("newError(%d).Error() = %q, want prefix %q", tt.code, err, want)
		}
	}
}

func TestAllocFaults(t *testing.T) {
	for _, tt := range []struct {
		name      string
		knobs     knobs
		size      int64
		violation string // "" means none
		oom       bool
	}{
		{"healthy", nil, 4 << 20, "", false},
		{"allocation failure", knobs{"fail_alloc": 1}, 4096, "", true},
		{"managed pointer", knobs{"managed": 1}, 4096, "managed", false},
		{"wrong device ordinal", knobs{"wrong_ordinal": 1}, 4096, "device ordinal 1, want 0", false},
		{"host memory", knobs{"memtype": 1}, 4096, "memory type host", false},
		{"unified memory", knobs{"memtype": 4}, 4096, "memory type unified", false},
		{"host pointer", knobs{"host_pointer": 1}, 4096, "host pointer", false},
		{"unmapped", knobs{"unmapped": 1}, 4096, "not mapped", false},
		{"free memory did not drop", knobs{"no_drop": 1}, 5 << 20, "dropped by 0 bytes, want >= 4194304", false},
		{"free drop not checked below granule", knobs{"no_drop": 1}, 1 << 20, "", false},
		{"integrated device", knobs{"integrated": 1}, 4096, "integrated", false},
		{"host allocation", knobs{"vmm_loc_type": 2}, 4096, "allocation location type 2, want device", false},
		{"allocation on another device", knobs{"wrong_ordinal": 1}, 4096, "allocation on device 1, want 0", false},
		{"not exportable", knobs{"vmm_no_posix_fd": 1}, 4096, "POSIX file descriptor", false},
	} {
		for _, refuse := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/refuse=%v", tt.name, refuse), func(t *testing.T) {
				// Only integrated is read at Open; the others apply to the
				// allocations after it.
				drv := openFake(t, knobs{"integrated": tt.knobs["integrated"]}, Options{RefuseViolations: refuse})
				for k, v := range tt.knobs {
					fake.set(k, v)
				}
				d := drv.Devices()[0]
				live := fake.get("live_allocs")
				b, err := d.Alloc(t.Context(), tt.size)
				switch {
				case tt.oom:
					var ce *Error
					if !errors.Is(err, gpu.ErrOutOfMemory) || !errors.As(err, &ce) || ce.Name != "CUDA_ERROR_OUT_OF_MEMORY" || ce.Op != "cuMemCreate" || ce.Device != 0 {
						t.Fatalf("Alloc() error = %v, want device 0 cuMemCreate CUDA_ERROR_OUT_OF_MEMORY wrapping %v", err, gpu.ErrOutOfMemory)
					}
					if _, err := d.Alloc(t.Context(), tt.size); err != nil {
						t.Errorf("Alloc() after a transient failure error = %v", err)
					}
				case tt.violation != "" && refuse:
					var pe *PolicyError
					if !errors.Is(err, ErrPolicy) || !errors.As(err, &pe) {
						t.Fatalf("Alloc() = %v, %v, want %v", b, err, ErrPolicy)
					}
					if !strings.Contains(strings.Join(pe.Violations, "; "), tt.violation) {
						t.Errorf("Alloc() violations = %q, want one containing %q", pe.Violations, tt.violation)
					}
					if got := fake.get("live_allocs"); got != live {
						t.Errorf("after refused Alloc: %d live allocations, want %d (freed)", got, live)
					}
				default:
					if err != nil {
						t.Fatalf("Alloc(%d) error = %v", tt.size, err)
					}
					rep, err := d.AllocReport(b)
					if err != nil {
						t.Fatalf("AllocReport() error = %v", err)
					}
					if rep.Size != tt.size {
						t.Errorf("AllocReport().Size = %d, want %d", rep.Size, tt.size)
					}
					v := strings.Join(rep.Violations, "; ")
					if tt.violation == "" && v != "" || !strings.Contains(v, tt.violation) {
						t.Errorf("AllocReport().Violations = %q, want %q", rep.Violations, tt.violation)
					}
					facts, err := d.PointerFacts(t.Context(), b)
					if err != nil || facts != rep.Facts {
						t.Errorf("PointerFacts() = %+v, %v, want %+v as reported at Alloc", facts, err, rep.Facts)
					}
					if tt.knobs == nil && rep.FreeDrop() < uint64(tt.size) {
						t.Errorf("AllocReport().FreeDrop() = %d, want >= %d", rep.FreeDrop(), tt.size)
					}
				}
				in, err := d.Info(t.Context())
				if err != nil {
					t.Fatalf("Info() error = %v", err)
				}
				if in.Integrated != (tt.knobs["integrated"] == 1) {
					t.Errorf("Info().Integrated = %v", in.Integrated)
				}
			})
		}
	}
}

// setup writes random data to a new buffer of d and returns both.
func setup(t *testing.T, d *Device, size int64) (gpu.Buffer, []byte) {
	t.Helper()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(uint64(size), 7))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	b, err := d.Alloc(t.Context(), size)
	if err != nil {
		t.Fatalf("Alloc(%d) error = %v", size, err)
	}
	if err := d.Write(t.Context(), b, 0, data); err != nil {
		t.Fatalf("Write(%d bytes) error = %v", size, err)
	}
	return b, data
}

func allChunks(n int64) []int64 {
	c := make([]int64, n)
	for i := range c {
		c[i] = int64(i)
	}
	return c
}

func TestLaunchFaults(t *testing.T) {
	for _, tt := range []struct {
		name  string
		knobs knobs
		want  string
	}{
		{"launch failure", knobs{"launch_fail": 1}, "CUDA_ERROR_LAUNCH_FAILED"},
		{"device lost mid-verify", knobs{"lost_after": 2}, "CUDA_ERROR_ILLEGAL_ADDRESS"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// Knobs take effect once the buffers are written.
			drv := openFake(t, nil, Options{MaxLaunchChunks: 4})
			d, other := drv.Devices()[0], drv.Devices()[1]
			b, _ := setup(t, d, 64<<10)
			ob, odata := setup(t, other, 64<<10)
			for k, v := range tt.knobs {
				fake.set(k, v)
			}
			before := fake.get("launches")
			out := make([][gpu.HashSize]byte, 16)
			err := d.LeafHashes(t.Context(), b, 4096, allChunks(16), out)
			var ce *Error
			if !errors.Is(err, gpu.ErrDeviceLost) || !errors.As(err, &ce) || ce.Name != tt.want {
				t.Fatalf("LeafHashes() error = %v, want %s wrapping %v", err, tt.want, gpu.ErrDeviceLost)
			}
			if tt.knobs["lost_after"] > 0 {
				if got := fake.get("launches") - before; got != 2 {
					t.Errorf("%d launches before the loss, want 2 (lost mid-verify)", got)
				}
			}
			// Lost is sticky: every later call fails the same way.
			if _, err := d.Info(t.Context()); !errors.Is(err, gpu.ErrDeviceLost) {
				t.Errorf("Info() after loss error = %v, want %v", err, gpu.ErrDeviceLost)
			}
			if err := d.Write(t.Context(), b, 0, []byte{1}); !errors.Is(err, gpu.ErrDeviceLost) {
				t.Errorf("Write() after loss error = %v, want %v", err, gpu.ErrDeviceLost)
			}
			if _, err := d.Alloc(t.Context(), 1); !errors.Is(err, gpu.ErrDeviceLost) {
				t.Errorf("Alloc() after loss error = %v, want %v", err, gpu.ErrDeviceLost)
			}
			// The other device is unaffected.
			fake.reset()
			want := seal.Leaves(odata, 4096)
			got := make([][gpu.HashSize]byte, len(want))
			if err := other.LeafHashes(t.Context(), ob, 4096, allChunks(int64(len(want))), got); err != nil {
				t.Fatalf("other device: LeafHashes() error = %v", err)
			}
			for i := range want {
				if got[i] != [gpu.HashSize]byte(want[i]) {
					t.Fatalf("other device: hash %d = %x, want %x", i, got[i], want[i])
				}
			}
		})
	}
}

func TestKernelLoadFailure(t *testing.T) {
	drv := openFake(t, knobs{"module_error": 218}, Options{})
	d := drv.Devices()[0]
	in, err := d.Info(t.Context())
	if err != nil || in.CanHash {
		t.Fatalf("Info() = %+v, %v, want CanHash false", in, err)
	}
	f, err := d.Facts(t.Context())
	if err != nil || !strings.Contains(f.KernelError, "CUDA_ERROR_INVALID_PTX") {
		t.Errorf("Facts().KernelError = %q, %v, want CUDA_ERROR_INVALID_PTX", f.KernelError, err)
	}
	b, _ := setup(t, d, 4096)
	err = d.LeafHashes(t.Context(), b, 4096, []int64{0}, make([][gpu.HashSize]byte, 1))
	var ce *Error
	if !errors.As(err, &ce) || ce.Code != 218 {
		t.Errorf("LeafHashes() without kernel error = %v, want CUDA_ERROR_INVALID_PTX", err)
	}
}

// TestStaging checks that writes and hashes stream through the two small
// pinned buffers, that the bytes arrive intact, and that the pinned
// memory is zero whenever a call has returned.
func TestStaging(t *testing.T) {
	needFake(t, nil)
	pinned := fake.get("live_pinned")
	drv := openFake(t, nil, Options{StagingBytes: 4096, MaxLaunchChunks: 5})
	d := drv.Devices()[0]
	if got := fake.get("live_pinned") - pinned; got != 2*int64(len(drv.Devices())) {
		t.Errorf("%d pinned buffers, want 2 per device", got)
	}
	b, data := setup(t, d, 100003)
	if got := fake.get("pinned_dirty"); got != 0 {
		t.Errorf("after Write: %d non-zero bytes in pinned staging memory, want 0", got)
	}
	back := make([]byte, len(data))
	if err := d.ReadBack(t.Context(), b, 0, back); err != nil {
		t.Fatalf("ReadBack() error = %v", err)
	}
	if !bytes.Equal(back, data) {
		t.Errorf("ReadBack() differs from what was written")
	}
	part := make([]byte, 9000)
	if err := d.ReadBack(t.Context(), b, 5, part); err != nil || !bytes.Equal(part, data[5:9005]) {
		t.Errorf("ReadBack(off 5, 9000 bytes) = %v, differs: %v", err, !bytes.Equal(part, data[5:9005]))
	}
	if err := d.ReadBack(t.Context(), b, 100000, part); !errors.Is(err, gpu.ErrOutOfRange) {
		t.Errorf("ReadBack(past the end) error = %v, want %v", err, gpu.ErrOutOfRange)
	}
	out := make([][gpu.HashSize]byte, 25)
	if err := d.LeafHashes(t.Context(), b, 4000, allChunks(25), out); err != nil {
		t.Fatalf("LeafHashes() error = %v", err)
	}
	if got := fake.get("pinned_dirty"); got != 0 {
		t.Errorf("after LeafHashes: %d non-zero bytes in pinned staging memory, want 0", got)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := d.Write(ctx, b, 0, data); !errors.Is(err, context.Canceled) {
		t.Errorf("Write(cancelled) error = %v, want %v", err, context.Canceled)
	}
}

// TestDevicesInParallel drives both fake devices from many goroutines at
// once; the fake refuses any call made on a thread without the right
// context, which openFake's cleanup checks.
func TestDevicesInParallel(t *testing.T) {
	drv := openFake(t, nil, Options{StagingBytes: 8192})
	var wg sync.WaitGroup
	for _, d := range drv.Devices() {
		for g := range 4 {
			wg.Go(func() {
				for i := range 5 {
					size := int64(10000 + 997*g + i)
					b, err := d.Alloc(t.Context(), size)
					if err != nil {
						t.Errorf("device %d: Alloc() error = %v", d.ordinal, err)
						return
					}
					data := bytes.Repeat([]byte{byte(g), byte(i), 3}, int(size/3)+1)[:size]
					if err := d.Write(t.Context(), b, 0, data); err != nil {
						t.Errorf("device %d: Write() error = %v", d.ordinal, err)
					}
					want := seal.Leaves(data, 1024)
					got := make([][gpu.HashSize]byte, len(want))
					if err := d.LeafHashes(t.Context(), b, 1024, allChunks(int64(len(want))), got); err != nil {
						t.Errorf("device %d: LeafHashes() error = %v", d.ordinal, err)
					}
					for j := range want {
						if got[j] != [gpu.HashSize]byte(want[j]) {
							t.Errorf("device %d: hash %d mismatch", d.ordinal, j)
							break
						}
					}
					if err := d.Free(t.Context(), b); err != nil {
						t.Errorf("device %d: Free() error = %v", d.ordinal, err)
					}
				}
			})
		}
	}
	wg.Wait()
}

func TestFacts(t *testing.T) {
	env := map[string]string{"CUDA_VISIBLE_DEVICES": "0,1", "GGML_CUDA_ENABLE_UNIFIED_MEMORY": "1", "HOME": "/root"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	drv := openFake(t, knobs{"pageable": 1}, Options{LookupEnv: lookup})
	d := drv.Devices()[1]
	f, err := d.Facts(t.Context())
	if err != nil {
		t.Fatalf("Facts() error = %v", err)
	}
	want := Facts{
		Info: gpu.Info{
			Index: 1, Name: "Fake CUDA Device 1", UUID: "GPU-20212223-2425-2627-2829-2a2b2c2d2e2f",
			Driver: "cuda", DriverVersion: "550.54.15-fake", TotalBytes: 256 << 20, FreeBytes: f.Info.FreeBytes,
			PageableMemoryAccess: true, CanHash: true,
		},
		DriverAPIVersion: 12040, ComputeCapability: "9.0", PCIBusID: "0000:18:00.0", Multiprocessors: 132,
		ECCEnabled: true, PageableMemoryAccessUsesHostPageTables: true, ConcurrentManagedAccess: true,
		AllocationGranularity: fakeGranule,
		Env:                   map[string]string{"CUDA_VISIBLE_DEVICES": "0,1", "GGML_CUDA_ENABLE_UNIFIED_MEMORY": "1"},
		NVML: &NVMLFacts{
			Name: "NVIDIA Fake H100 1", UUID: "GPU-20212223-2425-2627-2829-2a2b2c2d2e2f", DriverVersion: "550.54.15-fake",
			MemoryTotal: 256 << 20, MemoryReserved: 1 << 20, MemoryFree: f.NVML.MemoryFree, MemoryUsed: f.NVML.MemoryUsed,
			ECCCurrent: true, ECCPending: true,
			ECCVolatileCorrected: 1, ECCVolatileUncorrected: 11, ECCAggregateCorrected: 2, ECCAggregateUncorrected: 12,
			RemappedRowsCorrectable: 2,
			Processes:               []Process{{PID: 4242, UsedBytes: 64 << 20}},
		},
	}
	if diff := cmp.Diff(want, f); diff != "" {
		t.Errorf("Facts() mismatch (-want +got):\n%s", diff)
	}
	if f.Info.FreeBytes == 0 || f.Info.FreeBytes > f.Info.TotalBytes {
		t.Errorf("Facts().Info.FreeBytes = %d of %d", f.Info.FreeBytes, f.Info.TotalBytes)
	}
}

func TestWithoutNVML(t *testing.T) {
	for _, tt := range []struct {
		name  string
		opts  Options
		knobs knobs
		want  string
	}{
		{"disabled", Options{NoNVML: true}, nil, "disabled"},
		{"missing", Options{NVMLPath: "/nonexistent/libnvidia-ml.so.1"}, nil, "load /nonexistent"},
		{"init fails", Options{}, knobs{"nvml_init_error": 9}, "NVML_ERROR_DRIVER_NOT_LOADED"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			drv := openFake(t, tt.knobs, tt.opts)
			f, err := drv.Devices()[0].Facts(t.Context())
			if err != nil {
				t.Fatalf("Facts() error = %v", err)
			}
			if f.NVML != nil || len(f.NVMLErrors) != 1 || !strings.Contains(f.NVMLErrors[0], tt.want) {
				t.Errorf("Facts() NVML = %+v, errors %q, want nil and an error containing %q", f.NVML, f.NVMLErrors, tt.want)
			}
			if f.Info.DriverVersion != "cuda 12.4" || f.Info.Name == "" {
				t.Errorf("Facts().Info = %+v, want CUDA's name and version", f.Info)
			}
		})
	}
}

func TestClosed(t *testing.T) {
	drv := openFake(t, nil, Options{})
	d := drv.Devices()[0]
	b, err := d.Alloc(t.Context(), 4096)
	if err != nil {
		t.Fatalf("Alloc() error = %v", err)
	}
	if err := drv.Close(); err != nil {
		t.Fatalf("Close() error = %v", err)
	}
	if err := drv.Close(); err != nil {
		t.Errorf("second Close() error = %v", err)
	}
	if _, err := d.Info(t.Context()); !errors.Is(err, errClosed) {
		t.Errorf("Info() after Close error = %v, want %v", err, errClosed)
	}
	if err := d.Free(t.Context(), b); !errors.Is(err, errClosed) {
		t.Errorf("Free() after Close error = %v, want %v", err, errClosed)
	}
}
