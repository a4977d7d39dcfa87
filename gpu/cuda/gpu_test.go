package cuda

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/gpu/gputest"
	"github.com/vramseal/vramseal/seal"
)

// The GPU checks run against the real driver only when VRAMSEAL_CUDA=1;
// scripts/gpu-check.sh sets it. Other variables:
//
//	VRAMSEAL_CUDA_DEVICE    CUDA ordinal to check (default 0)
//	VRAMSEAL_CUDA_SEAL_GIB  size of the full seal and verify (default 8)
//	VRAMSEAL_CUDA_REPORT    write the JSON report (gpuReport) to this file
//	VRAMSEAL_CUDA_VMM_REPORT  write TestGPUVMM's JSON report (vmmReport) here
//	VRAMSEAL_CUDA_LIBRARY   Options.LibraryPath (default libcuda.so.1)
//	VRAMSEAL_CUDA_NVML      Options.NVMLPath (default libnvidia-ml.so.1)
//
// The last two let gpu-check.sh be dry-run against the fake driver.
func needGPU(t testing.TB) *Device {
	t.Helper()
	if os.Getenv("VRAMSEAL_CUDA") != "1" {
		t.Skip("set VRAMSEAL_CUDA=1 to run against the real CUDA driver")
	}
	drv, err := Open(Options{LibraryPath: os.Getenv("VRAMSEAL_CUDA_LIBRARY"), NVMLPath: os.Getenv("VRAMSEAL_CUDA_NVML")})
	if err != nil {
		t.Fatalf("Open() error = %v", err)
	}
	t.Cleanup(func() {
		if err := drv.Close(); err != nil {
			t.Errorf("Close() error = %v", err)
		}
	})
	ordinal := envInt(t, "VRAMSEAL_CUDA_DEVICE", 0)
	if ordinal >= len(drv.Devices()) {
		t.Fatalf("VRAMSEAL_CUDA_DEVICE=%d, but there are %d devices", ordinal, len(drv.Devices()))
	}
	return drv.Devices()[ordinal]
}

func envInt(t testing.TB, key string, def int) int {
	s := os.Getenv(key)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%s=%q: %v", key, s, err)
	}
	return v
}

// gpuReport is the JSON report of TestGPU. Rates are in GB/s (1e9 bytes
// per second), times in milliseconds.
type gpuReport struct {
	Schema      string          `json:"schema"`
	Started     time.Time       `json:"started"`
	GoVersion   string          `json:"go_version"`
	CPUs        int             `json:"cpus"`
	Facts       *Facts          `json:"facts"`
	Allocations []allocEntry    `json:"allocations"`
	PTX         ptxEntry        `json:"ptx"`
	Conformance *bool           `json:"conformance_passed"`
	Correctness []correctEntry  `json:"leaf_correctness"`
	Seal        *sealEntry      `json:"seal_verify"`
	Targets     map[string]bool `json:"targets,omitempty"`
	Subtests    map[string]bool `json:"subtests_passed"`
}

type allocEntry struct {
	Size       int64    `json:"size"`
	FreeBefore uint64   `json:"free_before"`
	FreeAfter  uint64   `json:"free_after"`
	FreeDrop   uint64   `json:"free_drop"`
	MemoryType string   `json:"memory_type"`
	Managed    bool     `json:"managed"`
	Ordinal    int      `json:"device_ordinal"`
	Mapped     bool     `json:"mapped"`
	HostPtr    bool     `json:"host_accessible"`
	ReadOnly   bool     `json:"read_only"`
	VMM        VMMFacts `json:"vmm"`
	Violations []string `json:"policy_violations,omitempty"`
	Error      string   `json:"error,omitempty"`
}

type ptxEntry struct {
	Loaded bool   `json:"loaded"`
	Error  string `json:"error,omitempty"`
	Bytes  int    `json:"bytes"`
}

type correctEntry struct {
	Size      int64 `json:"size"`
	ChunkSize int64 `json:"chunk_size"`
	Chunks    int   `json:"chunks"`
	Match     bool  `json:"match"`
}

