package vram

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/narration"
	"github.com/vramseal/vramseal/seal"
	"github.com/vramseal/vramseal/tensor"
)

// SealRequest describes a shard to seal.
type SealRequest struct {
	// ShardID names the shard; empty means a generated "shard-" + 32 hex.
	ShardID string
	// ModelRef names the model the shard belongs to (for example
	// "meta-llama/Llama-3.1-8B@main"); required, printable UTF-8, <= 512 bytes.
	ModelRef string
	// ShardIndex and ShardCount place the shard in a tensor-parallel set.
	// Zero ShardCount means a single shard (index 0 of 1).
	ShardIndex int
	ShardCount int
	// Device is the GPU index to hold the shard.
	Device int
	// Size is the exact number of bytes Data yields. It must be known up
	// front so capacity can be reserved before any byte is copied.
	Size int64
	// Data yields the shard bytes. Reading stops after Size bytes; fewer
	// bytes, or more, is an error.
	Data io.Reader
	// Format says whether the shard has a tensor map: [FormatAuto] (the
	// zero value: kept when the bytes parse as safetensors),
	// [FormatSafetensors] (required, else the seal is refused) or
	// [FormatRaw] (none), or [FormatGGUF] (the map is Tensors).
	Format string
	// Tensors is the tensor map of a GGUF shard, parsed by the caller from
	// the same file ([tensor.ParseGGUF]); required with [FormatGGUF] and
	// refused otherwise. Its Size must equal Size.
	Tensors *tensor.Map
	// TensorsHeader is the SHA-256 of the bytes [0, Tensors.DataStart)
	// the map was parsed from (FormatGGUF only): a stream whose header
	// differs, a file changed after it was parsed, is refused, so the map
	// always describes the sealed bytes.
	TensorsHeader seal.Hash
	// Check, when set, is given the flat SHA-256 digest of the bytes that
	// were copied, before the seal is signed: the digest a publisher
	// signed is checked against the very bytes that became resident. An
	// error abandons the seal (the memory is freed) and is returned as is.
	Check func(digest seal.Hash) error

	// model is the model the shard belongs to (set by [Manager.SealModel]).
	model string
}

