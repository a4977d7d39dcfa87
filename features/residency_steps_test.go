package features

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cucumber/godog"

	"github.com/vramseal/vramseal/narration/narrationtest"
	"github.com/vramseal/vramseal/seal"
	"github.com/vramseal/vramseal/vram"
)

func (w *world) registerResidency(sc *godog.ScenarioContext) {
	// Configuration.
	sc.Step(`^a worker with (\d+) simulated GPUs? of (.+?)(?: each)?$`, w.workerWithGPUs)
	sc.Step(`^the worker keeps (.+) of VRAM free as headroom$`, w.keepsHeadroom)
	sc.Step(`^audit logging and narration are enabled$`, w.enableObservability)
	sc.Step(`^a VramManager with audit logging and narration enabled$`, w.managerWithObservability)
	sc.Step(`^the GPU is an integrated GPU that shares memory with the host$`, w.integratedGPU)
	sc.Step(`^the environment sets (\w+)=(.*)$`, w.setsEnv)

	// Starting.
	sc.Step(`^the worker starts$`, w.workerStarts)
	sc.Step(`^the worker starts normally$`, w.workerStartsNormally)
	sc.Step(`^the worker refuses to start with a VRAM-only policy violation "([^"]*)"$`, w.refusesToStart)

	// Sealing.
	sc.Step(`^shard "([^"]*)" of ([^"]+) is sealed on GPU (\d+)$`, w.shardIsSealed)
	sc.Step(`^these shards are sealed:$`, w.theseShardsAreSealed)
	sc.Step(`^I seal shard "([^"]*)" of ([^"]+) on GPU (\d+)$`, w.iSealShard)
	sc.Step(`^I seal shard "([^"]*)" of model "([^"]*)" with (.+) of data on GPU (\d+)$`, w.iSealShardOfModel)
	sc.Step(`^I seal a shard with ID (.+) and (.+) of data$`, w.iSealShardWithIDLiteral)
	sc.Step(`^I seal a model with (.+) of data$`, w.iSealAModel)
	sc.Step(`^(\d+) clients seal distinct shards of (.+) on GPU (\d+) at the same time$`, w.concurrentSeals)
	sc.Step(`^I release shard "([^"]*)"$`, w.iRelease)

	sc.Step(`^the seal succeeds$`, w.sealSucceeds)
	sc.Step(`^the handle names shard "([^"]*)" and model "([^"]*)"$`, w.handleNames)
	sc.Step(`^the handle records GPU (\d+) and its device UUID$`, w.handleRecordsGPU)
	sc.Step(`^the handle records a size of (.+) in (\d+) chunks of (.+)$`, w.handleRecordsSize)
	sc.Step(`^the handle's digest is the SHA-256 of the data and its tree root covers every chunk$`, w.handleDigest)
	sc.Step(`^the handle is signed with the worker's seal key$`, w.handleSigned)
	sc.Step(`^shard "([^"]*)" is resident$`, w.isResident)
	sc.Step(`^shard "([^"]*)" is not resident$`, w.isNotResident)
	sc.Step(`^no shard is resident$`, w.noShardResident)
	sc.Step(`^(.+) of VRAM (?:is|are) in use on GPU (\d+)$`, w.vramInUse)
	sc.Step(`^no VRAM is in use on GPU (\d+)$`, w.noVRAMInUse)
	sc.Step(`^(.+) of VRAM (?:is|are) available on GPU (\d+)$`, w.vramAvailable)

	sc.Step(`^the seal is rejected as invalid input$`, w.rejectedInvalid)
	sc.Step(`^the rejection is narrated without revealing the ID$`, w.rejectionNarratedSafely)
	sc.Step(`^the seal is refused because shard "([^"]*)" already exists$`, w.refusedExists)
	sc.Step(`^the seal is refused for insufficient VRAM$`, w.refusedCapacity)
	sc.Step(`^the seal is refused for insufficient VRAM: (.+) requested, (.+) available$`, w.refusedCapacityDetail)
	sc.Step(`^the refusal is retryable$`, w.refusalRetryable)
	sc.Step(`^exactly (\d+) seals succeed and (\d+) are refused for insufficient VRAM$`, w.concurrentOutcome)
	sc.Step(`^every shard that was sealed verifies in full$`, w.everySealedVerifies)

	// Verifying.
	sc.Step(`^I verify shard "([^"]*)" in full$`, w.iVerifyFull)
	sc.Step(`^I verify shard "([^"]*)" by sampling (\d+) chunks$`, w.iVerifySampled)
	sc.Step(`^the verification passes with (\d+) of (\d+) chunks checked$`, w.verificationPasses)
	sc.Step(`^the detection probability is ([\d.]+)%$`, w.detectionProbability)
	sc.Step(`^an attacker flips a bit of byte (\d+) of shard "([^"]*)" in device memory$`, w.flipBit)
	sc.Step(`^the background scrub runs until it stops the worker$`, w.scrubUntilStopped)
	sc.Step(`^the background scrub completes a pass$`, w.scrubOnePass)
	sc.Step(`^the verification fails because the device bytes changed$`, w.failsDigestMismatch)
	sc.Step(`^the failure names chunks? (\d+(?:-\d+)?) covering bytes (\d+) to (\d+)$`, w.failureNames)
	sc.Step(`^the device bytes of shard "([^"]*)" are unchanged$`, w.deviceBytesUnchanged)
	sc.Step(`^shard "([^"]*)" verifies$`, w.shardVerifies)
	sc.Step(`^shard "([^"]*)" is refused because it is quarantined$`, w.shardQuarantined)

	// Worker state.
	sc.Step(`^the worker is (running|stopped)$`, w.workerIs)
	sc.Step(`^the stop reason mentions (.+)$`, w.stopReasonMentions)
	sc.Step(`^verifying shard "([^"]*)" is refused because the worker is stopped$`, w.verifyRefusedStopped)
	sc.Step(`^sealing shard "([^"]*)" of (.+) is refused because the worker is stopped$`, w.sealRefusedStopped)
	sc.Step(`^the operator resets the worker with reason "([^"]*)"$`, w.operatorResets)
	sc.Step(`^the operator resets the worker without giving a reason$`, w.operatorResetsNoReason)
	sc.Step(`^the reset is rejected as invalid input$`, w.resetRejected)

	// Policy.
	sc.Step(`^the GPU driver starts (.+)$`, w.driverStarts)
	sc.Step(`^the seal is refused for a VRAM-only policy violation "([^"]*)"$`, w.refusedPolicy)
}

