package vram

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/narration"
	"github.com/vramseal/vramseal/provenance"
	"github.com/vramseal/vramseal/seal"
	"github.com/vramseal/vramseal/tensor"
)

// Model limits.
const (
	// MaxModelIDLen leaves room in a shard ID for "-" and the file index.
	MaxModelIDLen = MaxShardIDLen - 8
	// MaxModelFiles bounds the weight files of one model.
	MaxModelFiles = 4096
	// MaxModelParallel bounds the files sealed at once. Each one in flight
	// holds stagingBuffers x copyBufferSize bytes of host memory (12 MiB)
	// and, for safetensors, its header.
	MaxModelParallel = 8
)

// Audit event types and narration actions of models.
const (
	EventModelSealed   = "model_sealed"
	EventModelRejected = "model_rejected"
	ActionModelSeal    = "model_seal"
	ActionModelReject  = "model_rejected"
)

// ModelRequest describes a model to seal: one shard per weight file, all or
// nothing.
type ModelRequest struct {
	// ID names the model: letters, digits, '_' and '-', at most
	// [MaxModelIDLen] bytes. Its shards are ID-0, ID-1, ... in file order.
	ID string
	// Ref is the model ref recorded in every shard's seal; empty means ID.
	Ref string
	// Files are the weight files, in shard order: file i becomes the
	// tensor-parallel shard i of len(Files).
	Files []ModelFile
	// Devices places the files: file i goes to Devices[i%len(Devices)].
	// Empty places each file, largest first, on the GPU with the most
	// memory left.
	Devices []int
	// Provenance is what was checked of the files' origin; it is kept with
	// the model and recorded in its model_sealed event.
	Provenance provenance.Provenance
	// Parallel bounds the files sealed at once. Zero means the number of
	// CPUs; at most [MaxModelParallel].
	Parallel int
}

// ModelFile is one weight file of a [ModelRequest].
type ModelFile struct {
	// Name is the file's path inside the model, slash separated (as a
	// signature names it), for messages and records.
	Name string
	// Size is the file's size in bytes, as checked before the seal.
	Size int64
	// Format, Tensors and TensorsHeader are as in [SealRequest].
	Format        string
	Tensors       *tensor.Map
	TensorsHeader seal.Hash
	// Open opens the file for one sequential read of Size bytes.
	Open func() (io.ReadCloser, error)
	// Check, when set, is given the file's flat SHA-256 digest computed
	// during the seal, as [SealRequest.Check].
	Check func(digest seal.Hash) error
}

// ModelFileError names the file of a model that failed, and why.
type ModelFileError struct {
	Model string
	File  string
	Err   error
}

// Error names the model, the file and the cause.
func (e *ModelFileError) Error() string {
	return fmt.Sprintf("vram: model %q: file %s: %v", e.Model, quoteName(e.File), e.Err)
}

// Unwrap returns the cause.
func (e *ModelFileError) Unwrap() error { return e.Err }

// quoteName quotes a file name from input so that no control character
// reaches a log or a terminal.
func quoteName(s string) string { return strconv.QuoteToGraphic(s) }

// ModelInfo describes a resident model.
type ModelInfo struct {
	ID         string
	Ref        string
	Provenance provenance.Provenance
	SealedAt   time.Time
	// Files are the weight files' names, by shard index.
	Files []string
	// Shards are the model's resident shards, by shard index. A shard
	// released on its own leaves the list; the model goes with its last.
	Shards []ShardInfo
}

// SizeBytes is the model's resident size.
func (mi ModelInfo) SizeBytes() int64 {
	var n int64
	for _, s := range mi.Shards {
		n += s.Seal.Size
	}
	return n
}

type modelState struct {
	ref      string
	prov     provenance.Provenance
	sealedAt time.Time
	files    []string
	shards   []string // shard IDs by index
	pending  bool     // being sealed: not listed yet
}

