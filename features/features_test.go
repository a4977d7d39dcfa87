package features

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/cucumber/godog"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/gpu/sim"
	"github.com/vramseal/vramseal/narration"
	"github.com/vramseal/vramseal/narration/narrationtest"
	"github.com/vramseal/vramseal/seal"
	"github.com/vramseal/vramseal/vram"
)

// TestFeatures runs every scenario of the *.feature files in this
// directory, each as a subtest. Strict mode fails the run on undefined or
// pending steps.
func TestFeatures(t *testing.T) {
	suite := godog.TestSuite{
		Name: "vramseal",
		ScenarioInitializer: func(sc *godog.ScenarioContext) {
			w := &world{suiteT: t}
			w.register(sc)
		},
		Options: &godog.Options{
			Format:   "pretty",
			Paths:    []string{"."},
			Strict:   true,
			TestingT: t,
		},
	}
	if st := suite.Run(); st != 0 {
		t.Fatalf("godog suite exited with status %d", st)
	}
}

// workerID names the worker in every scenario.
const workerID = "worker-gpu-0"

// world is the state of one scenario. godog calls the scenario initializer
// once per scenario, so every scenario has its own world.
type world struct {
	suiteT *testing.T
	dir    string // the scenario's temporary directory

	// Configuration, fixed when the worker starts.
	gpus       int
	capacity   int64
	headroom   int64
	integrated bool
	environ    []string
	withAudit  bool
	withNarr   bool

	// The running system.
	started  bool
	startErr error
	sims     []*sim.Device
	auditDir string
	vkey     *audit.VerificationKey
	log      *audit.Log
	rec      *narrationtest.Recorder
	narrator *narration.Narrator
	m        *vram.Manager
	srv      *httptest.Server

	// seeds names the byte generator of each shard ID sealed so far.
	seeds map[string]string
	sizes map[string]int64

	// Outcomes of the last action.
	lastID     string
	lastInfo   vram.ShardInfo
	lastErr    error
	lastVerify vram.VerifyResult
	outcomes   []sealOutcome

	// Models: the scenario's model root (a copy of the fixtures) and the
	// last model added.
	modelRoot string
	lastModel vram.ModelInfo

	// A seal under examination, taken from a handle and possibly altered.
	seal      seal.Seal
	sealValid bool

	// Events found by the last assertions, compared by later steps.
	auditRec  *auditRecord
	narrEvent *narration.Event

	// HTTP exchange.
	status   int
	sentCID  string
	respCID  string
	respBody []byte

	// Offline audit verification.
	report    *audit.VerifyReport
	verifyErr error
}

type sealOutcome struct {
	id   string
	info vram.ShardInfo
	err  error
}

func (w *world) register(sc *godog.ScenarioContext) {
	sc.Before(func(ctx context.Context, _ *godog.Scenario) (context.Context, error) {
		dir, err := os.MkdirTemp("", "vramseal-features-")
		if err != nil {
			return ctx, err
		}
		w.dir = dir
		w.gpus = 1
		w.capacity = 64 << 20
		// A fixed environment: the host's own must not decide a scenario.
		w.environ = []string{"PATH=/usr/bin:/bin"}
		w.seeds = map[string]string{}
		w.sizes = map[string]int64{}
		return ctx, nil
	})
	sc.After(func(ctx context.Context, _ *godog.Scenario, _ error) (context.Context, error) {
		return ctx, w.teardown()
	})
	w.registerResidency(sc)
	w.registerTampering(sc)
	w.registerObservability(sc)
	w.registerModels(sc)
}

