package audit

import (
	"crypto/hmac"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// epochsName is the file of epoch anchors of a version 2 log.
const epochsName = "epochs"

// anchorHeader starts every anchor line.
const anchorHeader = "vramseal-audit-epoch v2 "

// anchor binds epoch e to its start: the first sequence number it may
// hold, the time it began, and the MAC of the record before it. Its MAC is
// made with the anchor key of epoch e-1 (k_0 for epoch 1, by Init) before
// that key is erased, so whoever holds k_e cannot move the start of epoch
// e or of any earlier epoch.
type anchor struct {
	epoch uint64
	seq   uint64
	time  time.Time
	stamp string // time in the record time layout, which compares like the instant
	prev  [32]byte
	mac   [32]byte
}

// body returns what the anchor's MAC covers: its line up to, not
// including, the space before the MAC.
func (a *anchor) body(logID string) []byte {
	b := append([]byte(anchorHeader), logID...)
	b = append(b, ' ')
	b = strconv.AppendUint(b, a.epoch, 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, a.seq, 10)
	b = append(b, ' ')
	b = a.time.UTC().AppendFormat(b, timeLayout)
	b = append(b, ' ')
	return appendHex(b, a.prev[:])
}

// sum returns the anchor's MAC under k, the key of the epoch before it.
func (a *anchor) sum(k *epochKey, logID string) (out [32]byte) {
	ak := k.anchorKey()
	m := newMAC(&ak)
	clear(ak[:])
	m.Write(a.body(logID))
	m.Sum(out[:0])
	return out
}

// line returns the anchor's line, newline included.
func (a *anchor) line(logID string) []byte {
	b := append(a.body(logID), ' ')
	b = appendHex(b, a.mac[:])
	return append(b, '\n')
}

// newAnchor returns the anchor of epoch, sealed with k, the key of the
// epoch before it.
func newAnchor(k *epochKey, logID string, epoch, seq uint64, t time.Time, prev [32]byte) anchor {
	a := anchor{epoch: epoch, seq: seq, time: t.UTC(), stamp: t.UTC().Format(timeLayout), prev: prev}
	a.mac = a.sum(k, logID)
	return a
}

// parseAnchor parses one anchor line (without its newline) strictly.
func parseAnchor(b []byte, logID string) (anchor, error) {
	var a anchor
	bad := func(what string) (anchor, error) {
		return a, fmt.Errorf("%w: %s", errAnchor, what)
	}
	if len(b) > 512 {
		return bad("line too long")
	}
	d := dec{b: b}
	if !d.lit(anchorHeader) {
		return bad("missing header " + strconv.Quote(anchorHeader[:len(anchorHeader)-1]))
	}
	if !d.lit(logID) || !d.lit(" ") {
		return bad("anchor of another log")
	}
	var ok bool
	if a.epoch, ok = d.uint(); !ok || a.epoch == 0 || a.epoch > maxInt || !d.lit(" ") {
		return bad("bad epoch")
	}
	if a.seq, ok = d.uint(); !ok || a.seq == 0 || a.seq > maxInt || !d.lit(" ") {
		return bad("bad seq")
	}
	if len(b)-d.i < len(timeLayout) || !validTime(b[d.i:d.i+len(timeLayout)]) {
		return bad("bad time")
	}
	a.stamp = string(b[d.i : d.i+len(timeLayout)])
	a.time, _ = time.Parse(timeLayout, a.stamp)
	d.i += len(timeLayout)
	if !d.lit(" ") || !d.hex32(&a.prev) {
		return bad("bad prev")
	}
	if !d.lit(" ") || !d.hex32(&a.mac) || d.i != len(b) {
		return bad("bad mac")
	}
	return a, nil
}

// follows checks the order of anchors: a (the first, when prev is nil)
// comes after prev.
func (a *anchor) follows(prev *anchor) error {
	if prev == nil {
		if a.epoch != 1 || a.seq != 1 || a.prev != genesis {
			return fmt.Errorf("%w: the first anchor must be of epoch 1 at seq 1 after the genesis value", errAnchor)
		}
		return nil
	}
	switch {
	case a.epoch != prev.epoch+1:
		return fmt.Errorf("%w: epoch %d follows epoch %d", errAnchor, a.epoch, prev.epoch)
	case a.seq < prev.seq:
		return fmt.Errorf("%w: epoch %d starts at seq %d, before epoch %d (seq %d)", errAnchor, a.epoch, a.seq, prev.epoch, prev.seq)
	case a.time.Before(prev.time):
		return fmt.Errorf("%w: epoch %d starts before epoch %d", errAnchor, a.epoch, prev.epoch)
	case a.seq == prev.seq && a.prev != prev.prev:
		return fmt.Errorf("%w: epochs %d and %d start at seq %d after different records", errAnchor, prev.epoch, a.epoch, a.seq)
	}
	return nil
}

// anchorReader reads the epochs file line by line, checking each anchor's
// form and order (and, given a key, its MAC).
type anchorReader struct {
	sr    *segReader
	logID string
	last  *anchor // the anchor read last
	n     int     // anchors read
	// With the verification key: k is the key of epoch kEpoch, from which
	// the anchor keys are derived forward.
	key    bool
	k      epochKey
	kEpoch uint64
}

var errNoAnchors = errors.New("audit: epochs file is missing")

func openAnchors(fsys FS, dir, logID string) (*anchorReader, error) {
	sr, err := openSegment(fsys, filepath.Join(dir, epochsName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, errNoAnchors
	}
	if err != nil {
		return nil, fmt.Errorf("audit: read %s: %w", epochsName, err)
	}
	return &anchorReader{sr: sr, logID: logID}, nil
}

func (r *anchorReader) close() {
	r.sr.Close()
	clear(r.k[:])
}

// line is the number of the anchor line read last.
func (r *anchorReader) line() int { return r.sr.line }

// next returns the next anchor, io.EOF after the last, and for an
// unterminated last line io.ErrUnexpectedEOF.
func (r *anchorReader) next() (*anchor, error) {
	b, term, err := r.sr.read()
	if err == io.EOF {
		return nil, io.EOF
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errAnchor, err)
	}
	if !term {
		return nil, io.ErrUnexpectedEOF
	}
	a, err := parseAnchor(b, r.logID)
	if err != nil {
		return nil, err
	}
	if err := a.follows(r.last); err != nil {
		return nil, err
	}
	if r.key {
		if a.epoch-1 < r.kEpoch {
			return nil, fmt.Errorf("%w: epoch %d out of order", errAnchor, a.epoch)
		}
		r.k = keyAt(r.k, r.kEpoch, a.epoch-1)
		r.kEpoch = a.epoch - 1
		if want := a.sum(&r.k, r.logID); !hmac.Equal(want[:], a.mac[:]) {
			return nil, fmt.Errorf("%w: the MAC of the anchor of epoch %d does not verify with the key of epoch %d", errAnchor, a.epoch, a.epoch-1)
		}
	}
	r.last = &a
	r.n++
	return &a, nil
}

// appendAnchor appends a to the epochs file and makes it durable: the
// file's bytes, and its directory entry when the file is new.
func appendAnchor(fsys FS, dir, logID string, a *anchor) error {
	if err := appendDurable(fsys, dir, epochsName, a.line(logID)); err != nil {
		return fmt.Errorf("audit: anchor epoch %d in %s: %w", a.epoch, epochsName, err)
	}
	return nil
}

// lastAnchor reads the epochs file for Open: it checks every anchor's form
// and order (not the MACs: the machine holds no key before the current
// one), cuts an unterminated last line (an append cut short by a crash,
// before the state moved to that epoch), and returns the last anchor.
func lastAnchor(fsys FS, dir, logID string) (*anchor, error) {
	r, err := openAnchors(fsys, dir, logID)
	if err == errNoAnchors {
		return nil, corrupt(epochsName, 0, 0, 0, Deleted, "the epochs file of a version %d log is missing", formatVersion)
	}
	if err != nil {
		return nil, err
	}
	defer r.close()
	for {
		_, err := r.next()
		if err == io.EOF {
			break
		}
		if err == io.ErrUnexpectedEOF {
			if err := truncateFile(fsys, dir, epochsName, r.sr.off); err != nil {
				return nil, err
			}
			break
		}
		if err != nil {
			return nil, corrupt(epochsName, r.line(), r.sr.off, 0, Modified, "%v", err)
		}
	}
	if r.last == nil {
		return nil, corrupt(epochsName, 0, 0, 0, Truncated, "the epochs file holds no anchor")
	}
	return r.last, nil
}

// truncateFile cuts dir/name to size durably.
func truncateFile(fsys FS, dir, name string, size int64) error {
	f, err := fsys.OpenFile(filepath.Join(dir, name), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("audit: open: cut %s: %w", name, err)
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("audit: open: cut %s: %w", name, err)
	}
	return nil
}