func (m *Manager) validateModel(req *ModelRequest) error {
	if err := ValidateShardID(req.ID); err != nil {
		return invalid("model ID: %v", strings.TrimPrefix(err.Error(), ErrInvalidInput.Error()+": "))
	}
	if len(req.ID) > MaxModelIDLen {
		return invalid("model ID is %d bytes, the limit is %d", len(req.ID), MaxModelIDLen)
	}
	if req.Ref == "" {
		req.Ref = req.ID
	}
	if err := validateText("model ref", req.Ref, 512, true); err != nil {
		return err
	}
	if len(req.Files) == 0 {
		return invalid("model %q has no weight files", req.ID)
	}
	if len(req.Files) > MaxModelFiles {
		return invalid("model %q has %d weight files, the limit is %d", req.ID, len(req.Files), MaxModelFiles)
	}
	for _, f := range req.Files {
		if f.Open == nil {
			return invalid("model %q: file %s cannot be opened", req.ID, quoteName(f.Name))
		}
	}
	for _, d := range req.Devices {
		if _, err := m.device(d); err != nil {
			return err
		}
	}
	if req.Parallel < 0 {
		return invalid("parallel %d is negative", req.Parallel)
	}
	if req.Parallel == 0 {
		req.Parallel = runtime.GOMAXPROCS(0)
	}
	req.Parallel = min(req.Parallel, MaxModelParallel, len(req.Files))
	return nil
}

// place returns the GPU of each file.
func (m *Manager) place(ctx context.Context, req ModelRequest) ([]int, error) {
	out := make([]int, len(req.Files))
	if len(req.Devices) > 0 {
		for i := range out {
			out[i] = req.Devices[i%len(req.Devices)]
		}
		return out, nil
	}
	left := make([]int64, len(m.devices))
	for i, d := range m.devices {
		c, err := m.usage(ctx, d)
		if err != nil {
			return nil, err
		}
		left[i] = c.AvailableBytes
	}
	order := make([]int, len(req.Files))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return req.Files[order[a]].Size > req.Files[order[b]].Size })
	for _, i := range order {
		best := 0
		for d := range left {
			if left[d] > left[best] {
				best = d
			}
		}
		out[i] = best
		left[best] -= req.Files[i].Size
	}
	return out, nil
}

