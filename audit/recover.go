package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cutInfo describes a torn tail that Open cut.
type cutInfo struct {
	segment string
	offset  int64
	n       int64
	broken  string
	lastSeq uint64
}

// chainEnd is the last record of the part of the log checked so far.
type chainEnd struct {
	seq   uint64
	mac   [32]byte
	epoch uint64
	time  time.Time
}

func corrupt(file string, line int, off int64, seq uint64, p Problem, format string, args ...any) *CorruptionError {
	return &CorruptionError{Location: Location{File: file, Line: line, Offset: off, Seq: seq}, Problem: p, Err: fmt.Errorf(format, args...)}
}

// recover loads the state and manifest, checks the closed segments by size
// and the live segment record by record, cuts a torn tail, closes the live
// segment and starts the next. It runs before the writer goroutine.
func (l *Log) recover() (*cutInfo, error) {
	w, fsys, dir := &l.w, l.fs, l.dir
	for _, n := range []string{stateName, manifestName} {
		fsys.Remove(filepath.Join(dir, n+".tmp")) // leftovers of an interrupted replace
	}
	sb, err := readFile(fsys, filepath.Join(dir, stateName), 4096)
	if err != nil {
		return nil, fmt.Errorf("audit: open: read state: %w", err)
	}
	st, err := parseState(sb)
	if err != nil {
		return nil, fmt.Errorf("audit: open: %w", err)
	}
	w.st = st
	mb, err := readFile(fsys, filepath.Join(dir, manifestName), maxManifestBytes)
	if err != nil {
		return nil, fmt.Errorf("audit: open: read manifest: %w", err)
	}
	man, err := parseManifest(mb)
	if err != nil {
		return nil, &CorruptionError{Location: Location{File: manifestName}, Problem: ManifestMismatch, Err: err}
	}
	if man.LogID != st.logID {
		return nil, corrupt(manifestName, 0, 0, 0, ManifestMismatch, "manifest log id %s, state log id %s", man.LogID, st.logID)
	}
	if man.Ver != st.ver {
		return nil, corrupt(stateName, 0, 0, 0, ManifestMismatch, "state is of format version %d, the manifest of %d", st.ver, man.Ver)
	}
	w.man = man
	if man.Ver >= formatVersion {
		if err := l.checkAnchors(); err != nil {
			return nil, err
		}
		st = w.st
	}
	end := chainEnd{mac: genesis}
	for _, s := range man.Pruned {
		end = chainEnd{seq: s.LastSeq, mac: s.LastMAC, epoch: s.LastEpoch, time: s.LastTime}
	}
	for _, s := range man.Segments {
		if !s.Closed {
			break
		}
		fi, err := fsys.Stat(filepath.Join(dir, s.Name))
		switch {
		case errors.Is(err, os.ErrNotExist):
			return nil, corrupt(s.Name, 0, 0, s.FirstSeq, Deleted, "closed segment is missing")
		case err != nil:
			return nil, fmt.Errorf("audit: open: %w", err)
		case fi.Size() < s.Size:
			return nil, corrupt(s.Name, 0, fi.Size(), s.LastSeq, Truncated, "closed segment has %d bytes, manifest says %d", fi.Size(), s.Size)
		case fi.Size() > s.Size:
			return nil, corrupt(s.Name, 0, s.Size, s.LastSeq, Modified, "closed segment has %d bytes, manifest says %d", fi.Size(), s.Size)
		}
		if ck, err := readChecksum(fsys, dir, s.Name); err != nil {
			return nil, corrupt(s.Name+checksumSuffix, 0, 0, s.LastSeq, ChecksumMismatch, "%v", err)
		} else if ck != s.SHA256 {
			return nil, corrupt(s.Name+checksumSuffix, 0, 0, s.LastSeq, ChecksumMismatch, "checksum file says %x, manifest %x", ck[:8], s.SHA256[:8])
		}
		if s.Records > 0 {
			end = chainEnd{seq: s.LastSeq, mac: s.LastMAC, epoch: s.LastEpoch, time: s.LastTime}
		}
		end.epoch = max(end.epoch, s.LastEpoch)
	}
	if err := checkClosedTail(fsys, dir, man); err != nil {
		return nil, err
	}
	logEpoch := end.epoch
	if n := len(man.Segments); n > 0 && !man.Segments[n-1].Closed {
		// An empty live segment still names the epoch it began in.
		logEpoch = max(logEpoch, man.Segments[n-1].FirstEpoch, man.Segments[n-1].LastEpoch)
	}
	if st.epoch < logEpoch {
		return nil, corrupt(stateName, 0, 0, 0, WrongEpoch, "state is at epoch %d, the log already at %d (state file rolled back?)", st.epoch, logEpoch)
	}
	mk := st.key.macKey()
	w.seal = sealer{ver: man.Ver, logID: man.LogID, epoch: st.epoch, mac: newMAC(&mk)}
	clear(mk[:])

	now := l.o.Clock().UTC()
	var cut *cutInfo
	if n := len(man.Segments); n > 0 && !man.Segments[n-1].Closed {
		live := man.Segments[n-1]
		var seg segmentInfo
		var good int64
		var exists bool
		seg, good, cut, exists, err = l.scanLive(live, end)
		if err != nil {
			return nil, err
		}
		if seg.Records > 0 {
			end = chainEnd{seq: seg.LastSeq, mac: seg.LastMAC, epoch: seg.LastEpoch, time: seg.LastTime}
			w.lastSeq, w.lastMAC, w.lastT = end.seq, end.mac, end.time
			if cut != nil {
				cut.lastSeq = end.seq
			}
			if err := l.closeRecovered(seg, good, now); err != nil {
				return nil, err
			}
			return cut, nil
		}
		// An empty live segment is reused.
		w.lastSeq, w.lastMAC, w.lastT = end.seq, end.mac, end.time
		if cut != nil {
			cut.lastSeq = end.seq
		}
		if !exists {
			return cut, l.startSegment(live, now)
		}
		f, err := fsys.OpenFile(filepath.Join(dir, live.Name), os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("audit: open: %w", err)
		}
		day, _ := time.Parse("20060102", live.Name[6:14])
		w.f, w.seg, w.durSeg, w.hash, w.day = f, live, live, sha256.New(), day
		return cut, nil
	}
	w.lastSeq, w.lastMAC, w.lastT = end.seq, end.mac, end.time
	next := segmentInfo{Name: segmentName(now, end.seq+1), FirstSeq: end.seq + 1, LastSeq: end.seq,
		FirstEpoch: st.epoch, LastEpoch: st.epoch}
	if len(man.Segments) > 0 {
		// The last segment was closed by a rotation that did not finish.
		if err := l.evolve(now); err != nil {
			return nil, err
		}
		next.FirstEpoch, next.LastEpoch = w.st.epoch, w.st.epoch
	}
	man.Segments = append(man.Segments, next)
	if err := writeFileAtomic(fsys, dir, manifestName, man.encode()); err != nil {
		return nil, err
	}
	return nil, l.startSegment(next, now)
}