// Configuration.

func (w *world) workerWithGPUs(n int, size string) error {
	if err := w.configure(); err != nil {
		return err
	}
	c, err := parseSize(size)
	if err != nil {
		return err
	}
	w.gpus, w.capacity = n, c
	return nil
}

func (w *world) keepsHeadroom(size string) error {
	if err := w.configure(); err != nil {
		return err
	}
	h, err := parseSize(size)
	w.headroom = h
	return err
}

func (w *world) enableObservability() error {
	if err := w.configure(); err != nil {
		return err
	}
	w.withAudit, w.withNarr = true, true
	return nil
}

func (w *world) managerWithObservability() error {
	if err := w.enableObservability(); err != nil {
		return err
	}
	_, err := w.manager()
	return err
}

func (w *world) integratedGPU() error {
	if err := w.configure(); err != nil {
		return err
	}
	w.integrated = true
	return nil
}

func (w *world) setsEnv(name, value string) error {
	if err := w.configure(); err != nil {
		return err
	}
	w.environ = append(w.environ, name+"="+value)
	return nil
}

// Starting.

func (w *world) workerStarts() error { return w.start() }

func (w *world) workerStartsNormally() error {
	if _, err := w.manager(); err != nil {
		return err
	}
	if st, why := w.m.State(); st != vram.Running {
		return fmt.Errorf("worker state = %v (%s), want running", st, why)
	}
	return nil
}