// teardown stops what the scenario started and removes its files.
func (w *world) teardown() error {
	ctx := context.Background()
	var errs []error
	if w.srv != nil {
		w.srv.Close()
	}
	if w.m != nil {
		if err := w.m.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close manager: %w", err))
		}
	}
	if w.log != nil {
		if err := w.log.Close(ctx); err != nil && !errors.Is(err, audit.ErrClosed) {
			errs = append(errs, fmt.Errorf("close audit log: %w", err))
		}
	}
	if w.dir != "" {
		if err := os.RemoveAll(w.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// start builds the simulated GPUs, the audit log, the narration capture and
// the manager, once. A refusal to start is kept in startErr.
func (w *world) start() error {
	if w.started {
		return nil
	}
	w.started = true
	devs, err := sim.New(sim.Options{Devices: w.gpus, Capacity: w.capacity, Seed: 7})
	if err != nil {
		return fmt.Errorf("create simulated GPUs: %w", err)
	}
	w.sims = devs
	opts := vram.Options{WorkerID: workerID, Headroom: w.headroom, Environ: w.environ}
	for _, d := range devs {
		d.SetIntegrated(w.integrated)
		opts.Devices = append(opts.Devices, d)
	}
	key, err := seal.DeriveKey([]byte("feature-scenarios-worker-secret-0123456789"))
	if err != nil {
		return err
	}
	opts.Key = key
	if w.withAudit {
		w.auditDir = filepath.Join(w.dir, "audit")
		aopts := audit.Options{Service: "vramseal", Node: "features", Worker: workerID}
		w.vkey, err = audit.Init(w.auditDir, aopts)
		if err != nil {
			return fmt.Errorf("audit init: %w", err)
		}
		w.log, err = audit.Open(w.auditDir, aopts)
		if err != nil {
			return fmt.Errorf("audit open: %w", err)
		}
		opts.Audit = w.log
	}
	if w.withNarr {
		w.rec, w.narrator = narrationtest.Capture(w.suiteT)
		opts.Narrator = w.narrator
	}
	w.m, w.startErr = vram.New(context.Background(), opts)
	return nil
}

// manager starts the worker if needed and requires it to be running.
func (w *world) manager() (*vram.Manager, error) {
	if err := w.start(); err != nil {
		return nil, err
	}
	if w.startErr != nil {
		return nil, fmt.Errorf("the worker did not start: %w", w.startErr)
	}
	return w.m, nil
}

func (w *world) configure() error {
	if w.started {
		return errors.New("the worker has already started: configure it before the first operation")
	}
	return nil
}

// shardReader yields size deterministic pseudo-random bytes for seed.
func shardReader(seed string, size int64) io.Reader {
	s := sha256.Sum256([]byte("features shard data\x00" + seed))
	return io.LimitReader(rand.NewChaCha8(s), size)
}

// shardBytes returns the bytes sealed as shard id.
func (w *world) shardBytes(id string) ([]byte, error) {
	seed, ok := w.seeds[id]
	if !ok {
		return nil, fmt.Errorf("no shard %q was sealed in this scenario", id)
	}
	return io.ReadAll(shardReader(seed, w.sizes[id]))
}

// sealShard seals size bytes as shard id (empty: a generated ID) of model on
// device and keeps the outcome in lastID, lastInfo and lastErr.
func (w *world) sealShard(ctx context.Context, id, model string, size int64, device int) error {
	m, err := w.manager()
	if err != nil {
		return err
	}
	seed := id
	if seed == "" {
		seed = "generated:" + model
	}
	info, err := m.Seal(ctx, vram.SealRequest{ShardID: id, ModelRef: model, Device: device, Size: size, Data: shardReader(seed, size)})
	w.lastID, w.lastInfo, w.lastErr = id, info, err
	if err == nil {
		w.lastID = info.Seal.ShardID
		w.seeds[w.lastID] = seed
		w.sizes[w.lastID] = size
	}
	return nil
}

var sizeTerm = regexp.MustCompile(`^(\d+)\s*(bytes?|KB|MB|GB)$`)

// parseSize reads sizes such as "1MB", "16 MB", "1 byte", "16 MB + 1 byte"
// or "16 MB - 1 byte". KB, MB and GB are binary (1 MB = 1,048,576 bytes),
// as MiB is in the manager's sentences.
func parseSize(s string) (int64, error) {
	var total int64
	for _, part := range splitTerms(s) {
		m := sizeTerm.FindStringSubmatch(strings.TrimSpace(part.text))
		if m == nil {
			return 0, fmt.Errorf("cannot read size %q", s)
		}
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil {
			return 0, err
		}
		switch m[2] {
		case "KB":
			n <<= 10
		case "MB":
			n <<= 20
		case "GB":
			n <<= 30
		}
		total += part.sign * n
	}
	return total, nil
}

type term struct {
	sign int64
	text string
}

func splitTerms(s string) []term {
	var out []term
	sign := int64(1)
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '+' || s[i] == '-' {
			out = append(out, term{sign, s[start:i]})
			sign = 1
			if s[i] == '-' {
				sign = -1
			}
			start = i + 1
		}
	}
	return append(out, term{sign, s[start:]})
}

// parseID reads a shard ID written as a Go string literal ("shard\x00evil"),
// optionally repeated: "a" repeated 257 times.
func parseID(s string) (string, error) {
	if lit, n, ok := strings.Cut(s, " repeated "); ok {
		count, err := strconv.Atoi(strings.TrimSuffix(n, " times"))
		if err != nil {
			return "", fmt.Errorf("cannot read repeat count in %q", s)
		}
		one, err := strconv.Unquote(lit)
		if err != nil {
			return "", fmt.Errorf("cannot read ID literal %s: %w", lit, err)
		}
		return strings.Repeat(one, count), nil
	}
	id, err := strconv.Unquote(s)
	if err != nil {
		return "", fmt.Errorf("cannot read ID literal %s: %w", s, err)
	}
	return id, nil
}

// snakeCase turns an event name such as "VramSealed" into "vram_sealed".
func snakeCase(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}
