package cuda

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/seal"
	"github.com/vramseal/vramseal/vram"
)

// These tests run the residency manager (package vram) on the CUDA
// backend end to end, over the fake driver: what vramseal serve does with
// --device cuda, minus the GPU.

// managerChunk is the manager's chunk size in these tests: small enough
// that a shard of a few MiB has dozens of chunks.
const managerChunk = 64 << 10

// recorder is a vram.Auditor that keeps every event in memory.
type recorder struct {
	mu     sync.Mutex
	events []audit.Event
}

func (r *recorder) Append(_ context.Context, e audit.Event) (audit.Receipt, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	return audit.Receipt{}, nil
}

// find returns the events of type typ.
func (r *recorder) find(typ string) []audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []audit.Event
	for _, e := range r.events {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// field returns the text of e's field key, or "<missing>".
func field(e audit.Event, key string) string {
	for _, f := range e.Fields {
		if f.Key == key {
			return f.Text()
		}
	}
	return "<missing>"
}

// newManager opens the fake driver with knobs k and opts and returns a
// manager over devs of its devices (all of them when devs is nil), its
// audit recorder and the driver. The manager is closed before the driver.
func newManager(t *testing.T, k knobs, opts Options, devs []int) (*vram.Manager, *recorder, *Driver) {
	t.Helper()
	drv := openFake(t, k, opts)
	if devs == nil {
		for i := range drv.Devices() {
			devs = append(devs, i)
		}
	}
	key, err := seal.DeriveKey([]byte("0123456789abcdef0123456789abcdef-cuda-test"))
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	mopts := vram.Options{Key: key, WorkerID: "worker-cuda-test", ChunkSize: managerChunk, Audit: rec, Environ: []string{}}
	for _, i := range devs {
		mopts.Devices = append(mopts.Devices, drv.Devices()[i])
	}
	m, err := vram.New(t.Context(), mopts)
	if err != nil {
		t.Fatalf("vram.New(cuda devices %v) error = %v", devs, err)
	}
	t.Cleanup(func() {
		if err := m.Close(context.Background()); err != nil {
			t.Errorf("Manager.Close() error = %v", err)
		}
	})
	return m, rec, drv
}

func shardBytes(seed uint64, n int64) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return b
}

func sealShard(t *testing.T, m *vram.Manager, id string, dev int, data []byte) (vram.ShardInfo, error) {
	t.Helper()
	return m.Seal(t.Context(), vram.SealRequest{ShardID: id, ModelRef: "test/model@cuda", Device: dev, Size: int64(len(data)), Data: bytes.NewReader(data)})
}

func mustSeal(t *testing.T, m *vram.Manager, id string, dev int, data []byte) vram.ShardInfo {
	t.Helper()
	sh, err := sealShard(t, m, id, dev, data)
	if err != nil {
		t.Fatalf("Seal(%q, %d bytes, GPU %d) error = %v", id, len(data), dev, err)
	}
	return sh
}

// granules returns the device bytes the fake charges for a request of
// size bytes: whole 2 MiB granules.
func granules(size int64) int64 { return (size + fakeGranule - 1) / fakeGranule * fakeGranule }

