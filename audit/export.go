package audit

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// This file is the read side for copies of a log kept elsewhere
// (replication): the raw record lines from a sequence number on, the
// signed checkpoints above a tree size, the durable end of an open log,
// and [Copy], which turns such copies back into a log directory that
// [Verify] checks like any other.

// ErrPruned is returned by [RecordReader.Read] when the records asked for
// were deleted by retention before they were read.
var ErrPruned = errors.New("audit: records pruned")

// DurableSeq returns the sequence number of the last record covered by an
// fsync (0 for an empty log): a record at or below it survives a crash of
// the machine. Copies of the log should take only these, so that a copy
// never holds a record the log itself could lose and then write again
// with other contents.
func (l *Log) DurableSeq() uint64 { return l.durableSeq.Load() }

// SignedSize returns the tree size of the last checkpoint this Log has
// written since Open (0 before its first). A copy that holds a checkpoint
// of that size holds every checkpoint written so far.
func (l *Log) SignedSize() uint64 { return l.tw.signedSize.Load() }

// Epoch returns the current key epoch. The epoch's anchor is written before
// it is current, and its first record after, so a copy that read
// [Log.DurableSeq] and then Epoch knows that no durable record belongs to a
// later epoch.
func (l *Log) Epoch() uint64 { return l.epoch.Load() }

// Dir returns the log's directory.
func (l *Log) Dir() string { return l.dir }

// RecordReader reads the exact record lines of the log in a directory, in
// sequence order from a given sequence number, across segments (following
// the manifest) and across rotations by a writer appending meanwhile. It
// needs no lock. Between calls it keeps its position (segment, offset and
// the open file) and one line buffer, so memory stays bounded however far
// behind the reader is, and each call reads only what is new. A
// RecordReader is not safe for concurrent use; Close releases its file.
type RecordReader struct {
	fs   FS
	dir  string
	next uint64 // next sequence number to return
	seg  string // segment holding next, "" until located
	off  int64  // offset of next in seg
	f    File   // seg, open
	br   *bufio.Reader
	v    recordView
	// man is the manifest last read: while the reader is in its live
	// segment, a call that finds what it was asked for there reads no
	// manifest.
	man *manifest
	// ReadBlock's: its block, and that lines are parsed only through seq.
	block    []byte
	headOnly bool
}

// NewRecordReader returns a reader of the log in dir that starts at
// sequence number from; 0 means the oldest record retention has kept.
func NewRecordReader(dir string, from uint64, opts ReadOptions) *RecordReader {
	fsys := opts.fs()
	return &RecordReader{fs: fsys, dir: dir, next: from}
}

// Next returns the sequence number of the next record Read returns (0
// before the first Read of a reader from the oldest kept record).
func (r *RecordReader) Next() uint64 { return r.next }

