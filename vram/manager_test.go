package vram

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/gpu/sim"
	"github.com/vramseal/vramseal/seal"
)

const testChunk = 4 << 10

func testKey(t testing.TB) seal.Key {
	t.Helper()
	k, err := seal.DeriveKey([]byte("0123456789abcdef0123456789abcdef-test-secret"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newTestManager returns a manager over n simulated devices of capacity
// bytes each, and the devices for fault injection.
func newTestManager(t testing.TB, n int, capacity int64, mutate ...func(*Options)) (*Manager, []*sim.Device) {
	t.Helper()
	devs, err := sim.New(sim.Options{Devices: n, Capacity: capacity})
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Key: testKey(t), WorkerID: "worker-test", ChunkSize: testChunk, Environ: []string{}}
	for _, d := range devs {
		opts.Devices = append(opts.Devices, d)
	}
	for _, f := range mutate {
		f(&opts)
	}
	m, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	return m, devs
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func sealBytes(t testing.TB, m *Manager, id string, dev int, data []byte) ShardInfo {
	t.Helper()
	sh, err := m.Seal(context.Background(), SealRequest{ShardID: id, ModelRef: "test/model", Device: dev, Size: int64(len(data)), Data: bytes.NewReader(data)})
	if err != nil {
		t.Fatalf("Seal(%q) = %v, want nil", id, err)
	}
	return sh
}

func TestSealVerifyRelease(t *testing.T) {
	m, devs := newTestManager(t, 2, 1<<20)
	data := randomBytes(1, 3*testChunk+123)
	before, err := m.Capacity(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	sh := sealBytes(t, m, "shard-a", 1, data)
	s := sh.Seal
	wantDigest, wantLeaves := seal.Hash(sha256Sum(data)), seal.Leaves(data, testChunk)
	if s.Digest != wantDigest || s.Root != seal.Root(wantLeaves) {
		t.Errorf("seal digest/root = %s/%s, want %s/%s", s.Digest, s.Root, wantDigest, seal.Root(wantLeaves))
	}
	info, _ := devs[1].Info(context.Background())
	if s.ShardID != "shard-a" || s.ModelRef != "test/model" || s.DeviceIndex != 1 || s.DeviceUUID != info.UUID ||
		s.Size != int64(len(data)) || s.ChunkSize != testChunk || s.ShardCount != 1 || s.WorkerID != "worker-test" ||
		s.KeyID != testKey(t).ID() || sh.Chunks != 4 || s.SealedAt.IsZero() {
		t.Errorf("seal fields = %+v", s)
	}
	if err := testKey(t).Verify(&s); err != nil {
		t.Errorf("Verify(seal) = %v", err)
	}
	c, _ := m.Capacity(context.Background(), 1)
	if c.UsedBytes != int64(len(data)) || c.FreeBytes != before.FreeBytes-int64(len(data)) || c.Shards != 1 || c.ReservedBytes != 0 {
		t.Errorf("Capacity after seal = %+v (before %+v)", c, before)
	}
	for _, mode := range []VerifyMode{Full, Sampled(2), Sampled(100)} {
		res, err := m.Verify(context.Background(), "shard-a", mode)
		if err != nil {
			t.Fatalf("Verify(%v) = %v", mode, err)
		}
		wantChecked := min(int64(max(mode.Samples, 0)), 4)
		if mode.Samples == 0 {
			wantChecked = 4
		}
		if res.ChunksChecked != wantChecked {
			t.Errorf("Verify(%v).ChunksChecked = %d, want %d", mode, res.ChunksChecked, wantChecked)
		}
		if want := float64(wantChecked) / 4; res.DetectionProbability != want {
			t.Errorf("Verify(%v).DetectionProbability = %v, want %v", mode, res.DetectionProbability, want)
		}
	}
	if got := m.Shards(); len(got) != 1 || got[0].Seal.ShardID != "shard-a" {
		t.Errorf("Shards() = %v", got)
	}
	if err := m.Release(context.Background(), "shard-a"); err != nil {
		t.Fatal(err)
	}
	if err := m.Release(context.Background(), "shard-a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Release = %v, want ErrNotFound", err)
	}
	after, _ := m.Capacity(context.Background(), 1)
	if after != before {
		t.Errorf("Capacity after release = %+v, want %+v", after, before)
	}
}

func TestGeneratedShardID(t *testing.T) {
	m, _ := newTestManager(t, 1, 1<<20)
	sh := sealBytes(t, m, "", 0, []byte("weights"))
	id := sh.Seal.ShardID
	if len(id) != len("shard-")+32 || !strings.HasPrefix(id, "shard-") || ValidateShardID(id) != nil {
		t.Errorf("generated ID %q", id)
	}
}

func TestShardIDValidation(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"a", true},
		{"shard-ABC_123", true},
		{strings.Repeat("x", 256), true},
		{"", false},
		{strings.Repeat("x", 257), false},
		{"a/b", false},
		{"../etc/passwd", false},
		{"a\\b", false},
		{".", false},
		{"..", false},
		{"a\x00b", false},
		{"a\nb", false},
		{"a b", false},
		{"\x1b[31m", false},
		{"café", false},
		{"shard\u202e", false},
	}
	for _, tt := range tests {
		err := ValidateShardID(tt.id)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateShardID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidInput) {
				t.Errorf("ValidateShardID(%q) = %v, want ErrInvalidInput", tt.id, err)
			}
			for _, c := range err.Error() {
				if c < 0x20 || c > 0x7e {
					t.Errorf("ValidateShardID(%q) error %q has a raw non-printable byte", tt.id, err)
				}
			}
		}
	}
}

