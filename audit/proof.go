package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

// Proof headers: the first line of each proof format.
const (
	inclusionHeader   = "c2sp.org/tlog-proof@v1"
	consistencyHeader = "vramseal/audit-consistency-proof@v1"
)

// maxProofHashes bounds the hashes of a proof: an inclusion proof in a tree
// of at most 2^62 records has at most 62, a consistency proof at most
// twice that.
const maxProofHashes = 2 * 63

// maxProofBytes bounds a proof file: two notes, the hashes, and a record
// of at most maxLineBytes in base64.
const maxProofBytes = 2*maxNoteBytes + maxProofHashes*45 + (maxLineBytes+2)/3*4 + 256

// InclusionProof proves that a record is in the tree of a signed
// checkpoint. Its file form is C2SP tlog-proof (see the package
// documentation, "Proofs").
type InclusionProof struct {
	// Index is the record's position in the tree: its seq minus one.
	Index uint64
	// Record is the record's line (without newline), carried as the
	// proof's extra data; nil if absent. It is not trusted: the proof
	// checks its hash.
	Record []byte
	// Hashes are the RFC 6962 audit path, from the leaf's sibling up.
	Hashes []tlog.Hash
	// Checkpoint is the signed checkpoint, verbatim.
	Checkpoint []byte
}

// ConsistencyProof proves that the tree of one signed checkpoint extends
// the tree of an older one: the log was only appended to between them.
type ConsistencyProof struct {
	OldSize, NewSize uint64
	// Hashes are the RFC 6962 consistency proof.
	Hashes []tlog.Hash
	// Old and New are the signed checkpoints, verbatim.
	Old, New []byte
}

func appendProofHashes(b []byte, hs []tlog.Hash) []byte {
	for _, h := range hs {
		b = base64.StdEncoding.AppendEncode(b, h[:])
		b = append(b, '\n')
	}
	return b
}

// Encode returns the proof in C2SP tlog-proof form.
func (p *InclusionProof) Encode() []byte {
	b := []byte(inclusionHeader + "\n")
	if p.Record != nil {
		b = append(b, "extra "...)
		b = base64.StdEncoding.AppendEncode(b, p.Record)
		b = append(b, '\n')
	}
	b = append(b, "index "...)
	b = strconv.AppendUint(b, p.Index, 10)
	b = append(b, '\n')
	b = appendProofHashes(b, p.Hashes)
	b = append(b, '\n')
	return append(b, p.Checkpoint...)
}

// Encode returns the proof's file form.
func (p *ConsistencyProof) Encode() []byte {
	b := []byte(consistencyHeader + "\n")
	b = fmt.Appendf(b, "old %d\nnew %d\n", p.OldSize, p.NewSize)
	b = appendProofHashes(b, p.Hashes)
	b = append(b, '\n')
	b = append(b, p.Old...)
	return append(b, p.New...)
}

// proofLines is a cursor over the lines of a proof.
type proofLines struct {
	b []byte
}

// line returns the next line without its newline; ok is false at the end
// or for a last line without a newline.
func (p *proofLines) line() (string, bool) {
	i := bytes.IndexByte(p.b, '\n')
	if i < 0 {
		return "", false
	}
	l := string(p.b[:i])
	p.b = p.b[i+1:]
	return l, true
}

// hashes reads hash lines up to the empty line that ends them.
func (p *proofLines) hashes() ([]tlog.Hash, error) {
	var hs []tlog.Hash
	for {
		l, ok := p.line()
		if !ok {
			return nil, fmt.Errorf("%w: no empty line before the checkpoint", errProof)
		}
		if l == "" {
			return hs, nil
		}
		if len(hs) == maxProofHashes {
			return nil, fmt.Errorf("%w: more than %d hashes", errProof, maxProofHashes)
		}
		h, err := base64.StdEncoding.Strict().DecodeString(l)
		if err != nil || len(h) != tlog.HashSize || base64.StdEncoding.EncodeToString(h) != l {
			return nil, fmt.Errorf("%w: hash line %d is not the base64 of 32 bytes", errProof, len(hs)+1)
		}
		hs = append(hs, tlog.Hash(h))
	}
}

