package vram

import (
	"crypto/sha256"
	"fmt"
	"hash"

	"github.com/vramseal/vramseal/seal"
	"github.com/vramseal/vramseal/tensor"
)

// Formats of a [SealRequest].
const (
	// FormatAuto keeps a tensor map when the shard's bytes parse as a
	// safetensors file, and none otherwise.
	FormatAuto = ""
	// FormatSafetensors requires the shard to be a valid safetensors file.
	FormatSafetensors = "safetensors"
	// FormatRaw keeps no tensor map.
	FormatRaw = "raw"
	// FormatGGUF takes the tensor map the caller parsed from a GGUF file
	// ([SealRequest.Tensors]).
	FormatGGUF = "gguf"
)

// headerCapture keeps the first bytes of a shard as it streams, for as
// long as they can be a safetensors header (the 8-byte length, then that
// many bytes of JSON), so that the tensor map is parsed on the host
// without reading anything back from the device. It holds at most
// [tensor.MaxSafetensorsHeader] + 8 bytes, and nothing once the bytes
// cannot be a header.
type headerCapture struct {
	size int64
	// want is the number of bytes to keep: 8 until the header length is
	// known, then 8+N; -1 once the shard cannot be safetensors.
	want int64
	buf  []byte
	err  error // why the shard cannot be safetensors

	// prefix and sum hash the first prefix bytes (a GGUF file's header,
	// whose tensor map the caller parsed), 0 for none.
	prefix int64
	sum    hash.Hash
}

// hashPrefix makes c hash the first n bytes of the stream as well.
func (c *headerCapture) hashPrefix(n int64) {
	c.prefix, c.sum = n, sha256.New()
}

// prefixSum is the SHA-256 of the first prefix bytes (once streamed).
func (c *headerCapture) prefixSum() seal.Hash {
	var h seal.Hash
	if c.sum != nil {
		c.sum.Sum(h[:0])
	}
	return h
}

func newHeaderCapture(size int64, format string) *headerCapture {
	c := &headerCapture{size: size, want: 8}
	if format == FormatRaw || size < 8 {
		c.want = -1
		c.err = fmt.Errorf("%w: %d bytes is too short for a safetensors file", tensor.ErrMalformed, size)
	}
	return c
}

// add records p, the shard's bytes from offset off, in stream order.
func (c *headerCapture) add(off int64, p []byte) {
	if c.sum != nil && off < c.prefix {
		c.sum.Write(p[:min(int64(len(p)), c.prefix-off)])
	}
	for c.want > 0 && off < c.want && len(p) > 0 {
		if off != int64(len(c.buf)) {
			return // bytes out of order: cannot happen in a stream
		}
		k := min(int64(len(p)), c.want-off)
		c.buf = append(c.buf, p[:k]...)
		off, p = off+k, p[k:]
		if c.want == 8 && len(c.buf) == 8 {
			n, err := tensor.SafetensorsHeaderLen(c.buf, c.size)
			if err != nil {
				c.want, c.buf, c.err = -1, nil, err
				return
			}
			c.want = n
			c.buf = append(make([]byte, 0, n), c.buf...)
		}
	}
}

// tensorMap parses what was captured. It returns nil without an error
// when the format allows a shard that is not safetensors.
func (c *headerCapture) tensorMap(format string) (*tensor.Map, error) {
	var (
		m   *tensor.Map
		err = c.err
	)
	if c.want > 0 {
		m, err = tensor.ParseSafetensors(c.buf, c.size)
	}
	switch {
	case format == FormatRaw:
		return nil, nil
	case err == nil:
		return m, nil
	case format == FormatSafetensors:
		return nil, invalid("not a valid safetensors file: %v", err)
	default:
		return nil, nil
	}
}