func TestSealRejectsBadRequests(t *testing.T) {
	m, _ := newTestManager(t, 2, 1<<20, func(o *Options) { o.MaxShardBytes = 64 << 10 })
	sealBytes(t, m, "taken", 0, []byte("x"))
	data := []byte("some weights")
	tests := []struct {
		name string
		req  SealRequest
		want error
	}{
		{"bad id", SealRequest{ShardID: "../x", ModelRef: "m", Size: 3, Data: strings.NewReader("abc")}, ErrInvalidInput},
		{"duplicate", SealRequest{ShardID: "taken", ModelRef: "m", Size: 3, Data: strings.NewReader("abc")}, ErrExists},
		{"zero size", SealRequest{ShardID: "z", ModelRef: "m", Size: 0, Data: strings.NewReader("")}, ErrInvalidInput},
		{"negative size", SealRequest{ShardID: "z", ModelRef: "m", Size: -1, Data: strings.NewReader("")}, ErrInvalidInput},
		{"over maximum", SealRequest{ShardID: "z", ModelRef: "m", Size: 64<<10 + 1, Data: strings.NewReader("")}, ErrInvalidInput},
		{"device -1", SealRequest{ShardID: "z", ModelRef: "m", Device: -1, Size: 3, Data: strings.NewReader("abc")}, ErrInvalidInput},
		{"device 2", SealRequest{ShardID: "z", ModelRef: "m", Device: 2, Size: 3, Data: strings.NewReader("abc")}, ErrInvalidInput},
		{"no model ref", SealRequest{ShardID: "z", Size: 3, Data: strings.NewReader("abc")}, ErrInvalidInput},
		{"control char in model ref", SealRequest{ShardID: "z", ModelRef: "m\x1b[2J", Size: 3, Data: strings.NewReader("abc")}, ErrInvalidInput},
		{"shard index out of range", SealRequest{ShardID: "z", ModelRef: "m", ShardIndex: 2, ShardCount: 2, Size: 3, Data: strings.NewReader("abc")}, ErrInvalidInput},
		{"short data", SealRequest{ShardID: "z", ModelRef: "m", Size: int64(len(data)) + 1, Data: bytes.NewReader(data)}, ErrInvalidInput},
		{"long data", SealRequest{ShardID: "z", ModelRef: "m", Size: int64(len(data)) - 1, Data: bytes.NewReader(data)}, ErrInvalidInput},
		{"no data", SealRequest{ShardID: "z", ModelRef: "m", Size: 3}, ErrInvalidInput},
	}
	before, _ := m.Capacity(context.Background(), 0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.Seal(context.Background(), tt.req)
			if !errors.Is(err, tt.want) {
				t.Errorf("Seal(%s) = %v, want %v", tt.name, err, tt.want)
			}
			if Retryable(err) {
				t.Errorf("Retryable(%v) = true, want false", err)
			}
		})
	}
	if after, _ := m.Capacity(context.Background(), 0); after != before {
		t.Errorf("capacity changed by failed seals: %+v -> %+v", before, after)
	}
	if _, err := m.Shard("z"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Shard(z) = %v, want ErrNotFound", err)
	}
}