// number reads the line "<name> <canonical decimal>".
func (p *proofLines) number(name string) (uint64, error) {
	l, ok := p.line()
	v, found := strings.CutPrefix(l, name+" ")
	if !ok || !found {
		return 0, fmt.Errorf("%w: want line %q", errProof, name+" N")
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || strconv.FormatUint(n, 10) != v || n >= maxTreeSize {
		return 0, fmt.Errorf("%w: %s %q is not a canonical decimal", errProof, name, truncateForError(v))
	}
	return n, nil
}

// openProof checks a proof's size and first line, and returns its lines
// after it.
func openProof(b []byte, header string) (*proofLines, error) {
	if len(b) > maxProofBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", errProof, maxProofBytes)
	}
	pl := &proofLines{b: b}
	if l, ok := pl.line(); !ok || l != header {
		return nil, fmt.Errorf("%w: first line is not %q", errProof, header)
	}
	return pl, nil
}

// ParseInclusionProof parses a C2SP tlog-proof strictly: the header, an
// optional extra line, the index, the hashes, an empty line and one signed
// note, nothing after it. It checks no signature or hash (see
// [CheckInclusion]).
func ParseInclusionProof(b []byte) (*InclusionProof, error) {
	pl, err := openProof(b, inclusionHeader)
	if err != nil {
		return nil, err
	}
	p := &InclusionProof{}
	if bytes.HasPrefix(pl.b, []byte("extra ")) {
		l, _ := pl.line()
		v := strings.TrimPrefix(l, "extra ")
		rec, err := base64.StdEncoding.Strict().DecodeString(v)
		if err != nil || base64.StdEncoding.EncodeToString(rec) != v || len(rec) > maxLineBytes {
			return nil, fmt.Errorf("%w: extra is not canonical base64 of at most %d bytes", errProof, maxLineBytes)
		}
		p.Record = rec
	}
	if p.Index, err = pl.number("index"); err != nil {
		return nil, err
	}
	if p.Hashes, err = pl.hashes(); err != nil {
		return nil, err
	}
	msg, rest, err := splitNote(pl.b)
	if err != nil || len(rest) > 0 {
		return nil, fmt.Errorf("%w: want one signed checkpoint after the hashes", errProof)
	}
	p.Checkpoint = msg
	return p, nil
}

// ParseConsistencyProof parses a consistency proof strictly: the header,
// "old N", "new N", the hashes, an empty line and two signed notes (old,
// then new), nothing after them. It checks no signature or hash (see
// [CheckConsistency]).
func ParseConsistencyProof(b []byte) (*ConsistencyProof, error) {
	pl, err := openProof(b, consistencyHeader)
	if err != nil {
		return nil, err
	}
	p := &ConsistencyProof{}
	if p.OldSize, err = pl.number("old"); err != nil {
		return nil, err
	}
	if p.NewSize, err = pl.number("new"); err != nil {
		return nil, err
	}
	if p.Hashes, err = pl.hashes(); err != nil {
		return nil, err
	}
	old, rest, err := splitNote(pl.b)
	if err != nil {
		return nil, fmt.Errorf("%w: want two signed checkpoints after the hashes", errProof)
	}
	cur, rest, err := splitNote(rest)
	if err != nil || len(rest) > 0 {
		return nil, fmt.Errorf("%w: want two signed checkpoints after the hashes", errProof)
	}
	p.Old, p.New = old, cur
	return p, nil
}

// IsConsistencyProof reports whether b starts like a consistency proof
// (else it is meant as an inclusion proof).
func IsConsistencyProof(b []byte) bool {
	return bytes.HasPrefix(b, []byte(consistencyHeader+"\n"))
}

