package seal

import (
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
)

// pageLen is the number of leaf hashes in one page of a [Hasher]'s output.
// Pages never move once allocated, so workers write leaves into them while
// the caller keeps appending pages.
const pageLen = 1024

type leafPage [pageLen]Hash

// zeroCopyMin is the smallest run of whole chunks inside one Write that is
// hashed in place (the workers read the caller's buffer and Write waits for
// them) instead of being copied into pooled buffers. Below it the copy is
// cheaper than waking the workers and waiting for them.
const zeroCopyMin = 128 << 10

// batchStepBytes bounds the bytes a worker claims at a time from an
// in-place batch: small enough to balance the load, large enough that the
// atomic claim costs nothing.
const batchStepBytes = 1 << 20

var (
	errHasherSummed = errors.New("seal: write to a hasher after Sum")
	errHasherClosed = errors.New("seal: write to a closed hasher")
	errHasherSize   = errors.New("seal: hasher input exceeds 2^63-1 bytes")
)

// Hasher computes, in one pass over a shard's bytes, the flat SHA-256
// digest and the RFC 6962 leaf hash of every chunk.
//
// The flat digest is the one serial step: it runs on the goroutine that
// calls [Hasher.Write]. Leaves run on a pool of runtime.GOMAXPROCS(0)-1
// worker goroutines (at least one), started on first need, so that
// together with the caller they use every core without taking the
// caller's. A Write of at least 128 KiB of
// whole chunks is hashed in place: the workers read p while the caller
// hashes it flat, the caller then helps with the remaining leaves, and
// Write returns once they are all done. Shorter pieces (and a chunk split
// across Writes) are copied into a bounded set of pooled chunk buffers,
// at most 2*workers+2 of them, and hashed while Write returns; Write
// blocks when all buffers are in flight. So host memory stays bounded
// whatever the input size (beyond the leaf hashes themselves, 32 bytes
// per chunk), and Write never retains p after it returns.
//
// A Hasher is not safe for concurrent use. Call [Hasher.Sum] to finish, or
// [Hasher.Close] to abandon it; either releases the workers.
type Hasher struct {
	chunkSize int64
	flat      hash.Hash
	lh        *leafHasher
	size      int64
	chunks    int64       // complete chunks handed out so far
	partial   []byte      // pooled buffer holding the start of the next chunk, or nil
	pages     []*leafPage // leaf hashes; page i holds chunks [i*pageLen, (i+1)*pageLen)
	pool      *workerPool // nil until the first chunk needs a worker
	summed    bool
	closed    bool
	digest    Hash
	leaves    []Hash
}

var _ io.Writer = (*Hasher)(nil)

// NewHasher returns a Hasher for chunks of chunkSize bytes; zero or less
// means [DefaultChunkSize].
func NewHasher(chunkSize int64) *Hasher {
	if chunkSize <= 0 {
		chunkSize = DefaultChunkSize
	}
	return &Hasher{chunkSize: chunkSize, flat: sha256.New(), lh: newLeafHasher()}
}

// Write hashes p. It never fails on bytes; it returns an error only after
// [Hasher.Sum] or [Hasher.Close], or past 2^63-1 bytes in total.
func (h *Hasher) Write(p []byte) (int, error) {
	switch {
	case h.summed:
		return 0, errHasherSummed
	case h.closed:
		return 0, errHasherClosed
	case int64(len(p)) > math.MaxInt64-h.size:
		return 0, errHasherSize
	}
	n := len(p)
	h.size += int64(n)
	cs := h.chunkSize
	whole := p
	flatDone := false

	// Complete the chunk that an earlier Write started.
	if h.partial != nil {
		k := copy(h.partial[len(h.partial):cs], p)
		h.partial = h.partial[:len(h.partial)+k]
		p = p[k:]
		if int64(len(h.partial)) == cs {
			h.submitCopy(h.partial)
			h.partial = nil
		}
	}

	full := int64(len(p)) / cs
	body := p[:full*cs]
	p = p[full*cs:]
	if len(body) >= zeroCopyMin && full >= 2 {
		b := h.startBatch(body, full)
		h.flat.Write(whole)
		flatDone = true
		b.run(h.lh) // help with the leaves the workers have not claimed
		<-b.done
		b.p = nil // no worker reads p after done: every chunk is claimed
	} else {
		for len(body) > 0 {
			buf := h.getPool().get()
			copy(buf, body[:cs])
			h.submitCopy(buf)
			body = body[cs:]
		}
	}

	if len(p) > 0 {
		h.partial = h.getPool().get()[:len(p)]
		copy(h.partial, p)
	}
	if !flatDone {
		h.flat.Write(whole)
	}
	return n, nil
}

// getPool returns the worker pool, creating it on first use; its workers
// start with the first task, so input shorter than a chunk starts none.
func (h *Hasher) getPool() *workerPool {
	if h.pool == nil {
		h.pool = newWorkerPool(h.chunkSize)
		runtime.AddCleanup(h, func(p *workerPool) { p.stop() }, h.pool)
	}
	return h.pool
}

// slot returns where the leaf of chunk i goes, allocating its page.
func (h *Hasher) slot(i int64) *Hash {
	for int64(len(h.pages))*pageLen <= i {
		h.pages = append(h.pages, new(leafPage))
	}
	return &h.pages[i/pageLen][i%pageLen]
}

// submitCopy hands the pooled chunk buffer buf to the workers as the next
// chunk; they return it to the pool once hashed.
func (h *Hasher) submitCopy(buf []byte) {
	dst := h.slot(h.chunks)
	h.chunks++
	p := h.getPool()
	p.pending.Add(1)
	p.send(task{buf: buf, dst: dst})
}