// Close releases the open segment file. The reader may be used again; it
// then reopens it.
func (r *RecordReader) Close() error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// Read calls fn with the sequence number and exact line (without its
// newline; valid only during the call) of each record from [RecordReader.Next]
// on, at most limit records (0: no limit) and none above through (0: no
// bound), and returns how many it passed. It returns when it reaches the end
// of the complete lines written so far (an unterminated last line of the live
// segment is a write in progress and is not read). A line that does not
// parse, or a sequence number out of order, is an error; so is an error of
// fn, after which the record fn refused is read again by the next call.
// Records already pruned match [ErrPruned].
func (r *RecordReader) Read(ctx context.Context, limit int, through uint64, fn func(seq uint64, line []byte) error) (int, error) {
	if through != 0 && r.next > through {
		return 0, nil
	}
	man := r.man
	if man == nil || r.seg == "" || len(man.Segments) == 0 || man.Segments[len(man.Segments)-1].Name != r.seg {
		var err error
		if man, err = r.loadManifest(); err != nil {
			return 0, err
		}
	}
	if r.seg == "" {
		if len(man.Segments) == 0 {
			return 0, nil
		}
		if r.next == 0 {
			r.next = man.Segments[0].FirstSeq
		}
		if first := man.Segments[0].FirstSeq; r.next < first {
			return 0, fmt.Errorf("%w: seq %d to %d of %s were deleted by retention", ErrPruned, r.next, first-1, r.dir)
		}
		for _, s := range man.Segments {
			if s.FirstSeq <= r.next {
				r.seg, r.off = s.Name, 0
			}
		}
	}
	n := 0
	for {
		idx := -1
		for i, s := range man.Segments {
			if s.Name == r.seg {
				idx = i
			}
		}
		if idx < 0 {
			return n, fmt.Errorf("%w: segment %s holding seq %d left the manifest of %s", ErrPruned, r.seg, r.next, r.dir)
		}
		live := idx == len(man.Segments)-1
		done, err := r.readSegment(ctx, live, limit, through, fn, &n)
		if err != nil || done {
			return n, err
		}
		if !live {
			r.Close()
			r.seg, r.off = man.Segments[idx+1].Name, 0
			continue
		}
		if through != 0 && r.next > through {
			return n, nil // all that was asked for
		}
		// The end of the live segment: if the writer has rotated since the
		// manifest was read, finish this segment and go on to the next.
		if man, err = r.loadManifest(); err != nil {
			return n, err
		}
		rotated := false
		for i, s := range man.Segments {
			if s.Name == r.seg && i+1 < len(man.Segments) {
				rotated = true
			}
		}
		if !rotated {
			return n, nil
		}
	}
}

// ReadBlock reads the records from [RecordReader.Next] on, none above
// through (0: no bound), as one block: their exact lines, each but the last
// followed by its newline, as many whole lines as fit in maxBytes (at least
// one, however long). It returns the block (valid until the next call) and
// the sequence numbers of its first and last record (0 and 0 for none),
// and the next call goes on after the last. It stops where [RecordReader.Read]
// does. Of each line it checks only the start, through the seq, and that
// seqs follow each other: it is for copies of the log, which are verified
// as a whole ([Verify]), and it reads at the speed of the disk. On an error
// the block holds the records read before it.
func (r *RecordReader) ReadBlock(ctx context.Context, maxBytes int, through uint64) (block []byte, first, last uint64, err error) {
	r.block = r.block[:0]
	r.headOnly = true
	defer func() { r.headOnly = false }()
	_, err = r.Read(ctx, 0, through, func(seq uint64, line []byte) error {
		if first != 0 {
			if len(r.block)+1+len(line) > maxBytes {
				return errBlockFull
			}
			r.block = append(r.block, '\n')
		} else {
			first = seq
		}
		r.block = append(r.block, line...)
		last = seq
		return nil
	})
	if errors.Is(err, errBlockFull) {
		err = nil
	}
	return r.block, first, last, err
}

var errBlockFull = errors.New("audit: block full")

// parse parses a line into r.v: whole, or for ReadBlock through its seq.
func (r *RecordReader) parse(line []byte) error {
	if r.headOnly {
		d := dec{b: line}
		return parseHead(&d, &r.v)
	}
	return parseRecord(line, &r.v)
}

// loadManifest reads the manifest and keeps it.
func (r *RecordReader) loadManifest() (*manifest, error) {
	man, err := loadManifest(r.fs, r.dir)
	if err == nil {
		r.man = man
	}
	return man, err
}