func (w *world) refusesToStart(violation string) error {
	if err := w.start(); err != nil {
		return err
	}
	if w.startErr == nil {
		return errors.New("the worker started, want a refusal")
	}
	if w.m != nil {
		return errors.New("vram.New returned a manager together with its error")
	}
	return wantPolicy(w.startErr, violation)
}

func wantPolicy(err error, violation string) error {
	var pe *vram.PolicyError
	if !errors.As(err, &pe) || !errors.Is(err, vram.ErrPolicy) {
		return fmt.Errorf("error = %v, want a *vram.PolicyError wrapping ErrPolicy", err)
	}
	if pe.Violation != violation {
		return fmt.Errorf("violation = %q, want %q", pe.Violation, violation)
	}
	if vram.Retryable(err) {
		return fmt.Errorf("policy error %v is reported retryable; it is fatal", err)
	}
	return nil
}

// Sealing.

func (w *world) shardIsSealed(ctx context.Context, id, size string, device int) error {
	n, err := parseSize(size)
	if err != nil {
		return err
	}
	if err := w.sealShard(ctx, id, "example/model@main", n, device); err != nil {
		return err
	}
	if w.lastErr != nil {
		return fmt.Errorf("seal %q: %w", id, w.lastErr)
	}
	return nil
}

func (w *world) theseShardsAreSealed(ctx context.Context, table *godog.Table) error {
	rows, err := tableRows(table, "shard", "size", "gpu")
	if err != nil {
		return err
	}
	for _, r := range rows {
		dev, err := strconv.Atoi(r["gpu"])
		if err != nil {
			return fmt.Errorf("gpu %q: %w", r["gpu"], err)
		}
		if err := w.shardIsSealed(ctx, r["shard"], r["size"], dev); err != nil {
			return err
		}
	}
	return nil
}

// tableRows returns the rows of a table whose header holds at least cols.
func tableRows(t *godog.Table, cols ...string) ([]map[string]string, error) {
	if len(t.Rows) == 0 {
		return nil, errors.New("empty table")
	}
	var header []string
	for _, c := range t.Rows[0].Cells {
		header = append(header, c.Value)
	}
	for _, c := range cols {
		found := false
		for _, h := range header {
			found = found || h == c
		}
		if !found {
			return nil, fmt.Errorf("table has no column %q (columns: %v)", c, header)
		}
	}
	var out []map[string]string
	for _, row := range t.Rows[1:] {
		r := map[string]string{}
		for i, c := range row.Cells {
			r[header[i]] = c.Value
		}
		out = append(out, r)
	}
	return out, nil
}

func (w *world) iSealShard(ctx context.Context, id, size string, device int) error {
	n, err := parseSize(size)
	if err != nil {
		return err
	}
	return w.sealShard(ctx, id, "example/model@main", n, device)
}

func (w *world) iSealShardOfModel(ctx context.Context, id, model, size string, device int) error {
	n, err := parseSize(size)
	if err != nil {
		return err
	}
	return w.sealShard(ctx, id, model, n, device)
}

func (w *world) iSealShardWithIDLiteral(ctx context.Context, lit, size string) error {
	id, err := parseID(lit)
	if err != nil {
		return err
	}
	n, err := parseSize(size)
	if err != nil {
		return err
	}
	if id == "" {
		return errors.New("an empty ID asks for a generated one; use a non-empty literal")
	}
	return w.sealShard(ctx, id, "example/model@main", n, 0)
}

func (w *world) iSealAModel(ctx context.Context, size string) error {
	n, err := parseSize(size)
	if err != nil {
		return err
	}
	if err := w.sealShard(ctx, "", "example/llama-3.1-8b@main", n, 0); err != nil {
		return err
	}
	if w.lastErr != nil {
		return fmt.Errorf("seal: %w", w.lastErr)
	}
	return nil
}

