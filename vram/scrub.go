package vram

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync/atomic"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/narration"
	"github.com/vramseal/vramseal/seal"
)

// ActionScrub narrates one completed background scrub pass.
const ActionScrub = "scrub"

// ScrubOptions configures [Manager.Scrub].
type ScrubOptions struct {
	// BytesPerSecond caps the device memory hashed per second, so the
	// scrub never competes with inference for memory bandwidth. Required.
	BytesPerSecond int64
	// BatchBytes is the most hashed in one device call (default 8 MiB,
	// rounded to whole chunks). A shard released mid-pass is let go
	// between batches.
	BatchBytes int64
	// Interval is the pause between passes (default one minute).
	Interval time.Duration
}

// ScrubStats counts the background scrub's work since the manager started.
type ScrubStats struct {
	Passes   uint64    // completed passes over every resident shard
	Bytes    uint64    // device bytes hashed
	Chunks   uint64    // chunks hashed and compared
	Failures uint64    // shards that failed (each stopped the worker)
	LastPass time.Time // end of the last completed pass; zero if none
}

// scrubCounters are the live counters behind [ScrubStats].
type scrubCounters struct {
	passes, bytes, chunks, failures atomic.Uint64
	lastPass                        atomic.Int64 // UnixNano
}

// ScrubStats returns the scrub's counters.
func (m *Manager) ScrubStats() ScrubStats {
	c := &m.scrub
	st := ScrubStats{Passes: c.passes.Load(), Bytes: c.bytes.Load(), Chunks: c.chunks.Load(), Failures: c.failures.Load()}
	if ns := c.lastPass.Load(); ns != 0 {
		st.LastPass = time.Unix(0, ns).UTC()
	}
	return st
}

// Scrub walks every chunk of every resident shard, again and again, at no
// more than opts.BytesPerSecond, comparing the leaf hashes computed from
// device memory with the sealed ones: the background complement of the
// sampled execute gate, which catches corruption in chunks no request
// happened to sample. Each shard's pass first checks the seal's signature
// and the stored leaves against the signed root. A mismatch is a
// verification failure with mode "scrub": the worker stops, the failure is
// audited and narrated with every changed chunk, exactly as for [Manager.Verify].
// Each shard that passes is recorded as seal_verified with mode "scrub".
//
// While the worker is stopped the scrub waits. Scrub returns when ctx is
// done (with ctx's error) or the manager is closed ([ErrClosed]); run it
// in its own goroutine.
func (m *Manager) Scrub(ctx context.Context, opts ScrubOptions) error {
	if opts.BytesPerSecond <= 0 {
		return invalid("scrub rate %d bytes/s: must be positive", opts.BytesPerSecond)
	}
	if opts.BatchBytes <= 0 {
		opts.BatchBytes = 8 << 20
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Minute
	}
	p := &pacer{rate: opts.BytesPerSecond, next: time.Now()}
	for {
		if err := m.scrubWait(ctx, opts.Interval); err != nil {
			return err
		}
		start := time.Now()
		var shards, bytes int64
		failed := false
		for _, id := range m.shardIDs() {
			n, err := m.scrubShard(ctx, id, opts.BatchBytes, p)
			bytes += n
			if err == nil {
				shards++
				continue
			}
			if errors.Is(err, ErrIntegrity) || errors.Is(err, ErrStopped) {
				failed = true
				break // the worker is stopped: start over once reset
			}
			if errors.Is(err, ErrNotFound) {
				continue // released meanwhile
			}
			return err
		}
		if failed {
			continue
		}
		m.scrub.passes.Add(1)
		m.scrub.lastPass.Store(time.Now().UnixNano())
		dur := time.Since(start)
		m.narrate(ctx, slog.LevelInfo, ActionScrub, m.opts.WorkerID, noDevice, dur, "", nil, func() string {
			return fmt.Sprintf("Scrubbed %d shard(s), %s of VRAM: every chunk matches its seal (%s)", shards, narration.FormatBytes(bytes), narration.FormatDuration(dur))
		}, narration.Int("shards", shards), narration.Bytes("scrubbed_bytes", bytes))
		if err := m.sleep(ctx, opts.Interval); err != nil {
			return err
		}
	}
}

// scrubWait returns nil once the worker is running, ctx's error when ctx
// ends first, or ErrClosed.
func (m *Manager) scrubWait(ctx context.Context, poll time.Duration) error {
	for {
		err := m.gate()
		if err == nil || errors.Is(err, ErrClosed) {
			return err
		}
		if err := m.sleep(ctx, min(poll, time.Second)); err != nil {
			return err
		}
	}
}