type sealEntry struct {
	Bytes         int64   `json:"bytes"`
	ChunkSize     int64   `json:"chunk_size"`
	Chunks        int     `json:"chunks"`
	HostHashGBps  float64 `json:"host_hash_gbps"` // seal.Hasher: flat SHA-256 + leaves
	HtoDGBps      float64 `json:"htod_gbps"`      // Device.Write through pinned staging
	SealGBps      float64 `json:"seal_gbps"`      // both at once, as achieved
	VerifyMs      float64 `json:"verify_full_ms"` // best of 3
	VerifyGBps    float64 `json:"verify_full_gbps"`
	LeavesMatch   bool    `json:"leaves_match"`
	RootMatch     bool    `json:"root_match"`
	Sampled16Ms   float64 `json:"sampled16_median_ms"`
	Sampled16P99  float64 `json:"sampled16_p99_ms"`
	BaselineGBps  float64 `json:"baseline_dtoh_cpu_gbps"` // ReadBack + seal.Leaves
	DtoHGBps      float64 `json:"dtoh_gbps"`
	BaselineMatch bool    `json:"baseline_leaves_match"`
	Speedup       float64 `json:"verify_speedup_vs_baseline"`
}

func gbps(n int64, d time.Duration) float64 { return float64(n) / d.Seconds() / 1e9 }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// TestGPU checks the real device end to end and writes the report.
func TestGPU(t *testing.T) {
	d := needGPU(t)
	checkGPU(t, d, gpuCheck{
		sealBytes:  int64(envInt(t, "VRAMSEAL_CUDA_SEAL_GIB", 8)) << 30,
		allocSizes: []int64{1 << 20, 4 << 20, 64 << 20, 1 << 30},
		scale:      1,
		report:     os.Getenv("VRAMSEAL_CUDA_REPORT"),
	})
}

// TestGPUCheckWithFake runs TestGPU's checks, scaled down, against the
// fake driver, so that gpu-check's code cannot rot unnoticed in CI.
func TestGPUCheckWithFake(t *testing.T) {
	drv := openFake(t, knobs{"total_mib": 96}, Options{})
	checkGPU(t, drv.Devices()[0], gpuCheck{
		sealBytes:  8<<20 + 12345,
		allocSizes: []int64{1 << 20, 4 << 20},
		scale:      32,
		report:     t.TempDir() + "/report.json",
		fake:       true,
	})
}

// gpuCheck configures checkGPU.
type gpuCheck struct {
	sealBytes  int64   // size of the full seal and verify
	allocSizes []int64 // allocations whose facts are reported
	scale      int64   // divides the sizes of the correctness cases
	report     string  // JSON report path; "" for none
	fake       bool    // the device is the fake: no performance targets
}