func (w *world) concurrentSeals(ctx context.Context, clients int, size string, device int) error {
	m, err := w.manager()
	if err != nil {
		return err
	}
	n, err := parseSize(size)
	if err != nil {
		return err
	}
	w.outcomes = make([]sealOutcome, clients)
	ready := make(chan struct{})
	var wg sync.WaitGroup
	for i := range clients {
		id := fmt.Sprintf("client-%02d", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-ready
			info, err := m.Seal(ctx, vram.SealRequest{ShardID: id, ModelRef: "example/model@main", Device: device, Size: n, Data: shardReader(id, n)})
			w.outcomes[i] = sealOutcome{id: id, info: info, err: err}
		}()
	}
	close(ready) // every client starts at once
	wg.Wait()
	for _, o := range w.outcomes {
		if o.err == nil {
			w.seeds[o.id] = o.id
			w.sizes[o.id] = n
		}
	}
	return nil
}

func (w *world) iRelease(ctx context.Context, id string) error {
	m, err := w.manager()
	if err != nil {
		return err
	}
	if err := m.Release(ctx, id); err != nil {
		return fmt.Errorf("release %q: %w", id, err)
	}
	return nil
}

func (w *world) sealSucceeds() error {
	if w.lastErr != nil {
		return fmt.Errorf("seal %q failed: %w", w.lastID, w.lastErr)
	}
	return nil
}

func (w *world) handleNames(id, model string) error {
	if err := w.sealSucceeds(); err != nil {
		return err
	}
	s := w.lastInfo.Seal
	if s.ShardID != id || s.ModelRef != model {
		return fmt.Errorf("handle names shard %q of model %q, want %q of %q", s.ShardID, s.ModelRef, id, model)
	}
	if s.ShardIndex != 0 || s.ShardCount != 1 {
		return fmt.Errorf("handle records shard %d of %d, want 0 of 1", s.ShardIndex, s.ShardCount)
	}
	return nil
}

func (w *world) handleRecordsGPU(ctx context.Context, device int) error {
	if err := w.sealSucceeds(); err != nil {
		return err
	}
	s := w.lastInfo.Seal
	info, err := w.sims[device].Info(ctx)
	if err != nil {
		return err
	}
	if s.DeviceIndex != device || s.DeviceUUID != info.UUID || s.DeviceUUID == "" {
		return fmt.Errorf("handle records GPU %d %q, want GPU %d %q", s.DeviceIndex, s.DeviceUUID, device, info.UUID)
	}
	return nil
}

func (w *world) handleRecordsSize(size string, chunks int64, chunkSize string) error {
	if err := w.sealSucceeds(); err != nil {
		return err
	}
	n, err := parseSize(size)
	if err != nil {
		return err
	}
	cs, err := parseSize(chunkSize)
	if err != nil {
		return err
	}
	s := w.lastInfo.Seal
	if s.Size != n || s.ChunkSize != cs || w.lastInfo.Chunks != chunks {
		return fmt.Errorf("handle records %d bytes in %d chunks of %d bytes, want %d in %d of %d", s.Size, w.lastInfo.Chunks, s.ChunkSize, n, chunks, cs)
	}
	return nil
}

func (w *world) handleDigest() error {
	if err := w.sealSucceeds(); err != nil {
		return err
	}
	data, err := w.shardBytes(w.lastID)
	if err != nil {
		return err
	}
	s := w.lastInfo.Seal
	if want := seal.Hash(sha256.Sum256(data)); s.Digest != want {
		return fmt.Errorf("digest = %v, want SHA-256 of the data %v", s.Digest, want)
	}
	if want := seal.Root(seal.Leaves(data, s.ChunkSize)); s.Root != want {
		return fmt.Errorf("tree root = %v, want %v", s.Root, want)
	}
	return nil
}

func (w *world) handleSigned() error {
	if err := w.sealSucceeds(); err != nil {
		return err
	}
	s := w.lastInfo.Seal
	key := w.m.Key()
	if s.KeyID != key.ID() || s.WorkerID != workerID {
		return fmt.Errorf("seal names key %q and worker %q, want %q and %q", s.KeyID, s.WorkerID, key.ID(), workerID)
	}
	if s.SealedAt.IsZero() || s.SealedAt.Location().String() != "UTC" {
		return fmt.Errorf("sealed-at time %v is not a UTC time", s.SealedAt)
	}
	if err := key.Verify(&s); err != nil {
		return fmt.Errorf("the worker's key does not verify its own seal: %w", err)
	}
	return nil
}

