package audit

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"golang.org/x/mod/sumdb/tlog"
)

// treeWriter keeps a log's Merkle tree, its tree file and its signed
// checkpoints. Open uses it directly; after Open it runs on its own
// goroutine ([treeWriter.run]), fed by the writer goroutine with the record
// lines it wrote, in order, so that hashing the tree and signing do not slow
// the writer. Jobs are answered in the order they were queued.
type treeWriter struct {
	fs     FS
	dir    string
	key    *signingKey
	tree   *frontier // over every record line received
	f      File      // the tree file
	buf    []byte    // stored hashes not yet written to f
	dirty  bool      // f written since its last fsync
	signed uint64    // tree size of the last signed checkpoint
	// signedSize is signed, for other goroutines ([Log.SignedSize]).
	signedSize atomic.Uint64
	// durable and durableRoot are the tree size and root at the last
	// fsync of the segment: a checkpoint covers only durable records,
	// while the tree may already hold records written after them.
	durable     uint64
	durableRoot tlog.Hash

	jobs chan treeJob
	done chan struct{}
	err  atomic.Pointer[error] // the first failure; every later job fails with it
}

// treeJob is one piece of work for the tree writer: record lines to add,
// then, if segment is set, a checkpoint of tree size size (which must be
// the tree's size by then) to sign into segment's checkpoint file. A job
// with neither is a barrier. reply, if set, receives the outcome.
//
// A job with mark set records that the first mark records are durable:
// the writer sends it right after an fsync, when the tree has taken in
// exactly those records, so the tree's root of that size is kept for a
// checkpoint signed later.
type treeJob struct {
	lines   *[]byte
	mark    uint64
	segment string
	size    uint64
	reply   chan error
}

// maxTreeQueue bounds the jobs waiting for the tree writer; the writer
// waits when it is full, so memory stays bounded by about that many
// batches.
const maxTreeQueue = 8

var linesPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// start runs the tree writer on its own goroutine.
func (t *treeWriter) start() {
	t.jobs = make(chan treeJob, maxTreeQueue)
	t.done = make(chan struct{})
	go t.run()
}

func (t *treeWriter) run() {
	defer close(t.done)
	for j := range t.jobs {
		err := t.failure()
		if err == nil {
			if j.lines != nil {
				t.addLines(*j.lines)
				if len(t.buf) >= 256<<10 {
					err = t.flush(false)
				}
			}
			if err == nil && j.mark != 0 {
				err = t.markDurable(j.mark)
			}
			if err == nil && j.segment != "" {
				err = t.sign(j.segment, j.size)
			}
			if err != nil {
				t.err.Store(&err)
			}
		}
		if j.lines != nil {
			linesPool.Put(j.lines)
		}
		if j.reply != nil {
			j.reply <- err
		}
	}
}

// addLines adds complete record lines (each ended by a newline) to the tree.
func (t *treeWriter) addLines(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		t.buf = appendHashes(t.buf, t.tree.add(leafHash(b[:i])))
		b = b[i+1:]
	}
}

// send queues a copy of complete record lines, just written to the
// segment, for the tree.
func (t *treeWriter) send(lines []byte) {
	p := linesPool.Get().(*[]byte)
	*p = append((*p)[:0], lines...)
	t.jobs <- treeJob{lines: p}
}

// mark queues the news that the first size records are durable (see
// [treeJob]).
func (t *treeWriter) mark(size uint64) {
	t.jobs <- treeJob{mark: size}
}

// markDurable keeps the root of the tree's first size records, which are
// now durable; the tree must hold exactly those.
func (t *treeWriter) markDurable(size uint64) error {
	if uint64(t.tree.n) != size {
		return fmt.Errorf("audit: tree has %d records at the fsync of %d", t.tree.n, size)
	}
	t.durable, t.durableRoot = size, t.tree.root()
	return nil
}

// request queues j and, with wait, returns its outcome (and that of every
// job before it).
func (t *treeWriter) request(j treeJob, wait bool) error {
	if wait {
		j.reply = make(chan error, 1)
	}
	t.jobs <- j
	if wait {
		return <-j.reply
	}
	return nil
}

// failure returns the tree writer's failure, if any.
func (t *treeWriter) failure() error {
	if e := t.err.Load(); e != nil {
		return *e
	}
	return nil
}

// stop ends the tree writer goroutine, if it runs, and closes the tree
// file.
func (t *treeWriter) stop() {
	if t.jobs != nil {
		close(t.jobs)
		<-t.done
		t.jobs = nil
	}
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
}

// flush writes the pending stored hashes to the tree file and, if sync,
// makes it durable.
func (t *treeWriter) flush(sync bool) error {
	if len(t.buf) > 0 {
		n, err := t.f.Write(t.buf)
		if err == nil && n < len(t.buf) {
			err = io.ErrShortWrite
		}
		t.buf = t.buf[:0]
		if err != nil {
			return fmt.Errorf("audit: write %s: %w", treeName, err)
		}
		t.dirty = true
	}
	if sync && t.dirty {
		if err := t.f.Sync(); err != nil {
			return fmt.Errorf("audit: fsync %s: %w", treeName, err)
		}
		t.dirty = false
	}
	return nil
}

// sign makes the tree file durable, then signs a checkpoint of the tree
// (of size records) and appends it to segment's checkpoint file: so a
// checkpoint on disk never covers hashes that are not.
func (t *treeWriter) sign(segment string, size uint64) error {
	if size <= t.signed {
		return nil
	}
	var root tlog.Hash
	switch {
	case uint64(t.tree.n) == size:
		root = t.tree.root()
	case t.durable == size:
		// Records written after the fsync are in the tree already.
		root = t.durableRoot
	default:
		return fmt.Errorf("audit: tree has %d records (%d at the last fsync), the checkpoint asked for is of %d", t.tree.n, t.durable, size)
	}
	if err := t.flush(true); err != nil {
		return err
	}
	msg, err := t.key.signCheckpoint(size, root)
	if err != nil {
		return err
	}
	if err := appendCheckpoint(t.fs, t.dir, segment, msg); err != nil {
		return err
	}
	t.signed = size
	t.signedSize.Store(size)
	return nil
}
