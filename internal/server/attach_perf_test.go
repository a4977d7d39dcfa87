package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vramseal/vramseal/attach"
	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/gpu/sim"
	"github.com/vramseal/vramseal/seal"
	"github.com/vramseal/vramseal/vram"
)

// TestAttachPerformance measures the attach numbers against baselines of
// the same run, with medians of interleaved rounds after a warm-up. It
// runs only with VRAMSEAL_PERF=1 (it needs about 3 GiB of memory):
//
//	VRAMSEAL_PERF=1 go test -run TestAttachPerformance -v ./internal/server
//
// It reports: attach of a 1 GiB shard from connect to mapped; the private
// memory a separate consumer process gains by mapping and reading all of
// it (smaps_rollup Private_*; it must stay under 1% of the shard: no
// copy); the gate over the socket (16 samples of 64 KiB) against hashing
// 16 x 64 KiB with SHA-256 on one core, from this process and from a
// separate consumer process (each against its own baseline), its p99 at 2 concurrent
// clients; the HTTP gate and a seal with and without live attachments.
// The only assertion is the private-memory bound, which is not a time.
func TestAttachPerformance(t *testing.T) {
	if sock := os.Getenv("VRAMSEAL_PERF_CONSUMER"); sock != "" {
		consumer(t, sock)
		return
	}
	if sock := os.Getenv("VRAMSEAL_PERF_GATE_CONSUMER"); sock != "" {
		c := attached(t, sock, "gate")
		defer c.Close()
		b, _ := json.Marshal(measureGate(t, c, nil))
		fmt.Printf("GATE %s\n", b)
		return
	}
	if os.Getenv("VRAMSEAL_PERF") == "" {
		t.Skip("set VRAMSEAL_PERF=1 to measure the attach numbers")
	}
	ctx := context.Background()
	devs, err := sim.New(sim.Options{Capacity: 3 << 30})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := seal.DeriveKey([]byte("perf-secret-0123456789abcdef0123456789"))
	dir := t.TempDir()
	aopts := audit.Options{Service: "vramseal", Worker: "perf"}
	if _, err := audit.Init(filepath.Join(dir, "audit"), aopts); err != nil {
		t.Fatal(err)
	}
	log, err := audit.Open(filepath.Join(dir, "audit"), aopts)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close(ctx)
	m, err := vram.New(ctx, vram.Options{Devices: []gpu.Device{devs[0]}, Key: key, WorkerID: "perf", Environ: []string{}, Audit: log})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(ctx)
	block := make([]byte, 1<<20)
	rand.Read(block)
	big := bytes.Repeat(block, 1024)
	if _, err := m.Seal(ctx, vram.SealRequest{ShardID: "big", ModelRef: "perf", Size: int64(len(big)), Data: bytes.NewReader(big)}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Seal(ctx, vram.SealRequest{ShardID: "gate", ModelRef: "perf", Size: 64 << 20, Data: bytes.NewReader(big[:64<<20])}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "attach.sock")
	as, err := ListenAttach(sock, AttachOptions{Manager: ManagerAttacher(m)})
	if err != nil {
		t.Fatal(err)
	}
	defer as.Close(ctx)

	// 1. Attach of 1 GiB, connect to mapped.
	var attachTimes []time.Duration
	for i := range 21 {
		t0 := time.Now()
		c, err := attach.Dial(ctx, sock)
		if err != nil {
			t.Fatal(err)
		}
		a, err := c.Attach(ctx, "big", "")
		if err != nil {
			t.Fatal(err)
		}
		mem, unmap, err := attach.MapReadOnly(a)
		if err != nil {
			t.Fatal(err)
		}
		d := time.Since(t0)
		if i > 0 { // the first is the warm-up
			attachTimes = append(attachTimes, d)
		}
		_ = mem[len(mem)-1]
		unmap()
		a.File.Close()
		c.Close()
	}
	t.Logf("attach of a 1 GiB shard, connect to mapped: median %v, max %v (20 runs)", median(attachTimes), slices.Max(attachTimes))

	// 2. A separate consumer's private memory.
	cmd := exec.Command(os.Args[0], "-test.run=^TestAttachPerformance$", "-test.v")
	cmd.Env = append(os.Environ(), "VRAMSEAL_PERF_CONSUMER="+sock)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("consumer: %v\n%s", err, out)
	}
	var rep struct{ PrivateBefore, PrivateAfter, RssBefore, RssAfter, Sum int64 }
	i := bytes.Index(out, []byte("CONSUMER "))
	if i < 0 || json.Unmarshal(bytes.SplitN(out[i+9:], []byte("\n"), 2)[0], &rep) != nil {
		t.Fatalf("consumer report missing:\n%s", out)
	}
	growth := rep.PrivateAfter - rep.PrivateBefore
	t.Logf("consumer mapping and reading every byte of 1 GiB: Rss +%d MiB, Private_* +%d KiB (%.4f%% of the shard)",
		(rep.RssAfter-rep.RssBefore)>>20, growth>>10, 100*float64(growth)/float64(len(big)))
	if growth >= int64(len(big))/100 {
		t.Errorf("consumer's private memory grew by %d bytes, want under 1%% of %d: the mapping copies", growth, len(big))
	}

	// 3. The gate over the socket against 16 x 64 KiB of SHA-256, from a
	// client in this process and from a separate consumer process, each
	// with its own baseline.
	c := attached(t, sock, "gate")
	defer c.Close()
	hot := big[:16<<16]
	shaHot := func() {
		for k := range 16 {
			sha256.Sum256(hot[k<<16 : (k+1)<<16])
		}
	}
	g := measureGate(t, c, shaHot)
	t.Logf("gate over the socket (16 x 64 KiB sampled of 64 MiB): median %.0f/s; SHA-256 on one core of 16 random 64 KiB chunks of 64 MiB: median %.0f/s (ratio median %.3f); of the same 1 MiB, cache-hot: median %.0f/s (ratio median %.3f); %d interleaved rounds of %d",
		g.Gate, g.SHA, g.Ratio, g.Hot, g.HotRatio, gateRounds, gateOps)
	cmd = exec.Command(os.Args[0], "-test.run=^TestAttachPerformance$", "-test.v")
	cmd.Env = append(os.Environ(), "VRAMSEAL_PERF_GATE_CONSUMER="+sock)
	out, err = cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("gate consumer: %v\n%s", err, out)
	}
	i = bytes.Index(out, []byte("GATE "))
	if i < 0 || json.Unmarshal(bytes.SplitN(out[i+5:], []byte("\n"), 2)[0], &g) != nil {
		t.Fatalf("gate consumer report missing:\n%s", out)
	}
	t.Logf("the same from a separate consumer process: gate median %.0f/s; its SHA-256 baseline median %.0f/s (ratio median %.3f)", g.Gate, g.SHA, g.Ratio)
	if py, err := exec.LookPath("python3"); err != nil {
		t.Logf("no python3: the Python client's gate is not measured")
	} else {
		cmd = exec.Command(py, "-c", pythonGate, sock)
		cmd.Env = append(os.Environ(), "PYTHONPATH="+filepath.Join("..", "..", "clients", "python"))
		out, err = cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("python gate consumer: %v\n%s", err, out)
		}
		if json.Unmarshal(bytes.TrimSpace(out), &g) != nil {
			t.Fatalf("python gate consumer report missing:\n%s", out)
		}
		t.Logf("the same from the Python client in its own process: gate median %.0f/s; hashlib SHA-256 there median %.0f/s (ratio median %.3f)", g.Gate, g.SHA, g.Ratio)
	}

	// 4. p99 of the gate at 2 concurrent clients.
	var (
		mu  sync.Mutex
		lat []time.Duration
		wg  sync.WaitGroup
	)
	for range 2 {
		cc := attached(t, sock, "gate")
		defer cc.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 2000)
			for range 2000 {
				t0 := time.Now()
				if _, err := cc.Verify(ctx, "gate", attach.ModeSampled, 16, ""); err != nil {
					t.Error(err)
					return
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(lat)
	t.Logf("gate at 2 concurrent clients: p50 %v, p99 %v, max %v (%d requests)", lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1], len(lat))

	// 5 and 6. The HTTP gate and a seal, with and without attachments.
	srv, err := New(Options{Manager: m, MaxUploadBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	httpGate := func() {
		resp, err := http.Post(hs.URL+"/v1/shards/gate/verify", "application/json", strings.NewReader(`{"mode":"sampled","samples":16}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("HTTP gate: %d", resp.StatusCode)
		}
	}
	n := 0
	sealOnce := func() {
		n++
		id := "s" + strconv.Itoa(n)
		if _, err := m.Seal(ctx, vram.SealRequest{ShardID: id, ModelRef: "perf", Size: 256 << 20, Data: bytes.NewReader(big[:256<<20])}); err != nil {
			t.Fatal(err)
		}
		if err := m.Release(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	var extra []*attach.Client
	setAttached := func(on bool) {
		for _, x := range extra {
			x.Close()
		}
		extra = nil
		if !on {
			return
		}
		for range 8 {
			extra = append(extra, attached(t, sock, "big"))
		}
	}
	defer setAttached(false)
	timeOps := func(k int, f func()) time.Duration {
		t0 := time.Now()
		for range k {
			f()
		}
		return time.Since(t0) / time.Duration(k)
	}
	timeOps(200, httpGate)
	sealOnce()
	var gateRatio, sealRatio []float64
	for range 7 {
		setAttached(false)
		g0, s0 := timeOps(200, httpGate), timeOps(1, sealOnce)
		setAttached(true)
		g1, s1 := timeOps(200, httpGate), timeOps(1, sealOnce)
		gateRatio = append(gateRatio, float64(g1)/float64(g0))
		sealRatio = append(sealRatio, float64(s1)/float64(s0))
	}
	t.Logf("with 8 attached connections vs none (time per op, 7 interleaved rounds): HTTP gate ratio median %.3f, 256 MiB seal ratio median %.3f",
		medianF(gateRatio), medianF(sealRatio))
}

// pythonGate is measureGate for the Python client: the gate against
// hashlib's SHA-256 of 16 random 64 KiB chunks of 64 MiB, in the same
// process, interleaved rounds after a warm-up; it prints the medians as
// JSON.
const pythonGate = `
import json, os, statistics, sys, time, hashlib
import vramseal
cold = memoryview(os.urandom(64 << 20))
def sha():
    for _ in range(16):
        k = int.from_bytes(os.urandom(2), "little") % 1024
        hashlib.sha256(cold[k << 16:(k + 1) << 16]).digest()
with vramseal.attach("gate", socket=sys.argv[1]) as s:
    def rate(f):
        t = time.perf_counter()
        for _ in range(300):
            f()
        return 300 / (time.perf_counter() - t)
    rate(sha); rate(s.verify)
    g, b, r = [], [], []
    for _ in range(9):
        x, y = rate(sha), rate(s.verify)
        g.append(y); b.append(x); r.append(y / x)
    print(json.dumps({"Gate": statistics.median(g), "SHA": statistics.median(b), "Ratio": statistics.median(r)}))
`

// The gate measurement: interleaved rounds of gateOps calls, after one
// warm-up round of each.
const gateRounds, gateOps = 9, 300

// gateRates holds the medians of measureGate: calls/s and gate/baseline
// ratios of each round.
type gateRates struct{ Gate, SHA, Ratio, Hot, HotRatio float64 }

// measureGate times sampled gates (16 x 64 KiB) on c against SHA-256 on
// one core of 16 random 64 KiB chunks of a 64 MiB buffer (the memory
// access pattern of a sampled gate over a 64 MiB shard) and, when shaHot
// is set, against shaHot (the same 1 MiB every time, hot in the CPU
// cache).
func measureGate(t *testing.T, c *attach.Client, shaHot func()) gateRates {
	ctx := context.Background()
	cold := make([]byte, 64<<20)
	rand.Read(cold)
	var pick [2]byte
	sha := func() {
		for range 16 {
			rand.Read(pick[:])
			k := (int(pick[0])<<8 | int(pick[1])) % 1024
			sha256.Sum256(cold[k<<16 : (k+1)<<16])
		}
	}
	gate := func() {
		if _, err := c.Verify(ctx, "gate", attach.ModeSampled, 16, ""); err != nil {
			t.Fatal(err)
		}
	}
	rate := func(f func()) float64 {
		if f == nil {
			return 0
		}
		t0 := time.Now()
		for range gateOps {
			f()
		}
		return gateOps / time.Since(t0).Seconds()
	}
	rate(sha)
	rate(shaHot)
	rate(gate)
	var shaRates, hotRates, gates, ratios, hotRatios []float64
	for range gateRounds {
		s, h, g := rate(sha), rate(shaHot), rate(gate)
		shaRates, hotRates, gates = append(shaRates, s), append(hotRates, h), append(gates, g)
		ratios = append(ratios, g/s)
		if h > 0 {
			hotRatios = append(hotRatios, g/h)
		}
	}
	r := gateRates{Gate: medianF(gates), SHA: medianF(shaRates), Ratio: medianF(ratios)}
	if shaHot != nil {
		r.Hot, r.HotRatio = medianF(hotRates), medianF(hotRatios)
	}
	return r
}

// attached returns a new connection to sock with shard id attached (the
// descriptor closed: the lease is what matters).
func attached(t *testing.T, sock, id string) *attach.Client {
	t.Helper()
	c, err := attach.Dial(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.Attach(context.Background(), id, "")
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	a.File.Close()
	return c
}

// consumer is the separate process of TestAttachPerformance: it attaches
// to "big", maps it, reads every page, and reports its memory.
func consumer(t *testing.T, sock string) {
	ctx := context.Background()
	before := smaps(t)
	c, err := attach.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := c.Attach(ctx, "big", "")
	if err != nil {
		t.Fatal(err)
	}
	mem, unmap, err := attach.MapReadOnly(a)
	if err != nil {
		t.Fatal(err)
	}
	defer unmap()
	var sum int64
	for i := 0; i < len(mem); i += 4096 {
		sum += int64(mem[i])
	}
	after := smaps(t)
	b, _ := json.Marshal(map[string]int64{"PrivateBefore": before["Private"], "PrivateAfter": after["Private"],
		"RssBefore": before["Rss"], "RssAfter": after["Rss"], "Sum": sum})
	fmt.Printf("CONSUMER %s\n", b)
}

// smaps reads this process's Rss and Private_* totals in bytes.
func smaps(t *testing.T) map[string]int64 {
	b, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch {
		case f[0] == "Rss:":
			out["Rss"] += v << 10
		case strings.HasPrefix(f[0], "Private_"):
			out["Private"] += v << 10
		}
	}
	return out
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianF(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
