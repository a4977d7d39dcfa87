package gputest

import "crypto/sha256"

// leafHash is the RFC 6962 leaf hash SHA-256(0x00 || chunk), the reference
// the device's hashes must match.
func leafHash(chunk []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte{0x00})
	h.Write(chunk)
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}