// SealModel seals every weight file of a model as one shard, files in
// parallel, all or nothing: when any file fails (capacity, policy, a bad
// header, a digest that does not match what was published), every shard
// already sealed is released, the failure is recorded (model_rejected) and
// returned as a *[ModelFileError] naming the file. On success the model is
// recorded (model_sealed, after its shards' vram_sealed events) and listed
// by [Manager.Models].
func (m *Manager) SealModel(ctx context.Context, req ModelRequest) (ModelInfo, error) {
	start := time.Now()
	if err := m.gate(); err != nil {
		return ModelInfo{}, err
	}
	if err := m.validateModel(&req); err != nil {
		return ModelInfo{}, m.rejected(ctx, start, "model seal", "", err)
	}
	m.mu.Lock()
	if _, taken := m.models[req.ID]; taken {
		m.mu.Unlock()
		return ModelInfo{}, m.rejected(ctx, start, "model seal", req.ID, fmt.Errorf("%w: model %q", ErrExists, req.ID))
	}
	m.models[req.ID] = &modelState{pending: true}
	m.mu.Unlock()
	committed := false
	defer func() {
		if !committed {
			m.mu.Lock()
			delete(m.models, req.ID)
			m.mu.Unlock()
		}
	}()
	devs, err := m.place(ctx, req)
	if err != nil {
		return ModelInfo{}, err
	}

	ids := make([]string, len(req.Files))
	infos := make([]ShardInfo, len(req.Files))
	errs := make([]error, len(req.Files))
	sealCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range req.Parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if sealCtx.Err() != nil {
					continue
				}
				f := req.Files[i]
				ids[i] = fmt.Sprintf("%s-%d", req.ID, i)
				infos[i], errs[i] = m.sealModelFile(sealCtx, req, i, devs[i], ids[i])
				if errs[i] != nil {
					errs[i] = &ModelFileError{Model: req.ID, File: f.Name, Err: errs[i]}
					cancel()
				}
			}
		}()
	}
	for i := range req.Files {
		jobs <- i
	}
	close(jobs)
	wg.Wait()

	// The first failure in file order that is not the cancellation it
	// caused in the others.
	var failed error
	for _, e := range errs {
		if e != nil && (failed == nil || errors.Is(failed, context.Canceled) && !errors.Is(e, context.Canceled)) {
			failed = e
		}
	}
	if failed == nil {
		if err := ctx.Err(); err != nil {
			failed = err
		}
	}
	var sealed []string
	for i, e := range errs {
		if e == nil && infos[i].Seal.ShardID != "" {
			sealed = append(sealed, ids[i])
		}
	}
	if failed == nil {
		failed = m.recordModel(ctx, req, infos)
	}
	if failed != nil {
		return ModelInfo{}, m.rejectModel(ctx, start, req, sealed, failed)
	}
	files := make([]string, len(req.Files))
	for i, f := range req.Files {
		files[i] = f.Name
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ModelInfo{}, m.rejectModel(ctx, start, req, sealed, ErrClosed)
	}
	// Publish every shard at once: none was listed before.
	for _, id := range ids {
		m.shards[id] = m.staged[id]
		delete(m.staged, id)
		delete(m.pending, id)
	}
	m.models[req.ID] = &modelState{ref: req.Ref, prov: req.Provenance, sealedAt: m.clock().UTC(), files: files, shards: ids}
	committed = true
	m.mu.Unlock()
	mi, err := m.Model(req.ID)
	if err != nil {
		return ModelInfo{}, err
	}
	dur := time.Since(start)
	m.narrate(ctx, slog.LevelInfo, ActionModelSeal, req.ID, noDevice, dur, "", nil, func() string {
		return fmt.Sprintf("Sealed model '%s': %d shards, %s VRAM on %s (%s; provenance: %s)",
			req.ID, len(ids), narration.FormatBytes(mi.SizeBytes()), gpuList(devs), narration.FormatDuration(dur), provenanceText(req.Provenance))
	}, narration.Int("shards", int64(len(ids))), narration.Bytes("vram_bytes", mi.SizeBytes()),
		narration.Str("provenance", req.Provenance.Method), narration.Str("key_fingerprint", req.Provenance.KeyFingerprint))
	return mi, nil
}

func (m *Manager) sealModelFile(ctx context.Context, req ModelRequest, i, dev int, id string) (ShardInfo, error) {
	f := req.Files[i]
	rc, err := f.Open()
	if err != nil {
		return ShardInfo{}, err
	}
	defer rc.Close()
	return m.Seal(ctx, SealRequest{
		ShardID: id, ModelRef: req.Ref, ShardIndex: i, ShardCount: len(req.Files), Device: dev,
		Size: f.Size, Data: rc, Format: f.Format, Tensors: f.Tensors, TensorsHeader: f.TensorsHeader, Check: f.Check, model: req.ID,
	})
}

// recordModel records model_sealed; a fail-closed log that cannot record
// it undoes the model.
func (m *Manager) recordModel(ctx context.Context, req ModelRequest, infos []ShardInfo) error {
	var shards, files strings.Builder
	for i, s := range infos {
		if i > 0 {
			shards.WriteByte(',')
			files.WriteByte(',')
		}
		shards.WriteString(s.Seal.ShardID + "=" + s.Seal.Digest.String())
		files.WriteString(strconv.QuoteToGraphic(req.Files[i].Name))
	}
	p := req.Provenance
	return m.record(ctx, audit.Event{Type: EventModelSealed, Severity: audit.SeverityHigh, Fields: []audit.Field{
		audit.String("model_id", req.ID),
		audit.String("model_ref", req.Ref),
		audit.Int("shard_count", int64(len(infos))),
		audit.String("shards", shards.String()),
		audit.String("files", files.String()),
		audit.String("provenance", provenanceMethod(p)),
		audit.Bool("provenance_verified", p.Verified),
		audit.String("key_fingerprint", p.KeyFingerprint),
		audit.String("statement_digest", p.StatementDigest),
		audit.String("signed_name", p.SignedName),
	}})
}

