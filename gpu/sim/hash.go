package sim

import (
	"context"
	"crypto/sha256"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/vramseal/vramseal/gpu"
)

// Work sizing of LeafHashes. Requested chunks are cut into contiguous
// batches; workers take batches in turn, so a core that another process
// slows down takes fewer, and ctx is checked between batches.
const (
	// maxBatchBytes caps the bytes hashed per batch, which bounds how long
	// a cancellation waits.
	maxBatchBytes = 8 << 20
	// batchesPerWorker evens out the load when workers run at different speeds.
	batchesPerWorker = 8
	// serialBytes is the amount of work below which starting goroutines
	// costs more than it saves.
	serialBytes = 128 << 10
)

// LeafHashes computes the RFC 6962 leaf hash SHA-256(0x00 || chunk) of each
// requested chunk on all cores ([Options.Workers]). It reads the buffer
// under a read lock, so hashes of one buffer run in parallel with each
// other and wait only for writes to that buffer. Bad chunk sizes and
// indexes return an error wrapping [gpu.ErrOutOfRange]; after
// [Device.FailHashing] it returns the injected error. A cancelled ctx stops
// the work between batches and returns ctx's error; out is then partly
// written.
func (d *Device) LeafHashes(ctx context.Context, b gpu.Buffer, chunkSize int64, chunks []int64, out [][gpu.HashSize]byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sim: leaf hashes: %w", err)
	}
	h, a, err := d.lookup("leaf hashes of", b)
	if err != nil {
		return err
	}
	if err := gpu.CheckChunks(a.size, chunkSize, chunks, out); err != nil {
		return fmt.Errorf("sim: leaf hashes of %v: %w", h, err)
	}
	d.mu.Lock()
	injected := d.faults.hashErr
	d.mu.Unlock()
	if injected != nil {
		return fmt.Errorf("sim: leaf hashes of %v: injected fault: %w", h, injected)
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.freed {
		return fmt.Errorf("sim: leaf hashes of %v: %w", h, gpu.ErrInvalidBuffer)
	}
	workers := d.workers
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if err := leafHashes(ctx, a.data, chunkSize, chunks, out, workers, d.spin); err != nil {
		return fmt.Errorf("sim: leaf hashes of %v: %w", h, err)
	}
	return nil
}

// leafHashes hashes chunks of data into out with up to workers goroutines,
// the caller's included. The request has been validated.
func leafHashes(ctx context.Context, data []byte, chunkSize int64, chunks []int64, out [][gpu.HashSize]byte, workers int, spin time.Duration) error {
	n := len(chunks)
	if n == 0 {
		return nil
	}
	// Bytes per chunk, as an estimate of the work of each index.
	per := min(chunkSize, int64(len(data)))
	if int64(n) <= serialBytes/per || workers <= 1 {
		workers = 1
	}
	// batch: chunk indexes per batch, at least 1, at most maxBatchBytes of
	// work, and small enough to give each worker several batches.
	batch := int64(n) / int64(workers*batchesPerWorker)
	batch = min(max(batch, 1), max(maxBatchBytes/per, 1))
	batches := (int64(n) + batch - 1) / batch
	workers = int(min(int64(workers), batches))

	var next atomic.Int64 // next batch to take
	var stopped atomic.Bool
	work := func() {
		hash := sha256.New()
		prefix := []byte{0x00}
		for {
			i := next.Add(1) - 1
			if i >= batches {
				return
			}
			if ctx.Err() != nil {
				stopped.Store(true)
				return
			}
			lo := i * batch
			hi := min(lo+batch, int64(n))
			for j := lo; j < hi; j++ {
				start := chunks[j] * chunkSize
				end := start + min(chunkSize, int64(len(data))-start)
				hash.Reset()
				hash.Write(prefix)
				hash.Write(data[start:end])
				hash.Sum(out[j][:0])
			}
		}
	}
	if workers == 1 {
		work()
	} else {
		run(&job{work: work}, workers-1, spin)
	}
	if stopped.Load() {
		return ctx.Err()
	}
	return nil
}