func TestInsufficientVRAM(t *testing.T) {
	const capacity = 64 << 10
	m, _ := newTestManager(t, 1, capacity, func(o *Options) { o.Headroom = 4 << 10 })
	_, err := m.Seal(context.Background(), SealRequest{ShardID: "big", ModelRef: "m", Size: capacity, Data: bytes.NewReader(make([]byte, capacity))})
	var ce *CapacityError
	if !errors.As(err, &ce) || !Retryable(err) || !errors.Is(err, ErrInsufficientVRAM) {
		t.Fatalf("Seal(over capacity) = %v, want retryable *CapacityError", err)
	}
	if ce.Requested != capacity || ce.Available != capacity-4<<10 || ce.Headroom != 4<<10 {
		t.Errorf("CapacityError = %+v", ce)
	}
	// Exactly what is available fits.
	sealBytes(t, m, "exact", 0, randomBytes(2, capacity-4<<10))
	c, _ := m.Capacity(context.Background(), 0)
	if c.AvailableBytes != 0 || c.FreeBytes != 4<<10 {
		t.Errorf("Capacity after exact fit = %+v", c)
	}
}

func TestConcurrentSealsFillCapacityExactly(t *testing.T) {
	const size, fits = 16 << 10, 5
	m, _ := newTestManager(t, 1, fits*size+size/2)
	var ok, full atomic.Int32
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			_, err := m.Seal(context.Background(), SealRequest{ShardID: fmt.Sprintf("s%d", i), ModelRef: "m", Size: size, Data: bytes.NewReader(randomBytes(uint64(i), size))})
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrInsufficientVRAM):
				full.Add(1)
			default:
				t.Errorf("Seal = %v", err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != fits || full.Load() != 20-fits {
		t.Errorf("concurrent seals: %d succeeded, %d refused; want %d and %d", ok.Load(), full.Load(), fits, 20-fits)
	}
}

func TestConcurrentOperations(t *testing.T) {
	m, _ := newTestManager(t, 2, 8<<20)
	before0, _ := m.Capacity(context.Background(), 0)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 10 {
				id := fmt.Sprintf("g%d-%d", g, i)
				data := randomBytes(uint64(g*100+i), 1000+g*4096+i)
				sh := sealBytes(t, m, id, g%2, data)
				if _, err := m.Verify(context.Background(), id, Full); err != nil {
					t.Errorf("Verify(%s) = %v", id, err)
				}
				if _, err := m.Verify(context.Background(), id, Sampled(3)); err != nil {
					t.Errorf("Verify(%s, sampled) = %v", id, err)
				}
				if _, err := m.Capacity(context.Background(), g%2); err != nil {
					t.Error(err)
				}
				_ = m.Shards()
				if err := m.Release(context.Background(), sh.Seal.ShardID); err != nil {
					t.Errorf("Release(%s) = %v", id, err)
				}
			}
		})
	}
	wg.Wait()
	if after, _ := m.Capacity(context.Background(), 0); after != before0 {
		t.Errorf("leak: capacity %+v, want %+v", after, before0)
	}
}

