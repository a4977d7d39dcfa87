package vram

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/narration"
	"github.com/vramseal/vramseal/seal"
)

// VerifyMode chooses how much of a shard [Manager.Verify] checks.
type VerifyMode struct {
	// Samples is the number of chunks to check, chosen unpredictably.
	// Zero means every chunk (a full verification).
	Samples int
}

// Full checks every chunk.
var Full = VerifyMode{}

// Sampled checks k unpredictable chunks (all of them when the shard has
// fewer than k).
func Sampled(k int) VerifyMode { return VerifyMode{Samples: k} }

// String returns "full" or "sampled".
func (v VerifyMode) String() string {
	if v.Samples == 0 {
		return "full"
	}
	return "sampled"
}

// VerifyResult reports a successful verification.
type VerifyResult struct {
	ShardID string
	Mode    string // "full" or "sampled"
	// ChunksChecked is the number of distinct chunks hashed on the device.
	ChunksChecked int64
	Chunks        int64
	// DetectionProbability is the chance that this verification would
	// have caught a single corrupted chunk: 1 for full, k/n for sampled.
	DetectionProbability float64
	Duration             time.Duration
}

// Verify re-verifies a resident shard from device memory: it checks the
// seal's signature and the sealed leaves against the root, then recomputes
// the leaf hashes of the chosen chunks from device memory and compares
// them. A failure returns an *[IntegrityError] naming the changed chunks
// as byte ranges and moves the manager to Stopped; while stopped every
// Verify (the execute gate) returns a *[StoppedError].
func (m *Manager) Verify(ctx context.Context, id string, mode VerifyMode) (VerifyResult, error) {
	start := time.Now()
	if err := ValidateShardID(id); err != nil {
		return VerifyResult{}, m.rejected(ctx, start, "verify", "", err)
	}
	if mode.Samples < 0 || mode.Samples > 1<<20 {
		return VerifyResult{}, m.rejected(ctx, start, "verify", id, invalid("sample count %d outside 0..%d", mode.Samples, 1<<20))
	}
	if err := m.gate(); err != nil {
		return VerifyResult{}, err
	}
	m.mu.Lock()
	s, ok := m.shards[id]
	var q string
	if ok {
		q = s.quarantined
		if q == "" {
			s.busy.Add(1)
			s.verifying++
		}
	}
	m.mu.Unlock()
	if !ok {
		return VerifyResult{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if q != "" {
		return VerifyResult{}, &QuarantinedError{ShardID: id, Reason: q}
	}
	defer s.busy.Done()
	defer func() {
		m.mu.Lock()
		s.verifying--
		m.mu.Unlock()
	}()

	res, err := m.verifyShard(ctx, s, mode)
	if err != nil {
		var ie *IntegrityError
		if errors.As(err, &ie) {
			m.verifyFailed(ctx, s, ie, mode.String(), time.Since(start))
		}
		return VerifyResult{}, err
	}
	res.Duration = time.Since(start)
	// The gate is checked again: a failure elsewhere that stopped the
	// worker while this shard was hashed closes the gate for this caller
	// too.
	if err := m.gate(); err != nil {
		return VerifyResult{}, err
	}
	if err := m.record(ctx, audit.Event{Type: EventVerified, Severity: audit.SeverityHigh, Fields: []audit.Field{
		audit.String("shard_id", id),
		audit.String("mode", res.Mode),
		audit.Int("chunks_checked", res.ChunksChecked),
		audit.Int("duration_us", res.Duration.Microseconds()),
	}}); err != nil {
		// Fail-closed: an execute gate whose pass cannot be recorded does
		// not pass.
		return VerifyResult{}, err
	}
	m.verified(s, res.Mode)
	m.narrate(ctx, slog.LevelInfo, ActionVerify, id, s.dev.info, res.Duration, "", nil, func() string {
		return fmt.Sprintf("Verified shard '%s' on GPU %d: %d of %d chunks match (%s)", short(id), s.dev.index, res.ChunksChecked, res.Chunks, narration.FormatDuration(res.Duration))
	}, narration.Str("mode", res.Mode), narration.Int("chunks_checked", res.ChunksChecked))
	return res, nil
}

// verifyFailed stops the worker and records the failure. The stop comes
// first and does not depend on the audit log: a failed verification stops
// the worker even when nothing else works. Recording ignores the caller's
// cancellation and deadline, so a full audit queue delays the record but
// never drops it. If the audit log itself has failed, the narration event
// still carries the reason, the changed chunks and the sealed root, the
// audit failure is narrated and counted, and the integrity error (not the
// audit error) is returned: the operator learns of the corruption either
// way.
//
// The caller holds s against release. A mismatch found by sampling or
// scrubbing is located in full (see locateAll) after the stop, so that no
// execute gate passes while the shard is re-hashed.
func (m *Manager) verifyFailed(ctx context.Context, s *shard, ie *IntegrityError, mode string, dur time.Duration) {
	m.quarantine(s, ie.Reason)
	locateTensors(s, ie)
	m.stop(ie.Error())
	if ie.Reason == ReasonDigestMismatch && ie.ActualRoot == (seal.Hash{}) {
		locateAll(ctx, s, ie)
		locateTensors(s, ie)
	}
	ctx = context.WithoutCancel(ctx)
	fields := []audit.Field{
		audit.String("shard_id", ie.ShardID),
		audit.String("reason", ie.Reason),
		audit.String("mode", mode),
		audit.String("failed_chunks", rangesField(ie.Changed)),
		audit.Digest("expected_root", ie.ExpectedRoot),
	}
	if len(ie.Tensors) > 0 {
		fields = append(fields, audit.String("tensors", ie.TensorSummary()))
	}
	if ie.ActualRoot != (seal.Hash{}) {
		fields = append(fields, audit.Digest("actual_root", ie.ActualRoot))
	}
	fields = append(fields,
		audit.Int("gpu_device", int64(ie.Device)),
		audit.String("action_taken", ActionWorkerStopped),
	)
	// Attached consumers hear of it before anything waits on the audit log.
	m.notify(StopNotice{ShardID: ie.ShardID, Reason: StopIntegrity, Message: ie.Error(), Changed: ie.Changed})
	_ = m.record(ctx, audit.Event{Type: EventVerificationFailed, Severity: audit.SeverityCritical, Fields: fields})
	m.narrate(ctx, slog.LevelError, ActionVerifyFailed, ie.ShardID, s.dev.info, dur, "integrity", ie, func() string {
		what := strings.ReplaceAll(ie.Reason, "_", " ")
		switch len(ie.Changed) {
		case 0:
		case 1:
			what = FormatRanges(ie.Changed, 1) + " changed"
		default:
			what = fmt.Sprintf("%d ranges changed", len(ie.Changed))
		}
		if len(ie.Tensors) > 0 {
			what += ", in " + ie.TensorSummary()
		}
		return fmt.Sprintf("CRITICAL: shard '%s' failed verification on GPU %d: %s", short(ie.ShardID), ie.Device, what)
	}, narration.Str("reason", ie.Reason), narration.Str("failed_chunks", rangesField(ie.Changed)), narration.Str("tensors", ie.TensorSummary()),
		narration.Str("expected_root", ie.ExpectedRoot.String()), narration.Str("action_taken", ActionWorkerStopped))
}

// locateTensors names in ie what its changed chunks touch in s's tensor
// map, at most [MaxTensorHits] entries in all.
func locateTensors(s *shard, ie *IntegrityError) {
	ie.Tensors, ie.MoreTensors = nil, 0
	if s.tensors == nil {
		return
	}
	for _, r := range ie.Changed {
		hits, more := s.tensors.Lookup(r.Offset, r.Length, MaxTensorHits+1-len(ie.Tensors))
		for _, h := range hits {
			if len(ie.Tensors) == MaxTensorHits {
				ie.MoreTensors++
				continue
			}
			ie.Tensors = append(ie.Tensors, h.String())
		}
		ie.MoreTensors += more
	}
}

// quarantine marks s as failed, keeping the first reason: it refuses
// verify and attach until it is released.
func (m *Manager) quarantine(s *shard, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.quarantined == "" {
		s.quarantined = reason
	}
}

// failure returns an *IntegrityError for s.
func failure(s *shard, reason string, err error) *IntegrityError {
	return &IntegrityError{ShardID: s.seal.ShardID, Device: s.dev.index, Reason: reason, ExpectedRoot: s.seal.Root, Err: err}
}

// checkSealed checks what every verification of s relies on before it
// reads the device: the seal's signature, and a stored leaf tree (once
// built) with one leaf per chunk. It returns an *IntegrityError, or the
// context's error if ctx ends while the tree is being built.
func (m *Manager) checkSealed(ctx context.Context, s *shard) error {
	if err := m.key.Verify(&s.seal); err != nil {
		return failure(s, ReasonSignatureInvalid, err)
	}
	select {
	case <-s.treeReady:
	case <-ctx.Done():
		return fmt.Errorf("vram: verify %q: %w", s.seal.ShardID, ctx.Err())
	}
	if s.treeErr != nil {
		return failure(s, ReasonNotSealed, s.treeErr)
	}
	if n, want := s.tree.n, gpu.ChunkCount(s.seal.Size, s.seal.ChunkSize); n != want {
		return failure(s, ReasonNotSealed, fmt.Errorf("vram: %d stored leaf hashes for %d chunks", n, want))
	}
	return nil
}

// errLeavesAltered: the stored leaf hashes do not match the signed root.
var errLeavesAltered = errors.New("vram: stored leaf hashes do not match the sealed root")

// allChunks returns the indexes 0..n-1.
func allChunks(n int64) []int64 {
	chunks := make([]int64, n)
	for i := range chunks {
		chunks[i] = int64(i)
	}
	return chunks
}

func (m *Manager) verifyShard(ctx context.Context, s *shard, mode VerifyMode) (VerifyResult, error) {
	if err := m.checkSealed(ctx, s); err != nil {
		return VerifyResult{}, err
	}
	n := s.tree.n
	var chunks []int64
	full := mode.Samples == 0 || int64(mode.Samples) >= n
	if full {
		chunks = allChunks(n)
	} else {
		var err error
		chunks, err = sampleChunks(m.opts.Rand, n, mode.Samples)
		if err != nil {
			return VerifyResult{}, fmt.Errorf("vram: choose chunks: %w", err)
		}
	}
	// The device hashes the chosen chunks while the host proves their
	// sealed leaves (which live in host memory) against the signed root:
	// all of them at once in full mode, one multiproof of the sampled
	// chunks otherwise. Starting the hashes first hides the time the
	// device, or the other cores of the simulator, take to start. Nothing
	// is concluded from them unless the proof holds.
	got := make([][gpu.HashSize]byte, len(chunks))
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hashed := make(chan error, 1)
	go func() { hashed <- s.dev.dev.LeafHashes(hctx, s.buf, s.seal.ChunkSize, chunks, got) }()
	var proof error
	if full {
		if seal.Root(s.tree.leaves()) != s.seal.Root {
			proof = errLeavesAltered
		}
	} else if err := s.tree.proveAll(chunks, s.seal.Root); err != nil {
		proof = fmt.Errorf("vram: stored leaf hashes of the sampled chunks are not in the sealed tree: %w", err)
	}
	if proof != nil {
		cancel() // the hashes can no longer prove anything
	}
	herr := <-hashed // the caller holds s only until it returns
	if proof != nil {
		return VerifyResult{}, failure(s, ReasonNotSealed, proof)
	}
	if err := herr; err != nil {
		if ctx.Err() != nil {
			// The caller gave up: nothing was proven either way.
			return VerifyResult{}, fmt.Errorf("vram: verify %q: %w", s.seal.ShardID, err)
		}
		return VerifyResult{}, failure(s, ReasonDeviceError, err)
	}
	var changed []int64
	for j, c := range chunks {
		if seal.Hash(got[j]) != s.tree.leaf(c) {
			changed = append(changed, c)
		}
	}
	if len(changed) > 0 {
		ie := failure(s, ReasonDigestMismatch, nil)
		ie.Changed = chunkRanges(changed, s.seal.Size, s.seal.ChunkSize)
		if full {
			ie.ActualRoot = rootOf(got)
		}
		return VerifyResult{}, ie
	}
	res := VerifyResult{ShardID: s.seal.ShardID, Mode: mode.String(), ChunksChecked: int64(len(chunks)), Chunks: n}
	if full {
		res.Mode = "full"
		res.DetectionProbability = 1
	} else {
		res.DetectionProbability = float64(len(chunks)) / float64(n)
	}
	return res, nil
}

// rootOf is the tree root of leaf hashes read from the device.
func rootOf(got [][gpu.HashSize]byte) seal.Hash {
	leaves := make([]seal.Hash, len(got))
	for j := range got {
		leaves[j] = seal.Hash(got[j])
	}
	return seal.Root(leaves)
}

// locateAll follows a failed sampled verification with one full pass over
// the shard, so the failure names every changed chunk and the actual root,
// not only the sampled chunks that caught it; the chunks the sample saw
// stay in the report even if they changed back meanwhile. The worker is
// already stopped; this pass only makes the report complete. If the stored
// leaves no longer match the sealed root, or the device or the caller's
// context fails, the sampled findings stand and ActualRoot stays zero
// (unknown).
func locateAll(ctx context.Context, s *shard, ie *IntegrityError) {
	leaves := s.tree.leaves()
	if seal.Root(leaves) != s.seal.Root {
		return
	}
	n := int64(len(leaves))
	got := make([][gpu.HashSize]byte, n)
	if err := s.dev.dev.LeafHashes(ctx, s.buf, s.seal.ChunkSize, allChunks(n), got); err != nil {
		return
	}
	seen := make(map[int64]bool)
	for _, r := range ie.Changed {
		for c := r.FirstChunk; c <= r.LastChunk; c++ {
			seen[c] = true
		}
	}
	var changed []int64
	for i := range got {
		if seal.Hash(got[i]) != leaves[i] || seen[int64(i)] {
			changed = append(changed, int64(i))
		}
	}
	ie.Changed = chunkRanges(changed, s.seal.Size, s.seal.ChunkSize)
	ie.ActualRoot = rootOf(got)
}

// sampleChunks picks k distinct chunk indexes out of n, uniformly, from r
// (a partial Fisher-Yates shuffle over a sparse map, so memory is O(k)).
func sampleChunks(r io.Reader, n int64, k int) ([]int64, error) {
	swapped := make(map[int64]int64, k)
	out := make([]int64, k)
	// One read for all k draws: a read of the system's random source
	// costs microseconds, the draws themselves nothing. A rejected draw
	// (probability below 2^-32 for any shard) reads 8 more bytes.
	pool := make([]byte, 8*k)
	if _, err := io.ReadFull(r, pool); err != nil {
		return nil, err
	}
	for i := int64(0); i < int64(k); i++ {
		span := uint64(n - i)
		// Rejection sampling removes modulo bias.
		limit := math.MaxUint64 - math.MaxUint64%span
		v := binary.LittleEndian.Uint64(pool[8*i:])
		for v >= limit {
			var b [8]byte
			if _, err := io.ReadFull(r, b[:]); err != nil {
				return nil, err
			}
			v = binary.LittleEndian.Uint64(b[:])
		}
		j := i + int64(v%span)
		vj, ok := swapped[j]
		if !ok {
			vj = j
		}
		vi, ok := swapped[i]
		if !ok {
			vi = i
		}
		swapped[j] = vi
		out[i] = vj
	}
	return out, nil
}

// chunkRanges merges sorted-or-not changed chunk indexes into runs.
func chunkRanges(changed []int64, size, chunkSize int64) []ChunkRange {
	slices.Sort(changed)
	var out []ChunkRange
	for _, c := range changed {
		off := c * chunkSize
		end := min(off+chunkSize, size)
		if k := len(out); k > 0 && out[k-1].LastChunk+1 == c {
			out[k-1].LastChunk = c
			out[k-1].Length = end - out[k-1].Offset
			continue
		}
		out = append(out, ChunkRange{FirstChunk: c, LastChunk: c, Offset: off, Length: end - off})
	}
	return out
}