func checkGPU(t *testing.T, d *Device, cfg gpuCheck) {
	rep := &gpuReport{
		Schema: "vramseal-gpu-check/1", Started: time.Now().UTC(), GoVersion: runtime.Version(),
		CPUs: runtime.NumCPU(), Subtests: map[string]bool{}, PTX: ptxEntry{Bytes: len(leafhashPTX)},
	}
	defer func() {
		if cfg.report == "" {
			return
		}
		b, err := json.MarshalIndent(rep, "", "  ")
		if err == nil {
			err = os.WriteFile(cfg.report, append(b, '\n'), 0o644)
		}
		if err != nil {
			t.Errorf("writing report: %v", err)
		}
		if cfg.fake {
			var back gpuReport
			if err := json.Unmarshal(b, &back); err != nil || back.Seal == nil || !back.Seal.LeavesMatch {
				t.Errorf("report %s does not read back with a matching seal: %v", cfg.report, err)
			}
		}
	}()
	run := func(name string, f func(t *testing.T)) {
		rep.Subtests[name] = t.Run(name, f)
	}

	run("Facts", func(t *testing.T) {
		f, err := d.Facts(t.Context())
		if err != nil {
			t.Fatalf("Facts() error = %v", err)
		}
		rep.Facts = &f
		rep.PTX.Loaded, rep.PTX.Error = f.Info.CanHash, f.KernelError
		t.Logf("%s %s, %d bytes, CUDA %s, compute %s", f.Info.Name, f.Info.UUID, f.Info.TotalBytes,
			versionString(f.DriverAPIVersion), f.ComputeCapability)
		if !f.Info.CanHash {
			t.Errorf("PTX did not load: %s", f.KernelError)
		}
		if f.Info.Integrated {
			t.Errorf("device is integrated")
		}
	})
	run("Allocations", func(t *testing.T) {
		for _, size := range cfg.allocSizes {
			e := allocEntry{Size: size}
			b, err := d.Alloc(t.Context(), size)
			if err != nil {
				e.Error = err.Error()
				t.Errorf("Alloc(%d) error = %v", size, err)
			} else {
				r, _ := d.AllocReport(b)
				e.FreeBefore, e.FreeAfter, e.FreeDrop = r.FreeBefore, r.FreeAfter, r.FreeDrop()
				e.MemoryType, e.Managed, e.Ordinal = r.Facts.MemoryType.String(), r.Facts.Managed, r.Facts.DeviceOrdinal
				e.Mapped, e.HostPtr, e.ReadOnly, e.VMM = r.Facts.Mapped, r.Facts.HostAccessible, r.Facts.ReadOnly, r.VMM
				if e.Violations = r.Violations; len(e.Violations) > 0 {
					t.Errorf("Alloc(%d) breaks the VRAM-only policy: %q", size, e.Violations)
				}
				if err := d.Free(t.Context(), b); err != nil {
					t.Errorf("Free() error = %v", err)
				}
			}
			rep.Allocations = append(rep.Allocations, e)
		}
	})
	run("Conformance", func(t *testing.T) {
		gputest.Run(t, func(*testing.T) gpu.Device { return d })
		ok := !t.Failed()
		rep.Conformance = &ok
	})
	run("LeafCorrectness", func(t *testing.T) {
		r := rand.NewChaCha8([32]byte{1})
		for _, tt := range []struct{ size, chunk int64 }{
			{1 << 20, 1}, {1<<20 + 3, 55}, {1<<20 + 5, 63}, {4<<20 + 1, 4095}, {64 << 20, 65536},
			{64<<20 + 12345, 65536}, {64<<20 - 1, 65537}, {96 << 20, 1 << 20}, {3<<20 + 17, 8 << 20},
		} {
			tt.size = max(tt.size/cfg.scale, 1)
			data := make([]byte, tt.size)
			r.Read(data)
			b, err := d.Alloc(t.Context(), tt.size)
			if err != nil {
				t.Fatalf("Alloc(%d) error = %v", tt.size, err)
			}
			if err := d.Write(t.Context(), b, 0, data); err != nil {
				t.Fatalf("Write() error = %v", err)
			}
			want := seal.Leaves(data, tt.chunk)
			got := make([][gpu.HashSize]byte, len(want))
			if err := d.LeafHashes(t.Context(), b, tt.chunk, allChunks(int64(len(want))), got); err != nil {
				t.Fatalf("LeafHashes() error = %v", err)
			}
			e := correctEntry{Size: tt.size, ChunkSize: tt.chunk, Chunks: len(want), Match: true}
			for i := range want {
				if got[i] != [gpu.HashSize]byte(want[i]) {
					e.Match = false
					t.Errorf("LeafHashes(size %d, chunk %d)[%d] = %x, want %x", tt.size, tt.chunk, i, got[i], want[i])
					break
				}
			}
			rep.Correctness = append(rep.Correctness, e)
			d.Free(t.Context(), b)
		}
	})
	run("SealVerify", func(t *testing.T) {
		rep.Seal = sealVerify(t, d, cfg.sealBytes)
		if cfg.fake {
			return
		}
		s := rep.Seal
		rep.Targets = map[string]bool{
			"verify_at_least_100_gbps":        s.VerifyGBps >= 100,
			"verify_at_least_20x_baseline":    s.Speedup >= 20,
			"sampled16_under_1ms_with_launch": s.Sampled16Ms < 1,
		}
	})
}