// shardIDs lists the resident shards in ID order.
func (m *Manager) shardIDs() []string {
	m.mu.Lock()
	ids := make([]string, 0, len(m.shards))
	for id := range m.shards {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	sort.Strings(ids)
	return ids
}

// hold pins shard id against release while one batch is hashed; it
// returns nil when the shard is gone or is no longer the shard want.
func (m *Manager) hold(id string, want *shard) *shard {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.shards[id]
	if !ok || (want != nil && s != want) {
		return nil
	}
	s.busy.Add(1)
	return s
}

// scrubShard scrubs one shard batch by batch and returns the bytes hashed.
func (m *Manager) scrubShard(ctx context.Context, id string, batchBytes int64, p *pacer) (int64, error) {
	start := time.Now()
	s := m.hold(id, nil)
	if s == nil {
		return 0, ErrNotFound
	}
	tree, err := m.scrubCheckSealed(ctx, s)
	s.busy.Done()
	if err != nil {
		return 0, err
	}
	cs := s.seal.ChunkSize
	n := gpu.ChunkCount(s.seal.Size, cs)
	per := min(max(batchBytes/cs, 1), n)
	chunks := make([]int64, 0, per)
	got := make([][gpu.HashSize]byte, per)
	var hashed int64
	for lo := int64(0); lo < n; lo += per {
		hi := min(lo+per, n)
		size := min(hi*cs, s.seal.Size) - lo*cs
		if err := p.wait(ctx, m, size); err != nil {
			return hashed, err
		}
		if err := m.gate(); err != nil {
			return hashed, err
		}
		if m.hold(id, s) == nil {
			return hashed, ErrNotFound // released mid-pass
		}
		chunks = chunks[:0]
		for c := lo; c < hi; c++ {
			chunks = append(chunks, c)
		}
		err := s.dev.dev.LeafHashes(ctx, s.buf, cs, chunks, got[:len(chunks)])
		var changed []int64
		if err == nil {
			for j, c := range chunks {
				if seal.Hash(got[j]) != tree.leaf(c) {
					changed = append(changed, c)
				}
			}
		}
		hashed += size
		m.scrub.bytes.Add(uint64(size))
		m.scrub.chunks.Add(uint64(len(chunks)))
		if err == nil && len(changed) == 0 {
			s.busy.Done()
			continue
		}
		ie := failure(s, ReasonDigestMismatch, nil)
		switch {
		case err != nil && ctx.Err() != nil:
			s.busy.Done()
			return hashed, ctx.Err()
		case err != nil:
			ie.Reason, ie.Err = ReasonDeviceError, err
		default:
			ie.Changed = chunkRanges(changed, s.seal.Size, cs)
		}
		m.scrub.failures.Add(1)
		m.verifyFailed(ctx, s, ie, "scrub", time.Since(start))
		s.busy.Done()
		return hashed, ie
	}
	if err := m.gate(); err != nil {
		return hashed, err // stopped meanwhile: this pass proves nothing
	}
	dur := time.Since(start)
	_ = m.record(ctx, audit.Event{Type: EventVerified, Severity: audit.SeverityHigh, Fields: []audit.Field{
		audit.String("shard_id", id),
		audit.String("mode", "scrub"),
		audit.Int("chunks_checked", n),
		audit.Int("duration_us", dur.Microseconds()),
	}})
	m.verified(s, "scrub")
	return hashed, nil
}

// scrubCheckSealed checks the seal's signature and the stored leaves
// against the signed root before a pass relies on them, and returns the
// tree. A failure is recorded like any verification failure.
func (m *Manager) scrubCheckSealed(ctx context.Context, s *shard) (*leafTree, error) {
	start := time.Now()
	err := m.checkSealed(ctx, s)
	if err == nil && seal.Root(s.tree.leaves()) != s.seal.Root {
		err = failure(s, ReasonNotSealed, errLeavesAltered)
	}
	var ie *IntegrityError
	if !errors.As(err, &ie) {
		if err != nil {
			return nil, err
		}
		return s.tree, nil
	}
	m.scrub.failures.Add(1)
	m.verifyFailed(ctx, s, ie, "scrub", time.Since(start))
	return nil, ie
}

// pacer spaces work so that no more than rate bytes per second pass on
// average, without bursting to catch up after a pause.
type pacer struct {
	rate int64
	next time.Time
}

func (p *pacer) wait(ctx context.Context, m *Manager, n int64) error {
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	if err := m.sleep(ctx, p.next.Sub(now)); err != nil {
		return err
	}
	p.next = p.next.Add(time.Duration(float64(n) / float64(p.rate) * float64(time.Second)))
	return nil
}

// sleep waits for d, or until ctx is done (its error) or the manager is
// closed ([ErrClosed]).
func (m *Manager) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-m.closedCh:
		return ErrClosed
	}
}
