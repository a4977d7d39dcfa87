package vram

import (
	"crypto/rand"
	mrand "math/rand/v2"
	"sync"
)

// rekeyAfter is how many bytes keyedRand yields from one key.
const rekeyAfter = 64 << 10

// keyedRand is a cryptographically strong source for sampled chunks and
// generated IDs: ChaCha8 keyed with 32 bytes of crypto/rand, rekeyed
// from crypto/rand after every rekeyAfter bytes. Its output is as
// unpredictable as crypto/rand's to anyone who cannot read the daemon's
// memory. Safe for concurrent use.
type keyedRand struct {
	mu   sync.Mutex
	c    *mrand.ChaCha8
	left int
}

func (k *keyedRand) Read(p []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for n < len(p) {
		if k.left == 0 {
			var seed [32]byte
			if _, err := rand.Read(seed[:]); err != nil {
				return n, err
			}
			k.c, k.left = mrand.NewChaCha8(seed), rekeyAfter
			clear(seed[:])
		}
		m := min(len(p)-n, k.left)
		k.c.Read(p[n : n+m])
		n += m
		k.left -= m
	}
	return n, nil
}