// TestManagerSealVerifyRelease seals shards of sizes around the 2 MiB
// granule on both devices, verifies them in full and sampled, checks the
// capacity numbers against the fake's accounting, and releases them.
// Shards under a granule must not trip the manager's free-memory-drop
// check: the backend rounds every allocation up to whole granules.
func TestManagerSealVerifyRelease(t *testing.T) {
	m, rec, _ := newManager(t, nil, Options{}, nil)
	ctx := t.Context()
	for i, size := range []int64{1, 4095, 1 << 20, 2<<20 - 1, 2 << 20, 2<<20 + 1, 5<<20 + 12345} {
		dev := i % 2
		t.Run(fmt.Sprintf("%d bytes on GPU %d", size, dev), func(t *testing.T) {
			id := fmt.Sprintf("shard-%d", size)
			data := shardBytes(uint64(size), size)
			before, err := m.Capacity(ctx, dev)
			if err != nil {
				t.Fatalf("Capacity(%d) error = %v", dev, err)
			}
			allocs, used := fake.get("live_allocs"), fake.get("used")

			sh := mustSeal(t, m, id, dev, data)
			s := sh.Seal
			leaves := seal.Leaves(data, managerChunk)
			chunks := int64(len(leaves))
			if s.Digest != seal.Hash(sha256.Sum256(data)) || s.Root != seal.Root(leaves) {
				t.Errorf("Seal(%q) digest, root = %s, %s, want %s, %s", id, s.Digest, s.Root, seal.Hash(sha256.Sum256(data)), seal.Root(leaves))
			}
			uuid := deviceUUID(t, m, dev)
			if s.Size != size || s.ChunkSize != managerChunk || s.DeviceIndex != dev || s.DeviceUUID != uuid || sh.Chunks != chunks {
				t.Errorf("Seal(%q) = size %d, chunk %d, GPU %d %s, %d chunks; want %d, %d, GPU %d %s, %d chunks",
					id, s.Size, s.ChunkSize, s.DeviceIndex, s.DeviceUUID, sh.Chunks, size, managerChunk, dev, uuid, chunks)
			}
			if err := m.Key().Verify(&s); err != nil {
				t.Errorf("Key().Verify(seal of %q) error = %v", id, err)
			}
			if got := fake.get("live_allocs") - allocs; got != 1 {
				t.Errorf("after Seal: %d new device allocations, want 1", got)
			}
			if got := fake.get("used") - used; got != granules(size) {
				t.Errorf("after Seal: fake charged %d bytes, want %d (whole granules)", got, granules(size))
			}
			if st, why := m.State(); st != vram.Running {
				t.Fatalf("State() = %v (%s), want running", st, why)
			}
			buf, _, err := m.Buffer(id)
			if err != nil {
				t.Fatalf("Buffer(%q) error = %v", id, err)
			}
			if rep, err := buf.(*buffer).dev.AllocReport(buf); err != nil || rep.Violations != nil || rep.FreeDrop() != uint64(granules(size)) {
				t.Errorf("AllocReport() = %+v, %v, want no violations and a drop of %d", rep, err, granules(size))
			}

			c, err := m.Capacity(ctx, dev)
			if err != nil {
				t.Fatalf("Capacity(%d) error = %v", dev, err)
			}
			want := before
			want.UsedBytes += size
			want.Shards++
			want.FreeBytes -= granules(size)
			want.AvailableBytes -= granules(size)
			if c != want {
				t.Errorf("Capacity(%d) after Seal = %+v, want %+v", dev, c, want)
			}

			launches := fake.get("launches")
			res, err := m.Verify(ctx, id, vram.Full)
			if err != nil {
				t.Fatalf("Verify(%q, full) error = %v", id, err)
			}
			if res.Mode != "full" || res.ChunksChecked != chunks || res.Chunks != chunks || res.DetectionProbability != 1 {
				t.Errorf("Verify(%q, full) = %+v, want all %d chunks", id, res, chunks)
			}
			if fake.get("launches") == launches {
				t.Errorf("Verify(%q, full) launched no kernel: the device did not hash", id)
			}
			const k = 16
			res, err = m.Verify(ctx, id, vram.Sampled(k))
			if err != nil {
				t.Fatalf("Verify(%q, sampled %d) error = %v", id, k, err)
			}
			if wantChecked := min(k, chunks); res.ChunksChecked != wantChecked || res.DetectionProbability != float64(wantChecked)/float64(chunks) {
				t.Errorf("Verify(%q, sampled %d) = %+v, want %d of %d chunks", id, k, res, wantChecked, chunks)
			}

			if err := m.Release(ctx, id); err != nil {
				t.Fatalf("Release(%q) error = %v", id, err)
			}
			if got := fake.get("live_allocs"); got != allocs {
				t.Errorf("after Release: %d live device allocations, want %d", got, allocs)
			}
			if got := fake.get("used"); got != used {
				t.Errorf("after Release: fake charges %d bytes, want %d", got, used)
			}
			if after, err := m.Capacity(ctx, dev); err != nil || after != before {
				t.Errorf("Capacity(%d) after Release = %+v, %v, want %+v", dev, after, err, before)
			}
			if err := m.Release(ctx, id); !errors.Is(err, vram.ErrNotFound) {
				t.Errorf("second Release(%q) error = %v, want %v", id, err, vram.ErrNotFound)
			}
		})
	}
	if got := len(rec.find(vram.EventPolicyViolation)); got != 0 {
		t.Errorf("%d policy_violation events for healthy allocations, want 0", got)
	}
}

