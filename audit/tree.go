package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"

	"golang.org/x/mod/sumdb/tlog"
)

// treeName is the file of the Merkle tree's stored hashes (see the package
// documentation, "Tree").
const treeName = "tree.hashes"

// maxTreeSize bounds tree sizes: package tlog counts records in int64.
const maxTreeSize = 1 << 62

// leafHash is the RFC 6962 leaf hash of a record: SHA-256(0x00 || line),
// over the record's exact line without its newline.
func leafHash(line []byte) tlog.Hash { return tlog.RecordHash(line) }

// frontier holds the stored hashes of the complete subtrees that make up a
// tree of n records, largest first: all that tlog needs to add the next
// record or to hash the tree, at most 62 hashes whatever n is.
type frontier struct {
	n   int64
	idx []int64 // stored-hash indexes
	h   []tlog.Hash
}

var _ tlog.HashReader = (*frontier)(nil)

// frontierIndexes appends the stored-hash indexes of the complete subtrees
// of a tree of n records, largest first.
func frontierIndexes(dst []int64, n int64) []int64 {
	var start int64
	for level := 62; level >= 0; level-- {
		if n&(1<<level) != 0 {
			dst = append(dst, tlog.StoredHashIndex(level, start>>level))
			start += 1 << level
		}
	}
	return dst
}

// ReadHashes implements [tlog.HashReader] for the hashes the frontier holds.
func (f *frontier) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		j := len(f.idx) - 1 // tlog asks for the newest subtrees
		for j >= 0 && f.idx[j] != x {
			j--
		}
		if j < 0 {
			return nil, fmt.Errorf("audit: tree: stored hash %d is not on the frontier of size %d", x, f.n)
		}
		out[i] = f.h[j]
	}
	return out, nil
}

// add appends a leaf and returns the hashes it stores (in storage order,
// from index tlog.StoredHashIndex(0, n)): the leaf, then the k subtrees it
// completes, where k is the number of trailing one bits of n. Those k
// subtrees of the frontier merge into the last one returned.
func (f *frontier) add(leaf tlog.Hash) []tlog.Hash {
	hs, err := tlog.StoredHashesForRecordHash(f.n, leaf, f)
	k := bits.TrailingZeros64(^uint64(f.n))
	if err != nil || len(hs) != k+1 || len(f.idx) < k {
		panic(fmt.Sprintf("audit: tree frontier of size %d: %d hashes, %v", f.n, len(hs), err)) // the frontier holds every hash tlog reads
	}
	base := tlog.StoredHashIndex(0, f.n)
	f.idx = append(f.idx[:len(f.idx)-k], base+int64(k))
	f.h = append(f.h[:len(f.h)-k], hs[k])
	f.n++
	return hs
}

// root returns the tree's root hash (RFC 6962 MTH).
func (f *frontier) root() tlog.Hash {
	h, err := tlog.TreeHash(f.n, f)
	if err != nil {
		panic("audit: tree frontier: " + err.Error())
	}
	return h
}

// loadFrontier reads the frontier of a tree of n records from r.
func loadFrontier(n int64, r tlog.HashReader) (*frontier, error) {
	f := &frontier{n: n, idx: frontierIndexes(nil, n)}
	h, err := r.ReadHashes(f.idx)
	if err != nil {
		return nil, err
	}
	f.h = h
	return f, nil
}

// fileHashes reads stored hashes from the tree file: index i is the 32
// bytes at offset 32*i. count is how many it may read.
type fileHashes struct {
	r     io.ReaderAt
	count int64
}

// ReadHashes implements [tlog.HashReader].
func (h fileHashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= h.count {
			return nil, fmt.Errorf("audit: %s holds %d hashes, not hash %d", treeName, h.count, x)
		}
		if _, err := h.r.ReadAt(out[i][:], x*tlog.HashSize); err != nil {
			return nil, fmt.Errorf("audit: read %s: %w", treeName, err)
		}
	}
	return out, nil
}

