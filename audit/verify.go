package audit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// VerifyOptions configure [Verify]. The zero value verifies without a key.
type VerifyOptions struct {
	// Key is the log's verification key. Nil checks everything but the
	// MACs (and [VerifyReport.MACsChecked] says so).
	Key *VerificationKey
	// PublicKey is the log's checkpoint public key. With it, Verify also
	// rebuilds the Merkle tree over the records and checks every signed
	// checkpoint: its signature, that its root is the tree's at its size
	// (so successive checkpoints are consistent), and that every closed
	// segment ends with one. Nil checks no checkpoint (and
	// [VerifyReport.CheckpointsChecked] says so).
	PublicKey *PublicKey
	// FS is the file system. Nil means [OSFS].
	FS FS
}

// VerifyReport says what [Verify] checked.
type VerifyReport struct {
	Records     uint64 // records checked
	Segments    int    // segments checked
	Pruned      int    // segments deleted by retention (checked only by their manifest entry)
	FirstSeq    uint64 // first record checked (0 if none)
	LastSeq     uint64
	Epochs      uint64 // distinct key epochs among the records
	FirstEpoch  uint64
	LastEpoch   uint64
	MACsChecked bool
	// CheckpointsChecked says the tree and the signed checkpoints were
	// checked with the public key; Checkpoints counts them, SignedSize is
	// the tree size of the last one and Unsigned the records after it.
	CheckpointsChecked bool
	Checkpoints        int
	SignedSize         uint64
	Unsigned           uint64
	// TornBytes counts the bytes of an unterminated last line of the live
	// segment: a write in progress or a crash, not checked. Opening the log
	// cuts it.
	TornBytes int64
	// Version is the log's format version. Anchors counts the epoch
	// anchors checked (version 2: every record lies in its epoch's window;
	// with the key, each anchor's MAC verified too); version 1 logs have
	// none, and their epochs are bound to no time or position.
	Version int
	Anchors int
}

// maxEpochJump bounds how far one record may move the epoch forward, so a
// forged epoch cannot make the verifier derive keys for hours.
const maxEpochJump = 1 << 20

// Verify checks the log in dir, streaming, in constant memory: every
// record's format, sequence continuity, chain links, epochs, time order and
// (with a key) MAC; in format version 2, that every record lies in its
// epoch's window given by the epoch anchors (with a key, each anchor's MAC
// too); every closed segment's checksum file; and every claim of the
// manifest. It does not read state.json. It needs no lock and may run while a writer appends. It
// returns a [*VerifyError] naming the first bad record or file and the
// [Problem], or [ErrWrongKey].
func Verify(ctx context.Context, dir string, opts VerifyOptions) (*VerifyReport, error) {
	v := &verifier{ctx: ctx, fs: opts.FS, dir: dir, key: opts.Key, pk: opts.PublicKey}
	if v.fs == nil {
		v.fs = OSFS{}
	}
	err := v.run()
	if v.sr != nil {
		v.sr.Close()
	}
	return &v.rep, err
}

type item struct {
	seg        int
	line       int
	off        int64
	term       bool
	perr       error
	v          recordView
	raw        []byte
	unfinished bool // unterminated last line of a closed segment
}

// segAcc accumulates what a segment's records say, to compare with the
// manifest.
type segAcc struct {
	records               uint64
	firstMAC, lastMAC     [32]byte
	firstSeq, lastSeq     uint64
	firstEpoch, lastEpoch uint64
	firstTime             string
}