// rejectModel releases the shards of a failed model, records and narrates
// the failure, and returns it.
func (m *Manager) rejectModel(ctx context.Context, start time.Time, req ModelRequest, sealed []string, failed error) error {
	ctx = context.WithoutCancel(ctx)
	var cleanup error
	for _, id := range sealed {
		// The staged shards were never listed: no one can hold them.
		m.mu.Lock()
		s := m.staged[id]
		delete(m.staged, id)
		delete(m.pending, id)
		m.mu.Unlock()
		if s == nil {
			continue
		}
		if err := m.freeBuffer(ctx, s.dev, id, s.buf, s.seal.Size, "model_rejected", true, start); err != nil {
			cleanup = errors.Join(cleanup, err)
		}
	}
	file := ""
	var fe *ModelFileError
	var me *provenance.MismatchError
	switch {
	case errors.As(failed, &fe):
		file = fe.File
	case errors.As(failed, &me):
		file = me.File
	}
	integrity := provenance.IsIntegrity(failed)
	sev, level := audit.SeverityHigh, slog.LevelWarn
	if integrity {
		sev, level = audit.SeverityCritical, slog.LevelError
	}
	reason := rejectReason(failed)
	if rerr := m.record(ctx, audit.Event{Type: EventModelRejected, Severity: sev, Fields: []audit.Field{
		audit.String("model_id", req.ID),
		audit.String("file", file),
		audit.String("reason", reason),
		audit.String("error", failed.Error()),
		audit.Int("shards_released", int64(len(sealed))),
		audit.String("provenance", provenanceMethod(req.Provenance)),
	}}); rerr != nil {
		cleanup = errors.Join(cleanup, rerr)
	}
	m.narrate(ctx, level, ActionModelReject, req.ID, noDevice, time.Since(start), reason, failed, func() string {
		where := ""
		if file != "" {
			where = " at file " + quoteName(file)
		}
		return fmt.Sprintf("Rejected model '%s'%s (%s); released %d sealed shards, nothing stays resident", req.ID, where, strings.ReplaceAll(reason, "_", " "), len(sealed))
	}, narration.Str("file", file), narration.Int("shards_released", int64(len(sealed))))
	if cleanup != nil {
		return errors.Join(failed, cleanup)
	}
	return failed
}

// RejectModel records and narrates a model refused before any of its
// files was sealed (a published digest of a non-weight file that does not
// match, a signature that does not cover the files), as SealModel records
// its own failures, and returns err.
func (m *Manager) RejectModel(ctx context.Context, req ModelRequest, err error) error {
	return m.rejectModel(ctx, time.Now(), req, nil, err)
}

// rejectReason classifies a model failure for its audit record.
func rejectReason(err error) string {
	var se *provenance.SignatureError
	var me *provenance.MismatchError
	var ne *provenance.NameError
	switch {
	case errors.As(err, &me):
		return "digest_mismatch"
	case errors.As(err, &se):
		return "signature_invalid"
	case errors.As(err, &ne):
		return "signature_for_another_model"
	case errors.Is(err, provenance.ErrNotCovered):
		return "not_covered"
	case errors.Is(err, ErrInsufficientVRAM):
		return "insufficient_vram"
	case errors.Is(err, ErrPolicy):
		return "policy_violation"
	case errors.Is(err, ErrInvalidInput), errors.Is(err, tensor.ErrMalformed), errors.Is(err, provenance.ErrMalformed):
		return "invalid_input"
	case errors.Is(err, ErrAuditFailed):
		return "audit_failed"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	default:
		return "error"
	}
}

func provenanceMethod(p provenance.Provenance) string {
	if p.Method == "" {
		return "none"
	}
	return p.Method
}

func provenanceText(p provenance.Provenance) string {
	switch {
	case p.Method == "":
		return "none checked"
	case p.KeyFingerprint != "":
		return fmt.Sprintf("%s verified, key %.16s", p.Method, p.KeyFingerprint)
	default:
		return p.Method + " verified"
	}
}