// Seal copies a shard into device memory and seals it. It validates the
// request, reserves capacity and allocates atomically, streams the bytes
// chunk by chunk while hashing the flat digest and the leaves on the host
// (host memory stays bounded), checks the VRAM-only policy on the
// allocation, and signs the seal. On any error after allocation the memory
// is freed and capacity restored.
func (m *Manager) Seal(ctx context.Context, req SealRequest) (ShardInfo, error) {
	start := time.Now()
	if err := m.gate(); err != nil {
		return ShardInfo{}, err
	}
	if err := m.validateSeal(&req); err != nil {
		if errors.Is(err, ErrInvalidInput) {
			target := req.ShardID
			if ValidateShardID(target) != nil {
				target = ""
			}
			return ShardInfo{}, m.rejected(ctx, start, "seal", target, err)
		}
		return ShardInfo{}, err
	}
	id := req.ShardID
	d := m.devices[req.Device]

	// Claim the ID so that concurrent seals of the same ID conflict.
	m.mu.Lock()
	_, resident := m.shards[id]
	_, sealing := m.pending[id]
	if resident || sealing {
		m.mu.Unlock()
		return ShardInfo{}, m.rejected(ctx, start, "seal", id, fmt.Errorf("%w: %q", ErrExists, id))
	}
	m.pending[id] = struct{}{}
	m.mu.Unlock()
	committed := false
	defer func() {
		// A model's shard keeps its ID claimed, staged, until the model
		// is published or rejected as a whole.
		if req.model == "" || !committed {
			m.mu.Lock()
			delete(m.pending, id)
			m.mu.Unlock()
		}
	}()

	buf, err := m.allocate(ctx, d, id, req.Size)
	if err != nil {
		return ShardInfo{}, err
	}
	defer func() {
		if !committed {
			// The seal failed after allocating: free the memory, and record
			// it, so the audit log's allocations and frees still balance.
			_ = m.freeBuffer(context.WithoutCancel(ctx), d, id, buf, req.Size, "seal_aborted", false, time.Now())
		}
	}()

	t0 := time.Now()
	capture, prefix := req.Format, int64(0)
	if capture == FormatGGUF {
		capture, prefix = FormatRaw, req.Tensors.DataStart
	}
	digest, leaves, tm, header, err := m.copyAndHash(ctx, d, buf, req.Data, req.Size, capture, prefix)
	if err != nil {
		return ShardInfo{}, err
	}
	if req.Format == FormatGGUF {
		if header != req.TensorsHeader {
			return ShardInfo{}, invalid("the GGUF header changed after its tensor table was read (the file changed while it was loaded)")
		}
		tm = req.Tensors
	}
	if req.Check != nil {
		if err := req.Check(digest); err != nil {
			return ShardInfo{}, err
		}
	}
	// Nothing writes sealed memory: the allocation becomes read-only,
	// for vramseal's own mapping too, before the seal is signed.
	if err := m.protect(ctx, d, id, buf); err != nil {
		return ShardInfo{}, err
	}
	m.narrate(ctx, slog.LevelDebug, ActionDigest, id, d.info, time.Since(t0), "", nil, func() string {
		return fmt.Sprintf("Computed SHA-256 digest and %d chunk hashes of shard '%s' (%s)", len(leaves), short(id), narration.FormatBytes(req.Size))
	}, narration.Str("digest", digest.String()), narration.Int("chunks", int64(len(leaves))))
	// The stored tree for sampled verification is built in the background,
	// overlapping the root, the signature and the audit fsync below.
	sh := &shard{buf: buf, dev: d, treeReady: make(chan struct{}), tensors: tm, model: req.model}
	go func() {
		sh.tree, sh.treeErr = newLeafTree(leaves)
		close(sh.treeReady)
	}()
	s := seal.Seal{
		ShardID:     id,
		ModelRef:    req.ModelRef,
		ShardIndex:  req.ShardIndex,
		ShardCount:  req.ShardCount,
		DeviceIndex: d.index,
		DeviceUUID:  d.info.UUID,
		Size:        req.Size,
		ChunkSize:   m.opts.ChunkSize,
		Digest:      digest,
		Root:        seal.Root(leaves),
		SealedAt:    m.clock().UTC(),
		WorkerID:    m.opts.WorkerID,
	}
	t0 = time.Now()
	if err := m.key.Sign(&s); err != nil {
		return ShardInfo{}, fmt.Errorf("vram: sign shard %q: %w", id, err)
	}
	m.narrate(ctx, slog.LevelDebug, ActionSign, id, d.info, time.Since(t0), "", nil, func() string {
		return fmt.Sprintf("Signed seal of shard '%s' with key %s", short(id), s.KeyID)
	}, narration.Str("key_id", s.KeyID))
	// The seal is recorded durably before the shard becomes usable; a
	// fail-closed log that cannot record it undoes the seal.
	if err := m.record(ctx, audit.Event{Type: EventSealed, Severity: audit.SeverityCritical, Fields: []audit.Field{
		audit.String("shard_id", id),
		audit.String("model_ref", s.ModelRef),
		audit.Int("gpu_device", int64(d.index)),
		audit.String("gpu_uuid", s.DeviceUUID),
		audit.Bytes("vram_bytes", s.Size),
		audit.Digest("digest", s.Digest),
		audit.Digest("tree_root", s.Root),
		audit.Bytes("chunk_size", s.ChunkSize),
		audit.String("key_id", s.KeyID),
		audit.String("worker_id", s.WorkerID),
	}}); err != nil {
		return ShardInfo{}, err
	}
	sh.seal = s
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ShardInfo{}, ErrClosed
	}
	if req.model != "" {
		// Not listed, verifiable, attachable or releasable until
		// SealModel publishes the whole model.
		m.staged[id] = sh
	} else {
		m.shards[id] = sh
	}
	d.reserved -= req.Size
	d.used += req.Size
	committed = true
	m.mu.Unlock()
	m.narrate(ctx, slog.LevelInfo, ActionSeal, id, d.info, time.Since(start), "", nil, func() string {
		return fmt.Sprintf("Sealed model shard '%s' in %s VRAM on GPU %d (%s)", short(id), narration.FormatBytes(s.Size), d.index, narration.FormatDuration(time.Since(start)))
	}, narration.Str("model_ref", s.ModelRef), narration.Bytes("vram_bytes", s.Size), narration.Str("digest", s.Digest.String()))
	return sh.info(), nil
}