type verifier struct {
	ctx context.Context
	fs  FS
	dir string
	man *manifest
	key *VerificationKey
	rep VerifyReport

	kEpoch uint64
	k      epochKey
	mac    hash.Hash
	sum    [32]byte

	si       int
	sr       *segReader
	acc      segAcc
	scanning bool // classifying a failure: no more end-of-segment checks

	last     chainEnd
	lastTime [len(timeLayout)]byte
	lastLoc  Location
	lastLine []byte
	haveLast bool
	maxEpoch uint64 // highest epoch the manifest names

	prunedClaim uint64
	peek        item

	// With a public key: the tree over the records checked so far, the
	// checkpoint file of the segment being read and its next checkpoint.
	pk     *PublicKey
	tree   *frontier
	cf     *checkpointFile
	nextCk *Checkpoint
	lastCk *Checkpoint

	// Version 2: the epochs file, the anchor of the epoch of the record
	// checked last, and the next anchor after it (read ahead).
	ar           *anchorReader
	curA, nextA  *anchor
	anchorsEnded bool
	// liveEnd is the bytes read of the last segment when it ended.
	liveEnd int64
}

func (v *verifier) fail(loc Location, p Problem, format string, args ...any) *VerifyError {
	return &VerifyError{Location: loc, Problem: p, Err: fmt.Errorf(format, args...)}
}

func (v *verifier) loc(it *item) Location {
	return Location{File: v.man.Segments[it.seg].Name, Line: it.line, Offset: it.off, Seq: it.v.seq}
}

func (v *verifier) run() error {
	// List the directory before reading the manifest: the writer lists a
	// segment in the manifest before it creates the file, so every segment
	// file seen here is in the manifest read after.
	ents, err := v.fs.ReadDir(v.dir)
	if err != nil {
		return fmt.Errorf("audit: verify: %w", err)
	}
	mb, err := readFile(v.fs, filepath.Join(v.dir, manifestName), maxManifestBytes)
	if err != nil {
		return v.fail(Location{File: manifestName}, ManifestMismatch, "read manifest: %w", err)
	}
	if v.man, err = parseManifest(mb); err != nil {
		return v.fail(Location{File: manifestName}, ManifestMismatch, "%w", err)
	}
	if v.key != nil {
		if v.key.logID != v.man.LogID {
			if v.firstLogID() == v.key.logID {
				return v.fail(Location{File: manifestName}, ManifestMismatch, "manifest log id %s, records and key of log %s", v.man.LogID, v.key.logID)
			}
			return fmt.Errorf("%w: key for %s, log %s", ErrWrongKey, v.key.logID, v.man.LogID)
		}
		if v.key.version != v.man.Ver {
			return v.fail(Location{File: manifestName}, ManifestMismatch,
				"the log is of format version %d, the key is of a version %d log (a rewritten or downgraded log?)", v.man.Ver, v.key.version)
		}
		v.k = v.key.key
		mk := v.k.macKey()
		v.mac = newMAC(&mk)
		v.rep.MACsChecked = true
	}
	defer clear(v.k[:])
	v.rep.Version = v.man.Ver
	if v.man.Ver >= formatVersion {
		ar, err := openAnchors(v.fs, v.dir, v.man.LogID)
		if err != nil && err != errNoAnchors {
			return err
		}
		if ar != nil {
			defer ar.close()
			if v.key != nil {
				ar.key, ar.k = true, v.key.key
			}
			v.ar = ar
		}
	}
	v.last = chainEnd{mac: genesis}
	for _, s := range v.man.Pruned {
		v.last = chainEnd{seq: s.LastSeq, mac: s.LastMAC, epoch: s.LastEpoch}
		v.maxEpoch = s.LastEpoch
	}
	if v.pk != nil {
		if err := v.startTree(); err != nil {
			return err
		}
	}
	v.rep.Pruned = len(v.man.Pruned)
	for _, s := range v.man.Segments {
		v.maxEpoch = max(v.maxEpoch, s.LastEpoch)
	}
	if err := v.strays(ents); err != nil {
		return err
	}
	var it item
	for n := 0; ; n++ {
		if n&4095 == 0 {
			if err := v.ctx.Err(); err != nil {
				return err
			}
		}
		err := v.next(&it)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if err := v.check(&it); err != nil {
			return err
		}
	}
	if n := len(v.man.Pruned); n > 0 && v.prunedClaim < v.man.Pruned[n-1].LastSeq {
		return v.fail(Location{File: manifestName, Seq: v.man.Pruned[n-1].LastSeq}, ManifestMismatch,
			"segments through seq %d are marked pruned, but no audit_pruned record covers them", v.man.Pruned[n-1].LastSeq)
	}
	if err := v.endAnchors(); err != nil {
		return err
	}
	if v.pk != nil {
		return v.endTree()
	}
	return nil
}