// readSegment reads r.seg from r.off to its end (done false) or until the
// limit, through or fn stop it (done true).
func (r *RecordReader) readSegment(ctx context.Context, live bool, limit int, through uint64, fn func(uint64, []byte) error, n *int) (done bool, err error) {
	fail := func(err error) (bool, error) {
		return false, fmt.Errorf("audit: read %s (offset %d): %w", r.seg, r.off, err)
	}
	if r.f == nil {
		f, err := r.fs.OpenFile(filepath.Join(r.dir, r.seg), os.O_RDONLY, 0)
		if err != nil {
			if live && errors.Is(err, os.ErrNotExist) {
				return false, nil
			}
			return fail(err)
		}
		r.f = f
	}
	if _, ok := r.f.(io.Seeker); !ok {
		// Read past the start again, on a new descriptor.
		r.Close()
		f, err := r.fs.OpenFile(filepath.Join(r.dir, r.seg), os.O_RDONLY, 0)
		if err != nil {
			return fail(err)
		}
		r.f = f
	}
	if err := skipTo(r.f, r.off); err != nil {
		return fail(err)
	}
	if r.br == nil {
		r.br = bufio.NewReaderSize(r.f, maxLineBytes+2)
	}
	r.br.Reset(r.f)
	for i := 0; ; i++ {
		if i&1023 == 0 {
			if err := ctx.Err(); err != nil {
				return true, err
			}
		}
		line, err := r.br.ReadSlice('\n')
		switch {
		case err == io.EOF && (live || len(line) == 0):
			return false, nil // the end, or a write in progress
		case err == io.EOF:
			return fail(fmt.Errorf("%w: unterminated last line", errMalformed))
		case errors.Is(err, bufio.ErrBufferFull):
			return fail(errLineTooLong)
		case err != nil:
			return fail(err)
		}
		if err := r.parse(line[:len(line)-1]); err != nil {
			return fail(err)
		}
		seq := r.v.seq
		if seq < r.next {
			r.off += int64(len(line)) // before the start, in the first segment read
			continue
		}
		if seq != r.next {
			return fail(fmt.Errorf("%w: seq %d where %d was expected", errMalformed, seq, r.next))
		}
		if limit > 0 && *n >= limit || through != 0 && seq > through {
			return true, nil
		}
		if err := fn(seq, line[:len(line)-1]); err != nil {
			return true, err
		}
		r.off += int64(len(line))
		r.next++
		*n++
	}
}

// CheckpointReader reads the signed checkpoints of the log in a directory,
// oldest first, from a tree size on, verified with the log's public key
// (checkpoint.pub), while a writer may be appending them. It needs no lock
// and keeps its position (segment and offset) between calls, so each call
// reads only what is new. It is not safe for concurrent use.
type CheckpointReader struct {
	fs    FS
	dir   string
	k     *PublicKey
	after uint64 // tree size of the last checkpoint returned
	seg   string // segment whose checkpoint file is read, "" until located
	off   int64
}

// NewCheckpointReader returns a reader of the checkpoints of the log in dir
// whose tree size is above after.
func NewCheckpointReader(dir string, after uint64, opts ReadOptions) (*CheckpointReader, error) {
	fsys := opts.fs()
	k, err := ReadPublicKey(dir, fsys)
	if err != nil {
		return nil, err
	}
	return &CheckpointReader{fs: fsys, dir: dir, k: k, after: after}, nil
}

// Read calls fn with each new checkpoint, oldest first. An unfinished last
// checkpoint (a write in progress) is read by a later call. A checkpoint that
// does not verify is an error; so is an error of fn, after which the
// checkpoint fn refused is read again by the next call.
func (c *CheckpointReader) Read(ctx context.Context, fn func(*Checkpoint) error) error {
	man, err := loadManifest(c.fs, c.dir)
	if err != nil {
		return err
	}
	if c.k.logID != man.LogID {
		return fmt.Errorf("audit: %s is for log %s, the manifest for %s", checkpointPubName, c.k.logID, man.LogID)
	}
	if c.seg == "" {
		for _, s := range man.Segments {
			if s.FirstSeq <= c.after+1 {
				c.seg, c.off = s.Name, 0 // a checkpoint of size K lives with record K
			}
		}
		if c.seg == "" {
			if len(man.Segments) == 0 {
				return nil
			}
			c.seg = man.Segments[0].Name
		}
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		idx := -1
		for i, s := range man.Segments {
			if s.Name == c.seg {
				idx = i
			}
		}
		if idx < 0 {
			return fmt.Errorf("%w: segment %s left the manifest of %s", ErrPruned, c.seg, c.dir)
		}
		if err := c.readFile(fn); err != nil {
			return err
		}
		if idx == len(man.Segments)-1 {
			return nil
		}
		c.seg, c.off = man.Segments[idx+1].Name, 0
	}
}

