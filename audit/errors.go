package audit

import (
	"errors"
	"fmt"
	"strconv"
)

// Errors callers branch on.
var (
	// ErrBackpressure is returned by [Log.Append] when the queue stayed full
	// until the context ended. The event was not recorded and is counted in
	// [Stats.Dropped].
	ErrBackpressure = errors.New("audit: queue full (backpressure)")
	// ErrFailed is returned by [Log.Append], [Log.Flush] and [Log.Close]
	// once a write or fsync has failed: the log has latched failed and
	// records nothing more until it is reopened.
	ErrFailed = errors.New("audit: log failed")
	// ErrNotRecorded marks every error [Log.Append] returns under
	// [FailOpen]: the event was not recorded, and the caller may go on with
	// the operation (it should say so in its narration). Under [FailClosed]
	// no error matches it, and the caller must refuse the operation.
	ErrNotRecorded = errors.New("audit: event not recorded")
	// ErrClosed is returned by [Log.Append] and [Log.Flush] after
	// [Log.Close].
	ErrClosed = errors.New("audit: log closed")
	// ErrInvalidEvent is returned by [Log.Append] for an event that breaks
	// the rules of [Event] or the limits of [Options]; nothing is written.
	ErrInvalidEvent = errors.New("audit: invalid event")
	// ErrLocked is returned by [Open] when another writer holds the
	// directory.
	ErrLocked = errors.New("audit: directory locked by another writer")
	// ErrNotInitialized is returned by [Open] for a directory that [Init]
	// has not set up.
	ErrNotInitialized = errors.New("audit: directory not initialized")
	// ErrWrongKey is returned by [Verify] when the verification key belongs
	// to another log.
	ErrWrongKey = errors.New("audit: verification key is for another log")
)

// Malformed input (never branched on by callers).
var (
	errTooLong   = errors.New("too long")
	errBadUTF8   = errors.New("invalid UTF-8")
	errMalformed = errors.New("audit: malformed record")
	errManifest  = errors.New("audit: malformed manifest")
	errState     = errors.New("audit: malformed state file")
	errKeyFile   = errors.New("audit: malformed verification key")
	errAnchor    = errors.New("audit: bad epoch anchor")
)

// Problem names what is wrong with a log, in a [VerifyError] or a
// [CorruptionError].
type Problem uint8

// Problems. Verification reports the first one it meets.
const (
	// Modified: a record's bytes changed (bad MAC, unparsable line, broken
	// link from an altered neighbour).
	Modified Problem = iota + 1
	// Deleted: records or a whole segment are missing.
	Deleted
	// Inserted: a record or segment that does not belong there.
	Inserted
	// Reordered: records or segments out of order.
	Reordered
	// Duplicated: a record repeated.
	Duplicated
	// Truncated: a segment ends early (a cut record, or fewer records than
	// the manifest says).
	Truncated
	// WrongEpoch: a record's MAC was made with another epoch's key than the
	// one it names, or its epoch goes backwards.
	WrongEpoch
	// ChecksumMismatch: a closed segment's checksum file disagrees with its
	// bytes, or is missing.
	ChecksumMismatch
	// ManifestMismatch: the manifest disagrees with the segments, or cannot
	// be read.
	ManifestMismatch
	// CheckpointMismatch: a signed checkpoint is malformed, its signature
	// does not verify with the public key, its tree disagrees with the
	// records or with an earlier checkpoint, or a segment lacks the
	// checkpoint it must have.
	CheckpointMismatch
)

var problemNames = [...]string{"", "modified", "deleted", "inserted", "reordered", "duplicated",
	"truncated", "wrong epoch key", "checksum mismatch", "manifest mismatch", "checkpoint mismatch"}

// String returns the problem's name, as the CLI prints it.
func (p Problem) String() string {
	if int(p) < len(problemNames) && p != 0 {
		return problemNames[p]
	}
	return "problem(" + strconv.Itoa(int(p)) + ")"
}

// Location says where in a log a problem is. Line is 1-based within File
// and Offset is the byte offset of that line; both are 0 when the problem
// concerns a whole file. Seq is the sequence number expected or found there
// (0 when unknown).
type Location struct {
	File   string
	Line   int
	Offset int64
	Seq    uint64
}

// String returns "file:line (offset n) seq s", leaving out what is unknown.
func (l Location) String() string {
	s := l.File
	if l.Line > 0 {
		s += ":" + strconv.Itoa(l.Line) + " (offset " + strconv.FormatInt(l.Offset, 10) + ")"
	}
	if l.Seq > 0 {
		s += " seq " + strconv.FormatUint(l.Seq, 10)
	}
	return s
}

// VerifyError is returned by [Verify] for the first record, file or
// manifest entry that does not verify.
type VerifyError struct {
	Location
	Problem Problem
	Err     error // the evidence
}

// Error describes the problem, where it is, and the evidence.
func (e *VerifyError) Error() string {
	return fmt.Sprintf("audit: verify: %s at %s: %v", e.Problem, e.Location, e.Err)
}

// Unwrap returns the evidence.
func (e *VerifyError) Unwrap() error { return e.Err }

// CorruptionError is returned by [Open] when the log does not check out
// beyond a torn tail: tampering or media loss. The log refuses to append
// until an operator has looked (run [Verify] with the verification key).
type CorruptionError struct {
	Location
	Problem Problem
	Err     error
}

// Error describes the problem, where it is, and that the log refuses to
// append.
func (e *CorruptionError) Error() string {
	return fmt.Sprintf("audit: log corrupt (%s) at %s: %v; refusing to append", e.Problem, e.Location, e.Err)
}

// Unwrap returns the evidence.
func (e *CorruptionError) Unwrap() error { return e.Err }