func (w *world) isResident(id string) error {
	m, err := w.manager()
	if err != nil {
		return err
	}
	info, err := m.Shard(id)
	if err != nil {
		return fmt.Errorf("shard %q: %w", id, err)
	}
	for _, s := range m.Shards() {
		if s.Seal.ShardID == id {
			if s.Seal != info.Seal {
				return fmt.Errorf("Shards() and Shard(%q) disagree", id)
			}
			return nil
		}
	}
	return fmt.Errorf("shard %q is missing from Shards()", id)
}

func (w *world) isNotResident(id string) error {
	m, err := w.manager()
	if err != nil {
		return err
	}
	if _, err := m.Shard(id); !errors.Is(err, vram.ErrNotFound) {
		return fmt.Errorf("Shard(%q) error = %v, want ErrNotFound", id, err)
	}
	return nil
}

func (w *world) noShardResident() error {
	m, err := w.manager()
	if err != nil {
		return err
	}
	if n := len(m.Shards()); n != 0 {
		return fmt.Errorf("%d shards are resident, want none", n)
	}
	return nil
}

func (w *world) capacityOf(ctx context.Context, device int) (vram.Capacity, error) {
	m, err := w.manager()
	if err != nil {
		return vram.Capacity{}, err
	}
	return m.Capacity(ctx, device)
}

func (w *world) vramInUse(ctx context.Context, size string, device int) error {
	n, err := parseSize(size)
	if err != nil {
		return err
	}
	c, err := w.capacityOf(ctx, device)
	if err != nil {
		return err
	}
	if c.UsedBytes != n || c.ReservedBytes != 0 {
		return fmt.Errorf("GPU %d: %d bytes used and %d reserved, want %d used and none reserved", device, c.UsedBytes, c.ReservedBytes, n)
	}
	// The device itself must agree: nothing leaked.
	if c.TotalBytes-c.FreeBytes != n {
		return fmt.Errorf("GPU %d reports %d bytes allocated, the manager %d", device, c.TotalBytes-c.FreeBytes, n)
	}
	return nil
}

func (w *world) noVRAMInUse(ctx context.Context, device int) error {
	return w.vramInUse(ctx, "0 bytes", device)
}

func (w *world) vramAvailable(ctx context.Context, size string, device int) error {
	n, err := parseSize(size)
	if err != nil {
		return err
	}
	c, err := w.capacityOf(ctx, device)
	if err != nil {
		return err
	}
	if c.AvailableBytes != n {
		return fmt.Errorf("GPU %d has %d bytes available, want %d", device, c.AvailableBytes, n)
	}
	return nil
}

func (w *world) rejectedInvalid() error {
	if !errors.Is(w.lastErr, vram.ErrInvalidInput) {
		return fmt.Errorf("seal error = %v, want ErrInvalidInput", w.lastErr)
	}
	if vram.Retryable(w.lastErr) {
		return fmt.Errorf("invalid input %v is reported retryable", w.lastErr)
	}
	return nil
}

func (w *world) refusedExists(id string) error {
	if !errors.Is(w.lastErr, vram.ErrExists) {
		return fmt.Errorf("seal error = %v, want ErrExists", w.lastErr)
	}
	if !strings.Contains(w.lastErr.Error(), id) {
		return fmt.Errorf("the error %q does not name shard %q", w.lastErr, id)
	}
	return nil
}

func (w *world) rejectionNarratedSafely() error {
	if w.rec == nil {
		return errors.New("narration is not enabled in this scenario")
	}
	got := w.rec.Filter(narrationtest.Match{Action: vram.ActionValidateFailed})
	if len(got) != 1 {
		return fmt.Errorf("%d %q narration events, want 1", len(got), vram.ActionValidateFailed)
	}
	if got[0].Target != "" {
		return fmt.Errorf("the rejection names target %q, want none for an invalid ID", got[0].Target)
	}
	for _, r := range narrationtest.Render(w.rec.Events()) {
		if strings.Contains(r.Text, w.lastID) {
			return fmt.Errorf("the raw shard ID %q appears in the narration via %s:\n%s", w.lastID, r.Via, r.Text)
		}
	}
	if strings.Contains(w.lastErr.Error(), w.lastID) {
		return fmt.Errorf("the raw shard ID %q appears in the error %q", w.lastID, w.lastErr)
	}
	return nil
}