// startBatch hands the n whole chunks of body to the workers to hash in
// place and returns the batch; the caller must wait for b.done before body
// may change.
func (h *Hasher) startBatch(body []byte, n int64) *batch {
	first := h.chunks
	h.slot(first + n - 1)
	h.chunks += n
	p := h.getPool()
	step := min(max(batchStepBytes/h.chunkSize, 1), max(n/int64(4*(p.workers+1)), 1))
	b := &batch{
		p:         body,
		chunkSize: h.chunkSize,
		first:     first,
		n:         n,
		step:      step,
		pages:     h.pages[first/pageLen : (first+n-1)/pageLen+1],
		pageBase:  first / pageLen,
		done:      make(chan struct{}),
	}
	b.left.Store(n)
	for range min(int64(p.workers), (n+step-1)/step) {
		p.send(task{batch: b})
	}
	return b
}

// Sum finishes the hashing and returns the flat SHA-256 digest, the leaf
// hash of every chunk (the last may be short; none for empty input) and
// the number of bytes written. It releases the workers; later calls return
// the same values, and later Writes fail. After [Hasher.Close] without Sum
// it returns zero values.
func (h *Hasher) Sum() (digest Hash, leaves []Hash, size int64) {
	if h.summed {
		return h.digest, h.leaves, h.size
	}
	if h.closed {
		return Hash{}, nil, 0
	}
	if h.partial != nil {
		*h.slot(h.chunks) = h.lh.sum(h.partial)
		h.chunks++
		h.partial = nil
	}
	if h.pool != nil {
		h.pool.pending.Wait()
		h.pool.stop()
	}
	h.flat.Sum(h.digest[:0])
	if h.chunks > 0 {
		h.leaves = make([]Hash, h.chunks)
		for i, pg := range h.pages {
			copy(h.leaves[i*pageLen:], pg[:])
		}
	}
	h.pages = nil
	h.summed = true
	return h.digest, h.leaves, h.size
}

// Close releases the workers of a Hasher abandoned without [Hasher.Sum].
// It is safe to call more than once and after Sum.
func (h *Hasher) Close() {
	if h.summed || h.closed {
		return
	}
	h.closed = true
	h.partial = nil
	h.pages = nil
	if h.pool != nil {
		h.pool.stop()
	}
}

// task is one unit of leaf work: an in-place batch shared by several
// workers, or one copied chunk.
type task struct {
	batch *batch
	buf   []byte // pooled copy of one whole chunk
	dst   *Hash
}

// batch is a run of whole chunks hashed in place from the caller's buffer.
// Workers claim step chunks at a time; whoever hashes the last chunk
// closes done.
type batch struct {
	p         []byte
	chunkSize int64
	first     int64 // index of the chunk at p[0]
	n         int64
	step      int64
	pages     []*leafPage
	pageBase  int64
	next      atomic.Int64
	left      atomic.Int64
	done      chan struct{}
}

// run hashes chunks of b until none is left to claim. A worker that finds
// the batch already claimed does not touch p.
func (b *batch) run(lh *leafHasher) {
	for {
		start := b.next.Add(b.step) - b.step
		if start >= b.n {
			return
		}
		end := min(start+b.step, b.n)
		p, cs := b.p, b.chunkSize
		for i := start; i < end; i++ {
			g := b.first + i
			b.pages[g/pageLen-b.pageBase][g%pageLen] = lh.sum(p[i*cs : (i+1)*cs])
		}
		if b.left.Add(start-end) == 0 {
			close(b.done)
		}
	}
}

// workerPool is the set of leaf workers of one Hasher and its pooled chunk
// buffers. It holds no reference to the Hasher, so a cleanup can stop it
// when a Hasher is dropped without Sum or Close.
type workerPool struct {
	chunkSize int64
	workers   int
	tasks     chan task
	free      chan []byte
	nbuf      int // buffers allocated so far, at most cap(free)
	started   bool
	pending   sync.WaitGroup
	wg        sync.WaitGroup
	stopOnce  sync.Once
}

func newWorkerPool(chunkSize int64) *workerPool {
	// The caller's goroutine is the critical path (the flat digest), so
	// it keeps a core of its own: GOMAXPROCS-1 workers plus the caller use
	// every core without preempting it.
	w := max(runtime.GOMAXPROCS(0)-1, 1)
	maxBuf := 2*w + 2
	return &workerPool{
		chunkSize: chunkSize,
		workers:   w,
		// Room for every pooled buffer plus a few in-place batches, so
		// that the caller rarely blocks on a send.
		tasks: make(chan task, maxBuf+4*w),
		free:  make(chan []byte, maxBuf),
	}
}

// send queues t, starting the workers on first use.
func (p *workerPool) send(t task) {
	if !p.started {
		p.started = true
		for range p.workers {
			p.wg.Go(p.work)
		}
	}
	p.tasks <- t
}

func (p *workerPool) work() {
	lh := newLeafHasher()
	for t := range p.tasks {
		if t.batch != nil {
			t.batch.run(lh)
			continue
		}
		*t.dst = lh.sum(t.buf)
		p.free <- t.buf[:cap(t.buf)]
		p.pending.Done()
	}
}

// get returns a chunk buffer of full length, allocating one while fewer
// than cap(p.free) exist and otherwise waiting for a worker to return one.
func (p *workerPool) get() []byte {
	select {
	case b := <-p.free:
		return b
	default:
	}
	if p.nbuf < cap(p.free) {
		p.nbuf++
		return make([]byte, p.chunkSize)
	}
	return <-p.free
}

// stop ends the workers once they have drained the queued tasks.
func (p *workerPool) stop() {
	p.stopOnce.Do(func() {
		close(p.tasks)
		p.wg.Wait()
	})
}