func TestCorruptionDetectedAndLocated(t *testing.T) {
	m, devs := newTestManager(t, 1, 4<<20)
	data := randomBytes(3, 64*testChunk+777)
	sealBytes(t, m, "victim", 0, data)
	r := rand.New(rand.NewPCG(7, 7))
	for trial := range 200 {
		off := r.Int64N(int64(len(data)))
		mask := byte(1 << r.IntN(8))
		buf := m.shards["victim"].buf
		if err := devs[0].FlipBits(buf, off, mask); err != nil {
			t.Fatal(err)
		}
		_, err := m.Verify(context.Background(), "victim", Full)
		var ie *IntegrityError
		if !errors.As(err, &ie) {
			t.Fatalf("trial %d: Verify after flipping byte %d = %v, want *IntegrityError", trial, off, err)
		}
		want := off / testChunk
		if ie.Reason != ReasonDigestMismatch || len(ie.Changed) != 1 || ie.Changed[0].FirstChunk != want || ie.Changed[0].LastChunk != want ||
			off < ie.Changed[0].Offset || off >= ie.Changed[0].Offset+ie.Changed[0].Length || ie.ActualRoot == ie.ExpectedRoot {
			t.Fatalf("trial %d: flipped byte %d (chunk %d), error %+v", trial, off, want, ie)
		}
		if st, _ := m.State(); st != Stopped {
			t.Fatalf("State after integrity failure = %v, want stopped", st)
		}
		if _, err := m.Verify(context.Background(), "victim", Full); !errors.Is(err, ErrStopped) {
			t.Fatalf("Verify while stopped = %v, want ErrStopped", err)
		}
		if _, err := m.Seal(context.Background(), SealRequest{ModelRef: "m", Size: 1, Data: strings.NewReader("x")}); !errors.Is(err, ErrStopped) {
			t.Fatalf("Seal while stopped = %v, want ErrStopped", err)
		}
		if err := m.Reset(context.Background(), ""); !errors.Is(err, ErrInvalidInput) {
			t.Fatalf("Reset without reason = %v, want ErrInvalidInput", err)
		}
		// Undo the flip and reset: the shard stays quarantined, even with
		// its bytes restored, until it is released and sealed again.
		if err := devs[0].FlipBits(buf, off, mask); err != nil {
			t.Fatal(err)
		}
		if err := m.Reset(context.Background(), "restored test bytes"); err != nil {
			t.Fatal(err)
		}
		var qe *QuarantinedError
		if _, err := m.Verify(context.Background(), "victim", Full); !errors.As(err, &qe) || !errors.Is(err, ErrIntegrity) {
			t.Fatalf("Verify of a quarantined shard after reset = %v, want *QuarantinedError", err)
		}
		if info, _ := m.Shard("victim"); info.Quarantined != ReasonDigestMismatch {
			t.Fatalf("Shard(victim).Quarantined = %q, want %q", info.Quarantined, ReasonDigestMismatch)
		}
		if _, _, err := m.Attach(context.Background(), "victim", Holder{}); !errors.As(err, &qe) {
			t.Fatalf("Attach of a quarantined shard = %v, want *QuarantinedError", err)
		}
		if err := m.Release(context.Background(), "victim"); err != nil {
			t.Fatal(err)
		}
		sealBytes(t, m, "victim", 0, data)
		if _, err := m.Verify(context.Background(), "victim", Full); err != nil {
			t.Fatalf("Verify after release and reseal = %v", err)
		}
	}
}

func TestCorruptionAcrossChunksIsMerged(t *testing.T) {
	m, devs := newTestManager(t, 1, 4<<20)
	data := randomBytes(4, 40*testChunk)
	sealBytes(t, m, "s", 0, data)
	buf := m.shards["s"].buf
	for _, off := range []int64{17*testChunk + 5, 18*testChunk + 9, 30 * testChunk} {
		if err := devs[0].FlipBits(buf, off, 0x80); err != nil {
			t.Fatal(err)
		}
	}
	_, err := m.Verify(context.Background(), "s", Full)
	var ie *IntegrityError
	if !errors.As(err, &ie) {
		t.Fatalf("Verify = %v", err)
	}
	want := []ChunkRange{{17, 18, 17 * testChunk, 2 * testChunk}, {30, 30, 30 * testChunk, testChunk}}
	if fmt.Sprint(ie.Changed) != fmt.Sprint(want) {
		t.Errorf("Changed = %v, want %v", ie.Changed, want)
	}
	if !strings.Contains(err.Error(), "chunks 17-18, chunk 30 changed") {
		t.Errorf("error %q does not name the chunks", err)
	}
}

func TestSampledFailureLocatesEveryChunk(t *testing.T) {
	m, devs := newTestManager(t, 1, 4<<20)
	data := randomBytes(4, 40*testChunk)
	sealBytes(t, m, "s", 0, data)
	buf := m.shards["s"].buf
	// Every chunk from 0 to 38 changes, so any sample catches it; chunk 39
	// stays intact and must not be reported.
	for c := int64(0); c < 39; c++ {
		if err := devs[0].FlipBits(buf, c*testChunk+7, 0x01); err != nil {
			t.Fatal(err)
		}
	}
	_, err := m.Verify(context.Background(), "s", Sampled(2))
	var ie *IntegrityError
	if !errors.As(err, &ie) || ie.Reason != ReasonDigestMismatch {
		t.Fatalf("Verify(sampled) = %v, want digest_mismatch", err)
	}
	want := []ChunkRange{{0, 38, 0, 39 * testChunk}}
	if fmt.Sprint(ie.Changed) != fmt.Sprint(want) {
		t.Errorf("Changed = %v, want the full pass's %v", ie.Changed, want)
	}
	if err := m.Reset(context.Background(), "test"); err != nil {
		t.Fatal(err)
	}
	unquarantine(m, "s")
	_, err = m.Verify(context.Background(), "s", Full)
	var full *IntegrityError
	if !errors.As(err, &full) {
		t.Fatalf("Verify(full) = %v", err)
	}
	if ie.ActualRoot == (seal.Hash{}) || ie.ActualRoot != full.ActualRoot || ie.ActualRoot == ie.ExpectedRoot {
		t.Errorf("sampled ActualRoot = %v, full pass %v, sealed %v", ie.ActualRoot, full.ActualRoot, ie.ExpectedRoot)
	}
}