// SealFile seals the regular file at path; req.Size and req.Data are set
// from the file. An empty req.ModelRef defaults to the file's base name,
// and a file named *.safetensors must be one ([FormatSafetensors]) unless
// req.Format says otherwise.
func (m *Manager) SealFile(ctx context.Context, path string, req SealRequest) (ShardInfo, error) {
	// O_NONBLOCK: opening a FIFO with no writer would block forever; the
	// Stat below refuses it (and any other non-regular file) instead.
	// Regular files ignore the flag.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return ShardInfo{}, fmt.Errorf("vram: open model file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ShardInfo{}, fmt.Errorf("vram: stat model file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return ShardInfo{}, invalid("%s is not a regular file", st.Name())
	}
	if req.ModelRef == "" {
		req.ModelRef = st.Name()
	}
	if req.Format == FormatAuto && strings.HasSuffix(st.Name(), ".safetensors") {
		req.Format = FormatSafetensors
	}
	req.Size = st.Size()
	req.Data = f
	return m.Seal(ctx, req)
}

func (m *Manager) validateSeal(req *SealRequest) error {
	if req.ShardID == "" {
		id, err := NewShardID(m.opts.Rand)
		if err != nil {
			return fmt.Errorf("vram: generate shard ID: %w", err)
		}
		req.ShardID = id
	} else if err := ValidateShardID(req.ShardID); err != nil {
		return err
	}
	if err := validateText("model ref", req.ModelRef, 512, true); err != nil {
		return err
	}
	if req.ShardCount == 0 && req.ShardIndex == 0 {
		req.ShardCount = 1
	}
	if req.ShardCount < 1 || req.ShardCount > 1<<16 || req.ShardIndex < 0 || req.ShardIndex >= req.ShardCount {
		return invalid("shard index %d of %d is out of range", req.ShardIndex, req.ShardCount)
	}
	if _, err := m.device(req.Device); err != nil {
		return err
	}
	if req.Size <= 0 {
		return invalid("shard size %d bytes: must be positive", req.Size)
	}
	if req.Size > m.opts.MaxShardBytes {
		return invalid("shard size %d bytes exceeds the maximum of %d bytes", req.Size, m.opts.MaxShardBytes)
	}
	if req.Data == nil {
		return invalid("no shard data")
	}
	switch req.Format {
	case FormatAuto, FormatSafetensors, FormatRaw:
		if req.Tensors != nil {
			return invalid("a tensor map is given only with format %q", FormatGGUF)
		}
	case FormatGGUF:
		if req.Tensors == nil || req.Tensors.Format != FormatGGUF || req.Tensors.Size != req.Size {
			return invalid("format %q needs the file's GGUF tensor map, of the shard's size", FormatGGUF)
		}
	default:
		return invalid("format %q: want %q, %q, %q or empty", req.Format, FormatSafetensors, FormatGGUF, FormatRaw)
	}
	return nil
}