func (w *world) refusedCapacity() error {
	var ce *vram.CapacityError
	if !errors.As(w.lastErr, &ce) || !errors.Is(w.lastErr, vram.ErrInsufficientVRAM) {
		return fmt.Errorf("seal error = %v, want a *vram.CapacityError wrapping ErrInsufficientVRAM", w.lastErr)
	}
	return nil
}

func (w *world) refusedCapacityDetail(requested, available string) error {
	if err := w.refusedCapacity(); err != nil {
		return err
	}
	req, err := parseSize(requested)
	if err != nil {
		return err
	}
	avail, err := parseSize(available)
	if err != nil {
		return err
	}
	var ce *vram.CapacityError
	errors.As(w.lastErr, &ce)
	if ce.Requested != req || ce.Available != avail {
		return fmt.Errorf("capacity error says %d requested, %d available; want %d and %d", ce.Requested, ce.Available, req, avail)
	}
	return nil
}

func (w *world) refusalRetryable() error {
	if !vram.Retryable(w.lastErr) {
		return fmt.Errorf("Retryable(%v) = false, want true", w.lastErr)
	}
	return nil
}

func (w *world) concurrentOutcome(ok, refused int) error {
	var gotOK, gotRefused int
	for _, o := range w.outcomes {
		switch {
		case o.err == nil:
			gotOK++
		case errors.Is(o.err, vram.ErrInsufficientVRAM):
			gotRefused++
		default:
			return fmt.Errorf("client %s failed with %v, want success or insufficient VRAM", o.id, o.err)
		}
	}
	if gotOK != ok || gotRefused != refused {
		return fmt.Errorf("%d seals succeeded and %d were refused, want %d and %d", gotOK, gotRefused, ok, refused)
	}
	return nil
}

func (w *world) everySealedVerifies(ctx context.Context) error {
	m, err := w.manager()
	if err != nil {
		return err
	}
	shards := m.Shards()
	if len(shards) != len(w.seeds) {
		return fmt.Errorf("%d shards are resident, %d were sealed", len(shards), len(w.seeds))
	}
	for _, s := range shards {
		if err := w.shardVerifies(ctx, s.Seal.ShardID); err != nil {
			return err
		}
	}
	return nil
}

// Verifying.

func (w *world) verify(ctx context.Context, id string, mode vram.VerifyMode) error {
	m, err := w.manager()
	if err != nil {
		return err
	}
	w.lastID = id
	w.lastVerify, w.lastErr = m.Verify(ctx, id, mode)
	return nil
}

func (w *world) iVerifyFull(ctx context.Context, id string) error {
	return w.verify(ctx, id, vram.Full)
}

func (w *world) iVerifySampled(ctx context.Context, id string, k int) error {
	return w.verify(ctx, id, vram.Sampled(k))
}

func (w *world) verificationPasses(checked, total int64) error {
	if w.lastErr != nil {
		return fmt.Errorf("verify %q failed: %w", w.lastID, w.lastErr)
	}
	r := w.lastVerify
	if r.ShardID != w.lastID || r.ChunksChecked != checked || r.Chunks != total {
		return fmt.Errorf("verified %q: %d of %d chunks, want %q: %d of %d", r.ShardID, r.ChunksChecked, r.Chunks, w.lastID, checked, total)
	}
	return nil
}

func (w *world) detectionProbability(pct float64) error {
	if got := w.lastVerify.DetectionProbability * 100; got < pct-1e-9 || got > pct+1e-9 {
		return fmt.Errorf("detection probability %.4f%%, want %.4f%%", got, pct)
	}
	return nil
}

