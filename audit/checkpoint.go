package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Files and limits of signed checkpoints (see the package documentation,
// "Checkpoints").
const (
	checkpointKeyName = "checkpoint.key"
	checkpointPubName = "checkpoint.pub"
	checkpointsSuffix = ".checkpoints"
	originPrefix      = "vramseal/audit/"
	// maxNoteBytes bounds one signed checkpoint: its text is at most 100
	// bytes and each signature line about 120.
	maxNoteBytes = 16 << 10
	// maxCheckpointFileBytes bounds one segment's checkpoint file: a
	// checkpoint a second for a day is about 15 MiB.
	maxCheckpointFileBytes = 64 << 20
	maxKeyBytes            = 4 << 10
)

// sigPrefix starts every signature line of a note: an em dash and a space.
const sigPrefix = "\u2014 "

// Errors of checkpoints and proofs that callers branch on.
var (
	// ErrBadCheckpoint is returned by [ParseCheckpoint], [CheckInclusion]
	// and [CheckConsistency] for a checkpoint whose signature does not
	// verify with the public key: forged, altered, or signed by another
	// key.
	ErrBadCheckpoint = errors.New("audit: checkpoint signature does not verify")
	// ErrBadProof is returned by [CheckInclusion] and [CheckConsistency]
	// for a well-formed proof that does not prove its claim: the record is
	// not the one in the tree, or the two trees are not consistent.
	ErrBadProof = errors.New("audit: proof does not verify")
)

var (
	errCheckpoint = errors.New("audit: malformed checkpoint")
	errPublicKey  = errors.New("audit: malformed checkpoint public key")
	errProof      = errors.New("audit: malformed proof")
)

// origin is a log's checkpoint origin and the name of its checkpoint key.
func origin(logID string) string { return originPrefix + logID }

// PublicKey is a log's checkpoint verifier key: an Ed25519 signed-note key
// (C2SP signed-note) named after the log's origin. It verifies checkpoints
// and proofs, and can forge nothing.
type PublicKey struct {
	text  string
	v     note.Verifier
	logID string
}

// ParsePublicKey parses a public key file: one line
// "vramseal/audit/<log id>+<8 hex key hash>+<base64 key>", with or without
// its newline.
func ParsePublicKey(b []byte) (*PublicKey, error) {
	if len(b) > maxKeyBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", errPublicKey, maxKeyBytes)
	}
	s := strings.TrimSuffix(string(b), "\n")
	if strings.ContainsAny(s, "\n\r\t ") || strings.HasPrefix(s, "PRIVATE+") {
		return nil, fmt.Errorf("%w: want one line <name>+<hash>+<key>", errPublicKey)
	}
	v, err := note.NewVerifier(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errPublicKey, err)
	}
	id, ok := strings.CutPrefix(v.Name(), originPrefix)
	if !ok || len(id) != 16 || !isLowerHex([]byte(id)) {
		return nil, fmt.Errorf("%w: key name %q is not %s<16 hex log id>", errPublicKey, truncateForError(v.Name()), originPrefix)
	}
	return &PublicKey{text: s, v: v, logID: id}, nil
}

// String returns the key in its text form, without a newline.
func (k *PublicKey) String() string { return k.text }

// Encode returns the contents of a public key file: the key and a newline.
func (k *PublicKey) Encode() []byte { return []byte(k.text + "\n") }

// LogID returns the ID of the log whose checkpoints the key verifies.
func (k *PublicKey) LogID() string { return k.logID }

// ReadPublicKey reads the checkpoint public key that [Init] or [Open] left
// in the log directory dir (fsys nil means [OSFS]).
func ReadPublicKey(dir string, fsys FS) (*PublicKey, error) {
	if fsys == nil {
		fsys = OSFS{}
	}
	b, err := readFile(fsys, filepath.Join(dir, checkpointPubName), maxKeyBytes)
	if err != nil {
		return nil, fmt.Errorf("audit: read checkpoint public key: %w", err)
	}
	return ParsePublicKey(b)
}

// signingKey is the writer's checkpoint signer and its public key.
type signingKey struct {
	s   note.Signer
	pub *PublicKey
}