// firstLogID returns the log ID of the first record, or "".
func (v *verifier) firstLogID() string {
	if len(v.man.Segments) == 0 {
		return ""
	}
	sr, err := openSegment(v.fs, filepath.Join(v.dir, v.man.Segments[0].Name))
	if err != nil {
		return ""
	}
	defer sr.Close()
	line, _, err := sr.read()
	var rv recordView
	if err != nil || parseRecord(line, &rv) != nil {
		return ""
	}
	return string(rv.idLogID)
}

// strays refuses segment files that the manifest does not list.
func (v *verifier) strays(ents []fs.DirEntry) error {
	known := map[string]bool{}
	for _, list := range [][]segmentInfo{v.man.Pruned, v.man.Segments} {
		for _, s := range list {
			known[s.Name] = true
		}
	}
	present := map[string]bool{}
	strayBySeq := map[uint64]string{}
	for _, e := range ents {
		present[e.Name()] = true
		if seq, ok := parseSegmentName(e.Name()); ok && !known[e.Name()] {
			strayBySeq[seq] = e.Name()
		}
	}
	for _, s := range v.man.Segments {
		if !present[s.Name] && strayBySeq[s.FirstSeq] != "" {
			return v.fail(Location{File: manifestName, Seq: s.FirstSeq}, ManifestMismatch,
				"manifest names segment %s, the directory holds %s", s.Name, strayBySeq[s.FirstSeq])
		}
	}
	for _, name := range strayBySeq {
		return v.fail(Location{File: name}, Inserted, "segment file not listed in the manifest")
	}
	return nil
}

// next reads the next line of the log into it, moving through the
// manifest's segments. At the end of each segment (unless classifying) it
// checks the segment against the manifest.
func (v *verifier) next(it *item) error {
	for {
		if v.sr == nil {
			if v.si >= len(v.man.Segments) {
				return io.EOF
			}
			s := v.man.Segments[v.si]
			sr, err := openSegment(v.fs, filepath.Join(v.dir, s.Name))
			if errors.Is(err, os.ErrNotExist) {
				if !s.Closed && s.Records == 0 && v.si == len(v.man.Segments)-1 {
					// The writer lists a new segment before creating it.
					v.si++
					continue
				}
				return v.fail(Location{File: s.Name, Seq: s.FirstSeq}, Deleted, "segment file is missing")
			}
			if err != nil {
				return fmt.Errorf("audit: verify: %w", err)
			}
			v.sr, v.acc = sr, segAcc{}
			if !v.scanning {
				v.rep.Segments++
				if v.pk != nil {
					if err := v.startCheckpoints(s); err != nil {
						return err
					}
				}
			}
		}
		line, term, err := v.sr.read()
		if err == io.EOF {
			if v.si == len(v.man.Segments)-1 {
				v.liveEnd = v.sr.off
			}
			if !v.scanning {
				if err := v.endSegment(); err != nil {
					return err
				}
			}
			v.sr.Close()
			v.sr = nil
			v.si++
			continue
		}
		*it = item{seg: v.si, line: v.sr.line, off: v.sr.off, term: term, raw: it.raw, v: recordView{fields: it.v.fields}}
		if err == errLineTooLong {
			it.perr = err
			return nil
		}
		if err != nil {
			return fmt.Errorf("audit: verify: read %s: %w", v.man.Segments[v.si].Name, err)
		}
		s := v.man.Segments[v.si]
		if !term {
			if !s.Closed && v.si == len(v.man.Segments)-1 {
				v.rep.TornBytes = int64(len(line))
				continue // EOF follows
			}
			it.unfinished = true
		}
		it.perr = parseRecord(line, &it.v)
		if it.perr == nil && string(it.v.idLogID) != v.man.LogID {
			if v.key == nil && !v.haveLast && !v.scanning && v.rep.Records == 0 {
				return v.fail(Location{File: manifestName}, ManifestMismatch, "manifest log id %s, records of log %s", v.man.LogID, it.v.idLogID)
			}
			it.perr = fmt.Errorf("record of another log (%s)", it.v.idLogID)
		}
		return nil
	}
}