// treeRecords returns the number of records whose stored hashes fit in
// count hashes: the largest n with tlog.StoredHashCount(n) <= count.
func treeRecords(count int64) int64 {
	lo, hi := int64(0), min(count, maxTreeSize)
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if tlog.StoredHashCount(mid) <= count {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

// openTreeFile opens the tree file and returns how many records it covers.
func openTreeFile(fsys FS, dir string, flag int) (File, int64, error) {
	f, err := fsys.OpenFile(filepath.Join(dir, treeName), flag, 0o600)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("audit: %s: %w", treeName, err)
	}
	return f, treeRecords(fi.Size() / tlog.HashSize), nil
}

// appendHashes appends stored hashes to dst as the tree file stores them.
func appendHashes(dst []byte, hs []tlog.Hash) []byte {
	for i := range hs {
		dst = append(dst, hs[i][:]...)
	}
	return dst
}

// openTree brings the tree file up to the log's last record after
// recovery. It trusts the file up to the latest checkpoint ck only if the
// file's root at ck's size is ck's root (the tree writer makes the file
// durable before it signs a checkpoint); everything after that, or
// everything if it does not match, is hashed again from the records. It
// needs those records: a tree that must be rebuilt over pruned segments is
// an error.
func (l *Log) openTree(ctx context.Context, ck *Checkpoint) error {
	w, t := &l.w, l.tw
	f, have, err := openTreeFile(l.fs, l.dir, os.O_RDWR|os.O_CREATE|os.O_APPEND)
	if err != nil {
		return fmt.Errorf("audit: open: %w", err)
	}
	t.f = f
	t.tree = &frontier{}
	if ck != nil && w.lastSeq < ck.Size {
		return corrupt(ck.file, 0, 0, ck.Size, Truncated, "signed checkpoint of tree size %d, but the log holds %d records", ck.Size, w.lastSeq)
	}
	if ra, ok := f.(io.ReaderAt); ok && ck != nil && int64(ck.Size) <= have {
		fr, err := loadFrontier(int64(ck.Size), fileHashes{ra, tlog.StoredHashCount(have)})
		if err == nil && fr.root() == ck.Root {
			t.tree = fr
		}
	}
	if err := f.Truncate(tlog.StoredHashCount(t.tree.n) * tlog.HashSize); err != nil {
		return fmt.Errorf("audit: open: cut %s: %w", treeName, err)
	}
	if uint64(t.tree.n) == w.lastSeq {
		return nil
	}
	from := uint64(t.tree.n) + 1
	if n := len(w.man.Pruned); n > 0 && w.man.Pruned[n-1].LastSeq >= from {
		return fmt.Errorf("audit: open: %s covers %d records and cannot be rebuilt: records %d..%d were pruned (restore %s from a copy)",
			treeName, t.tree.n, from, w.man.Pruned[n-1].LastSeq, treeName)
	}
	for _, s := range w.man.Segments {
		if s.Records == 0 || s.LastSeq < from {
			continue
		}
		_, err := readSegment(ctx, l.fs, l.dir, s.Name, 0, false, func(v *recordView) error {
			if v.seq < from {
				return nil
			}
			if v.seq != uint64(t.tree.n)+1 {
				return corrupt(s.Name, 0, 0, v.seq, Deleted, "tree: seq %d follows %d", v.seq, t.tree.n)
			}
			t.buf = appendHashes(t.buf, t.tree.add(leafHash(v.line)))
			if ck != nil && uint64(t.tree.n) == ck.Size && t.tree.root() != ck.Root {
				// Never sign a tree that is not an extension of one
				// signed before.
				return corrupt(ck.file, 0, 0, ck.Size, CheckpointMismatch,
					"records 1..%d no longer hash to the root of the signed checkpoint of tree size %d: a record was changed after it was signed", ck.Size, ck.Size)
			}
			if len(t.buf) >= 1<<20 {
				return t.flush(false)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if uint64(t.tree.n) != w.lastSeq {
		return fmt.Errorf("audit: open: tree holds %d records, the log %d", t.tree.n, w.lastSeq)
	}
	return t.flush(true)
}

// treeReader opens the tree file of dir for proofs: a reader of its stored
// hashes and the number of records it covers.
func treeReader(fsys FS, dir string) (fileHashes, File, int64, error) {
	f, n, err := openTreeFile(fsys, dir, os.O_RDONLY)
	if err != nil {
		return fileHashes{}, nil, 0, fmt.Errorf("audit: %w", err)
	}
	ra, ok := f.(io.ReaderAt)
	if !ok {
		f.Close()
		return fileHashes{}, nil, 0, errors.New("audit: the file system cannot read the tree file at offsets")
	}
	return fileHashes{ra, tlog.StoredHashCount(n)}, f, n, nil
}

// startTree sets up the verifier's tree: empty, or, when segments were
// pruned, the frontier at the last pruned record read from the tree file
// (trusted here, and checked by the first checkpoint after it).
func (v *verifier) startTree() error {
	if v.pk.logID != v.man.LogID {
		return fmt.Errorf("%w: checkpoint public key for %s, log %s", ErrWrongKey, v.pk.logID, v.man.LogID)
	}
	v.rep.CheckpointsChecked = true
	v.tree = &frontier{}
	n := len(v.man.Pruned)
	if n == 0 {
		return nil
	}
	p := v.man.Pruned[n-1].LastSeq
	hr, f, have, err := treeReader(v.fs, v.dir)
	if err == nil {
		defer f.Close()
		if uint64(have) < p {
			err = fmt.Errorf("it covers %d records", have)
		} else {
			v.tree, err = loadFrontier(int64(p), hr)
		}
	}
	if err != nil {
		return v.fail(Location{File: treeName, Seq: p}, CheckpointMismatch, "cannot read the tree over the pruned records 1..%d: %w", p, err)
	}
	return nil
}

// startCheckpoints opens the checkpoint file of segment s.
func (v *verifier) startCheckpoints(s segmentInfo) error {
	cf, _, err := openCheckpoints(v.fs, v.dir, s.Name)
	if err != nil {
		return v.fail(Location{File: s.Name + checkpointsSuffix}, CheckpointMismatch, "%w", err)
	}
	v.cf, v.nextCk = cf, nil
	return v.advanceCheckpoint(s)
}

// ckLoc locates the next checkpoint of the current file.
func (v *verifier) ckLoc(seq uint64) Location {
	return Location{File: v.cf.name, Line: bytes.Count(v.cf.b[:v.cf.off], []byte{'\n'}) + 1, Offset: int64(v.cf.off), Seq: seq}
}

// advanceCheckpoint reads the next checkpoint of segment s's file: it must
// verify, and its size must be above the tree so far (checkpoints grow, and
// each is stored with the segment of its last record).
func (v *verifier) advanceCheckpoint(s segmentInfo) error {
	ck, err := v.cf.next(v.pk)
	switch {
	case err == io.EOF:
		v.nextCk = nil
		return nil
	case err == errTornNote && !s.Closed && v.si == len(v.man.Segments)-1:
		v.nextCk = nil // the writer is appending it
		return nil
	case err != nil:
		return v.fail(v.ckLoc(0), CheckpointMismatch, "checkpoint %d: %w", v.cf.n+1, err)
	}
	if ck.Size <= uint64(v.tree.n) || ck.Size < s.FirstSeq {
		after := ""
		if v.lastCk != nil {
			after = fmt.Sprintf(" (the previous checkpoint has size %d)", v.lastCk.Size)
		}
		return v.fail(v.ckLoc(ck.Size), CheckpointMismatch, "checkpoint %d has tree size %d, but the tree already has %d records here%s",
			v.cf.n, ck.Size, v.tree.n, after)
	}
	v.cf.off -= len(ck.Note) // locate it by its start until it is checked
	v.cf.n--
	v.nextCk = ck
	return nil
}

// addLeaf adds the accepted record to the tree and checks the checkpoint of
// that size, if there is one.
func (v *verifier) addLeaf(it *item) error {
	v.tree.add(leafHash(it.v.line))
	ck := v.nextCk
	if ck == nil || ck.Size != it.v.seq {
		return nil
	}
	if root := v.tree.root(); root != ck.Root {
		from, why := uint64(1), "no checkpoint before it"
		if n := len(v.man.Pruned); n > 0 {
			from, why = v.man.Pruned[n-1].LastSeq+1, "the records before it were pruned"
		}
		if v.lastCk != nil {
			from, why = v.lastCk.Size+1, fmt.Sprintf("the previous checkpoint, of size %d, matched", v.lastCk.Size)
		}
		return v.fail(v.ckLoc(ck.Size), CheckpointMismatch, "signed checkpoint of tree size %d has root %x, the records hash to %x (%s): "+
			"the records were rewritten after they were signed (a record in seq %d..%d changed), or this checkpoint is forged",
			ck.Size, ck.Root[:8], root[:8], why, from, ck.Size)
	}
	v.cf.off += len(ck.Note)
	v.cf.n++
	v.lastCk = ck
	v.rep.Checkpoints++
	v.rep.SignedSize = ck.Size
	return v.advanceCheckpoint(v.man.Segments[it.seg])
}

// endCheckpoints checks, at the end of segment s, that no checkpoint of its
// file is left (one beyond the records means records were cut) and that a
// closed segment ends with a checkpoint of its last record once the log
// has any.
func (v *verifier) endCheckpoints(s segmentInfo) error {
	if ck := v.nextCk; ck != nil {
		return v.fail(v.ckLoc(ck.Size), Truncated, "signed checkpoint of tree size %d, but %s ends at seq %d: signed records are missing",
			ck.Size, s.Name, v.tree.n)
	}
	if s.Closed && s.Records > 0 && v.lastCk != nil && v.lastCk.Size != s.LastSeq {
		return v.fail(Location{File: s.Name + checkpointsSuffix, Seq: s.LastSeq}, CheckpointMismatch,
			"closed segment has no signed checkpoint of its last record seq %d (the last is of size %d)", s.LastSeq, v.lastCk.Size)
	}
	return nil
}

// endTree checks that the closed segments are signed and reports how many
// records of the live segment are not signed yet.
func (v *verifier) endTree() error {
	signed := uint64(0)
	if n := len(v.man.Pruned); n > 0 {
		signed = v.man.Pruned[n-1].LastSeq
	}
	if v.lastCk != nil {
		signed = v.lastCk.Size
	}
	for _, s := range v.man.Segments {
		if s.Closed && s.Records > 0 && s.LastSeq > signed {
			return v.fail(Location{File: s.Name + checkpointsSuffix, Seq: s.LastSeq}, CheckpointMismatch,
				"no signed checkpoint covers closed segment %s (a log written before checkpoints is signed when it is next opened)", s.Name)
		}
	}
	v.rep.Unsigned = uint64(v.tree.n) - signed
	return nil
}