// parseSigningKey parses checkpoint.key: the signer key and the verifier
// key, one line each, of the log logID; it checks that they belong
// together by signing and verifying a test note.
func parseSigningKey(b []byte, logID string) (*signingKey, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("audit: malformed %s: %s", checkpointKeyName, fmt.Sprintf(format, args...))
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) != 3 || lines[2] != "" {
		return nil, bad("want two lines, the private and the public key")
	}
	s, err := note.NewSigner(lines[0])
	if err != nil {
		return nil, bad("private key: %v", err)
	}
	pub, err := ParsePublicKey([]byte(lines[1]))
	if err != nil {
		return nil, bad("%v", err)
	}
	if s.Name() != origin(logID) || pub.logID != logID {
		return nil, bad("keys are named %q and %q, want %q", truncateForError(s.Name()), truncateForError(pub.v.Name()), origin(logID))
	}
	msg, err := note.Sign(&note.Note{Text: "vramseal audit checkpoint key check\n"}, s)
	if err == nil {
		_, err = note.Open(msg, note.VerifierList(pub.v))
	}
	if err != nil {
		return nil, bad("the public key does not verify the private key's signatures")
	}
	return &signingKey{s: s, pub: pub}, nil
}

// newSigningKey makes a fresh Ed25519 checkpoint key for log logID and
// returns it with the contents of checkpoint.key.
func newSigningKey(r io.Reader, logID string) (*signingKey, []byte, error) {
	skey, vkey, err := note.GenerateKey(r, origin(logID))
	if err != nil {
		return nil, nil, fmt.Errorf("audit: generate checkpoint key: %w", err)
	}
	b := []byte(skey + "\n" + vkey + "\n")
	k, err := parseSigningKey(b, logID)
	if err != nil {
		return nil, nil, err
	}
	return k, b, nil
}

// loadSigningKey reads checkpoint.key of dir or, when it is missing,
// creates it (created is then true). It (re)writes checkpoint.pub when that
// is missing or differs.
func loadSigningKey(fsys FS, dir, logID string, r io.Reader) (k *signingKey, created bool, err error) {
	b, err := readFile(fsys, filepath.Join(dir, checkpointKeyName), maxKeyBytes)
	switch {
	case errors.Is(err, os.ErrNotExist):
		var data []byte
		if k, data, err = newSigningKey(r, logID); err != nil {
			return nil, false, err
		}
		if err := writeFileAtomic(fsys, dir, checkpointKeyName, data); err != nil {
			return nil, false, err
		}
		created = true
	case err != nil:
		return nil, false, fmt.Errorf("audit: read %s: %w", checkpointKeyName, err)
	default:
		if k, err = parseSigningKey(b, logID); err != nil {
			return nil, false, err
		}
	}
	if pb, err := readFile(fsys, filepath.Join(dir, checkpointPubName), maxKeyBytes); err != nil || !bytes.Equal(pb, k.pub.Encode()) {
		if err := writeFileAtomic(fsys, dir, checkpointPubName, k.pub.Encode()); err != nil {
			return nil, false, err
		}
	}
	return k, created, nil
}

// Checkpoint is a signed tree head of a log (C2SP tlog-checkpoint): the
// log's origin, the number of records in the tree and the RFC 6962 root
// hash over them.
type Checkpoint struct {
	Origin string
	Size   uint64
	Root   [32]byte
	// Note is the signed note, exactly as stored: text, blank line,
	// signature lines.
	Note []byte

	file string // where it was read, for errors
}

// checkpointText returns the note text of a checkpoint.
func checkpointText(logID string, size uint64, root tlog.Hash) string {
	return origin(logID) + "\n" + strconv.FormatUint(size, 10) + "\n" + base64.StdEncoding.EncodeToString(root[:]) + "\n"
}

// signCheckpoint returns the signed note of a checkpoint.
func (k *signingKey) signCheckpoint(size uint64, root tlog.Hash) ([]byte, error) {
	msg, err := note.Sign(&note.Note{Text: checkpointText(k.pub.logID, size, root)}, k.s)
	if err != nil {
		return nil, fmt.Errorf("audit: sign checkpoint: %w", err)
	}
	return msg, nil
}