// keep copies it's line so that it survives reading ahead.
func (v *verifier) keep(it *item) {
	if it.perr != nil {
		return
	}
	it.raw = append(it.raw[:0], it.v.line...)
	if err := parseRecord(it.raw, &it.v); err != nil {
		panic("audit: reparse of a parsed record failed")
	}
}

// links reports whether it continues the chain from the last good record.
func (v *verifier) links(it *item) bool {
	return it.perr == nil && it.v.seq == v.last.seq+1 && it.v.prev == v.last.mac
}

func (v *verifier) check(it *item) error {
	s := &v.man.Segments[it.seg]
	if it.unfinished {
		if v.sr != nil && v.sr.next == s.Size {
			return v.fail(v.loc(it), Modified, "the last record's newline was changed")
		}
		return v.fail(v.loc(it), Truncated, "closed segment ends inside a record")
	}
	if it.perr != nil {
		return v.classifyBad(it, it.perr)
	}
	r := &it.v
	if v.haveLast && r.seq <= v.last.seq {
		if r.seq == v.last.seq && bytes.Equal(r.line, v.lastLine) {
			return v.fail(v.loc(it), Duplicated, "record seq %d repeated", r.seq)
		}
		if v.key != nil && !v.macFresh(r) {
			return v.classifyBad(it, errors.New("MAC does not verify"))
		}
		return v.classifyChain(it)
	}
	if v.haveLast && r.epoch < v.last.epoch {
		return v.epochBackwards(it)
	}
	if r.epoch > v.last.epoch && r.epoch-v.last.epoch > maxEpochJump {
		return v.classifyBad(it, fmt.Errorf("epoch %d is out of range", r.epoch))
	}
	if v.mac != nil {
		if r.epoch < v.kEpoch {
			return v.classifyBad(it, fmt.Errorf("epoch %d after epoch %d: the MAC cannot verify", r.epoch, v.kEpoch))
		}
		if r.epoch > v.kEpoch {
			v.k = keyAt(v.k, v.kEpoch, r.epoch)
			v.kEpoch = r.epoch
			mk := v.k.macKey()
			v.mac = newMAC(&mk)
			clear(mk[:])
		}
		v.mac.Reset()
		v.mac.Write(r.macInput())
		if !hmac.Equal(v.mac.Sum(v.sum[:0]), r.mac[:]) {
			if e, ok := v.laterEpoch(r); ok {
				return v.fail(v.loc(it), WrongEpoch, "record names epoch %d, its MAC verifies with the key of epoch %d", r.epoch, e)
			}
			return v.classifyBad(it, errors.New("MAC does not verify"))
		}
	}
	if !v.links(it) {
		return v.classifyChain(it)
	}
	if v.haveLast && string(r.time) < string(v.lastTime[:]) {
		return v.fail(v.loc(it), Modified, "time goes backwards")
	}
	if r.ver != v.man.Ver {
		return v.fail(v.loc(it), Modified, "record of format version %d in a version %d log", r.ver, v.man.Ver)
	}
	if err := v.window(it); err != nil {
		return err
	}
	if !s.Closed && s.Records > 0 && r.seq == s.LastSeq && (r.mac != s.LastMAC || r.epoch != s.LastEpoch ||
		v.sr.next != s.Size || string(r.time) != s.LastTime.UTC().Format(timeLayout)) {
		return v.fail(v.loc(it), ManifestMismatch, "manifest checkpoint disagrees with seq %d", r.seq)
	}
	// Accept.
	if string(r.typ) == prunedType {
		if err := prunedFields(r); err != nil {
			return v.fail(v.loc(it), Modified, "%v", err)
		}
		v.prunedClaim = max(v.prunedClaim, uint64(r.fields[4].num))
	}
	if !v.haveLast || r.epoch != v.last.epoch || v.rep.Records == 0 {
		if v.rep.Records == 0 {
			v.rep.FirstSeq, v.rep.FirstEpoch = r.seq, r.epoch
		}
		if v.rep.Records == 0 || r.epoch != v.rep.LastEpoch {
			v.rep.Epochs++
		}
	}
	v.rep.Records++
	v.rep.LastSeq, v.rep.LastEpoch = r.seq, r.epoch
	a := &v.acc
	if a.records == 0 {
		a.firstMAC, a.firstSeq, a.firstEpoch, a.firstTime = r.mac, r.seq, r.epoch, string(r.time)
	}
	a.records++
	a.lastMAC, a.lastSeq, a.lastEpoch = r.mac, r.seq, r.epoch
	v.last = chainEnd{seq: r.seq, mac: r.mac, epoch: r.epoch}
	if v.tree != nil {
		if err := v.addLeaf(it); err != nil {
			return err
		}
	}
	copy(v.lastTime[:], r.time)
	v.lastLoc = v.loc(it)
	v.lastLine = append(v.lastLine[:0], r.line...)
	v.haveLast = true
	return nil
}