// readFile reads the checkpoints of c.seg's file from c.off on.
func (c *CheckpointReader) readFile(fn func(*Checkpoint) error) error {
	name := c.seg + checkpointsSuffix
	f, err := c.fs.OpenFile(filepath.Join(c.dir, name), os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("audit: read %s: %w", name, err)
	}
	defer f.Close()
	if err := skipTo(f, c.off); err != nil {
		return fmt.Errorf("audit: read %s: %w", name, err)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxCheckpointFileBytes+1-c.off))
	if err != nil {
		return fmt.Errorf("audit: read %s: %w", name, err)
	}
	if c.off+int64(len(b)) > maxCheckpointFileBytes {
		return fmt.Errorf("audit: %s is larger than %d bytes", name, maxCheckpointFileBytes)
	}
	for len(b) > 0 {
		msg, rest, err := splitNote(b)
		if err == errTornNote {
			return nil
		}
		if err == nil {
			var ck *Checkpoint
			if ck, err = ParseCheckpoint(msg, c.k); err == nil {
				ck.file = name
				if ck.Size > c.after {
					if err := fn(ck); err != nil {
						return err
					}
					c.after = ck.Size
				}
			}
		}
		if err != nil {
			return fmt.Errorf("audit: %s (offset %d): %w", name, c.off, err)
		}
		c.off += int64(len(msg))
		b = rest
	}
	return nil
}

// ReadCheckpoints calls fn, oldest first, with each signed checkpoint of
// the log in dir whose tree size is above after (see [CheckpointReader]).
func ReadCheckpoints(ctx context.Context, dir string, after uint64, opts ReadOptions, fn func(*Checkpoint) error) error {
	c, err := NewCheckpointReader(dir, after, opts)
	if err != nil {
		return err
	}
	return c.Read(ctx, fn)
}

// AnchorReader reads the epoch anchors of the log in a directory (the
// epochs file of format version 2; a version 1 log has none), in epoch
// order from a given epoch on, while a writer may be appending them. It
// keeps its position between calls. It is not safe for concurrent use.
type AnchorReader struct {
	fs   FS
	dir  string
	next uint64 // next epoch to return
	off  int64
	last *anchor
	br   *bufio.Reader
	// logID is the manifest's log ID, read once: it never changes, and the
	// shipper calls Read at every poll.
	logID string
}

// NewAnchorReader returns a reader of the anchors of the log in dir of
// the epochs after the epoch after (0: from epoch 1).
func NewAnchorReader(dir string, after uint64, opts ReadOptions) *AnchorReader {
	fsys := opts.fs()
	return &AnchorReader{fs: fsys, dir: dir, next: after + 1}
}