// CheckInclusion verifies p offline with the public key k: the
// checkpoint's signature, and that record (nil: the record p carries) is
// the record at p.Index of the checkpoint's tree. It returns the
// checkpoint and the parsed record. A signature that does not verify
// matches [ErrBadCheckpoint]; a record that is not the one in the tree
// matches [ErrBadProof].
func CheckInclusion(p *InclusionProof, k *PublicKey, record []byte) (*Checkpoint, *Record, error) {
	ck, err := ParseCheckpoint(p.Checkpoint, k)
	if err != nil {
		return nil, nil, err
	}
	if record == nil {
		record = p.Record
	}
	if record == nil {
		return ck, nil, fmt.Errorf("%w: it carries no record: give the record line", errProof)
	}
	record = bytes.TrimSuffix(record, []byte{'\n'})
	if p.Index >= ck.Size {
		return ck, nil, fmt.Errorf("%w: index %d (seq %d) is beyond the checkpoint's tree of %d records", ErrBadProof, p.Index, p.Index+1, ck.Size)
	}
	r, err := ParseRecord(record)
	if err != nil {
		return ck, nil, fmt.Errorf("%w: the record is not an audit record: %v", ErrBadProof, err)
	}
	if r.Seq != p.Index+1 {
		return ck, r, fmt.Errorf("%w: the record is seq %d, the proof is for seq %d", ErrBadProof, r.Seq, p.Index+1)
	}
	if id := r.ID[:16]; id != k.logID {
		return ck, r, fmt.Errorf("%w: the record is of log %s, the key of log %s", ErrBadProof, id, k.logID)
	}
	if err := tlog.CheckRecord(p.Hashes, int64(ck.Size), ck.Root, int64(p.Index), leafHash(record)); err != nil {
		return ck, r, fmt.Errorf("%w: record seq %d is not the one in the signed tree of %d records (the record or the proof was altered): %v",
			ErrBadProof, r.Seq, ck.Size, err)
	}
	return ck, r, nil
}

// CheckConsistency verifies p offline with the public key k: both
// checkpoints' signatures, their sizes against the proof, and that the
// newer tree extends the older one. A signature that does not verify
// matches [ErrBadCheckpoint]; trees that are not consistent (the log was
// rewritten or forked between them) match [ErrBadProof].
func CheckConsistency(p *ConsistencyProof, k *PublicKey) (old, cur *Checkpoint, err error) {
	if old, err = ParseCheckpoint(p.Old, k); err != nil {
		return nil, nil, fmt.Errorf("old checkpoint: %w", err)
	}
	if cur, err = ParseCheckpoint(p.New, k); err != nil {
		return nil, nil, fmt.Errorf("new checkpoint: %w", err)
	}
	if old.Size != p.OldSize || cur.Size != p.NewSize {
		return old, cur, fmt.Errorf("%w: the proof is for sizes %d and %d, the checkpoints have %d and %d",
			ErrBadProof, p.OldSize, p.NewSize, old.Size, cur.Size)
	}
	if old.Size == 0 || old.Size > cur.Size {
		return old, cur, fmt.Errorf("%w: old size %d must be between 1 and the new size %d", ErrBadProof, old.Size, cur.Size)
	}
	if err := tlog.CheckTree(p.Hashes, int64(cur.Size), cur.Root, int64(old.Size), old.Root); err != nil {
		return old, cur, fmt.Errorf("%w: the tree of %d records is not an extension of the tree of %d records (the log was rewritten or forked): %v",
			ErrBadProof, cur.Size, old.Size, err)
	}
	return old, cur, nil
}

// prover reads what proofs need from a log directory.
type prover struct {
	ctx context.Context
	fs  FS
	dir string
	man *manifest
	k   *PublicKey
}

func newProver(ctx context.Context, dir string, opts ReadOptions) (*prover, error) {
	p := &prover{ctx: ctx, fs: opts.fs(), dir: dir}
	var err error
	if p.k, err = ReadPublicKey(dir, p.fs); err != nil {
		return nil, err
	}
	if p.man, err = loadManifest(p.fs, dir); err != nil {
		return nil, err
	}
	if p.k.logID != p.man.LogID {
		return nil, fmt.Errorf("audit: %s is for log %s, the manifest for %s", checkpointPubName, p.k.logID, p.man.LogID)
	}
	return p, nil
}

// segmentOf returns the segment that holds seq: the last with first_seq <=
// seq (a checkpoint of size K is stored with the segment of record K).
func (p *prover) segmentOf(seq uint64) (segmentInfo, bool) {
	for i := len(p.man.Segments) - 1; i >= 0; i-- {
		if s := p.man.Segments[i]; s.FirstSeq <= seq {
			return s, true
		}
	}
	return segmentInfo{}, false
}

// checkpoint returns the signed checkpoint of tree size size, or the
// latest for 0.
func (p *prover) checkpoint(size uint64) (*Checkpoint, error) {
	if size == 0 {
		ck, err := latestCheckpoint(p.fs, p.dir, p.man, p.k, false)
		if err == nil && ck == nil {
			err = ErrNoCheckpoint
		}
		return ck, err
	}
	s, ok := p.segmentOf(size)
	if !ok {
		return nil, fmt.Errorf("%w of tree size %d: the records are pruned", ErrNoCheckpoint, size)
	}
	cf, _, err := openCheckpoints(p.fs, p.dir, s.Name)
	if err != nil {
		return nil, err
	}
	for {
		ck, err := cf.next(p.k)
		if err == io.EOF || err == errTornNote {
			return nil, fmt.Errorf("%w of tree size %d in %s", ErrNoCheckpoint, size, cf.name)
		}
		if err != nil {
			return nil, fmt.Errorf("audit: %s: checkpoint %d: %w", cf.name, cf.n+1, err)
		}
		if ck.Size == size {
			return ck, nil
		}
	}
}