// epochBackwards names a record whose epoch is lower than the one before
// it. If its own MAC verifies (with the key derived afresh for its epoch),
// the record before it is the odd one: it was MACed with a later epoch's key
// and renamed to that epoch.
func (v *verifier) epochBackwards(it *item) error {
	r := &it.v
	if v.key == nil {
		return v.fail(v.loc(it), WrongEpoch, "epoch %d after epoch %d", r.epoch, v.last.epoch)
	}
	if v.macFresh(r) {
		return v.fail(v.lastLoc, WrongEpoch, "seq %d names epoch %d, but seq %d after it is a valid record of epoch %d: seq %d was MACed with a later epoch's key",
			v.last.seq, v.last.epoch, r.seq, r.epoch, v.last.seq)
	}
	return v.classifyBad(it, fmt.Errorf("epoch %d after epoch %d, and the MAC does not verify", r.epoch, v.last.epoch))
}

// macFresh checks r's MAC with its epoch's key derived afresh from the
// verification key (slow: for the failure path only).
func (v *verifier) macFresh(r *recordView) bool {
	if r.epoch > maxEpochJump {
		return false
	}
	k := keyAt(v.key.key, 0, r.epoch)
	mk := k.macKey()
	clear(k[:])
	m := newMAC(&mk)
	clear(mk[:])
	m.Write(r.macInput())
	var sum [32]byte
	return hmac.Equal(m.Sum(sum[:0]), r.mac[:])
}

// laterEpoch reports whether r's MAC verifies under the key of a later
// epoch than the one it names: a record re-MACed with a newer key.
func (v *verifier) laterEpoch(r *recordView) (uint64, bool) {
	if r.epoch != v.kEpoch {
		return 0, false
	}
	limit := min(max(v.maxEpoch, r.epoch)+64, r.epoch+100000)
	k := v.k
	defer clear(k[:])
	var sum [32]byte
	for e := r.epoch + 1; e <= limit; e++ {
		n := k.next()
		clear(k[:])
		k = n
		mk := k.macKey()
		m := newMAC(&mk)
		clear(mk[:])
		m.Write(r.macInput())
		if hmac.Equal(m.Sum(sum[:0]), r.mac[:]) {
			return e, true
		}
	}
	return 0, false
}