func gpuList(devs []int) string {
	ds := slices.Compact(slices.Sorted(slices.Values(devs)))
	list := make([]string, len(ds))
	for i, d := range ds {
		list[i] = strconv.Itoa(d)
	}
	if len(list) == 1 {
		return "GPU " + list[0]
	}
	return "GPUs " + strings.Join(list, ", ")
}

// Model returns a resident model.
func (m *Manager) Model(id string) (ModelInfo, error) {
	if err := ValidateShardID(id); err != nil {
		return ModelInfo{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	ms, ok := m.models[id]
	if !ok || ms.pending {
		return ModelInfo{}, fmt.Errorf("%w: model %q", ErrNotFound, id)
	}
	mi := m.modelInfo(id, ms)
	if len(mi.Shards) == 0 {
		delete(m.models, id)
		return ModelInfo{}, fmt.Errorf("%w: model %q", ErrNotFound, id)
	}
	return mi, nil
}

// modelInfo builds a model's description; the caller holds m.mu.
func (m *Manager) modelInfo(id string, ms *modelState) ModelInfo {
	mi := ModelInfo{ID: id, Ref: ms.ref, Provenance: ms.prov, SealedAt: ms.sealedAt, Files: ms.files}
	for _, sid := range ms.shards {
		if s, ok := m.shards[sid]; ok && s.model == id {
			mi.Shards = append(mi.Shards, s.status())
		}
	}
	return mi
}

// Models returns every resident model, sorted by ID.
func (m *Manager) Models() []ModelInfo {
	m.mu.Lock()
	out := make([]ModelInfo, 0, len(m.models))
	for id, ms := range m.models {
		if ms.pending {
			continue
		}
		mi := m.modelInfo(id, ms)
		if len(mi.Shards) == 0 {
			delete(m.models, id)
			continue
		}
		out = append(out, mi)
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// VerifyModel verifies every shard of a model in index order, as
// [Manager.Verify] does one. It stops at the first failure.
func (m *Manager) VerifyModel(ctx context.Context, id string, mode VerifyMode) ([]VerifyResult, error) {
	mi, err := m.Model(id)
	if err != nil {
		return nil, err
	}
	out := make([]VerifyResult, 0, len(mi.Shards))
	for _, s := range mi.Shards {
		res, err := m.Verify(ctx, s.Seal.ShardID, mode)
		if err != nil {
			return out, err
		}
		out = append(out, res)
	}
	return out, nil
}

// ReleaseModel releases every shard of a model, or none: when consumers
// hold any of them it returns the first such shard's *[InUseError],
// unless force revokes them as [Manager.ReleaseForce] does.
func (m *Manager) ReleaseModel(ctx context.Context, id string, force bool) error {
	start := time.Now()
	if err := ValidateShardID(id); err != nil {
		return m.rejected(ctx, start, "model release", "", err)
	}
	m.mu.Lock()
	ms, ok := m.models[id]
	if !ok || ms.pending {
		m.mu.Unlock()
		return fmt.Errorf("%w: model %q", ErrNotFound, id)
	}
	var (
		shards  []*shard
		holders [][]LeaseInfo
	)
	for _, sid := range ms.shards {
		s, ok := m.shards[sid]
		if !ok || s.model != id {
			continue
		}
		h := s.leaseInfos()
		if len(h) > 0 && !force {
			m.mu.Unlock()
			return &InUseError{ShardID: sid, Holders: h}
		}
		shards, holders = append(shards, s), append(holders, h)
	}
	for i, s := range shards {
		m.unlist(s, holders[i])
	}
	delete(m.models, id)
	m.mu.Unlock()
	if len(shards) == 0 {
		return fmt.Errorf("%w: model %q", ErrNotFound, id)
	}
	var first error
	for i, s := range shards {
		if err := m.finishRelease(ctx, s, holders[i], "released", start); err != nil && first == nil {
			first = err
		}
	}
	return first
}
