package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/gpu/cuda"
	"github.com/vramseal/vramseal/narration"
	"github.com/vramseal/vramseal/narration/narrationtest"
)

func TestSecretCreatedWhereAsked(t *testing.T) {
	dir := t.TempDir()
	cfg := serveConfig{dataDir: filepath.Join(dir, "data"), secretFile: filepath.Join(dir, "custom.secret")}
	k1, err := loadOrCreateSecret(cfg)
	if err != nil {
		t.Fatalf("first start with an absent --secret-file = %v, want it generated", err)
	}
	fi, err := os.Stat(cfg.secretFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("generated secret has mode %v, want 0600", fi.Mode().Perm())
	}
	k2, err := loadOrCreateSecret(cfg)
	if err != nil || k2.ID() != k1.ID() {
		t.Errorf("second start: key %v, %v; want the same key %s (the secret must never be replaced)", k2.ID(), err, k1.ID())
	}
	if err := os.Chmod(cfg.secretFile, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := loadOrCreateSecret(cfg); err == nil {
		t.Error("a group-readable secret file was accepted")
	}
	cfg.secretFile = filepath.Join(dir, "missing-dir", "x.secret")
	if _, err := loadOrCreateSecret(cfg); err == nil {
		t.Error("a secret file in a missing directory was reported as created")
	}
}

// noCUDA makes openCUDA fail as it does on a machine without a driver.
func noCUDA(t *testing.T) {
	t.Helper()
	saved := openCUDA
	openCUDA = func(cuda.Options) (*cuda.Driver, error) {
		return nil, fmt.Errorf("%w: libcuda.so.1 not found (test)", cuda.ErrUnavailable)
	}
	t.Cleanup(func() { openCUDA = saved })
}

func TestDeviceAutoFallsBackLoudly(t *testing.T) {
	noCUDA(t)
	rec, n := narrationtest.Capture(t)
	cfg := serveConfig{device: "auto", simDevices: 2, simCapacity: 1 << 20}
	devs, sims, backend, err := openDevices(context.Background(), cfg, n)
	if err != nil {
		t.Fatalf("--device auto without a CUDA driver = %v, want the simulator", err)
	}
	if backend.name != "sim" || len(devs) != 2 || len(sims) != 2 {
		t.Errorf("backend %q with %d devices (%d simulated), want sim with 2", backend.name, len(devs), len(sims))
	}
	if !strings.Contains(backend.reason, "--device auto") || !strings.Contains(backend.reason, "libcuda.so.1 not found") {
		t.Errorf("fallback reason %q, want --device auto and the driver's error", backend.reason)
	}
	e := rec.RequireOne(narrationtest.Match{Action: "device_fallback", Target: "sim"})
	if !strings.Contains(e.Human, "SIMULATED") || e.Error == "" {
		t.Errorf("fallback narration %q (error %q) must say it is simulated and why", e.Human, e.Error)
	}

	// No fallback when CUDA was asked for, by name or by library path.
	missing := filepath.Join(t.TempDir(), "libcuda-missing.so.1")
	for _, c := range []serveConfig{{device: "cuda"}, {device: "auto", cudaLibrary: missing}} {
		c.simDevices, c.simCapacity = 1, 1<<20
		if _, _, _, err := openDevices(context.Background(), c, narration.New(narration.Options{})); err == nil {
			t.Errorf("--device %s --cuda-library %q without a CUDA driver started anyway", c.device, c.cudaLibrary)
		}
	}
	cfg.device = "tpu"
	var ee *ExitError
	if _, _, _, err := openDevices(context.Background(), cfg, nil); !errors.As(err, &ee) || ee.Code != 2 {
		t.Errorf("--device tpu = %v, want a usage error (exit 2)", err)
	}
}

func TestSealDeviceChoice(t *testing.T) {
	noCUDA(t)
	path, _ := writeModel(t, 70_000)
	_, stderr, err := runCLI(t, "seal", path, "--json")
	if err != nil || !strings.Contains(stderr, "SIMULATED") {
		t.Errorf("seal (--device auto) without CUDA: %v, stderr %q; want success on the simulator, said loudly", err, stderr)
	}
	if _, stderr, err := runCLI(t, "seal", path, "--device", "sim"); err != nil || stderr != "" {
		t.Errorf("seal --device sim: %v, stderr %q; want success and no warning", err, stderr)
	}
	if _, _, err := runCLI(t, "seal", path, "--device", "cuda"); err == nil {
		t.Error("seal --device cuda without a CUDA driver succeeded")
	}
}

func TestNarrationHealthIsSnakeCase(t *testing.T) {
	b, err := json.Marshal(narrationHealth(narration.Stats{Emitted: 1, SinkErrors: 2}))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(b); got != `{"emitted":1,"redactions":0,"sink_errors":2,"truncations":0}` {
		t.Errorf("narration health = %s", got)
	}
}

func TestAuditOptionsFromFlags(t *testing.T) {
	cfg := serveConfig{auditFailure: "open", auditRetain: "30d", auditSegment: 8 << 20, auditEpoch: 10 * time.Minute}
	o, err := auditOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if o.SegmentMaxBytes != 8<<20 || o.EpochInterval != 10*time.Minute || o.Policy != audit.FailOpen || o.Retain != 30*24*time.Hour {
		t.Errorf("auditOptions(%+v) = %+v", cfg, o)
	}
	def := newServeCmd().Flags()
	for _, name := range []string{"audit-segment-size", "audit-epoch-interval"} {
		if def.Lookup(name) == nil {
			t.Errorf("serve has no --%s", name)
		}
	}
	if got := def.Lookup("audit-segment-size").DefValue; got != "100MiB" && got != "104857600" {
		t.Errorf("--audit-segment-size default = %s, want 100MiB", got)
	}
}