// classifyBad names a record that does not parse or whose MAC fails:
// inserted if the record after it continues the chain, else modified.
func (v *verifier) classifyBad(it *item, cause error) error {
	loc := v.loc(it)
	if it.perr != nil {
		loc.Seq = v.last.seq + 1
	}
	v.scanning = true
	if err := v.next(&v.peek); err == nil && v.links(&v.peek) {
		return v.fail(loc, Inserted, "%v; the next record continues the chain from seq %d", cause, v.last.seq)
	}
	return v.fail(loc, Modified, "%v", cause)
}

// classifyChain names a well-formed record that does not continue the
// chain, reading ahead as far as needed (still in constant memory).
func (v *verifier) classifyChain(it *item) error {
	v.keep(it)
	r := &it.v
	loc := v.loc(it)
	want := v.last.seq + 1
	v.scanning = true
	n := &v.peek
	err := v.next(n)
	if err == nil && v.links(n) {
		switch {
		case r.seq == n.v.seq+1 && r.prev == n.v.mac:
			return v.fail(loc, Reordered, "seq %d comes before seq %d", r.seq, n.v.seq)
		case r.seq <= v.last.seq:
			return v.fail(loc, Duplicated, "seq %d repeated after seq %d", r.seq, v.last.seq)
		}
		return v.fail(loc, Inserted, "seq %d does not belong after seq %d", r.seq, v.last.seq)
	}
	switch {
	case r.seq > want:
		for ; err == nil; err = v.next(n) {
			if n.perr == nil && n.v.seq == want {
				return v.fail(loc, Reordered, "seq %d comes before seq %d", r.seq, want)
			}
		}
		if err != io.EOF {
			var ve *VerifyError
			if !errors.As(err, &ve) {
				return err
			}
		}
		return v.fail(Location{File: loc.File, Line: loc.Line, Offset: loc.Offset, Seq: want}, Deleted,
			"records %d..%d are missing (next is seq %d)", want, r.seq-1, r.seq)
	case r.seq < want:
		return v.fail(loc, Reordered, "seq %d after seq %d", r.seq, v.last.seq)
	}
	if v.mac == nil && v.haveLast {
		return v.fail(v.lastLoc, Modified, "the MAC of seq %d is not the prev of seq %d", v.last.seq, r.seq)
	}
	return v.fail(loc, Modified, "prev does not match the MAC of seq %d", v.last.seq)
}