// scrub runs the manager's background scrub (fast, so that the scenario
// takes milliseconds) until done reports true, then stops it.
func (w *world) scrub(ctx context.Context, interval time.Duration, done func(m *vram.Manager) bool) error {
	m, err := w.manager()
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	ended := make(chan error, 1)
	go func() {
		ended <- m.Scrub(sctx, vram.ScrubOptions{BytesPerSecond: 1 << 30, Interval: interval})
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !done(m) {
		if time.Now().After(deadline) {
			cancel()
			<-ended
			return fmt.Errorf("the scrub did not finish: %+v", m.ScrubStats())
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-ended; !errors.Is(err, context.Canceled) {
		return fmt.Errorf("scrub ended with %v", err)
	}
	return nil
}

func (w *world) scrubUntilStopped(ctx context.Context) error {
	return w.scrub(ctx, time.Millisecond, func(m *vram.Manager) bool { s, _ := m.State(); return s == vram.Stopped })
}

func (w *world) scrubOnePass(ctx context.Context) error {
	// One pass only: the next would start an hour later.
	return w.scrub(ctx, time.Hour, func(m *vram.Manager) bool { return m.ScrubStats().Passes >= 1 })
}

func (w *world) flipBit(offset int64, id string) error {
	m, err := w.manager()
	if err != nil {
		return err
	}
	buf, dev, err := m.Buffer(id)
	if err != nil {
		return err
	}
	return w.sims[dev].FlipBits(buf, offset, 0x10)
}

func (w *world) integrityError() (*vram.IntegrityError, error) {
	var ie *vram.IntegrityError
	if !errors.As(w.lastErr, &ie) || !errors.Is(w.lastErr, vram.ErrIntegrity) {
		return nil, fmt.Errorf("verify error = %v, want a *vram.IntegrityError wrapping ErrIntegrity", w.lastErr)
	}
	return ie, nil
}

func (w *world) failsDigestMismatch() error {
	ie, err := w.integrityError()
	if err != nil {
		return err
	}
	if ie.ShardID != w.lastID || ie.Reason != vram.ReasonDigestMismatch {
		return fmt.Errorf("integrity error for %q with reason %q, want %q with %q", ie.ShardID, ie.Reason, w.lastID, vram.ReasonDigestMismatch)
	}
	if vram.Retryable(w.lastErr) {
		return errors.New("an integrity failure is reported retryable")
	}
	return nil
}

func (w *world) failureNames(chunks string, from, to int64) error {
	ie, err := w.integrityError()
	if err != nil {
		return err
	}
	first, last, ok := strings.Cut(chunks, "-")
	if !ok {
		last = first
	}
	fc, _ := strconv.ParseInt(first, 10, 64)
	lc, _ := strconv.ParseInt(last, 10, 64)
	want := vram.ChunkRange{FirstChunk: fc, LastChunk: lc, Offset: from, Length: to - from + 1}
	if len(ie.Changed) != 1 || ie.Changed[0] != want {
		return fmt.Errorf("changed ranges = %+v, want exactly [%+v]", ie.Changed, want)
	}
	if ie.ActualRoot.IsZero() || ie.ActualRoot == ie.ExpectedRoot {
		return fmt.Errorf("a full verification reports actual root %v against expected %v", ie.ActualRoot, ie.ExpectedRoot)
	}
	return nil
}

func (w *world) deviceBytesUnchanged(id string) error {
	m, err := w.manager()
	if err != nil {
		return err
	}
	want, err := w.shardBytes(id)
	if err != nil {
		return err
	}
	buf, dev, err := m.Buffer(id)
	if err != nil {
		return err
	}
	got := make([]byte, len(want))
	if err := w.sims[dev].Peek(buf, 0, got); err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("the device bytes of shard %q changed", id)
	}
	return nil
}

func (w *world) shardVerifies(ctx context.Context, id string) error {
	m, err := w.manager()
	if err != nil {
		return err
	}
	if _, err := m.Verify(ctx, id, vram.Full); err != nil {
		return fmt.Errorf("verify %q: %w", id, err)
	}
	return nil
}

// shardQuarantined checks that a full verification of a shard that failed
// is refused as quarantined, and that the shard shows why.
func (w *world) shardQuarantined(ctx context.Context, id string) error {
	m, err := w.manager()
	if err != nil {
		return err
	}
	var qe *vram.QuarantinedError
	if _, err := m.Verify(ctx, id, vram.Full); !errors.As(err, &qe) || !errors.Is(err, vram.ErrIntegrity) {
		return fmt.Errorf("verify of %q = %v, want a *vram.QuarantinedError", id, err)
	}
	if info, err := m.Shard(id); err != nil || info.Quarantined == "" {
		return fmt.Errorf("shard %q: quarantined %q, err %v; want the failure named", id, info.Quarantined, err)
	}
	return nil
}

// Worker state.

func (w *world) workerIs(state string) error {
	m, err := w.manager()
	if err != nil {
		return err
	}
	if st, why := m.State(); st.String() != state {
		return fmt.Errorf("worker is %v (%s), want %s", st, why, state)
	}
	return nil
}

func (w *world) stopReasonMentions(what string) error {
	m, err := w.manager()
	if err != nil {
		return err
	}
	st, why := m.State()
	if st != vram.Stopped {
		return fmt.Errorf("worker is %v, want stopped", st)
	}
	want := strings.Trim(strings.TrimPrefix(what, "shard "), `"`)
	if !strings.Contains(why, want) {
		return fmt.Errorf("stop reason %q does not mention %q", why, want)
	}
	return nil
}

func wantStopped(err error) error {
	var se *vram.StoppedError
	if !errors.As(err, &se) || !errors.Is(err, vram.ErrStopped) {
		return fmt.Errorf("error = %v, want a *vram.StoppedError wrapping ErrStopped", err)
	}
	if se.Reason == "" {
		return errors.New("the stopped error gives no reason")
	}
	if vram.Retryable(err) {
		return errors.New("a stopped worker's refusal is reported retryable")
	}
	return nil
}

func (w *world) verifyRefusedStopped(ctx context.Context, id string) error {
	m, err := w.manager()
	if err != nil {
		return err
	}
	_, err = m.Verify(ctx, id, vram.Sampled(vram.DefaultSamples))
	if err := wantStopped(err); err != nil {
		return fmt.Errorf("verify %q: %w", id, err)
	}
	return nil
}

func (w *world) sealRefusedStopped(ctx context.Context, id, size string) error {
	if err := w.iSealShard(ctx, id, size, 0); err != nil {
		return err
	}
	if err := wantStopped(w.lastErr); err != nil {
		return fmt.Errorf("seal %q: %w", id, err)
	}
	return w.isNotResident(id)
}

func (w *world) operatorResets(ctx context.Context, reason string) error {
	m, err := w.manager()
	if err != nil {
		return err
	}
	w.lastErr = m.Reset(ctx, reason)
	if w.lastErr != nil {
		return fmt.Errorf("reset: %w", w.lastErr)
	}
	return nil
}

func (w *world) operatorResetsNoReason(ctx context.Context) error {
	m, err := w.manager()
	if err != nil {
		return err
	}
	w.lastErr = m.Reset(ctx, "")
	return nil
}

func (w *world) resetRejected() error {
	if !errors.Is(w.lastErr, vram.ErrInvalidInput) {
		return fmt.Errorf("reset error = %v, want ErrInvalidInput", w.lastErr)
	}
	return nil
}

// Policy.

func (w *world) driverStarts(fault string) error {
	if _, err := w.manager(); err != nil {
		return err
	}
	for _, d := range w.sims {
		switch fault {
		case "handing out managed memory that can migrate to the host":
			d.SetManaged(true)
		case "mapping allocations into host memory":
			d.SetHostMapped(true)
		case "placing allocations on another GPU":
			d.SetWrongOrdinal(true)
		case "silently placing allocations in host memory":
			d.SetHostFallback(true)
		case "reporting the GPU as integrated with host memory":
			d.SetIntegrated(true)
		default:
			return fmt.Errorf("unknown driver fault %q", fault)
		}
	}
	return nil
}

func (w *world) refusedPolicy(violation string) error {
	return wantPolicy(w.lastErr, violation)
}