// ParseCheckpoint parses a signed checkpoint strictly and checks its
// signature with k: the note must carry a valid signature by k (others are
// ignored, as C2SP signed-note requires), and its text must be exactly the
// origin of k's log, a canonical decimal tree size and the base64 root hash,
// with no extension lines. A bad or missing signature matches
// [ErrBadCheckpoint].
func ParseCheckpoint(b []byte, k *PublicKey) (*Checkpoint, error) {
	if len(b) > maxNoteBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", errCheckpoint, maxNoteBytes)
	}
	n, err := note.Open(b, note.VerifierList(k.v))
	var unverified *note.UnverifiedNoteError
	var invalid *note.InvalidSignatureError
	switch {
	case errors.As(err, &unverified):
		return nil, fmt.Errorf("%w: no signature by key %s (signed by another key?)", ErrBadCheckpoint, k.v.Name())
	case errors.As(err, &invalid):
		return nil, fmt.Errorf("%w: the signature by key %s is invalid (forged or altered)", ErrBadCheckpoint, invalid.Name)
	case err != nil:
		return nil, fmt.Errorf("%w: %v", errCheckpoint, err)
	}
	for _, sig := range append(n.Sigs, n.UnverifiedSigs...) {
		// note decodes signatures leniently; only the canonical base64
		// of a signature is accepted, so that a checkpoint has one form.
		raw, err := base64.StdEncoding.Strict().DecodeString(sig.Base64)
		if err != nil || base64.StdEncoding.EncodeToString(raw) != sig.Base64 {
			return nil, fmt.Errorf("%w: the signature by %s is not canonical base64", errCheckpoint, truncateForError(sig.Name))
		}
	}
	c, err := parseCheckpointText(n.Text)
	if err != nil {
		return nil, err
	}
	if c.Origin != k.v.Name() {
		return nil, fmt.Errorf("%w: origin %q is not the key's %q", errCheckpoint, truncateForError(c.Origin), k.v.Name())
	}
	c.Note = bytes.Clone(b)
	return c, nil
}

