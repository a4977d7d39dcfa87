package seal

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
)

// MinSecretLen is the shortest worker secret [DeriveKey] accepts, in bytes:
// 256 bits, the strength of the HMAC-SHA256 key derived from it.
const MinSecretLen = 32

// maxKeyFileSize bounds what [LoadKeyFile] reads; a secret is a few dozen
// bytes, so anything larger is the wrong file.
const maxKeyFileSize = 64 << 10

// keyLabel is the HKDF info string of the seal key (RFC 5869 section 3.2);
// its version changes whenever the derivation does.
const keyLabel = "vramseal seal key v1"

// keyIDLabel domain-separates the key ID hash from every other use of the
// key.
const keyIDLabel = "vramseal key id v1\x00"

// keyIDPrefix starts every key ID; it names the version of the derivation.
const keyIDPrefix = "k1:"

// Key is the HMAC-SHA256 key that signs and verifies seals, derived from a
// worker secret with [DeriveKey] or [LoadKeyFile]. The zero Key signs
// nothing.
//
// The key bytes can never be printed: String, GoString, Format (every
// verb), LogValue, MarshalJSON and MarshalText all yield only a redacted
// form with the key ID. The bytes are reachable only through a function
// value, which neither fmt nor any reflection-based printer can look into:
// printing a struct that holds a Key in an unexported field (where fmt
// skips the Key's methods) shows a function address, not the key. For the
// same reason Keys cannot be compared with ==; compare their IDs.
//
// A Key is immutable and safe for concurrent use.
type Key struct {
	m func() *keyMaterial
}

type keyMaterial struct {
	key [sha256.Size]byte
	id  string
}

// DeriveKey derives the seal key from secret with HKDF-SHA256 (RFC 5869,
// stdlib crypto/hkdf): no salt, info "vramseal seal key v1", 32 bytes.
// It refuses secrets shorter than [MinSecretLen] bytes.
func DeriveKey(secret []byte) (Key, error) {
	if len(secret) < MinSecretLen {
		return Key{}, fmt.Errorf("seal: secret is %d bytes, need at least %d (for example 32 random bytes from a CSPRNG, hex- or base64-encoded)", len(secret), MinSecretLen)
	}
	k, err := hkdf.Key(sha256.New, secret, nil, keyLabel, sha256.Size)
	if err != nil {
		return Key{}, fmt.Errorf("seal: derive key: %w", err)
	}
	m := &keyMaterial{}
	copy(m.key[:], k)
	clear(k)
	d := sha256.New()
	d.Write([]byte(keyIDLabel))
	d.Write(m.key[:])
	m.id = keyIDPrefix + hex.EncodeToString(d.Sum(nil)[:8])
	return Key{m: func() *keyMaterial { return m }}, nil
}

// LoadKeyFile reads a worker secret from the file at path and derives the
// seal key from it with [DeriveKey]. One trailing newline ("\n" or "\r\n")
// is removed; every other byte is secret. The file must be a regular file
// that neither group nor others may read or write (mode 0600 or 0400):
// anything else is refused, because the secret may already have leaked.
func LoadKeyFile(path string) (Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return Key{}, fmt.Errorf("seal: open key file: %w", err)
	}
	defer f.Close()
	// Check the open file, not the path, so that the file read is the one
	// checked.
	st, err := f.Stat()
	if err != nil {
		return Key{}, fmt.Errorf("seal: key file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return Key{}, fmt.Errorf("seal: key file %s is not a regular file (mode %s)", path, st.Mode())
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return Key{}, fmt.Errorf("seal: key file %s has mode %04o: group or others may access it; run chmod 600 %s and consider rotating the secret", path, perm, path)
	}
	secret, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return Key{}, fmt.Errorf("seal: read key file %s: %w", path, err)
	}
	defer clear(secret)
	if len(secret) > maxKeyFileSize {
		return Key{}, fmt.Errorf("seal: key file %s is larger than %d bytes", path, maxKeyFileSize)
	}
	s := secret
	switch {
	case len(s) >= 2 && s[len(s)-2] == '\r' && s[len(s)-1] == '\n':
		s = s[:len(s)-2]
	case len(s) >= 1 && s[len(s)-1] == '\n':
		s = s[:len(s)-1]
	}
	if len(s) < MinSecretLen {
		return Key{}, fmt.Errorf("seal: key file %s holds a %d-byte secret, need at least %d", path, len(s), MinSecretLen)
	}
	return DeriveKey(s)
}

// ID returns the key ID: "k1:" and the first 16 hexadecimal digits of
// SHA-256("vramseal key id v1" || 0x00 || key). It names the key in seals
// and logs without revealing it. The zero Key has the ID "".
func (k Key) ID() string {
	if k.m == nil {
		return ""
	}
	return k.m().id
}

// IsZero reports whether k is the zero Key, which signs nothing.
func (k Key) IsZero() bool { return k.m == nil }

// String returns the redacted form "[REDACTED key k1:...]".
func (k Key) String() string {
	if k.m == nil {
		return "[REDACTED key (zero)]"
	}
	return "[REDACTED key " + k.m().id + "]"
}

// GoString returns the redacted form, for %#v.
func (k Key) GoString() string { return k.String() }

// Format writes the redacted form for every verb, so that no verb
// (%x, %d, %+v, ...) reaches the key bytes.
func (k Key) Format(f fmt.State, verb rune) { io.WriteString(f, k.String()) }

// LogValue implements [slog.LogValuer] with the redacted form.
func (k Key) LogValue() slog.Value { return slog.StringValue(k.String()) }

// MarshalJSON returns the redacted form as a JSON string.
func (k Key) MarshalJSON() ([]byte, error) { return json.Marshal(k.String()) }

// MarshalText returns the redacted form.
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

var (
	_ fmt.Formatter          = Key{}
	_ fmt.Stringer           = Key{}
	_ fmt.GoStringer         = Key{}
	_ slog.LogValuer         = Key{}
	_ json.Marshaler         = Key{}
	_ encoding.TextMarshaler = Key{}
)
