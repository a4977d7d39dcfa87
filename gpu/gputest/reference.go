package gputest

import (
	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/seal"
)

// leafHash is the reference the device's hashes must match: seal's RFC 6962
// leaf hash, SHA-256(0x00 || chunk).
func leafHash(chunk []byte) [gpu.HashSize]byte {
	return seal.LeafHash(chunk)
}