func TestSampledDetectionRate(t *testing.T) {
	const chunks, k, trials = 64, 4, 3000
	m, devs := newTestManager(t, 1, 4<<20)
	sealBytes(t, m, "s", 0, randomBytes(5, chunks*testChunk))
	if err := devs[0].FlipBits(m.shards["s"].buf, 33*testChunk+1, 1); err != nil {
		t.Fatal(err)
	}
	detected := 0
	var reported float64
	for range trials {
		res, err := m.Verify(context.Background(), "s", Sampled(k))
		switch {
		case err == nil:
			reported = res.DetectionProbability
		case errors.Is(err, ErrIntegrity):
			detected++
			if err := m.Reset(context.Background(), "test"); err != nil {
				t.Fatal(err)
			}
			unquarantine(m, "s")
		default:
			t.Fatal(err)
		}
	}
	p := float64(k) / chunks
	if reported != p {
		t.Errorf("reported detection probability %v, want %v", reported, p)
	}
	rate := float64(detected) / trials
	sigma := math.Sqrt(p * (1 - p) / trials)
	if math.Abs(rate-p) > 5*sigma {
		t.Errorf("observed detection rate %.4f, reported %.4f (5 sigma = %.4f)", rate, p, 5*sigma)
	}
}

func TestSignatureTamperDetected(t *testing.T) {
	m, _ := newTestManager(t, 1, 1<<20)
	sealBytes(t, m, "s", 0, randomBytes(6, 10000))
	m.shards["s"].seal.ModelRef = "other/model"
	_, err := m.Verify(context.Background(), "s", Sampled(1))
	var ie *IntegrityError
	if !errors.As(err, &ie) || ie.Reason != ReasonSignatureInvalid || !errors.Is(err, seal.ErrSignatureInvalid) {
		t.Fatalf("Verify(altered seal) = %v, want signature_invalid", err)
	}
}

func TestLeafTamperDetected(t *testing.T) {
	for _, mode := range []VerifyMode{Full, Sampled(1)} {
		m, devs := newTestManager(t, 1, 1<<20)
		data := randomBytes(6, 10*testChunk)
		sealBytes(t, m, "s", 0, data)
		// An attacker changes chunk 1 on the device and its leaf hash in
		// host memory to match; the leaf is no longer in the signed tree.
		changed := append([]byte(nil), data[testChunk:2*testChunk]...)
		changed[7] ^= 1
		buf, _, _ := m.Buffer("s")
		devs[0].FlipBits(buf, testChunk+7, 1)
		sh := m.shards["s"]
		<-sh.treeReady
		tr := sh.tree
		tr.stored[tlog.StoredHashIndex(0, 1)] = tlog.Hash(seal.LeafHash(changed))
		detected := false
		for range 200 {
			_, err := m.Verify(context.Background(), "s", mode)
			if err == nil {
				continue
			}
			var ie *IntegrityError
			if !errors.As(err, &ie) || ie.Reason != ReasonNotSealed {
				t.Fatalf("Verify(%v, altered leaf) = %v, want not_sealed", mode, err)
			}
			detected = true
			break
		}
		if !detected {
			t.Errorf("Verify(%v) never caught the altered leaf in 200 tries", mode)
		}
	}
}