func deviceUUID(t *testing.T, m *vram.Manager, dev int) string {
	t.Helper()
	infos, err := m.Devices(t.Context())
	if err != nil {
		t.Fatalf("Devices() error = %v", err)
	}
	return infos[dev].UUID
}

// TestManagerSubsetOfDevices gives the manager only the fake's second
// device, so that the manager's index (0) and the CUDA ordinal (1)
// differ. The gpu contract (gputest) is that PointerFacts.DeviceOrdinal
// equals the device's own Info.Index, whatever position a caller gives it.
func TestManagerSubsetOfDevices(t *testing.T) {
	m, _, _ := newManager(t, nil, Options{}, []int{1})
	_, err := sealShard(t, m, "only", 0, shardBytes(9, 3<<20+5))
	if err != nil {
		t.Fatalf("Seal(only, GPU 0 = CUDA device 1) error = %v", err)
	}
	if _, err := m.Verify(t.Context(), "only", vram.Full); err != nil {
		t.Errorf("Verify(only, full) error = %v", err)
	}
}

// TestManagerCapacityOddFree checks Capacity.AvailableBytes ("the largest
// shard a new seal could get now") on a device whose free memory is not a
// whole number of 2 MiB granules, as on real GPUs: the fake has 9 MiB, of
// which the backend's launch scratch takes one granule.
func TestManagerCapacityOddFree(t *testing.T) {
	m, _, _ := newManager(t, knobs{"total_mib": 9}, Options{StagingBytes: 4096}, []int{0})
	ctx := t.Context()
	c, err := m.Capacity(ctx, 0)
	// The driver says 7 MiB free; 3 whole granules of it can be allocated.
	if err != nil || c.FreeBytes != 6<<20 || c.AvailableBytes != 6<<20 {
		t.Fatalf("Capacity(0) = %+v, %v, want 6 MiB free and available (7 MiB rounded down to granules)", c, err)
	}
	whole := c.AvailableBytes / fakeGranule * fakeGranule
	mustSeal(t, m, "whole", 0, shardBytes(3, whole))
	if err := m.Release(ctx, "whole"); err != nil {
		t.Fatalf("Release(whole) error = %v", err)
	}
	_, err = sealShard(t, m, "more", 0, shardBytes(4, c.AvailableBytes+1))
	if !vram.Retryable(err) {
		t.Fatalf("Seal(Capacity.AvailableBytes+1) error = %v, want a retryable capacity error", err)
	}
	if _, err := sealShard(t, m, "all", 0, shardBytes(4, c.AvailableBytes)); err != nil {
		t.Fatalf("Seal(Capacity.AvailableBytes = %d bytes) error = %v", c.AvailableBytes, err)
	}
}

