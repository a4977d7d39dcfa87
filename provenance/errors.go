package provenance

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrMalformed is wrapped by every error about input that is not in the
// format: a bundle, statement, public key or sha256sum file that does not
// parse or breaks a rule of doc.go. Callers map it to "bad input".
var ErrMalformed = errors.New("provenance: malformed input")

// ErrNotCovered is returned by [Expect.Check] for a file the expectation does
// not list: a loaded file the signature does not cover. It is an integrity
// failure.
var ErrNotCovered = errors.New("provenance: file not covered by the expected digests")

// SignatureError says that a well-formed bundle's signature does not verify
// with the given key: the bundle was changed or signed by another key.
type SignatureError struct {
	Fingerprint string // [PublicKey.Fingerprint] of the key that failed
}

func (e *SignatureError) Error() string {
	return "provenance: signature does not verify with key " + e.Fingerprint + " (wrong key or changed bundle)"
}

// NameError says that a verified statement signs another model: its subject
// name is not the expected one.
type NameError struct {
	Expected, Signed string
}

func (e *NameError) Error() string {
	return fmt.Sprintf("provenance: signature is for model %s, want %s", strconv.Quote(e.Signed), strconv.Quote(e.Expected))
}

// MismatchError says that a file's digest is not the expected one.
type MismatchError struct {
	File     string // relative path, slash separated
	Expected string // lower-case hex SHA-256
	Actual   string // lower-case hex SHA-256
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("provenance: %s: sha256 is %s, expected %s", strconv.Quote(e.File), e.Actual, e.Expected)
}

// printable returns s with control and non-UTF-8 characters escaped and cut
// to a bounded length, for error messages about untrusted names.
func printable(s string) string {
	const max = 200
	q := strconv.QuoteToASCII(s)
	q = q[1 : len(q)-1]
	if len(q) > max {
		q = q[:max] + "..."
	}
	return strings.ToValidUTF8(q, "?")
}
