package seal

import (
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// magic opens every encoded seal; the canonical encoding is described in
// the package documentation.
const magic = "vramseal-seal-v1"

// formatVersion is the byte after magic.
const formatVersion = 1

// MaxEncodedLen is the longest valid [Seal.MarshalBinary] encoding:
// magic, version, five text fields of at most [MaxTextLen] bytes with
// their 4-byte lengths, six 8-byte integers, two hashes and the signature.
const MaxEncodedLen = len(magic) + 1 + 5*(4+MaxTextLen) + 6*8 + 3*32

var (
	_ encoding.BinaryMarshaler   = (*Seal)(nil)
	_ encoding.BinaryUnmarshaler = (*Seal)(nil)
)

// AppendCanonical appends the canonical encoding of every field of s but
// Signature to b and returns the result; it is what [Key.Sign] signs. The
// format is documented in the package documentation. AppendCanonical does
// not validate s: an invalid seal (for example a text field longer than
// [MaxTextLen]) has no canonical encoding, so call [Seal.Validate] first;
// Sign and Verify do.
func (s *Seal) AppendCanonical(b []byte) []byte {
	b = append(b, magic...)
	b = append(b, formatVersion)
	b = appendText(b, s.ShardID)
	b = appendText(b, s.ModelRef)
	b = binary.BigEndian.AppendUint64(b, uint64(s.ShardIndex))
	b = binary.BigEndian.AppendUint64(b, uint64(s.ShardCount))
	b = binary.BigEndian.AppendUint64(b, uint64(s.DeviceIndex))
	b = appendText(b, s.DeviceUUID)
	b = binary.BigEndian.AppendUint64(b, uint64(s.Size))
	b = binary.BigEndian.AppendUint64(b, uint64(s.ChunkSize))
	b = append(b, s.Digest[:]...)
	b = append(b, s.Root[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(s.SealedAt.UnixNano()))
	b = appendText(b, s.KeyID)
	b = appendText(b, s.WorkerID)
	return b
}

func appendText(b []byte, v string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

// MarshalBinary returns the canonical encoding of s followed by its
// 32-byte Signature. It refuses an invalid or unsigned seal (empty KeyID),
// which [Seal.UnmarshalBinary] would refuse too.
func (s *Seal) MarshalBinary() ([]byte, error) {
	if err := s.validate(true); err != nil {
		return nil, err
	}
	b := s.AppendCanonical(make([]byte, 0, 256))
	return append(b, s.Signature[:]...), nil
}

// errDecode marks malformed binary seals.
var errDecode = errors.New("seal: decode")

// UnmarshalBinary decodes an encoding made by [Seal.MarshalBinary]. It is
// strict: the version is checked first, lengths are capped, every field
// must pass [Seal.Validate] with a non-empty KeyID, and trailing bytes are
// refused, so exactly one byte string decodes to a given seal. On error s
// is unchanged. It does not verify the signature: call [Key.Verify].
func (s *Seal) UnmarshalBinary(data []byte) error {
	if len(data) > MaxEncodedLen {
		return fmt.Errorf("%w: %d bytes, longer than the %d-byte limit", errDecode, len(data), MaxEncodedLen)
	}
	d := decoder{b: data}
	if len(data) < len(magic)+1 || string(data[:len(magic)]) != magic {
		return fmt.Errorf("%w: not a vramseal seal (bad magic)", errDecode)
	}
	if v := data[len(magic)]; v != formatVersion {
		return fmt.Errorf("%w: unsupported format version %d (this reader knows %d)", errDecode, v, formatVersion)
	}
	d.off = len(magic) + 1
	var t Seal
	t.ShardID = d.text("shard id")
	t.ModelRef = d.text("model ref")
	t.ShardIndex = d.index("shard index")
	t.ShardCount = d.index("shard count")
	t.DeviceIndex = d.index("device index")
	t.DeviceUUID = d.text("device uuid")
	t.Size = d.int64("size")
	t.ChunkSize = d.int64("chunk size")
	d.hash("digest", &t.Digest)
	d.hash("tree root", &t.Root)
	if b := d.next("sealed-at time", 8); b != nil {
		t.SealedAt = time.Unix(0, int64(binary.BigEndian.Uint64(b))).UTC()
	}
	t.KeyID = d.text("key id")
	t.WorkerID = d.text("worker id")
	d.hash("signature", &t.Signature)
	if d.err != nil {
		return d.err
	}
	if d.off != len(data) {
		return fmt.Errorf("%w: %d trailing bytes after the signature", errDecode, len(data)-d.off)
	}
	if err := t.validate(true); err != nil {
		return err
	}
	*s = t
	return nil
}

// decoder reads the fields of an encoded seal in order; after the first
// error every read is a no-op and err keeps that error.
type decoder struct {
	b   []byte
	off int
	err error
}

// next returns the n bytes of field at the current offset, or nil.
func (d *decoder) next(field string, n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b)-d.off < n {
		d.err = fmt.Errorf("%w: truncated in %s at byte %d: need %d bytes, have %d", errDecode, field, d.off, n, len(d.b)-d.off)
		return nil
	}
	b := d.b[d.off : d.off+n]
	d.off += n
	return b
}

func (d *decoder) text(field string) string {
	b := d.next(field, 4)
	if b == nil {
		return ""
	}
	n := binary.BigEndian.Uint32(b)
	if n > MaxTextLen {
		d.err = fmt.Errorf("%w: %s length %d at byte %d exceeds %d", errDecode, field, n, d.off-4, MaxTextLen)
		return ""
	}
	return string(d.next(field, int(n)))
}

func (d *decoder) uint64(field string) (uint64, bool) {
	b := d.next(field, 8)
	if b == nil {
		return 0, false
	}
	return binary.BigEndian.Uint64(b), true
}

// index reads an integer that must lie in [0, MaxIndex].
func (d *decoder) index(field string) int {
	v, ok := d.uint64(field)
	if ok && v > MaxIndex {
		d.err = fmt.Errorf("%w: %s %d at byte %d exceeds %d", errDecode, field, v, d.off-8, MaxIndex)
		return 0
	}
	return int(v)
}

// int64 reads an integer that must lie in [0, 2^63-1].
func (d *decoder) int64(field string) int64 {
	v, ok := d.uint64(field)
	if ok && v > math.MaxInt64 {
		d.err = fmt.Errorf("%w: %s at byte %d exceeds 2^63-1", errDecode, field, d.off-8)
		return 0
	}
	return int64(v)
}

func (d *decoder) hash(field string, h *Hash) {
	if b := d.next(field, len(h)); b != nil {
		copy(h[:], b)
	}
}