// checkAnchors compares the state with the last epoch anchor (version 2):
// they name the same epoch and start, or the anchor is one epoch ahead (an
// evolution cut short between the anchor and the state: it is finished
// here). Anything else means the state or the epochs file was rolled back
// or replaced.
func (l *Log) checkAnchors() error {
	w := &l.w
	st := w.st
	a, err := lastAnchor(l.fs, l.dir, st.logID)
	if err != nil {
		return err
	}
	switch {
	case a.epoch == st.epoch && a.time.Equal(st.started):
		return nil
	case a.epoch == st.epoch:
		return corrupt(stateName, 0, 0, 0, WrongEpoch, "state says epoch %d began at %s, its anchor in %s says %s",
			st.epoch, st.started.Format(timeLayout), epochsName, a.time.Format(timeLayout))
	case a.epoch == st.epoch+1:
		ns := &state{ver: st.ver, logID: st.logID, epoch: a.epoch, started: a.time, key: st.key.next()}
		if err := writeFileAtomic(l.fs, l.dir, stateName, ns.encode()); err != nil {
			clear(ns.key[:])
			return err
		}
		clear(st.key[:])
		w.st = ns
		return nil
	case a.epoch < st.epoch:
		return corrupt(epochsName, 0, 0, 0, Truncated, "%s ends at epoch %d, the state is at epoch %d", epochsName, a.epoch, st.epoch)
	}
	return corrupt(stateName, 0, 0, 0, WrongEpoch, "state is at epoch %d, %s already at %d (state file rolled back?)", st.epoch, epochsName, a.epoch)
}