// Read calls fn with the epoch and exact line (without its newline; valid
// only during the call) of each new anchor. An unterminated last line (an
// append in progress) is read by a later call; an anchor out of order or
// malformed is an error, and so is an error of fn, after which the anchor
// fn refused is read again by the next call.
func (r *AnchorReader) Read(ctx context.Context, fn func(epoch uint64, line []byte) error) error {
	if r.logID == "" {
		man, err := loadManifest(r.fs, r.dir)
		if err != nil {
			return err
		}
		r.logID = man.LogID
	}
	f, err := r.fs.OpenFile(filepath.Join(r.dir, epochsName), os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("audit: read %s: %w", epochsName, err)
	}
	defer f.Close()
	if err := skipTo(f, r.off); err != nil {
		return fmt.Errorf("audit: read %s: %w", epochsName, err)
	}
	if r.br == nil {
		r.br = bufio.NewReaderSize(f, 4096)
	}
	r.br.Reset(f)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		line, err := r.br.ReadSlice('\n')
		if err == io.EOF {
			return nil // the end, or an append in progress
		}
		if err != nil {
			return fmt.Errorf("audit: read %s (offset %d): %w", epochsName, r.off, err)
		}
		a, err := parseAnchor(line[:len(line)-1], r.logID)
		if err == nil && a.epoch >= r.next {
			if a.epoch != r.next {
				err = fmt.Errorf("%w: epoch %d where %d was expected", errAnchor, a.epoch, r.next)
			} else if r.last != nil {
				err = a.follows(r.last)
			}
		}
		if err != nil {
			return fmt.Errorf("audit: read %s (offset %d): %w", epochsName, r.off, err)
		}
		if a.epoch >= r.next {
			if err := fn(a.epoch, line[:len(line)-1]); err != nil {
				return err
			}
			r.next++
		}
		r.last = &a
		r.off += int64(len(line))
	}
}

// AnchorEpoch returns the epoch of an anchor line of log logID (without its
// newline), checking its form only.
func AnchorEpoch(line []byte, logID string) (uint64, error) {
	a, err := parseAnchor(line, logID)
	if err != nil {
		return 0, err
	}
	return a.epoch, nil
}

// Copy rebuilds a log directory from a copy of a log's epoch anchors,
// records and signed checkpoints kept elsewhere (a replica), so that
// [Verify] checks the copy with every rule it applies to a log, and
// [NewRecordReader] reads it. Anchors may come at any time, in order;
// checkpoints come before the records, which come in sequence order; Close
// writes the manifest. The records are split into segments where the log
// itself must have rotated (the epoch or the UTC day changes right after a
// checkpoint of the record before), which is how the writer leaves them.
// Memory holds the tree sizes of the checkpoints and one entry per
// segment; records and notes go straight to files. Copy is not safe for
// concurrent use.
type Copy struct {
	fs         FS
	dir        string
	logID      string
	sizes      map[uint64]bool
	notes      File // the checkpoints, in order, until Close
	epochs     File // the epochs file, open once an anchor came
	lastAnchor *anchor
	man        manifest
	seg        *segmentInfo
	f          File
	h          hash.Hash
	last       uint64
	rec        Record
}

const copyNotesName = "copy-checkpoints.tmp"

// NewCopy starts a copy of log logID in dir, which must not exist or be
// empty.
func NewCopy(dir, logID string, opts ReadOptions) (*Copy, error) {
	fsys := opts.fs()
	if len(logID) != 16 || !isLowerHex([]byte(logID)) {
		return nil, fmt.Errorf("audit: copy: log id %q is not 16 lowercase hex digits", truncateForError(logID))
	}
	if err := fsys.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("audit: copy: %w", err)
	}
	if ents, err := fsys.ReadDir(dir); err != nil {
		return nil, fmt.Errorf("audit: copy: %w", err)
	} else if len(ents) > 0 {
		return nil, fmt.Errorf("audit: copy %s: directory is not empty", dir)
	}
	notes, err := fsys.OpenFile(filepath.Join(dir, copyNotesName), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: copy: %w", err)
	}
	return &Copy{fs: fsys, dir: dir, logID: logID, sizes: map[uint64]bool{}, notes: notes,
		man: manifest{LogID: logID}}, nil
}

// AddAnchor adds the next epoch anchor's exact line (without its newline):
// it must parse and follow the one before (the first is of epoch 1). Its
// MAC is checked by [Verify] with the verification key.
func (c *Copy) AddAnchor(line []byte) error {
	a, err := parseAnchor(line, c.logID)
	if err != nil {
		return err
	}
	if err := a.follows(c.lastAnchor); err != nil {
		return err
	}
	if c.epochs == nil {
		f, err := c.fs.OpenFile(filepath.Join(c.dir, epochsName), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("audit: copy: %w", err)
		}
		c.epochs = f
	}
	if _, err := c.epochs.Write(append(append(make([]byte, 0, len(line)+1), line...), '\n')); err != nil {
		return fmt.Errorf("audit: copy: %w", err)
	}
	c.lastAnchor = &a
	return nil
}