// endSegment compares a fully read segment with its manifest entry and,
// when closed, its checksum file.
func (v *verifier) endSegment() error {
	s := v.man.Segments[v.si]
	a := &v.acc
	size := v.sr.next - v.rep.TornBytes*boolInt(!s.Closed)
	loc := Location{File: s.Name, Line: v.sr.line, Offset: size}
	if v.pk != nil {
		if err := v.endCheckpoints(s); err != nil {
			return err
		}
	}
	if a.records < s.Records {
		loc.Seq = a.lastSeq
		return v.fail(loc, Truncated, "segment holds %d records (through seq %d), manifest says %d (through seq %d)",
			a.records, a.lastSeq, s.Records, s.LastSeq)
	}
	if !s.Closed && size < s.Size {
		return v.fail(loc, Truncated, "segment has %d bytes, manifest checkpoint says %d", size, s.Size)
	}
	if s.Closed && s.Records > 0 && a.lastEpoch > s.LastEpoch && v.si+1 < len(v.man.Segments) && a.lastEpoch > v.man.Segments[v.si+1].FirstEpoch {
		return v.fail(v.lastLoc, WrongEpoch, "seq %d names epoch %d, beyond its segment (%d..%d) and the next (from %d)",
			a.lastSeq, a.lastEpoch, s.FirstEpoch, s.LastEpoch, v.man.Segments[v.si+1].FirstEpoch)
	}
	if s.Records > 0 && (a.firstMAC != s.FirstMAC || a.firstEpoch != s.FirstEpoch || a.firstTime != s.FirstTime.UTC().Format(timeLayout)) {
		return v.fail(loc, ManifestMismatch, "first record differs from the manifest")
	}
	if !s.Closed {
		return nil
	}
	if a.records != s.Records || size != s.Size || (s.Records > 0 && (a.lastMAC != s.LastMAC || a.lastEpoch != s.LastEpoch || a.firstEpoch != s.FirstEpoch ||
		string(v.lastTime[:]) != s.LastTime.UTC().Format(timeLayout))) {
		return v.fail(loc, ManifestMismatch, "segment (%d records, %d bytes) differs from the manifest (%d records, %d bytes)",
			a.records, size, s.Records, s.Size)
	}
	sum := v.sr.sum()
	ck, err := readChecksum(v.fs, v.dir, s.Name)
	if err != nil {
		return v.fail(Location{File: s.Name + checksumSuffix}, ChecksumMismatch, "%w", err)
	}
	if ck != sum {
		return v.fail(Location{File: s.Name + checksumSuffix}, ChecksumMismatch, "checksum file says %x, segment hashes to %x", ck[:8], sum[:8])
	}
	if s.SHA256 != sum {
		return v.fail(Location{File: manifestName}, ManifestMismatch, "manifest checksum of %s says %x, segment hashes to %x", s.Name, s.SHA256[:8], sum[:8])
	}
	return nil
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// readAnchor reads the next anchor into v.nextA, or marks the anchors
// ended. An unterminated last line is an append in progress (or cut short
// by a crash: Open cuts it) and ends them.
func (v *verifier) readAnchor(seq uint64) error {
	a, err := v.ar.next()
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		v.anchorsEnded = true
		return nil
	case err != nil:
		return v.fail(Location{File: epochsName, Line: v.ar.line(), Offset: v.ar.sr.off, Seq: seq}, Modified, "%w", err)
	}
	v.nextA = a
	v.rep.Anchors++
	return nil
}

// window checks a record of a version 2 log against the epoch anchors: the
// record's epoch is the one whose anchor has the highest first seq not
// above the record's seq; its time lies in that epoch's window (from the
// anchor's time to the next anchor's); the first record of an epoch
// follows the record its anchor names; and every segment but the first
// starts an epoch.
func (v *verifier) window(it *item) error {
	if v.man.Ver < formatVersion {
		return nil
	}
	r := &it.v
	if v.ar == nil {
		return v.fail(v.loc(it), WrongEpoch, "%s is missing: no anchor places epoch %d", epochsName, r.epoch)
	}
	for retried := false; ; {
		if v.nextA == nil && !v.anchorsEnded {
			if err := v.readAnchor(r.seq); err != nil {
				return err
			}
		}
		if v.nextA != nil && v.nextA.seq <= r.seq {
			v.curA, v.nextA = v.nextA, nil
			continue
		}
		if v.anchorsEnded && !retried && (v.curA == nil || r.epoch > v.curA.epoch) {
			// A writer may have anchored a new epoch since the file was
			// read to its end: read on once.
			v.anchorsEnded, retried = false, true
			continue
		}
		break
	}
	a := v.curA
	switch {
	case a == nil:
		return v.fail(v.loc(it), WrongEpoch, "no epoch anchor covers seq %d", r.seq)
	case r.epoch != a.epoch:
		return v.fail(v.loc(it), WrongEpoch, "seq %d lies in epoch %d (anchored from seq %d at %s), the record names epoch %d",
			r.seq, a.epoch, a.seq, a.time.Format(timeLayout), r.epoch)
	case string(r.time) < a.stamp:
		return v.fail(v.loc(it), WrongEpoch, "time %s is before the start of epoch %d (%s)", r.time, a.epoch, a.time.Format(timeLayout))
	case v.nextA != nil && string(r.time) > v.nextA.stamp:
		return v.fail(v.loc(it), WrongEpoch, "time %s is after the start of epoch %d (%s)", r.time, v.nextA.epoch, v.nextA.time.Format(timeLayout))
	case r.seq == a.seq && r.prev != a.prev:
		return v.fail(v.loc(it), Modified, "the first record of epoch %d does not follow the record its anchor names", a.epoch)
	case v.acc.records == 0 && (it.seg > 0 || len(v.man.Pruned) > 0) && r.seq != a.seq:
		return v.fail(v.loc(it), WrongEpoch, "segment starts inside epoch %d (which began at seq %d): a rotation without a new epoch",
			a.epoch, a.seq)
	}
	return nil
}

