package vram

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"strconv"
)

// MaxShardIDLen is the longest accepted shard ID.
const MaxShardIDLen = 256

// ValidateShardID checks a caller-supplied shard ID: 1 to 256 bytes of
// ASCII letters, digits, '_' and '-'. The error quotes the ID only when it is
// printable ASCII, so raw bytes never reach logs.
func ValidateShardID(id string) error {
	if id == "" {
		return invalid("shard ID is empty")
	}
	if len(id) > MaxShardIDLen {
		return invalid("shard ID is %d bytes, the limit is %d", len(id), MaxShardIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			continue
		}
		return invalid("shard ID has a forbidden byte %s at offset %d (allowed: A-Z a-z 0-9 _ -)", describeByte(c), i)
	}
	return nil
}

func describeByte(c byte) string {
	if c >= 0x21 && c < 0x7f {
		return strconv.QuoteRune(rune(c))
	}
	return "0x" + hex.EncodeToString([]byte{c})
}

// NewShardID returns "shard-" followed by 32 random hex digits.
func NewShardID(r io.Reader) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	var b [16]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", err
	}
	return "shard-" + hex.EncodeToString(b[:]), nil
}

// validateText checks free-text fields (model ref, worker ID): printable
// UTF-8 without control characters, at most max bytes.
func validateText(name, s string, max int, required bool) error {
	if s == "" {
		if required {
			return invalid("%s is empty", name)
		}
		return nil
	}
	if len(s) > max {
		return invalid("%s is %d bytes, the limit is %d", name, len(s), max)
	}
	for i, r := range s {
		if r == 0xFFFD || r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
			return invalid("%s has a forbidden character at offset %d", name, i)
		}
	}
	return nil
}