// sealVerify seals size bytes of random data on d (host hashing and
// host-to-device copies overlapped per piece), verifies every chunk on the
// device, samples 16 chunks 100 times, and measures the baseline: copy
// everything back and hash it on the CPU.
func sealVerify(t *testing.T, d *Device, size int64) *sealEntry {
	const chunk = seal.DefaultChunkSize
	piece := min(size, 256<<20)
	ctx := t.Context()
	s := &sealEntry{Bytes: size, ChunkSize: chunk}
	b, err := d.Alloc(ctx, size)
	if err != nil {
		t.Fatalf("Alloc(%d) error = %v", size, err)
	}
	defer d.Free(ctx, b)

	src := rand.NewChaCha8([32]byte{8})
	r := rand.New(src)
	h := seal.NewHasher(chunk)
	defer h.Close()
	buf := make([]byte, piece)
	var hashT, writeT, bothT time.Duration
	for off := int64(0); off < size; off += piece {
		p := buf[:min(piece, size-off)]
		src.Read(p)
		start := time.Now()
		done := make(chan time.Duration)
		go func() {
			s := time.Now()
			h.Write(p)
			done <- time.Since(s)
		}()
		ws := time.Now()
		if err := d.Write(ctx, b, off, p); err != nil {
			t.Fatalf("Write(off %d) error = %v", off, err)
		}
		writeT += time.Since(ws)
		hashT += <-done
		bothT += time.Since(start)
	}
	_, leaves, _ := h.Sum()
	s.Chunks = len(leaves)
	s.HostHashGBps, s.HtoDGBps, s.SealGBps = gbps(size, hashT), gbps(size, writeT), gbps(size, bothT)

	got := make([][gpu.HashSize]byte, len(leaves))
	all := allChunks(int64(len(leaves)))
	best := time.Duration(1 << 62)
	for range 3 {
		start := time.Now()
		if err := d.LeafHashes(ctx, b, chunk, all, got); err != nil {
			t.Fatalf("LeafHashes(all) error = %v", err)
		}
		best = min(best, time.Since(start))
	}
	s.VerifyMs, s.VerifyGBps = ms(best), gbps(size, best)
	gotLeaves := make([]seal.Hash, len(got))
	for i := range got {
		gotLeaves[i] = seal.Hash(got[i])
	}
	s.LeavesMatch = slices.Equal(gotLeaves, leaves)
	s.RootMatch = seal.Root(gotLeaves) == seal.Root(leaves)
	if !s.LeavesMatch || !s.RootMatch {
		t.Errorf("on-device verify of %d bytes: leaves match %v, root match %v", size, s.LeavesMatch, s.RootMatch)
	}

	var times []time.Duration
	sample := make([]int64, 16)
	out := make([][gpu.HashSize]byte, 16)
	for range 100 {
		for i := range sample {
			sample[i] = r.Int64N(int64(len(leaves)))
		}
		start := time.Now()
		if err := d.LeafHashes(ctx, b, chunk, sample, out); err != nil {
			t.Fatalf("LeafHashes(16 sampled) error = %v", err)
		}
		times = append(times, time.Since(start))
		for i, c := range sample {
			if seal.Hash(out[i]) != leaves[c] {
				t.Errorf("sampled chunk %d: hash mismatch", c)
			}
		}
	}
	slices.Sort(times)
	s.Sampled16Ms, s.Sampled16P99 = ms(times[len(times)/2]), ms(times[len(times)*99/100])

	var copyT, totalT time.Duration
	s.BaselineMatch = true
	for off := int64(0); off < size; off += piece {
		p := buf[:min(piece, size-off)]
		start := time.Now()
		if err := d.ReadBack(ctx, b, off, p); err != nil {
			t.Fatalf("ReadBack(off %d) error = %v", off, err)
		}
		copyT += time.Since(start)
		l := seal.Leaves(p, chunk)
		totalT += time.Since(start)
		if !slices.Equal(l, leaves[off/chunk:off/chunk+int64(len(l))]) {
			s.BaselineMatch = false
		}
	}
	clear(buf)
	s.DtoHGBps, s.BaselineGBps = gbps(size, copyT), gbps(size, totalT)
	s.Speedup = s.VerifyGBps / s.BaselineGBps
	t.Logf("seal %.2f GB/s (host hash %.2f, HtoD %.2f); verify %.1f GB/s vs baseline %.2f GB/s (%.1fx); sampled 16: %.3f ms",
		s.SealGBps, s.HostHashGBps, s.HtoDGBps, s.VerifyGBps, s.BaselineGBps, s.Speedup, s.Sampled16Ms)
	if !s.BaselineMatch {
		t.Errorf("baseline (read back and hash on the CPU) leaves differ from the seal")
	}
	return s
}

// BenchmarkVerify compares on-device verification of 1 GiB in 64 KiB
// chunks with its baseline, copying the bytes back and hashing them on the
// CPU, in the same run. It uses the real GPU with VRAMSEAL_CUDA=1 and the
// fake driver (a CPU stand-in, so only a smoke test) otherwise.
func BenchmarkVerify(b *testing.B) {
	var d *Device
	size := int64(1 << 30)
	if os.Getenv("VRAMSEAL_CUDA") == "1" {
		d = needGPU(b)
	} else {
		d = openFake(b, knobs{"total_mib": 512}, Options{}).Devices()[0]
		size = 16 << 20
	}
	const chunk = seal.DefaultChunkSize
	buf, err := d.Alloc(b.Context(), size)
	if err != nil {
		b.Fatalf("Alloc() error = %v", err)
	}
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{3}).Read(data)
	if err := d.Write(b.Context(), buf, 0, data); err != nil {
		b.Fatalf("Write() error = %v", err)
	}
	all := allChunks(gpu.ChunkCount(size, chunk))
	out := make([][gpu.HashSize]byte, len(all))
	b.Run("device", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			if err := d.LeafHashes(b.Context(), buf, chunk, all, out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("readback+cpu", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			if err := d.ReadBack(b.Context(), buf, 0, data); err != nil {
				b.Fatal(err)
			}
			seal.Leaves(data, chunk)
		}
	})
	b.Run("sampled16", func(b *testing.B) {
		for b.Loop() {
			if err := d.LeafHashes(b.Context(), buf, chunk, all[:16], out[:16]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
