package seal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"
)

// MaxJSONLen is the longest JSON document [DecodeJSON] reads.
const MaxJSONLen = 128 << 10

// sealJSON is the JSON form of a Seal; its field order is the output
// order.
type sealJSON struct {
	ShardID     string `json:"shard_id"`
	ModelRef    string `json:"model_ref"`
	ShardIndex  int    `json:"shard_index"`
	ShardCount  int    `json:"shard_count"`
	DeviceIndex int    `json:"gpu"`
	DeviceUUID  string `json:"gpu_uuid"`
	Size        int64  `json:"size_bytes"`
	ChunkSize   int64  `json:"chunk_size"`
	Digest      Hash   `json:"digest"`
	Root        Hash   `json:"tree_root"`
	SealedAt    string `json:"sealed_at"`
	KeyID       string `json:"key_id"`
	WorkerID    string `json:"worker_id"`
	Signature   Hash   `json:"signature"`
}

// jsonFields lists the members [DecodeJSON] requires, each exactly once.
var jsonFields = [...]string{
	"shard_id", "model_ref", "shard_index", "shard_count", "gpu",
	"gpu_uuid", "size_bytes", "chunk_size", "digest", "tree_root",
	"sealed_at", "key_id", "worker_id", "signature",
}

// MarshalJSON encodes s as one JSON object with the members, in order,
// shard_id, model_ref, shard_index, shard_count, gpu, gpu_uuid,
// size_bytes, chunk_size, digest, tree_root, sealed_at (RFC 3339 with
// nanoseconds, UTC), key_id, worker_id and signature; hashes are 64
// lowercase hexadecimal digits. It holds nothing but those fields.
func (s Seal) MarshalJSON() ([]byte, error) {
	return json.Marshal(sealJSON{
		ShardID:     s.ShardID,
		ModelRef:    s.ModelRef,
		ShardIndex:  s.ShardIndex,
		ShardCount:  s.ShardCount,
		DeviceIndex: s.DeviceIndex,
		DeviceUUID:  s.DeviceUUID,
		Size:        s.Size,
		ChunkSize:   s.ChunkSize,
		Digest:      s.Digest,
		Root:        s.Root,
		SealedAt:    s.SealedAt.UTC().Format(time.RFC3339Nano),
		KeyID:       s.KeyID,
		WorkerID:    s.WorkerID,
		Signature:   s.Signature,
	})
}

// UnmarshalJSON decodes s strictly with [DecodeJSON]; on error s is
// unchanged.
func (s *Seal) UnmarshalJSON(data []byte) error {
	t, err := DecodeJSON(data)
	if err != nil {
		return err
	}
	*s = *t
	return nil
}

// errJSON marks malformed JSON seals.
var errJSON = errors.New("seal: decode json")

// DecodeJSON decodes one seal in the form [Seal.MarshalJSON] writes. It is
// strict: the input is at most [MaxJSONLen] bytes of valid UTF-8 holding
// exactly one object (whitespace aside); every member is required, exactly
// once, spelled exactly, and not null; unknown members are refused; hashes
// are exactly 64 hexadecimal digits; sealed_at is in the canonical form
// MarshalJSON writes; and the seal passes [Seal.Validate] with a non-empty
// key_id. It does not verify the signature: call [Key.Verify].
func DecodeJSON(data []byte) (*Seal, error) {
	if len(data) > MaxJSONLen {
		return nil, fmt.Errorf("%w: %d bytes, longer than the %d-byte limit", errJSON, len(data), MaxJSONLen)
	}
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("%w: not valid UTF-8", errJSON)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("%w: not a JSON object", errJSON)
	}
	var (
		w    sealJSON
		seen = make(map[string]bool, len(jsonFields))
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errJSON, err)
		}
		name, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("%w: member %s: %w", errJSON, quoteShort(name), err)
		}
		if seen[name] {
			return nil, fmt.Errorf("%w: duplicate member %s", errJSON, quoteShort(name))
		}
		dst := w.field(name)
		if dst == nil {
			return nil, fmt.Errorf("%w: unknown member %s", errJSON, quoteShort(name))
		}
		seen[name] = true
		if string(raw) == "null" {
			return nil, fmt.Errorf("%w: member %s is null", errJSON, name)
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return nil, fmt.Errorf("%w: member %s: %w", errJSON, name, err)
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, fmt.Errorf("%w: unterminated object", errJSON)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the seal object", errJSON)
	}
	for _, name := range jsonFields {
		if !seen[name] {
			return nil, fmt.Errorf("%w: missing member %s", errJSON, name)
		}
	}
	at, err := time.Parse(time.RFC3339Nano, w.SealedAt)
	if err != nil || at.UTC().Format(time.RFC3339Nano) != w.SealedAt {
		return nil, fmt.Errorf("%w: sealed_at %s is not an RFC 3339 UTC time in canonical form (for example 2026-01-02T03:04:05.123456789Z)", errJSON, quoteShort(w.SealedAt))
	}
	s := &Seal{
		ShardID:     w.ShardID,
		ModelRef:    w.ModelRef,
		ShardIndex:  w.ShardIndex,
		ShardCount:  w.ShardCount,
		DeviceIndex: w.DeviceIndex,
		DeviceUUID:  w.DeviceUUID,
		Size:        w.Size,
		ChunkSize:   w.ChunkSize,
		Digest:      w.Digest,
		Root:        w.Root,
		SealedAt:    at.UTC(),
		KeyID:       w.KeyID,
		WorkerID:    w.WorkerID,
		Signature:   w.Signature,
	}
	if err := s.validate(true); err != nil {
		return nil, err
	}
	return s, nil
}

// field returns where the member called name decodes to, or nil for an
// unknown name. Names match exactly (encoding/json alone would fold case).
func (w *sealJSON) field(name string) any {
	switch name {
	case "shard_id":
		return &w.ShardID
	case "model_ref":
		return &w.ModelRef
	case "shard_index":
		return &w.ShardIndex
	case "shard_count":
		return &w.ShardCount
	case "gpu":
		return &w.DeviceIndex
	case "gpu_uuid":
		return &w.DeviceUUID
	case "size_bytes":
		return &w.Size
	case "chunk_size":
		return &w.ChunkSize
	case "digest":
		return &w.Digest
	case "tree_root":
		return &w.Root
	case "sealed_at":
		return &w.SealedAt
	case "key_id":
		return &w.KeyID
	case "worker_id":
		return &w.WorkerID
	case "signature":
		return &w.Signature
	}
	return nil
}