// AddCheckpoint adds a signed checkpoint (its note, verbatim). Its text must
// parse; its signature is checked by [Verify] with the public key.
func (c *Copy) AddCheckpoint(note []byte) error {
	if c.seg != nil {
		return errors.New("audit: copy: checkpoints must come before the records")
	}
	if len(note) > maxNoteBytes {
		return fmt.Errorf("%w: larger than %d bytes", errCheckpoint, maxNoteBytes)
	}
	msg, rest, err := splitNote(note)
	if err != nil || len(rest) != 0 {
		return fmt.Errorf("%w: not one signed note", errCheckpoint)
	}
	text, _, _ := splitNoteText(msg)
	ck, err := parseCheckpointText(text)
	if err != nil {
		return err
	}
	c.sizes[ck.Size] = true
	// Each note goes to the temporary file after its length, so that
	// Close reads them back one at a time.
	if _, err := fmt.Fprintf(c.notes, "%d\n%s", len(msg), msg); err != nil {
		return fmt.Errorf("audit: copy: %w", err)
	}
	return nil
}

// splitNoteText returns the text of a signed note (up to and including
// the newline before the empty line).
func splitNoteText(msg []byte) (string, []byte, bool) {
	for i := 0; i+1 < len(msg); i++ {
		if msg[i] == '\n' && msg[i+1] == '\n' {
			return string(msg[:i+1]), msg[i+2:], true
		}
	}
	return "", nil, false
}

