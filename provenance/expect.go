package provenance

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"syscall"
)

// Limits on sha256sum files.
const (
	maxSumsSize = 16 << 20
	maxSumsLine = maxNameLen + 80
)

// ParseSHA256Sums parses the text `sha256sum` writes: one line per file, 64
// hex digits, a space, then a space (text mode) or "*" (binary mode), then the
// file's path. Blank lines are skipped. A leading "./" is removed from paths;
// paths must then follow the resource name rules of doc.go. Escaped lines
// (starting with "\"), duplicate paths, bad hex and control characters are
// rejected with an error wrapping [ErrMalformed] that names the line.
func ParseSHA256Sums(r io.Reader) (Digests, error) {
	sc := bufio.NewScanner(io.LimitReader(r, maxSumsSize+1))
	sc.Buffer(make([]byte, 0, 4096), maxSumsLine)
	out := Digests{}
	read, line := 0, 0
	for sc.Scan() {
		line++
		text := sc.Text()
		read += len(text) + 1
		if read > maxSumsSize {
			return nil, fmt.Errorf("%w: sha256sums: more than %d bytes", ErrMalformed, maxSumsSize)
		}
		text = strings.TrimSuffix(text, "\r")
		if text == "" {
			continue
		}
		bad := func(why string) error {
			return fmt.Errorf("%w: sha256sums line %d: %s", ErrMalformed, line, why)
		}
		if len(text) < 67 || (text[64:66] != "  " && text[64:66] != " *") {
			return nil, bad(`want "HEX  PATH" or "HEX *PATH"`)
		}
		d, err := parseHex(text[:64])
		if err != nil {
			return nil, bad(err.Error())
		}
		name := strings.TrimPrefix(text[66:], "./")
		if err := checkPath(name); err != nil || name == SingleFile {
			if err == nil {
				err = fmt.Errorf("name %q is not a file", name)
			}
			return nil, bad(err.Error())
		}
		if _, dup := out[name]; dup {
			return nil, bad(fmt.Sprintf("%q listed twice", name))
		}
		out[name] = d
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: sha256sums line %d: %v", ErrMalformed, line+1, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: sha256sums: no digests", ErrMalformed)
	}
	return out, nil
}

// Expect is a set of expected file digests: a verified [Statement]'s Files,
// a parsed sha256sum file, or one --expect-sha256 digest. It is read-only
// after [NewExpect] and safe for concurrent use.
type Expect struct {
	files Digests
}

// NewExpect returns an expectation of the digests in d, which it copies.
func NewExpect(d Digests) *Expect {
	c := make(Digests, len(d))
	for k, v := range d {
		c[k] = v
	}
	return &Expect{files: c}
}

// Check compares a file's computed SHA-256 with the expected one. rel is the
// file's slash-separated path relative to the model directory, or
// [SingleFile] for a single-file model. It returns nil on a match,
// [*MismatchError] on a different digest, and [ErrNotCovered] (wrapped with
// the name) when rel is not expected.
func (e *Expect) Check(rel string, sum [32]byte) error {
	want, ok := e.files[rel]
	if !ok {
		return fmt.Errorf("%w: %q", ErrNotCovered, printable(rel))
	}
	if want != sum {
		return &MismatchError{File: rel, Expected: hex.EncodeToString(want[:]), Actual: hex.EncodeToString(sum[:])}
	}
	return nil
}

// Missing returns, sorted, the expected files that are not in present.
func (e *Expect) Missing(present []string) []string {
	have := make(map[string]bool, len(present))
	for _, p := range present {
		have[p] = true
	}
	var out []string
	for n := range e.files {
		if !have[n] {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// Files returns, sorted, the paths the expectation lists.
func (e *Expect) Files() []string {
	return e.Missing(nil)
}

// HashFile returns the SHA-256 of the regular file rel inside dir. It opens
// through an [os.Root], so rel and any symlinks on its way must stay inside
// dir; a non-regular file (device, pipe, directory) is refused.
func HashFile(dir, rel string) ([32]byte, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return [32]byte{}, fmt.Errorf("provenance: %w", err)
	}
	defer root.Close()
	return HashFileIn(root, rel)
}

// HashFileIn is [HashFile] inside an open root.
func HashFileIn(root *os.Root, rel string) ([32]byte, error) {
	var sum [32]byte
	if err := checkPath(rel); err != nil || rel == SingleFile {
		return sum, fmt.Errorf("%w: %q is not a relative file path", ErrMalformed, printable(rel))
	}
	// O_NONBLOCK: a FIFO must not block the open; it is refused below.
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return sum, fmt.Errorf("provenance: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return sum, fmt.Errorf("provenance: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return sum, fmt.Errorf("%w: %q is not a regular file", ErrMalformed, printable(rel))
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, fmt.Errorf("provenance: read %q: %w", printable(rel), err)
	}
	h.Sum(sum[:0])
	return sum, nil
}

// CheckFiles hashes each of rels inside dir with [HashFile] and checks it
// with e: for the small non-weight files a signature lists (config, index,
// tokenizer), which are not sealed. It returns the first error, in the order
// of rels.
func (e *Expect) CheckFiles(dir string, rels []string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("provenance: %w", err)
	}
	defer root.Close()
	return e.CheckFilesIn(root, rels)
}

// CheckFilesIn is [Expect.CheckFiles] inside an open root.
func (e *Expect) CheckFilesIn(root *os.Root, rels []string) error {
	for _, rel := range rels {
		sum, err := HashFileIn(root, rel)
		if err != nil {
			return err
		}
		if err := e.Check(rel, sum); err != nil {
			return err
		}
	}
	return nil
}

// IsIntegrity reports whether err is an integrity failure (bad signature,
// wrong key, another model, digest mismatch, uncovered file) rather than bad
// input or an I/O error.
func IsIntegrity(err error) bool {
	var se *SignatureError
	var ne *NameError
	var me *MismatchError
	return errors.As(err, &se) || errors.As(err, &ne) || errors.As(err, &me) || errors.Is(err, ErrNotCovered)
}

// Provenance is what is known of where a model's bytes came from; it is kept
// with the model and shown by listings, the HTTP API and the audit log.
type Provenance struct {
	Verified        bool   `json:"verified"`                   // every file matched a digest that Method vouches for
	Method          string `json:"method"`                     // "signature", "digests", "sha256", or "" for none
	KeyFingerprint  string `json:"key_fingerprint,omitempty"`  // [PublicKey.Fingerprint], for "signature"
	StatementDigest string `json:"statement_digest,omitempty"` // [Statement.Digest], for "signature"
	SignedName      string `json:"signed_name,omitempty"`      // [Statement.Name], for "signature"
}

// Provenance methods.
const (
	MethodSignature = "signature"
	MethodDigests   = "digests"
	MethodSHA256    = "sha256"
)

// Provenance returns the provenance of a model whose files all matched s,
// verified with key.
func (s *Statement) Provenance(key *PublicKey) Provenance {
	return Provenance{Verified: true, Method: MethodSignature, KeyFingerprint: key.Fingerprint(), StatementDigest: s.Digest, SignedName: s.Name}
}