// An altered stored leaf is reported as such even when the device fails
// while the chunks are hashed: the proof, checked meanwhile, decides.
func TestLeafTamperWinsOverDeviceError(t *testing.T) {
	m, devs := newTestManager(t, 1, 1<<20)
	sealBytes(t, m, "s", 0, randomBytes(6, 10*testChunk))
	sh := m.shards["s"]
	<-sh.treeReady
	sh.tree.stored[tlog.StoredHashIndex(0, 1)][0] ^= 1
	devs[0].FailHashing(gpu.ErrDeviceLost)
	_, err := m.Verify(context.Background(), "s", Full)
	var ie *IntegrityError
	if !errors.As(err, &ie) || ie.Reason != ReasonNotSealed {
		t.Errorf("Verify(full, altered leaf, device lost) = %v, want not_sealed", err)
	}
}

func TestDeviceErrorStopsWorker(t *testing.T) {
	m, devs := newTestManager(t, 1, 1<<20)
	sealBytes(t, m, "s", 0, randomBytes(6, 10000))
	devs[0].FailHashing(gpu.ErrDeviceLost)
	_, err := m.Verify(context.Background(), "s", Full)
	var ie *IntegrityError
	if !errors.As(err, &ie) || ie.Reason != ReasonDeviceError || !errors.Is(err, gpu.ErrDeviceLost) {
		t.Fatalf("Verify(device lost) = %v, want device_error", err)
	}
	if st, _ := m.State(); st != Stopped {
		t.Errorf("State = %v, want stopped", st)
	}
}