// TestManagerPolicyViolation makes the fake driver report memory that
// breaks the VRAM-only policy and checks that a seal is refused through
// the manager's policy path: the worker stops, the violation is audited,
// the memory is freed, nothing resident changes, and Reset brings the
// worker back.
func TestManagerPolicyViolation(t *testing.T) {
	const size = 3<<20 + 77
	for _, tt := range []struct {
		name      string
		knobs     knobs
		size      int64
		violation string // vram.PolicyError.Violation
	}{
		{"managed", knobs{"managed": 1}, size, "managed_memory"},
		{"unified memory type", knobs{"memtype": 4}, size, "managed_memory"},
		{"host memory type", knobs{"memtype": 1}, size, "not_device_memory"},
		{"host pointer", knobs{"host_pointer": 1}, size, "host_mapped_memory"},
		{"wrong ordinal", knobs{"wrong_ordinal": 1}, size, "wrong_device"},
		{"unmapped", knobs{"unmapped": 1}, size, "not_mapped"},
		{"free memory unchanged", knobs{"no_drop": 1}, size, "free_memory_unchanged"},
		{"free memory unchanged below a granule", knobs{"no_drop": 1}, 1 << 20, "free_memory_unchanged"},
	} {
		for _, refuse := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/refuse=%v", tt.name, refuse), func(t *testing.T) {
				m, rec, _ := newManager(t, nil, Options{RefuseViolations: refuse}, nil)
				ctx := t.Context()
				keep := shardBytes(1, 1<<20+3)
				mustSeal(t, m, "keep", 0, keep)
				before, _ := m.Capacity(ctx, 0)
				allocs, used := fake.get("live_allocs"), fake.get("used")

				for k, v := range tt.knobs {
					fake.set(k, v)
				}
				_, err := sealShard(t, m, "bad", 0, shardBytes(2, tt.size))
				var pe *vram.PolicyError
				if !errors.As(err, &pe) || !errors.Is(err, vram.ErrPolicy) || pe.Violation != tt.violation || pe.Device != 0 {
					t.Fatalf("Seal(bad) error = %v, want *vram.PolicyError %s on GPU 0", err, tt.violation)
				}
				if vram.Retryable(err) {
					t.Errorf("Retryable(%v) = true, want false", err)
				}
				if st, why := m.State(); st != vram.Stopped || !strings.Contains(why, tt.violation) {
					t.Errorf("State() = %v (%s), want stopped by %s", st, why, tt.violation)
				}
				if ev := rec.find(vram.EventPolicyViolation); len(ev) != 1 || field(ev[0], "violation") != tt.violation ||
					field(ev[0], "action_taken") != vram.ActionWorkerStopped || ev[0].Severity != audit.SeverityCritical {
					t.Errorf("policy_violation events = %+v, want one critical %s, worker_stopped", ev, tt.violation)
				}
				if got := fake.get("live_allocs"); got != allocs {
					t.Errorf("after refused Seal: %d live device allocations, want %d (freed)", got, allocs)
				}
				if got := fake.get("used"); got != used {
					t.Errorf("after refused Seal: fake charges %d bytes, want %d", got, used)
				}
				fake.reset()
				if c, _ := m.Capacity(ctx, 0); c != before {
					t.Errorf("Capacity(0) after refused Seal = %+v, want %+v", c, before)
				}
				if _, err := m.Shard("bad"); !errors.Is(err, vram.ErrNotFound) {
					t.Errorf("Shard(bad) error = %v, want %v", err, vram.ErrNotFound)
				}

				// Stopped: the execute gate is shut for every shard and seal.
				var se *vram.StoppedError
				if _, err := m.Verify(ctx, "keep", vram.Full); !errors.As(err, &se) || !errors.Is(err, vram.ErrStopped) {
					t.Errorf("Verify(keep) while stopped error = %v, want %v", err, vram.ErrStopped)
				}
				if _, err := sealShard(t, m, "next", 1, keep); !errors.Is(err, vram.ErrStopped) {
					t.Errorf("Seal(next) while stopped error = %v, want %v", err, vram.ErrStopped)
				}

				if err := m.Reset(ctx, "fake driver fault cleared"); err != nil {
					t.Fatalf("Reset() error = %v", err)
				}
				if st, why := m.State(); st != vram.Running {
					t.Fatalf("State() after Reset = %v (%s), want running", st, why)
				}
				if _, err := m.Verify(ctx, "keep", vram.Full); err != nil {
					t.Errorf("Verify(keep) after Reset error = %v", err)
				}
				mustSeal(t, m, "bad", 0, shardBytes(2, tt.size))
				if _, err := m.Verify(ctx, "bad", vram.Full); err != nil {
					t.Errorf("Verify(bad) after Reset error = %v", err)
				}
			})
		}
	}
}

// TestManagerIntegratedDevice checks that the manager refuses to start
// on a device that shares memory with the host.
func TestManagerIntegratedDevice(t *testing.T) {
	drv := openFake(t, knobs{"integrated": 1}, Options{})
	_, err := vram.New(t.Context(), vram.Options{Devices: []gpu.Device{drv.Devices()[0]}, Environ: []string{}})
	var pe *vram.PolicyError
	if !errors.As(err, &pe) || pe.Violation != "integrated_device" || pe.Device != 0 {
		t.Fatalf("vram.New(integrated) error = %v, want integrated_device on GPU 0", err)
	}
}

