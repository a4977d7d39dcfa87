package attach

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Frame size limits, in bytes of JSON after the 4-byte length.
const (
	// MaxRequestFrame is the longest request a daemon reads.
	MaxRequestFrame = 4 << 10
	// MaxResponseFrame is the longest answer or push a client reads; the
	// tensor map of a large shard is the biggest member.
	MaxResponseFrame = 16 << 20
	// Version is the protocol version, the "v" member of every frame.
	Version = 1
)

// headerLen is the length prefix's size.
const headerLen = 4

// Encode returns v's frame: the 4-byte big-endian length, then v as
// JSON. v is a [Request] or a pointer to an answer or push type
// ([*Attached], [*Stop], ...), whose MarshalJSON writes "v" and "op". It
// fails if the JSON is longer than [MaxResponseFrame], or longer than
// [MaxRequestFrame] for a [Request].
func Encode(v any) ([]byte, error) {
	limit := MaxResponseFrame
	switch r := v.(type) {
	case Request:
		limit = MaxRequestFrame
	case *Request:
		limit, v = MaxRequestFrame, *r
	}
	body, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("attach: encode frame: %w", err)
	}
	if len(body) > limit {
		return nil, fmt.Errorf("attach: encode frame: %d bytes of JSON, the limit is %d", len(body), limit)
	}
	out := make([]byte, headerLen, headerLen+len(body))
	binary.BigEndian.PutUint32(out, uint32(len(body)))
	return append(out, body...), nil
}

// WriteFrame writes v's frame (see [Encode]) with one Write.
func WriteFrame(w io.Writer, v any) error {
	b, err := Encode(v)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// ReadFrame reads one frame of at most max bytes of JSON and returns the
// JSON. It returns io.EOF when r ends before the frame's first byte, and
// a [*ProtocolError] with code bad_frame when the length is 0 or above
// max, or when r ends inside the frame. Other read errors are returned
// as they are. It reads the length before it allocates, so a hostile
// length costs nothing.
func ReadFrame(r io.Reader, max int) ([]byte, error) {
	var h [headerLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, badFrame("truncated frame: the stream ended inside the length")
		}
		return nil, err
	}
	n, err := checkLength(h, max)
	if err != nil {
		return nil, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, badFrame("truncated frame: the stream ended inside a frame of %d bytes", n)
		}
		return nil, err
	}
	return body, nil
}

func checkLength(h [headerLen]byte, max int) (int, error) {
	n := binary.BigEndian.Uint32(h[:])
	if n == 0 {
		return 0, badFrame("empty frame: the length is 0")
	}
	if uint64(n) > uint64(max) {
		return 0, badFrame("frame of %d bytes exceeds the limit of %d", n, max)
	}
	return int(n), nil
}