// endAnchors reads the anchors after the last record (each is checked)
// and requires the epochs file of a version 2 log.
func (v *verifier) endAnchors() error {
	if v.man.Ver < formatVersion {
		return nil
	}
	if v.ar == nil {
		return v.fail(Location{File: epochsName}, Deleted, "the epochs file of a version %d log is missing", v.man.Ver)
	}
	for {
		if v.nextA == nil && !v.anchorsEnded {
			if err := v.readAnchor(v.last.seq + 1); err != nil {
				return err
			}
		}
		a := v.nextA
		if a == nil {
			return nil
		}
		// An anchor past the last record proves, under a key the holder
		// of the current state never had, that records up to its seq-1
		// existed and that the last of them had the MAC it names: a log
		// that ends earlier, or with another record, was cut or rolled
		// back. A writer may have appended since the log was read.
		if a.seq > v.last.seq+1 || a.seq == v.last.seq+1 && a.prev != v.last.mac {
			if v.grew() {
				return nil
			}
			return v.fail(Location{File: epochsName, Line: v.ar.line(), Seq: a.seq}, Truncated,
				"epoch %d is anchored at seq %d after a record the log does not hold: it ends at seq %d (records cut or rolled back)", a.epoch, a.seq, v.last.seq)
		}
		v.nextA = nil
	}
}

// grew reports whether the log has grown since it was read: a new segment
// in the manifest, or more bytes in the live segment than were read.
func (v *verifier) grew() bool {
	if mb, err := readFile(v.fs, filepath.Join(v.dir, manifestName), maxManifestBytes); err == nil {
		if m, err := parseManifest(mb); err == nil && len(m.Segments) > len(v.man.Segments) {
			return true
		}
	}
	n := len(v.man.Segments)
	if n == 0 || v.man.Segments[n-1].Closed {
		return false
	}
	fi, err := v.fs.Stat(filepath.Join(v.dir, v.man.Segments[n-1].Name))
	return err == nil && fi.Size() > v.liveEnd
}

// prunedType is the type of the record [Log.Prune] writes; prunedKinds
// are its fields, in order.
const prunedType = "audit_pruned"

var prunedKinds = []struct {
	key  string
	kind Kind
}{{"before", KindString}, {"segments", KindInt}, {"records", KindInt}, {"first_seq", KindInt},
	{"through_seq", KindInt}, {"through_mac", KindDigest}}

// prunedFields checks that an audit_pruned record has exactly the fields
// the log writes, of their kinds, with positive sequence numbers.
func prunedFields(r *recordView) error {
	if len(r.fields) != len(prunedKinds) {
		return fmt.Errorf("audit_pruned record has %d fields, want %d", len(r.fields), len(prunedKinds))
	}
	for i, want := range prunedKinds {
		f := &r.fields[i]
		if string(f.key) != want.key || f.kind != want.kind {
			return fmt.Errorf("audit_pruned field %d is %s (%v), want %s (%v)", i+1, f.key, f.kind, want.key, want.kind)
		}
	}
	if r.fields[1].num < 1 || r.fields[2].num < 0 || r.fields[3].num < 1 || r.fields[4].num < r.fields[3].num {
		return fmt.Errorf("audit_pruned counts or sequence numbers out of range")
	}
	return nil
}
