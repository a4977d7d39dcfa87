package seal

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxTextLen is the longest text field of a [Seal] (IDs, model ref, device
// UUID), in bytes.
const MaxTextLen = 4096

// MaxIndex is the largest shard index, shard count and device index a
// [Seal] may record (2^31-1), so that they fit an int on every platform.
const MaxIndex = math.MaxInt32

// ErrSignatureInvalid is returned (wrapped) by [Key.Verify] when a seal was
// not signed by the key: its signature does not match, its key ID names
// another key, or its fields are not those of any valid seal. Callers treat
// it as tampering.
var ErrSignatureInvalid = errors.New("seal: signature invalid")

// Seal is the signed record of one shard resident in GPU memory: what the
// bytes are (size, flat digest, chunk tree root), where they live (device
// index and UUID), what they belong to (shard ID, model ref, shard index
// and count), and who sealed them when (worker ID, key ID, time).
//
// [Key.Sign] sets KeyID and Signature; [Key.Verify] checks them. The
// signature covers every other field through [Seal.AppendCanonical].
type Seal struct {
	// ShardID names the shard; non-empty.
	ShardID string
	// ModelRef names the model the shard belongs to; may be empty.
	ModelRef string
	// ShardIndex is the 0-based index of this shard among ShardCount.
	ShardIndex int
	// ShardCount is the number of shards of the model; at least 1.
	ShardCount int
	// DeviceIndex is the index of the GPU holding the shard; at least 0.
	DeviceIndex int
	// DeviceUUID is the UUID of that GPU; non-empty.
	DeviceUUID string
	// Size is the shard's size in bytes; positive.
	Size int64
	// ChunkSize is the chunk size of the tree, in bytes; in [1, MaxChunkSize].
	ChunkSize int64
	// Digest is the flat SHA-256 of the shard's bytes.
	Digest Hash
	// Root is the RFC 6962 tree root of the shard's chunk leaves ([Root]).
	Root Hash
	// SealedAt is when the shard was sealed; it is recorded in UTC with
	// nanoseconds, so it must lie between the years 1678 and 2262.
	SealedAt time.Time
	// KeyID is the [Key.ID] of the signing key; set by [Key.Sign].
	KeyID string
	// WorkerID names the worker that sealed the shard; non-empty.
	WorkerID string
	// Signature is the HMAC-SHA256 of the canonical encoding; set by
	// [Key.Sign].
	Signature Hash
}

var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// invalidError reports a seal field that breaks a rule of [Seal.Validate].
type invalidError struct{ msg string }

func (e *invalidError) Error() string { return "seal: invalid seal: " + e.msg }

func invalid(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}

// Validate checks the field rules documented on [Seal]: non-empty shard ID,
// device UUID and worker ID; every text field at most [MaxTextLen] bytes of
// valid UTF-8 without control characters; 0 <= ShardIndex < ShardCount <=
// [MaxIndex]; 0 <= DeviceIndex <= MaxIndex; positive Size; ChunkSize in
// [1, [MaxChunkSize]] with at most [MaxChunkCount] chunks; non-zero Digest
// and Root; a non-zero SealedAt that fits int64 Unix nanoseconds. KeyID and
// Signature are not required: [Key.Sign] sets them.
func (s *Seal) Validate() error { return s.validate(false) }

// validate checks the field rules; signed also requires a key ID.
func (s *Seal) validate(signed bool) error {
	if s == nil {
		return invalid("nil seal")
	}
	for _, f := range [...]struct {
		name, v  string
		required bool
	}{
		{"shard id", s.ShardID, true},
		{"model ref", s.ModelRef, false},
		{"device uuid", s.DeviceUUID, true},
		{"key id", s.KeyID, signed},
		{"worker id", s.WorkerID, true},
	} {
		if err := checkText(f.name, f.v, f.required); err != nil {
			return err
		}
	}
	switch {
	case s.ShardCount < 1 || s.ShardCount > MaxIndex:
		return invalid("shard count %d is outside [1, %d]", s.ShardCount, MaxIndex)
	case s.ShardIndex < 0 || s.ShardIndex >= s.ShardCount:
		return invalid("shard index %d is outside [0, %d)", s.ShardIndex, s.ShardCount)
	case s.DeviceIndex < 0 || s.DeviceIndex > MaxIndex:
		return invalid("device index %d is outside [0, %d]", s.DeviceIndex, MaxIndex)
	case s.Size <= 0:
		return invalid("size %d is not positive", s.Size)
	case s.ChunkSize < 1 || s.ChunkSize > MaxChunkSize:
		return invalid("chunk size %d is outside [1, %d]", s.ChunkSize, MaxChunkSize)
	case ChunkCount(s.Size, s.ChunkSize) > MaxChunkCount:
		return invalid("%d chunks of %d bytes exceed the limit of %d", ChunkCount(s.Size, s.ChunkSize), s.ChunkSize, MaxChunkCount)
	case s.Digest.IsZero():
		return invalid("digest is zero")
	case s.Root.IsZero():
		return invalid("tree root is zero")
	case s.SealedAt.IsZero():
		return invalid("sealed-at time is zero")
	case s.SealedAt.Before(minTime) || s.SealedAt.After(maxTime):
		return invalid("sealed-at time %s is outside the int64 nanosecond range", s.SealedAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// checkText applies the text field rules of [Seal.Validate].
func checkText(name, v string, required bool) error {
	if v == "" {
		if required {
			return invalid("%s is empty", name)
		}
		return nil
	}
	if len(v) > MaxTextLen {
		return invalid("%s is %d bytes, longer than %d", name, len(v), MaxTextLen)
	}
	if !utf8.ValidString(v) {
		return invalid("%s is not valid UTF-8", name)
	}
	for i, r := range v {
		if unicode.IsControl(r) {
			return invalid("%s has control character %U at byte %d", name, r, i)
		}
	}
	return nil
}

// ChunkCount returns the number of chunks (leaves) of the shard.
func (s *Seal) ChunkCount() int64 { return ChunkCount(s.Size, s.ChunkSize) }

// CheckLeaves reports whether leaves are the seal's chunk leaves: one per
// chunk, with [Root] equal to s.Root. It does not check the signature.
func (s *Seal) CheckLeaves(leaves []Hash) error {
	if want := s.ChunkCount(); int64(len(leaves)) != want {
		return fmt.Errorf("seal: shard %q has %d chunks of %d bytes, got %d leaves", s.ShardID, want, s.ChunkSize, len(leaves))
	}
	if got := Root(leaves); got != s.Root {
		return fmt.Errorf("seal: shard %q: leaves have tree root %s, seal has %s", s.ShardID, got, s.Root)
	}
	return nil
}

// Sign validates s ([Seal.Validate]), sets s.KeyID to k's ID and sets
// s.Signature to the HMAC-SHA256 under k of s's canonical encoding. On
// error s is unchanged.
func (k Key) Sign(s *Seal) error {
	if k.m == nil {
		return errors.New("seal: sign with the zero key")
	}
	if err := s.Validate(); err != nil {
		return err
	}
	s.KeyID = k.m().id
	s.Signature = k.mac(s)
	return nil
}

// Verify checks that s is a valid seal signed by k: its fields pass
// [Seal.Validate], its KeyID is k's ID, and its Signature equals the
// HMAC-SHA256 of its canonical encoding (compared with [hmac.Equal]).
// Every failure wraps [ErrSignatureInvalid].
func (k Key) Verify(s *Seal) error {
	if k.m == nil {
		return errors.New("seal: verify with the zero key")
	}
	if err := s.validate(true); err != nil {
		var ie *invalidError
		if errors.As(err, &ie) {
			return &verifyError{reason: "invalid seal: " + ie.msg, err: err}
		}
		return &verifyError{reason: "invalid seal", err: err}
	}
	if s.KeyID != k.m().id {
		return &verifyError{reason: fmt.Sprintf("key id mismatch: seal names %s, key is %s", quoteShort(s.KeyID), k.m().id)}
	}
	want := k.mac(s)
	if !hmac.Equal(want[:], s.Signature[:]) {
		return &verifyError{reason: fmt.Sprintf("signature mismatch for shard %s", quoteShort(s.ShardID))}
	}
	return nil
}

// mac returns the HMAC-SHA256 under k of s's canonical encoding.
func (k Key) mac(s *Seal) Hash {
	var buf [512]byte
	m := hmac.New(sha256.New, k.m().key[:])
	m.Write(s.AppendCanonical(buf[:0]))
	var sum Hash
	m.Sum(sum[:0])
	return sum
}

// verifyError is a failed [Key.Verify]; it matches [ErrSignatureInvalid]
// and, for a malformed seal, the validation error.
type verifyError struct {
	reason string
	err    error
}

func (e *verifyError) Error() string { return ErrSignatureInvalid.Error() + ": " + e.reason }

func (e *verifyError) Unwrap() []error {
	if e.err == nil {
		return []error{ErrSignatureInvalid}
	}
	return []error{ErrSignatureInvalid, e.err}
}

// quoteShort quotes an untrusted, already validated string for an error
// message, cut to 64 bytes.
func quoteShort(s string) string {
	if len(s) > 64 {
		// Cut on a rune boundary so the quoted form stays readable.
		i := 64
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		return fmt.Sprintf("%q...", s[:i])
	}
	return fmt.Sprintf("%q", s)
}