// parseCheckpointText parses the note text of a checkpoint.
func parseCheckpointText(text string) (*Checkpoint, error) {
	lines := strings.Split(text, "\n")
	if len(lines) != 4 || lines[3] != "" {
		return nil, fmt.Errorf("%w: want 3 lines (origin, size, root), got %d", errCheckpoint, len(lines)-1)
	}
	c := &Checkpoint{Origin: lines[0]}
	if c.Origin == "" {
		return nil, fmt.Errorf("%w: empty origin", errCheckpoint)
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil || strconv.FormatUint(size, 10) != lines[1] || size > maxTreeSize {
		return nil, fmt.Errorf("%w: tree size %q is not a canonical decimal", errCheckpoint, truncateForError(lines[1]))
	}
	c.Size = size
	root, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(root) != 32 || base64.StdEncoding.EncodeToString(root) != lines[2] {
		return nil, fmt.Errorf("%w: root %q is not the base64 of 32 bytes", errCheckpoint, truncateForError(lines[2]))
	}
	copy(c.Root[:], root)
	return c, nil
}

// errTornNote marks an incomplete last note of a checkpoint file: an append
// the writer did not finish.
var errTornNote = errors.New("incomplete last checkpoint")

// splitNote returns the first signed note of b and what follows it. A note
// is its text (lines up to an empty line), the empty line, and one or more
// signature lines, each "— " ... "\n". It returns errTornNote when b ends
// inside a note that could still become a checkpoint (see tornCheckpoint).
func splitNote(b []byte) (msg, rest []byte, err error) {
	end := bytes.Index(b, []byte("\n\n"))
	torn := func() error {
		if tornCheckpoint(b) {
			return errTornNote
		}
		return fmt.Errorf("%w: not a signed note", errCheckpoint)
	}
	if end < 0 {
		return nil, nil, torn()
	}
	i := end + 2
	sigs := 0
	for i < len(b) && bytes.HasPrefix(b[i:], []byte(sigPrefix)) {
		nl := bytes.IndexByte(b[i:], '\n')
		if nl < 0 {
			return nil, nil, torn()
		}
		i += nl + 1
		sigs++
	}
	if i > maxNoteBytes {
		return nil, nil, fmt.Errorf("%w: note longer than %d bytes", errCheckpoint, maxNoteBytes)
	}
	if sigs == 0 {
		return nil, nil, torn()
	}
	return b[:i], b[i:], nil
}

// tornCheckpoint reports whether b, which ends inside a note, is a prefix
// of a checkpoint as this package writes it: origin, tree size, root, an
// empty line and a signature line, cut anywhere. Only that is taken for a
// write in progress; anything else is damage.
func tornCheckpoint(b []byte) bool {
	if len(b) > maxNoteBytes {
		return false
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) > 5 {
		return false
	}
	for i, l := range lines {
		last := i == len(lines)-1
		ok := false
		switch i {
		case 0:
			ok = strings.HasPrefix(l, originPrefix) && len(l) == len(originPrefix)+16 && isLowerHex([]byte(l[len(originPrefix):])) ||
				last && (strings.HasPrefix(originPrefix, l) || strings.HasPrefix(l, originPrefix) && len(l) < len(originPrefix)+16 && isLowerHex([]byte(l[len(originPrefix):])))
		case 1:
			ok = (l != "" || last) && strings.Trim(l, "0123456789") == ""
		case 2:
			ok = (len(l) == 44 || last && len(l) < 44) && strings.Trim(l, base64Chars) == ""
		case 3:
			ok = l == ""
		case 4:
			origin := lines[0]
			ok = strings.HasPrefix(sigPrefix+origin+" ", l) ||
				strings.HasPrefix(l, sigPrefix+origin+" ") && strings.Trim(l[len(sigPrefix+origin+" "):], base64Chars) == ""
		}
		if !ok {
			return false
		}
	}
	return true
}

const base64Chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="

// checkpointFile reads the signed checkpoints of one segment in order.
type checkpointFile struct {
	name string // file name
	b    []byte
	off  int
	n    int // checkpoints returned
}

// openCheckpoints reads "<segment>.checkpoints"; a missing file reads as
// one without checkpoints (found false).
func openCheckpoints(fsys FS, dir, segment string) (c *checkpointFile, found bool, err error) {
	name := segment + checkpointsSuffix
	b, err := readFile(fsys, filepath.Join(dir, name), maxCheckpointFileBytes)
	if errors.Is(err, os.ErrNotExist) {
		return &checkpointFile{name: name}, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("audit: read %s: %w", name, err)
	}
	return &checkpointFile{name: name, b: b}, true, nil
}

// next returns the next checkpoint, verified with k, io.EOF after the
// last, or errTornNote for an unfinished last one.
func (c *checkpointFile) next(k *PublicKey) (*Checkpoint, error) {
	if c.off == len(c.b) {
		return nil, io.EOF
	}
	msg, _, err := splitNote(c.b[c.off:])
	if err != nil {
		return nil, err
	}
	ck, err := ParseCheckpoint(msg, k)
	if err != nil {
		return nil, err
	}
	ck.file = c.name
	c.off += len(msg)
	c.n++
	return ck, nil
}

// appendCheckpoint appends a signed note to a segment's checkpoint file
// and makes it durable.
func appendCheckpoint(fsys FS, dir, segment string, msg []byte) error {
	name := segment + checkpointsSuffix
	if err := appendDurable(fsys, dir, name, msg); err != nil {
		return fmt.Errorf("audit: write %s: %w", name, err)
	}
	return nil
}

// appendDurable appends b to dir/name and makes it durable: the file's
// bytes, and its directory entry when the file is new.
func appendDurable(fsys FS, dir, name string, b []byte) error {
	path := filepath.Join(dir, name)
	_, serr := fsys.Stat(path)
	f, err := fsys.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	n, err := f.Write(b)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && serr != nil {
		err = syncDir(fsys, dir)
	}
	return err
}

// latestCheckpoint returns the newest signed checkpoint of the log, or nil
// if there is none. With repair (Open, holding the lock) an unfinished last
// note of the newest checkpoint file is cut; without, it is skipped (a
// writer may be appending it). Every checkpoint of that file is checked.
func latestCheckpoint(fsys FS, dir string, man *manifest, k *PublicKey, repair bool) (*Checkpoint, error) {
	for i := len(man.Segments) - 1; i >= 0; i-- {
		cf, found, err := openCheckpoints(fsys, dir, man.Segments[i].Name)
		if err != nil {
			return nil, err
		}
		if !found {
			continue
		}
		var last *Checkpoint
		for {
			ck, err := cf.next(k)
			if err == io.EOF {
				break
			}
			if err == errTornNote {
				if repair {
					if err := cutCheckpoints(fsys, dir, cf.name, int64(cf.off)); err != nil {
						return nil, err
					}
				}
				break
			}
			if err != nil {
				return nil, corrupt(cf.name, cf.n+1, int64(cf.off), 0, CheckpointMismatch, "checkpoint %d: %w", cf.n+1, err)
			}
			last = ck
		}
		if last != nil {
			return last, nil
		}
	}
	return nil, nil
}

// cutCheckpoints cuts an unfinished last note off a checkpoint file.
func cutCheckpoints(fsys FS, dir, name string, off int64) error {
	return truncateFile(fsys, dir, name, off)
}

// LatestCheckpoint returns the newest signed checkpoint of the log in dir,
// verified with the log's own public key (checkpoint.pub), or an error if
// the log has none yet. It needs no lock.
func LatestCheckpoint(dir string, opts ReadOptions) (*Checkpoint, error) {
	fsys := opts.fs()
	k, err := ReadPublicKey(dir, fsys)
	if err != nil {
		return nil, err
	}
	man, err := loadManifest(fsys, dir)
	if err != nil {
		return nil, err
	}
	if k.logID != man.LogID {
		return nil, fmt.Errorf("audit: %s is for log %s, the manifest for %s", checkpointPubName, k.logID, man.LogID)
	}
	ck, err := latestCheckpoint(fsys, dir, man, k, false)
	if err != nil {
		return nil, err
	}
	if ck == nil {
		return nil, fmt.Errorf("%w in %s yet", ErrNoCheckpoint, dir)
	}
	return ck, nil
}

// ErrNoCheckpoint is returned by [LatestCheckpoint], [ProveInclusion] and
// [ProveConsistency] for a log without a signed checkpoint, or without one
// of the tree size asked for or covering the record asked for.
var ErrNoCheckpoint = errors.New("audit: no signed checkpoint")

// openSigning loads (or, for a log made before checkpoints, creates) the
// checkpoint key, finds the latest checkpoint, brings the tree up to the
// last record and signs what the previous run left unsigned. It runs in
// Open after recovery, before the writer and tree goroutines.
func (l *Log) openSigning(ctx context.Context) (created bool, err error) {
	w := &l.w
	l.tw = &treeWriter{fs: l.fs, dir: l.dir}
	t := l.tw
	t.key, created, err = loadSigningKey(l.fs, l.dir, w.man.LogID, l.o.Rand)
	if err != nil {
		return false, fmt.Errorf("audit: open: %w", err)
	}
	ck, err := latestCheckpoint(l.fs, l.dir, w.man, t.key.pub, true)
	if err != nil {
		return false, err
	}
	if err := l.openTree(ctx, ck); err != nil {
		return false, err
	}
	if ck != nil {
		t.signed = ck.Size
	}
	w.durTree, w.sentSize = w.lastSeq, t.signed
	if w.durTree > t.signed {
		for _, s := range w.man.Segments {
			if s.Records > 0 && s.FirstSeq <= w.durTree && w.durTree <= s.LastSeq {
				w.sentSize = w.durTree
				return created, t.sign(s.Name, w.durTree)
			}
		}
		return false, fmt.Errorf("audit: open: no segment holds seq %d", w.durTree)
	}
	return created, nil
}

// signDurable asks the tree writer for a checkpoint of the durable records
// in the live segment's checkpoint file, unless one was asked for already.
// With wait it returns once every checkpoint asked for is written (or has
// failed); without, a failure latches the log later (see [Log.treeFailed]).
func (l *Log) signDurable(wait bool) error {
	w := &l.w
	s := w.durSeg
	if w.durTree > w.sentSize && s.Records > 0 && w.durTree >= s.FirstSeq && w.durTree <= s.LastSeq {
		w.sentSize = w.durTree
		return l.tw.request(treeJob{segment: s.Name, size: w.durTree}, wait)
	}
	if wait {
		return l.tw.request(treeJob{}, true)
	}
	return nil
}

// treeFailed latches the log when the tree writer has failed.
func (l *Log) treeFailed() bool {
	if err := l.tw.failure(); err != nil {
		l.latch(err)
		return true
	}
	return false
}

// PublicKey returns the log's checkpoint public key.
func (l *Log) PublicKey() *PublicKey { return l.tw.key.pub }