// scanLive checks the live segment record by record against the chain end
// before it, cuts a torn tail, and returns what the segment holds and the
// offset where its good records end.
func (l *Log) scanLive(live segmentInfo, end chainEnd) (seg segmentInfo, good int64, cut *cutInfo, exists bool, err error) {
	fsys, dir, st := l.fs, l.dir, l.w.st
	path := filepath.Join(dir, live.Name)
	sr, err := openSegment(fsys, path)
	if errors.Is(err, os.ErrNotExist) {
		if live.Records == 0 {
			return live, 0, nil, false, nil
		}
		return seg, 0, nil, false, corrupt(live.Name, 0, 0, live.FirstSeq, Deleted, "live segment is missing")
	}
	if err != nil {
		return seg, 0, nil, false, fmt.Errorf("audit: open: %w", err)
	}
	defer sr.Close()
	seg = live
	seg.Records, seg.LastSeq, seg.LastEpoch = 0, live.FirstSeq-1, live.FirstEpoch
	macKey := st.key.macKey()
	mac := newMAC(&macKey)
	clear(macKey[:])
	var v recordView
	var sum [32]byte
	for {
		line, term, rerr := sr.read()
		if rerr == io.EOF {
			break
		}
		if rerr != nil && rerr != errLineTooLong {
			return seg, 0, nil, true, fmt.Errorf("audit: open: read %s: %w", live.Name, rerr)
		}
		bad := rerr
		if bad == nil && !term {
			bad = errors.New("unterminated line")
		}
		if bad == nil {
			bad = parseRecord(line, &v)
		}
		if bad == nil && string(v.idLogID) != l.w.man.LogID {
			bad = errors.New("record of another log")
		}
		if bad != nil {
			if term && !onlyZeros(sr.br) {
				return seg, 0, nil, true, corrupt(live.Name, sr.line, sr.off, end.seq+1, Modified, "%v (and more lines follow, so it is not a torn tail)", bad)
			}
			if seg.Records < live.Records {
				// A record the checkpoint counts as durable is bad: the
				// file was cut inside it, or it was changed.
				p := Modified
				if !term {
					p = Truncated
				}
				return seg, 0, nil, true, corrupt(live.Name, sr.line, sr.off, end.seq+1, p, "%v before the manifest's checkpoint (seq %d)", bad, live.LastSeq)
			}
			rest, err := readTail(fsys, path, sr.off)
			if err != nil {
				return seg, 0, nil, true, err
			}
			cut = &cutInfo{segment: live.Name, offset: sr.off, n: int64(len(rest))}
			if err := l.cutTail(live.Name, sr.off, rest, cut); err != nil {
				return seg, 0, nil, true, err
			}
			break
		}
		loc := func(p Problem, format string, args ...any) error {
			return corrupt(live.Name, sr.line, sr.off, v.seq, p, format, args...)
		}
		switch {
		case v.seq > end.seq+1:
			return seg, 0, nil, true, loc(Deleted, "seq %d follows %d", v.seq, end.seq)
		case v.seq == end.seq && v.mac == end.mac:
			return seg, 0, nil, true, loc(Duplicated, "record repeated")
		case v.seq <= end.seq:
			return seg, 0, nil, true, loc(Reordered, "seq %d follows %d", v.seq, end.seq)
		case v.prev != end.mac:
			return seg, 0, nil, true, loc(Modified, "prev does not match the MAC of seq %d", end.seq)
		case v.epoch < end.epoch:
			return seg, 0, nil, true, loc(WrongEpoch, "epoch %d after epoch %d", v.epoch, end.epoch)
		case v.epoch > st.epoch:
			return seg, 0, nil, true, loc(WrongEpoch, "epoch %d is ahead of the state's epoch %d", v.epoch, st.epoch)
		case string(v.time) < end.time.Format(timeLayout) && !end.time.IsZero():
			return seg, 0, nil, true, loc(Modified, "time goes backwards")
		}
		if v.epoch == st.epoch {
			// Records of earlier epochs cannot be checked here: their keys
			// are gone (forward security). Verify checks them.
			mac.Reset()
			mac.Write(v.macInput())
			if !hmac.Equal(mac.Sum(sum[:0]), v.mac[:]) {
				return seg, 0, nil, true, loc(Modified, "MAC does not verify")
			}
		}
		if live.Records > 0 && v.seq == live.LastSeq && v.mac != live.LastMAC {
			return seg, 0, nil, true, loc(Modified, "MAC differs from the manifest's checkpoint")
		}
		t, _ := time.Parse(timeLayout, string(v.time))
		if seg.Records == 0 {
			seg.FirstMAC, seg.FirstTime, seg.FirstEpoch = v.mac, t, v.epoch
		}
		seg.Records++
		seg.LastSeq, seg.LastMAC, seg.LastTime, seg.LastEpoch = v.seq, v.mac, t, v.epoch
		end = chainEnd{seq: v.seq, mac: v.mac, epoch: v.epoch, time: t}
		good = sr.next
	}
	if seg.Records < live.Records {
		return seg, 0, nil, true, corrupt(live.Name, 0, good, live.LastSeq, Truncated,
			"live segment holds %d records, the manifest's checkpoint %d", seg.Records, live.Records)
	}
	seg.Size = good
	return seg, good, cut, true, nil
}

// maxTornBytes caps the torn tail Open saves and cuts: a writer tears at
// most one record (at most maxLineBytes plus its newline), with file system
// zero fill after it; a longer tail is refused rather than held in memory.
const maxTornBytes = 64 << 20

// onlyZeros reports whether r holds nothing but zero bytes up to its end
// (what a file system leaves after a crash); it reads r to the end.
func onlyZeros(r io.Reader) bool {
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		if bytes.ContainsFunc(buf[:n], func(c rune) bool { return c != 0 }) {
			return false
		}
		if err != nil {
			return true
		}
	}
}