func TestPolicy(t *testing.T) {
	t.Run("integrated device refused at start", func(t *testing.T) {
		devs, _ := sim.New(sim.Options{})
		devs[0].SetIntegrated(true)
		_, err := New(context.Background(), Options{Devices: []gpu.Device{devs[0]}, Environ: []string{}})
		var pe *PolicyError
		if !errors.As(err, &pe) || pe.Violation != "integrated_device" || Retryable(err) {
			t.Fatalf("New(integrated) = %v, want integrated_device policy error", err)
		}
	})
	for _, env := range []string{"GGML_CUDA_ENABLE_UNIFIED_MEMORY=1", "TF_FORCE_UNIFIED_MEMORY=true"} {
		t.Run(env, func(t *testing.T) {
			_, err := New(context.Background(), Options{Environ: []string{"PATH=/bin", env}})
			var pe *PolicyError
			if !errors.As(err, &pe) || pe.Violation != "unified_memory_env" {
				t.Fatalf("New(%s) = %v, want unified_memory_env", env, err)
			}
		})
	}
	t.Run("live env checked before every allocation", func(t *testing.T) {
		t.Setenv("GGML_CUDA_ENABLE_UNIFIED_MEMORY", "0")
		t.Setenv("TF_FORCE_UNIFIED_MEMORY", "")
		m, _ := newTestManager(t, 1, 1<<20, func(o *Options) { o.Environ = nil })
		sealBytes(t, m, "before", 0, randomBytes(41, 5000))
		before, _ := m.Capacity(context.Background(), 0)
		t.Setenv("GGML_CUDA_ENABLE_UNIFIED_MEMORY", "1") // set later in the process
		_, err := m.Seal(context.Background(), SealRequest{ShardID: "after", ModelRef: "m", Size: 3, Data: strings.NewReader("abc")})
		var pe *PolicyError
		if !errors.As(err, &pe) || pe.Violation != "unified_memory_env" {
			t.Fatalf("Seal after the variable was set = %v, want unified_memory_env", err)
		}
		if st, _ := m.State(); st != Stopped {
			t.Errorf("state = %v, want Stopped", st)
		}
		if after, _ := m.Capacity(context.Background(), 0); after != before {
			t.Errorf("capacity %+v -> %+v: nothing should have been allocated", before, after)
		}
	})
	t.Run("unset or false env is fine", func(t *testing.T) {
		if _, err := New(context.Background(), Options{Environ: []string{"GGML_CUDA_ENABLE_UNIFIED_MEMORY=0", "TF_FORCE_UNIFIED_MEMORY="}}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("managed allocation refused and stops", func(t *testing.T) {
		m, devs := newTestManager(t, 1, 1<<20)
		before, _ := m.Capacity(context.Background(), 0)
		devs[0].SetManaged(true)
		_, err := m.Seal(context.Background(), SealRequest{ShardID: "s", ModelRef: "m", Size: 5, Data: strings.NewReader("12345")})
		var pe *PolicyError
		if !errors.As(err, &pe) || pe.Violation != "managed_memory" {
			t.Fatalf("Seal(managed) = %v, want managed_memory", err)
		}
		if st, _ := m.State(); st != Stopped {
			t.Errorf("State = %v, want stopped", st)
		}
		devs[0].SetManaged(false)
		if after, _ := m.Capacity(context.Background(), 0); after != before {
			t.Errorf("capacity leaked: %+v -> %+v", before, after)
		}
	})
}

func TestFailedAllocationRestoresCapacity(t *testing.T) {
	m, devs := newTestManager(t, 1, 1<<20)
	before, _ := m.Capacity(context.Background(), 0)
	devs[0].FailNextAlloc(nil)
	_, err := m.Seal(context.Background(), SealRequest{ShardID: "s", ModelRef: "m", Size: 5, Data: strings.NewReader("12345")})
	if err == nil {
		t.Fatal("Seal with failing allocation succeeded")
	}
	if after, _ := m.Capacity(context.Background(), 0); after != before {
		t.Errorf("capacity %+v -> %+v", before, after)
	}
	sealBytes(t, m, "s", 0, []byte("12345"))
}

func TestSealCancelled(t *testing.T) {
	m, _ := newTestManager(t, 1, 1<<20)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := m.Seal(ctx, SealRequest{ShardID: "s", ModelRef: "m", Size: 5, Data: strings.NewReader("12345")})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Seal(cancelled) = %v", err)
	}
	if c, _ := m.Capacity(context.Background(), 0); c.UsedBytes != 0 || c.ReservedBytes != 0 {
		t.Errorf("capacity after cancelled seal = %+v", c)
	}
}

func TestErrorsNeverLeakPointers(t *testing.T) {
	m, devs := newTestManager(t, 1, 1<<20)
	sealBytes(t, m, "s", 0, randomBytes(8, 20000))
	devs[0].FlipBits(m.shards["s"].buf, 100, 1)
	_, err := m.Verify(context.Background(), "s", Full)
	for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", m.shards["s"].buf)} {
		if strings.Contains(s, "0xc0") {
			t.Errorf("output looks like it holds a pointer: %s", s)
		}
	}
}

func TestClockRecorded(t *testing.T) {
	at := time.Date(2026, 11, 26, 10, 0, 0, 123456789, time.UTC)
	m, _ := newTestManager(t, 1, 1<<20, func(o *Options) { o.Clock = func() time.Time { return at } })
	if got := sealBytes(t, m, "s", 0, []byte("x")).Seal.SealedAt; !got.Equal(at) {
		t.Errorf("SealedAt = %v, want %v", got, at)
	}
}

// blockingAuditor holds worker_reset records until release is closed.
type blockingAuditor struct {
	entered chan struct{}
	release chan struct{}
}

func (b *blockingAuditor) Append(ctx context.Context, e audit.Event) (audit.Receipt, error) {
	if e.Type == EventReset {
		close(b.entered)
		<-b.release
	}
	return audit.Receipt{}, nil
}

func TestResetDoesNotHideConcurrentFailure(t *testing.T) {
	ba := &blockingAuditor{entered: make(chan struct{}), release: make(chan struct{})}
	m, _ := newTestManager(t, 1, 1<<20, func(o *Options) { o.Audit = ba })
	m.stop("the failure the operator dealt with")
	done := make(chan error, 1)
	go func() { done <- m.Reset(context.Background(), "routine reset") }()
	<-ba.entered
	// While the reset is being recorded, another failure stops the worker.
	m.stop("a new failure: chunk 0 changed")
	close(ba.release)
	if err := <-done; !errors.Is(err, ErrStopped) {
		t.Errorf("Reset during a new failure = %v, want ErrStopped", err)
	}
	if st, reason := m.State(); st != Stopped || !strings.Contains(reason, "1 later failures") {
		t.Errorf("State = %v %q, want still stopped, with the new failure counted", st, reason)
	}
}

func TestResetOfRunningWorkerIsANoOp(t *testing.T) {
	o := newObserved(t, audit.FailClosed, 1<<20)
	before := len(o.records(t))
	if err := o.m.Reset(context.Background(), "nothing happened"); !errors.Is(err, ErrNotStopped) {
		t.Fatalf("Reset of a running worker = %v, want ErrNotStopped", err)
	}
	if after := len(o.records(t)); after != before {
		t.Errorf("a no-op reset recorded %d audit events", after-before)
	}
}

func TestConcurrentResetsRecordOne(t *testing.T) {
	o := newObserved(t, audit.FailClosed, 1<<20)
	o.m.stop("a failure")
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- o.m.Reset(context.Background(), "dealt with it") }()
	}
	var ok, noop int
	for range 2 {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, ErrNotStopped):
			noop++
		default:
			t.Fatalf("Reset = %v", err)
		}
	}
	resets := 0
	for _, r := range o.records(t) {
		if r.Type == EventReset {
			resets++
		}
	}
	if ok != 1 || noop != 1 || resets != 1 {
		t.Errorf("%d resets succeeded, %d were no-ops, %d recorded; want 1, 1, 1", ok, noop, resets)
	}
}

