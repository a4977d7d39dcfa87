package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// PruneReport says what [Log.Prune] deleted.
type PruneReport struct {
	Segments   int
	Records    uint64
	ThroughSeq uint64 // last sequence number now pruned (0: none ever)
}

// Prune deletes the closed segments whose newest record is older than
// before, oldest first, stopping at the first that is newer (the remaining
// segments stay contiguous). Each segment is checked first: its checksum
// file and bytes must match the manifest, and its records must chain
// (MACs of past epochs cannot be checked on this machine: their keys are
// gone). The deletion is recorded as a durable "audit_pruned" record before
// the manifest moves the segments to its pruned list (keeping their last
// MAC and checksum, so the chain of what remains still verifies) and the
// files are removed. The live segment is never pruned.
func (l *Log) Prune(ctx context.Context, before time.Time) (PruneReport, error) {
	var rep PruneReport
	err := l.do(ctx, func() error {
		var err error
		rep, err = l.pruneLocked(before)
		return err
	})
	return rep, err
}

func (l *Log) pruneLocked(before time.Time) (PruneReport, error) {
	w := &l.w
	var rep PruneReport
	if len(w.man.Pruned) > 0 {
		rep.ThroughSeq = w.man.Pruned[len(w.man.Pruned)-1].LastSeq
	}
	end := chainEnd{mac: genesis}
	if n := len(w.man.Pruned); n > 0 {
		end.seq, end.mac = w.man.Pruned[n-1].LastSeq, w.man.Pruned[n-1].LastMAC
	}
	var n int
	for _, s := range w.man.Segments[:len(w.man.Segments)-1] {
		if !s.Closed || s.Records > 0 && !s.LastTime.Before(before) {
			break
		}
		if err := checkClosed(l.fs, l.dir, s, end); err != nil {
			return rep, fmt.Errorf("audit: prune: %w", err)
		}
		if s.Records > 0 {
			end.seq, end.mac = s.LastSeq, s.LastMAC
		}
		n++
		rep.Records += s.Records
	}
	if n == 0 {
		return rep, nil
	}
	pruned := w.man.Segments[:n]
	last := pruned[n-1]
	rep.Segments, rep.ThroughSeq = n, last.LastSeq
	e := Event{Type: prunedType, Severity: SeverityHigh, Fields: []Field{
		String("before", before.UTC().Format(timeLayout)), Int("segments", int64(n)),
		Int("records", int64(rep.Records)), Int("first_seq", int64(pruned[0].FirstSeq)),
		Int("through_seq", int64(last.LastSeq)), Digest("through_mac", last.LastMAC),
	}}
	if err := l.writeRecordLocked(&e); err != nil {
		return rep, err
	}
	// Sign the record now: the checkpoints of the pruned segments go with
	// them, and the newest left must cover the log.
	if err := l.signDurable(true); err != nil {
		return rep, err
	}
	man := *w.man
	man.Pruned = append(append([]segmentInfo(nil), w.man.Pruned...), pruned...)
	man.Segments = append([]segmentInfo(nil), w.man.Segments[n:]...)
	man.Segments[len(man.Segments)-1] = w.durSeg
	if err := writeFileAtomic(l.fs, l.dir, manifestName, man.encode()); err != nil {
		return rep, fmt.Errorf("audit: prune: %w", err)
	}
	w.man = &man
	var errs []error
	for _, s := range pruned {
		for _, name := range []string{s.Name, s.Name + checksumSuffix, s.Name + checkpointsSuffix} {
			err := l.fs.Remove(filepath.Join(l.dir, name))
			if err != nil && !(name == s.Name+checkpointsSuffix && errors.Is(err, os.ErrNotExist)) {
				errs = append(errs, err)
			}
		}
	}
	if err := syncDir(l.fs, l.dir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return rep, fmt.Errorf("audit: prune: segments dropped from the manifest, but: %w", err)
	}
	return rep, nil
}

// writeRecordLocked writes one record made by the log itself and makes it
// durable. It runs on the writer goroutine.
func (l *Log) writeRecordLocked(e *Event) error {
	if err := e.validate(maxStringBytes, maxFieldsParse); err != nil {
		return err
	}
	body := appendBody(nil, e, l.fixed)
	l.encodeRecord(body, l.now())
	if err := l.writeOut(true); err != nil {
		l.latch(err)
		return *l.failed.Load()
	}
	return nil
}

// checkClosed checks a closed segment without a key: checksum file and
// bytes against the manifest, record count, sequence and chain links.
func checkClosed(fsys FS, dir string, s segmentInfo, end chainEnd) error {
	want, err := readChecksum(fsys, dir, s.Name)
	if err != nil {
		return err
	}
	if want != s.SHA256 {
		return fmt.Errorf("%s: checksum file disagrees with the manifest", s.Name)
	}
	sr, err := openSegment(fsys, filepath.Join(dir, s.Name))
	if err != nil {
		return err
	}
	defer sr.Close()
	var v recordView
	var n uint64
	for {
		line, term, err := sr.read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s:%d: %w", s.Name, sr.line, err)
		}
		if !term {
			return fmt.Errorf("%s:%d: unterminated line", s.Name, sr.line)
		}
		if err := parseRecord(line, &v); err != nil {
			return fmt.Errorf("%s:%d: %w", s.Name, sr.line, err)
		}
		if v.seq != end.seq+1 || v.prev != end.mac {
			return fmt.Errorf("%s:%d: seq %d does not chain to seq %d", s.Name, sr.line, v.seq, end.seq)
		}
		end.seq, end.mac = v.seq, v.mac
		n++
	}
	if sr.sum() != s.SHA256 || n != s.Records || sr.next != s.Size {
		return fmt.Errorf("%s: bytes do not match the manifest", s.Name)
	}
	return nil
}