// AddRecord adds the next record's exact line (without its newline). Its
// sequence number must be one more than the last one added; it must parse
// and belong to the copy's log.
func (c *Copy) AddRecord(line []byte) error {
	var v recordView
	if err := parseRecord(line, &v); err != nil {
		return err
	}
	if string(v.idLogID) != c.logID {
		return fmt.Errorf("%w: record seq %d belongs to log %q, not %s", errMalformed, v.seq, truncateForError(string(v.idLogID)), c.logID)
	}
	if c.last == 0 && c.seg == nil {
		if v.seq != 1 {
			return fmt.Errorf("%w: the copy starts at seq %d, not 1", errMalformed, v.seq)
		}
	} else if v.seq != c.last+1 {
		return fmt.Errorf("%w: seq %d follows seq %d", errMalformed, v.seq, c.last)
	}
	if c.man.Ver == 0 {
		c.man.Ver = v.ver
	} else if v.ver != c.man.Ver {
		return fmt.Errorf("%w: record seq %d is of format version %d, the copy's %d", errMalformed, v.seq, v.ver, c.man.Ver)
	}
	v.record(&c.rec)
	t := c.rec.Time
	if c.seg != nil && c.sizes[c.last] && (v.epoch != c.seg.LastEpoch || !sameDay(t, c.seg.LastTime)) {
		if err := c.closeSegment(); err != nil {
			return err
		}
	}
	if c.seg == nil {
		name := segmentName(t, v.seq)
		f, err := c.fs.OpenFile(filepath.Join(c.dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("audit: copy: %w", err)
		}
		c.f, c.h = f, sha256.New()
		c.seg = &segmentInfo{Name: name, FirstSeq: v.seq, FirstMAC: v.mac, FirstEpoch: v.epoch, FirstTime: t}
	}
	buf := append(append(make([]byte, 0, len(line)+1), line...), '\n')
	if _, err := c.f.Write(buf); err != nil {
		return fmt.Errorf("audit: copy: %w", err)
	}
	c.h.Write(buf)
	s := c.seg
	s.Records++
	s.Size += int64(len(buf))
	s.LastSeq, s.LastMAC, s.LastEpoch, s.LastTime = v.seq, v.mac, v.epoch, t
	c.last = v.seq
	return nil
}

func (c *Copy) closeSegment() error {
	s := c.seg
	s.Closed = true
	c.h.Sum(s.SHA256[:0])
	if err := c.f.Close(); err != nil {
		return fmt.Errorf("audit: copy: %w", err)
	}
	if err := writeFileAtomic(c.fs, c.dir, s.Name+checksumSuffix, checksumLine(s.SHA256, s.Name)); err != nil {
		return err
	}
	c.man.Segments = append(c.man.Segments, *s)
	c.seg, c.f = nil, nil
	return nil
}

// Last returns the sequence number of the last record added.
func (c *Copy) Last() uint64 { return c.last }

// Close finishes the copy: the last segment stays open (live), every
// checkpoint goes to the checkpoint file of the segment holding its last
// record (or the last segment), and the manifest is written.
func (c *Copy) Close() error {
	if c.seg != nil {
		s := *c.seg
		if err := c.f.Close(); err != nil {
			return fmt.Errorf("audit: copy: %w", err)
		}
		c.man.Segments = append(c.man.Segments, s)
		c.seg, c.f = nil, nil
	}
	if c.epochs != nil {
		if err := c.epochs.Close(); err != nil {
			return fmt.Errorf("audit: copy: %w", err)
		}
	}
	if err := c.placeCheckpoints(); err != nil {
		return err
	}
	if c.man.Ver == 0 {
		c.man.Ver = formatVersion
	}
	return writeFileAtomic(c.fs, c.dir, manifestName, c.man.encode())
}

func (c *Copy) placeCheckpoints() error {
	path := filepath.Join(c.dir, copyNotesName)
	defer c.fs.Remove(path)
	if err := c.notes.Close(); err != nil {
		return fmt.Errorf("audit: copy: %w", err)
	}
	if len(c.sizes) == 0 {
		return nil
	}
	if len(c.man.Segments) == 0 {
		return fmt.Errorf("%w: the copy has %d checkpoints and no records", errCheckpoint, len(c.sizes))
	}
	f, err := c.fs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("audit: copy: %w", err)
	}
	defer f.Close()
	// One note in memory at a time, placed by binary search over the
	// segments: bounded memory and O(log segments) per checkpoint.
	br := bufio.NewReader(f)
	segs := c.man.Segments
	for {
		head, err := br.ReadString('\n')
		if err == io.EOF && head == "" {
			return nil
		}
		n, perr := strconv.Atoi(strings.TrimSuffix(head, "\n"))
		if err != nil || perr != nil || n <= 0 || n > maxNoteBytes {
			return fmt.Errorf("audit: copy: read back checkpoint notes: bad length %q", head)
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(br, msg); err != nil {
			return fmt.Errorf("audit: copy: read back checkpoint notes: %w", err)
		}
		text, _, _ := splitNoteText(msg)
		ck, err := parseCheckpointText(text)
		if err != nil {
			return err
		}
		seg := segs[len(segs)-1].Name
		if i := sort.Search(len(segs), func(i int) bool { return segs[i].LastSeq >= ck.Size }); i < len(segs) && segs[i].FirstSeq <= ck.Size {
			seg = segs[i].Name
		}
		if err := appendCheckpoint(c.fs, c.dir, seg, msg); err != nil {
			return err
		}
	}
}

// String returns "copy of <log id> in <dir> through seq <n>".
func (c *Copy) String() string {
	return "copy of " + c.logID + " in " + c.dir + " through seq " + strconv.FormatUint(c.last, 10)
}

// skipTo moves f, just opened or seekable, to offset off: it seeks where
// the file can, and reads past the start where it cannot.
func skipTo(f File, off int64) error {
	if sk, ok := f.(io.Seeker); ok {
		_, err := sk.Seek(off, io.SeekStart)
		return err
	}
	_, err := io.CopyN(io.Discard, f, off)
	return err
}