// record returns the line of record seq.
func (p *prover) record(seq uint64) ([]byte, error) {
	s, ok := p.segmentOf(seq)
	if !ok {
		return nil, fmt.Errorf("audit: record seq %d was pruned", seq)
	}
	var line []byte
	errFound := errors.New("found")
	_, err := readSegment(p.ctx, p.fs, p.dir, s.Name, 0, true, func(v *recordView) error {
		if v.seq == seq {
			line = bytes.Clone(v.line)
			return errFound
		}
		return nil
	})
	if err != nil && err != errFound {
		return nil, err
	}
	if line == nil {
		return nil, fmt.Errorf("audit: no record seq %d in %s", seq, s.Name)
	}
	return line, nil
}

// ProveInclusion makes an inclusion proof of record seq against the signed
// checkpoint of tree size size (0: the latest), carrying the record, and
// checks it before returning it. It needs no lock.
func ProveInclusion(ctx context.Context, dir string, seq, size uint64, opts ReadOptions) (*InclusionProof, error) {
	p, err := newProver(ctx, dir, opts)
	if err != nil {
		return nil, err
	}
	ck, err := p.checkpoint(size)
	if err != nil {
		return nil, err
	}
	if seq == 0 || seq > ck.Size {
		return nil, fmt.Errorf("%w covers seq %d: the checkpoint of tree size %d covers seq 1..%d", ErrNoCheckpoint, seq, ck.Size, ck.Size)
	}
	line, err := p.record(seq)
	if err != nil {
		return nil, err
	}
	hr, f, n, err := treeReader(p.fs, dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if uint64(n) < ck.Size {
		return nil, fmt.Errorf("audit: %s covers %d records, the checkpoint %d", treeName, n, ck.Size)
	}
	hs, err := tlog.ProveRecord(int64(ck.Size), int64(seq-1), hr)
	if err != nil {
		return nil, fmt.Errorf("audit: prove seq %d: %w", seq, err)
	}
	proof := &InclusionProof{Index: seq - 1, Record: line, Hashes: hs, Checkpoint: ck.Note}
	if _, _, err := CheckInclusion(proof, p.k, nil); err != nil {
		return nil, fmt.Errorf("audit: prove seq %d: %s disagrees with the signed checkpoint (run audit verify): %w", seq, treeName, err)
	}
	return proof, nil
}

// ProveConsistency makes a consistency proof between the signed
// checkpoints of tree sizes oldSize and newSize (0: the latest) and checks
// it before returning it. It needs no lock.
func ProveConsistency(ctx context.Context, dir string, oldSize, newSize uint64, opts ReadOptions) (*ConsistencyProof, error) {
	p, err := newProver(ctx, dir, opts)
	if err != nil {
		return nil, err
	}
	cur, err := p.checkpoint(newSize)
	if err != nil {
		return nil, err
	}
	if oldSize == 0 || oldSize > cur.Size {
		return nil, fmt.Errorf("%w of tree size %d: the newer checkpoint is of tree size %d", ErrNoCheckpoint, oldSize, cur.Size)
	}
	old, err := p.checkpoint(oldSize)
	if err != nil {
		return nil, err
	}
	hr, f, n, err := treeReader(p.fs, dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if uint64(n) < cur.Size {
		return nil, fmt.Errorf("audit: %s covers %d records, the checkpoint %d", treeName, n, cur.Size)
	}
	hs, err := tlog.ProveTree(int64(cur.Size), int64(old.Size), hr)
	if err != nil {
		return nil, fmt.Errorf("audit: prove consistency: %w", err)
	}
	proof := &ConsistencyProof{OldSize: old.Size, NewSize: cur.Size, Hashes: hs, Old: old.Note, New: cur.Note}
	if _, _, err := CheckConsistency(proof, p.k); err != nil {
		return nil, fmt.Errorf("audit: prove consistency: %w", err)
	}
	return proof, nil
}