// TestManagerDetectsCorruption flips bits of a sealed shard in the fake's
// device memory, behind the driver's back, and checks that a full verify
// on the device finds each flip, names its chunk, and stops the worker.
func TestManagerDetectsCorruption(t *testing.T) {
	m, rec, _ := newManager(t, nil, Options{}, nil)
	ctx := t.Context()
	const size = 3<<20 + 777 // the last chunk holds 777 bytes
	data := shardBytes(5, size)
	sh := mustSeal(t, m, "victim", 1, data)
	buf, dev, err := m.Buffer("victim")
	if err != nil || dev != 1 {
		t.Fatalf("Buffer(victim) = GPU %d, %v, want GPU 1", dev, err)
	}
	ptr := buf.(*buffer).ptr
	flips := []struct {
		off  int64
		mask int32
	}{
		{0, 0x01},
		{17*managerChunk + 5, 0x80},
		{18*managerChunk - 1, 0x10},
		{size - 777, 0x02},
		{size - 1, 0x40},
	}
	for _, tt := range flips {
		t.Run(fmt.Sprintf("byte %d", tt.off), func(t *testing.T) {
			if fake.flip(ptr, tt.off, tt.mask) != 0 {
				t.Fatalf("fake_flip(victim, %d) failed", tt.off)
			}
			_, err := m.Verify(ctx, "victim", vram.Full)
			chunk := tt.off / managerChunk
			var ie *vram.IntegrityError
			if !errors.As(err, &ie) || !errors.Is(err, vram.ErrIntegrity) || ie.Reason != vram.ReasonDigestMismatch {
				t.Fatalf("Verify(full) after flipping byte %d error = %v, want digest_mismatch", tt.off, err)
			}
			wantRange := vram.ChunkRange{FirstChunk: chunk, LastChunk: chunk, Offset: chunk * managerChunk, Length: min(managerChunk, size-chunk*managerChunk)}
			if len(ie.Changed) != 1 || ie.Changed[0] != wantRange || ie.Device != 1 || ie.ShardID != "victim" {
				t.Errorf("Verify(full) after flipping byte %d = %+v, want %v on GPU 1", tt.off, ie, wantRange)
			}
			if ie.ExpectedRoot != sh.Seal.Root || ie.ActualRoot == sh.Seal.Root {
				t.Errorf("Verify(full) roots = expected %s, actual %s; want expected %s and a different actual", ie.ExpectedRoot, ie.ActualRoot, sh.Seal.Root)
			}
			if want := fmt.Sprintf("chunk %d", chunk); !strings.Contains(err.Error(), want) {
				t.Errorf("Verify(full) error = %q, want it to name %q", err, want)
			}
			if st, why := m.State(); st != vram.Stopped || !strings.Contains(why, "victim") {
				t.Errorf("State() = %v (%s), want stopped by victim", st, why)
			}
			if _, err := m.Verify(ctx, "victim", vram.Full); !errors.Is(err, vram.ErrStopped) {
				t.Errorf("Verify(full) while stopped error = %v, want %v", err, vram.ErrStopped)
			}
			if fake.flip(ptr, tt.off, tt.mask) != 0 {
				t.Fatalf("fake_flip(victim, %d) back failed", tt.off)
			}
			if err := m.Reset(ctx, "flipped bit restored"); err != nil {
				t.Fatalf("Reset() error = %v", err)
			}
			// The reset reopens the worker, not the shard: it stays
			// quarantined until it is released and sealed again.
			var qe *vram.QuarantinedError
			if _, err := m.Verify(ctx, "victim", vram.Full); !errors.As(err, &qe) {
				t.Errorf("Verify(full) after restoring byte %d and a reset error = %v, want quarantined", tt.off, err)
			}
			if err := m.Release(ctx, "victim"); err != nil {
				t.Fatalf("Release(victim) error = %v", err)
			}
			mustSeal(t, m, "victim", 1, data)
			if buf, _, err = m.Buffer("victim"); err != nil {
				t.Fatal(err)
			}
			ptr = buf.(*buffer).ptr
			if _, err := m.Verify(ctx, "victim", vram.Full); err != nil {
				t.Errorf("Verify(full) of the resealed shard error = %v", err)
			}
		})
	}
	if got := len(rec.find(vram.EventVerificationFailed)); got != len(flips) {
		t.Errorf("%d seal_verification_failed events, want %d", got, len(flips))
	}
	if fake.flip(ptr, size+granules(size), 1) == 0 {
		t.Errorf("fake_flip past the allocation succeeded, want -1")
	}
}