func TestResetNamesQuarantinedShards(t *testing.T) {
	m, devs := newTestManager(t, 1, 1<<20)
	sealBytes(t, m, "bad", 0, randomBytes(3, 4*testChunk))
	sealBytes(t, m, "good", 0, randomBytes(4, 4*testChunk))
	buf, _, _ := m.Buffer("bad")
	devs[0].FlipBits(buf, 5, 1)
	if _, err := m.Verify(context.Background(), "bad", Full); !errors.Is(err, ErrIntegrity) {
		t.Fatalf("Verify = %v", err)
	}
	if err := m.Reset(context.Background(), "looked at it"); err != nil {
		t.Fatal(err)
	}
	if got := m.Quarantined(); len(got) != 1 || got[0] != "bad" {
		t.Errorf("Quarantined = %v, want [bad]", got)
	}
	if _, err := m.Verify(context.Background(), "good", Full); err != nil {
		t.Errorf("the good shard after reset: %v", err)
	}
}

// pausingDevice blocks the first LeafHashes call that covers at least full
// chunks until released: the full pass that locates a sampled failure.
type pausingDevice struct {
	*sim.Device
	full             int
	entered, release chan struct{}
	once             sync.Once
}

func (d *pausingDevice) LeafHashes(ctx context.Context, b gpu.Buffer, chunkSize int64, chunks []int64, out [][gpu.HashSize]byte) error {
	if len(chunks) >= d.full {
		d.once.Do(func() {
			close(d.entered)
			<-d.release
		})
	}
	return d.Device.LeafHashes(ctx, b, chunkSize, chunks, out)
}

// TestGateClosedWhileLocating: once a sampled verification has found a
// change, the worker is stopped before the full pass that locates every
// changed chunk, so no execute gate passes during that pass.
func TestGateClosedWhileLocating(t *testing.T) {
	devs, err := sim.New(sim.Options{Devices: 1, Capacity: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	pd := &pausingDevice{Device: devs[0], full: 40, entered: make(chan struct{}), release: make(chan struct{})}
	m, err := New(context.Background(), Options{Key: testKey(t), WorkerID: "w", ChunkSize: testChunk, Environ: []string{}, Devices: []gpu.Device{pd}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	sealBytes(t, m, "bad", 0, randomBytes(51, 40*testChunk))
	sealBytes(t, m, "good", 0, randomBytes(52, 8*testChunk))
	buf, _, _ := m.Buffer("bad")
	for c := int64(0); c < 40; c++ {
		devs[0].FlipBits(buf, c*testChunk, 0x01)
	}
	done := make(chan error, 1)
	go func() {
		_, err := m.Verify(context.Background(), "bad", Sampled(2))
		done <- err
	}()
	select {
	case <-pd.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the locating full pass never started")
	}
	if st, _ := m.State(); st != Stopped {
		t.Errorf("state during the locating pass = %v, want Stopped", st)
	}
	if _, err := m.Verify(context.Background(), "good", Sampled(1)); !errors.Is(err, ErrStopped) {
		t.Errorf("execute gate during the locating pass = %v, want ErrStopped", err)
	}
	close(pd.release)
	err = <-done
	var ie *IntegrityError
	if !errors.As(err, &ie) || fmt.Sprint(ie.Changed) != fmt.Sprint([]ChunkRange{{0, 39, 0, 40 * testChunk}}) {
		t.Errorf("Verify(sampled) = %v, want every chunk located", err)
	}
}

// unquarantine lifts a shard's quarantine, which only release does outside
// tests, so that a test can verify the same corrupt shard again.
func unquarantine(m *Manager, id string) {
	m.mu.Lock()
	m.shards[id].quarantined = ""
	m.mu.Unlock()
}