// readTail reads the segment at path from offset off to its end: the torn
// tail Open cuts, saved whole to the ".broken" file.
func readTail(fsys FS, path string, off int64) ([]byte, error) {
	f, err := fsys.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("audit: open: read torn tail: %w", err)
	}
	defer f.Close()
	if _, err := io.CopyN(io.Discard, f, off); err != nil {
		return nil, fmt.Errorf("audit: open: read torn tail of %s at offset %d: %w", filepath.Base(path), off, err)
	}
	rest, err := io.ReadAll(io.LimitReader(f, maxTornBytes+1))
	if err != nil {
		return nil, fmt.Errorf("audit: open: read torn tail of %s: %w", filepath.Base(path), err)
	}
	if len(rest) > maxTornBytes {
		return nil, corrupt(filepath.Base(path), 0, off, 0, Modified, "unreadable tail longer than %d bytes at offset %d", maxTornBytes, off)
	}
	return rest, nil
}

// cutTail copies the torn bytes to "<segment>.<offset>.broken" and cuts the
// segment back to offset, both durably.
func (l *Log) cutTail(name string, off int64, rest []byte, cut *cutInfo) error {
	fsys, dir := l.fs, l.dir
	cut.broken = name + "." + strconv.FormatInt(off, 10) + ".broken"
	if err := writeFileAtomic(fsys, dir, cut.broken, rest); err != nil {
		return fmt.Errorf("audit: open: save torn tail: %w", err)
	}
	return truncateFile(fsys, dir, name, off)
}

// closeRecovered closes the live segment of the previous run (size good),
// evolves the key and starts a new segment.
func (l *Log) closeRecovered(seg segmentInfo, good int64, now time.Time) error {
	w, fsys, dir := &l.w, l.fs, l.dir
	f, err := fsys.OpenFile(filepath.Join(dir, seg.Name), os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("audit: open: %w", err)
	}
	h := sha256.New()
	_, err = io.CopyN(h, f, good)
	if err == nil {
		// The previous run may have died before its last fsync, leaving
		// records only in the page cache: they are made durable before the
		// manifest calls the segment closed and they are signed and shipped.
		err = f.Sync()
	}
	f.Close()
	if err != nil {
		return fmt.Errorf("audit: open: hash and sync %s: %w", seg.Name, err)
	}
	seg.Closed, seg.Size = true, good
	h.Sum(seg.SHA256[:0])
	if err := writeFileAtomic(fsys, dir, seg.Name+checksumSuffix, checksumLine(seg.SHA256, seg.Name)); err != nil {
		return err
	}
	if err := l.evolve(now); err != nil {
		return err
	}
	next := segmentInfo{Name: segmentName(now, seg.LastSeq+1), FirstSeq: seg.LastSeq + 1, LastSeq: seg.LastSeq,
		FirstEpoch: w.st.epoch, LastEpoch: w.st.epoch}
	w.man.Segments[len(w.man.Segments)-1] = seg
	w.man.Segments = append(w.man.Segments, next)
	if err := writeFileAtomic(fsys, dir, manifestName, w.man.encode()); err != nil {
		return err
	}
	return l.startSegment(next, now)
}

// checkClosedTail is Open's cheap check of what lies before the live
// segment: no segment file the manifest does not list, and the newest
// closed segment (at most SegmentMaxBytes) hashes to its manifest
// checksum. Older closed segments are checked by size and checksum file
// only; their MACs and bytes are checked by Verify, offline, with the
// verification key (their keys are gone from this machine by design).
func checkClosedTail(fsys FS, dir string, man *manifest) error {
	listed := make(map[string]bool, len(man.Segments))
	for _, s := range man.Segments {
		listed[s.Name] = true
	}
	for _, s := range man.Pruned {
		listed[s.Name] = true // a pruning cut short may leave the file
	}
	ents, err := fsys.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("audit: open: %w", err)
	}
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, "audit-") && strings.HasSuffix(n, segmentSuffix) && !listed[n] {
			return corrupt(n, 0, 0, 0, Inserted, "segment file is not in the manifest")
		}
	}
	var last *segmentInfo
	for i := range man.Segments {
		if man.Segments[i].Closed {
			last = &man.Segments[i]
		}
	}
	if last == nil {
		return nil
	}
	f, err := fsys.OpenFile(filepath.Join(dir, last.Name), os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("audit: open: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("audit: open: read %s: %w", last.Name, err)
	}
	if sum := [32]byte(h.Sum(nil)); sum != last.SHA256 {
		return corrupt(last.Name, 0, 0, last.LastSeq, Modified, "closed segment hashes to %x, manifest says %x", sum[:8], last.SHA256[:8])
	}
	return nil
}