// allocate checks capacity and allocates under the device's allocation
// lock, then checks the VRAM-only policy on the allocation. Success and
// failure are audited and narrated.
func (m *Manager) allocate(ctx context.Context, d *deviceState, id string, size int64) (gpu.Buffer, error) {
	start := time.Now()
	d.allocMu.Lock()
	defer d.allocMu.Unlock()
	info, err := d.dev.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("vram: GPU %d: read free memory: %w", d.index, err)
	}
	if err := checkDevice(d.index, info); err != nil {
		return nil, m.violation(ctx, start, id, err, ActionWorkerStopped)
	}
	if err := m.checkEnv(); err != nil {
		return nil, m.violation(ctx, start, id, err, ActionWorkerStopped)
	}
	avail := max(clampInt64(info.FreeBytes)-m.opts.Headroom, 0)
	if size > avail {
		return nil, m.allocationFailed(ctx, start, d, id, size, avail, "insufficient_vram",
			&CapacityError{Device: d.index, Requested: size, Available: avail, Headroom: m.opts.Headroom,
				Capacity: max(clampInt64(info.TotalBytes)-m.opts.Headroom, 0)})
	}
	buf, err := d.dev.Alloc(ctx, size)
	if err != nil {
		var refusal *gpu.PolicyRefusal
		if errors.As(err, &refusal) {
			// The backend checked the policy itself and freed the memory.
			return nil, m.violation(ctx, start, id, refusedAllocation(d.index, d.info.Index, info, refusal, size, err), ActionWorkerStopped)
		}
		if errors.Is(err, gpu.ErrOutOfMemory) {
			return nil, m.allocationFailed(ctx, start, d, id, size, avail, "device_out_of_memory",
				&CapacityError{Device: d.index, Requested: size, Available: avail, Headroom: m.opts.Headroom,
					Capacity: max(clampInt64(info.TotalBytes)-m.opts.Headroom, 0)})
		}
		return nil, m.allocationFailed(ctx, start, d, id, size, avail, "device_error",
			fmt.Errorf("vram: allocate %d bytes on GPU %d: %w", size, d.index, err))
	}
	facts, err := d.dev.PointerFacts(ctx, buf)
	var after gpu.Info
	if err == nil {
		after, err = d.dev.Info(ctx)
	}
	if err == nil {
		if err = checkAllocation(d.index, d.info.Index, facts, size, info.FreeBytes, after.FreeBytes); err != nil {
			err = m.violation(ctx, start, id, err, ActionWorkerStopped)
		}
	}
	if err == nil {
		m.mu.Lock()
		d.reserved += size
		used := d.used + d.reserved
		m.mu.Unlock()
		err = m.record(ctx, audit.Event{Type: EventAllocated, Severity: audit.SeverityMedium, Fields: []audit.Field{
			audit.String("shard_id", id),
			audit.Bytes("requested_bytes", size),
			audit.Bytes("allocated_bytes", size),
			audit.Bytes("available_bytes", avail-size),
			audit.Bytes("used_bytes", used),
			audit.Int("gpu_device", int64(d.index)),
		}})
		if err != nil {
			m.mu.Lock()
			d.reserved -= size
			m.mu.Unlock()
		}
	}
	if err != nil {
		_ = d.dev.Free(context.WithoutCancel(ctx), buf)
		return nil, err
	}
	m.narrate(ctx, slog.LevelInfo, ActionAllocate, id, d.info, time.Since(start), "", nil, func() string {
		return fmt.Sprintf("Allocated %s VRAM on GPU %d for shard '%s' (%s left)", narration.FormatBytes(size), d.index, short(id), narration.FormatBytes(avail-size))
	}, narration.Bytes("requested_bytes", size), narration.Bytes("available_bytes", avail-size))
	return buf, nil
}

// protect makes a shard's allocation read-only and checks that the
// backend's mapping now refuses writes; one that does not is a VRAM-only
// policy violation (writable_after_seal), since consumers would map
// memory that can still change.
func (m *Manager) protect(ctx context.Context, d *deviceState, id string, buf gpu.Buffer) error {
	start := time.Now()
	if err := d.dev.Protect(ctx, buf); err != nil {
		return fmt.Errorf("vram: make shard %q read-only on GPU %d: %w", id, d.index, err)
	}
	facts, err := d.dev.PointerFacts(ctx, buf)
	if err != nil {
		return fmt.Errorf("vram: GPU %d: pointer facts of shard %q after protection: %w", d.index, id, err)
	}
	if !facts.ReadOnly {
		return m.violation(ctx, start, id, &PolicyError{Violation: "writable_after_seal", Device: d.index,
			Details: "the backend reports the sealed allocation still writable after protecting it"}, ActionWorkerStopped)
	}
	return nil
}

// allocationFailed audits and narrates a failed allocation and returns err.
func (m *Manager) allocationFailed(ctx context.Context, start time.Time, d *deviceState, id string, size, avail int64, reason string, err error) error {
	if rerr := m.record(ctx, audit.Event{Type: EventAllocationFailed, Severity: audit.SeverityMedium, Fields: []audit.Field{
		audit.String("shard_id", id),
		audit.Bytes("requested_bytes", size),
		audit.Bytes("available_bytes", avail),
		audit.String("reason", reason),
		audit.Int("gpu_device", int64(d.index)),
	}}); rerr != nil {
		err = errors.Join(err, rerr)
	}
	m.narrate(ctx, slog.LevelWarn, ActionAllocateFailed, id, d.info, time.Since(start), reason, err, func() string {
		return fmt.Sprintf("VRAM allocation failed on GPU %d: requested %s, only %s available", d.index, narration.FormatBytes(size), narration.FormatBytes(avail))
	}, narration.Bytes("requested_bytes", size), narration.Bytes("available_bytes", avail))
	return err
}
