package attach

import (
	"encoding/json"
	"os"
	"time"
)

// Operations: the "op" member of requests, answers and pushes.
const (
	OpAttach   = "attach"
	OpVerify   = "verify"
	OpDetach   = "detach"
	OpPing     = "ping"
	OpAttached = "attached"
	OpVerified = "verified"
	OpDetached = "detached"
	OpPong     = "pong"
	OpError    = "error"
	OpStop     = "stop"
)

// Verify modes, the "mode" member of verify requests and verified answers.
const (
	ModeSampled = "sampled"
	ModeFull    = "full"
)

// Stop reasons, the "reason" member of a stop push.
const (
	ReasonIntegrity = "integrity"
	ReasonPolicy    = "policy"
	ReasonRevoked   = "revoked"
	ReasonShutdown  = "shutdown"
)

// Mapping kinds, the "kind" member of an attached frame's mapping.
const (
	KindMemfd   = "memfd"
	KindCUDAVMM = "cuda_vmm_fd"
)

// Limits of member values.
const (
	// MaxID is the largest request id, 2^53-1, so that every id is exact
	// in an IEEE 754 double (JavaScript, and JSON parsers that use one).
	MaxID = 1<<53 - 1
	// DefaultSamples is the sample count of a sampled verify without
	// "samples".
	DefaultSamples = 16
	// MaxSamples is the largest "samples".
	MaxSamples = 1 << 20
	// MaxShardIDLen is the longest shard ID. The shard ID rule must match
	// vram.ValidateShardID; a test in internal/server checks that it does.
	MaxShardIDLen = 256
	// MaxCorrelationIDLen is the longest correlation ID.
	MaxCorrelationIDLen = 128
	// MaxMessageLen is the longest error or stop message, in bytes.
	MaxMessageLen = 1024
)

// Request is a frame from a client. Members that do not apply to its op
// are zero and left out of the encoding.
type Request struct {
	// V is the protocol version; [Version].
	V int `json:"v"`
	// Op is [OpAttach], [OpVerify], [OpDetach] or [OpPing].
	Op string `json:"op"`
	// ID is chosen by the client, 1 to [MaxID], and echoed in the answer.
	ID int64 `json:"id"`
	// ShardID names the shard (attach, verify, detach).
	ShardID string `json:"shard_id,omitempty"`
	// Mode is [ModeSampled] or [ModeFull] (verify); empty means sampled.
	Mode string `json:"mode,omitempty"`
	// Samples is the sampled verify's chunk count, 1 to [MaxSamples];
	// zero means [DefaultSamples].
	Samples int `json:"samples,omitempty"`
	// CorrelationID ties the request to the daemon's narration and audit
	// records (attach, verify, detach); empty means the daemon makes one.
	CorrelationID string `json:"correlation_id,omitempty"`
}

// Response is a parsed frame from the daemon: an answer or a push. Exactly
// one of the pointers is set, the one that matches Op.
type Response struct {
	Op string
	// ID is the id of the request answered, or 0 for a push and for an
	// error not tied to a request.
	ID       int64
	Attached *Attached
	Verified *Verified
	Detached *Detached
	Pong     *Pong
	Error    *Error
	Stop     *Stop

	file *os.File // an attached frame's descriptor, for the Client
}

// Attached answers attach. Its frame carries the descriptor.
type Attached struct {
	ID            int64   `json:"id"`
	ShardID       string  `json:"shard_id"`
	Attachment    string  `json:"attachment"`
	CorrelationID string  `json:"correlation_id"`
	Seal          Seal    `json:"seal"`
	Mapping       Mapping `json:"mapping"`
	// Tensors is the safetensors tensor map, nil when the shard is not a
	// safetensors file.
	Tensors []Tensor `json:"tensors,omitempty"`
}

// Seal is the shard's seal as an attached frame shows it.
type Seal struct {
	ShardID    string `json:"shard_id"`
	ModelRef   string `json:"model_ref"`
	ShardIndex int    `json:"shard_index"`
	ShardCount int    `json:"shard_count"`
	GPU        int    `json:"gpu"`
	GPUUUID    string `json:"gpu_uuid"`
	Size       int64  `json:"size"`
	ChunkSize  int64  `json:"chunk_size"`
	// Digest and TreeRoot are 64 lowercase hexadecimal digits.
	Digest   string `json:"digest"`
	TreeRoot string `json:"tree_root"`
	// SealedAt is in UTC.
	SealedAt time.Time `json:"sealed_at"`
	KeyID    string    `json:"key_id"`
	WorkerID string    `json:"worker_id"`
}

// Mapping says how to map the attached frame's descriptor.
type Mapping struct {
	// Kind is [KindMemfd] or [KindCUDAVMM].
	Kind string `json:"kind"`
	// Size is the length to map: the shard size rounded up to Granularity.
	Size        int64 `json:"size"`
	Granularity int64 `json:"granularity"`
}

// Tensor is one tensor of a safetensors shard.
type Tensor struct {
	Name  string  `json:"name"`
	DType string  `json:"dtype"`
	Shape []int64 `json:"shape"`
	// Offset and Length are the tensor's bytes from the start of the
	// mapping.
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// Verified answers a verify that passed.
type Verified struct {
	ID                   int64   `json:"id"`
	ShardID              string  `json:"shard_id"`
	Mode                 string  `json:"mode"`
	ChunksChecked        int64   `json:"chunks_checked"`
	Chunks               int64   `json:"chunks"`
	DetectionProbability float64 `json:"detection_probability"`
	DurationMicros       int64   `json:"duration_us"`
	CorrelationID        string  `json:"correlation_id"`
}

// Detached answers detach.
type Detached struct {
	ID      int64  `json:"id"`
	ShardID string `json:"shard_id"`
}

// Pong answers ping.
type Pong struct {
	ID int64 `json:"id"`
}

// Error is an error frame: the answer to a request that failed, or (with
// ID 0) the last frame before the daemon closes the connection. It is
// also the error the [Client] returns for it.
type Error struct {
	ID            int64        `json:"id"`
	Code          string       `json:"code"`
	Message       string       `json:"message"`
	ShardID       string       `json:"shard_id,omitempty"`
	CorrelationID string       `json:"correlation_id,omitempty"`
	ChangedChunks []ChunkRange `json:"changed_chunks,omitempty"`
}

// Error returns "attach: daemon: CODE: MESSAGE".
func (e *Error) Error() string { return "attach: daemon: " + e.Code + ": " + e.Message }

// Stop is a push that tells the connection to stop serving.
type Stop struct {
	// ShardID is the shard that failed or was revoked; empty when no
	// shard applies (shutdown, and policy stops found outside a shard).
	ShardID string `json:"shard_id,omitempty"`
	// Reason is [ReasonIntegrity], [ReasonPolicy], [ReasonRevoked] or
	// [ReasonShutdown].
	Reason        string       `json:"reason"`
	Message       string       `json:"message"`
	ChangedChunks []ChunkRange `json:"changed_chunks,omitempty"`
}

// ChunkRange is a run of changed chunks and the bytes they cover.
type ChunkRange struct {
	FirstChunk int64 `json:"first_chunk"`
	LastChunk  int64 `json:"last_chunk"`
	Offset     int64 `json:"offset"`
	Length     int64 `json:"length"`
}

// header is the members every frame starts with.
type header struct {
	V  int    `json:"v"`
	Op string `json:"op"`
}

// The MarshalJSON methods write the whole frame object: "v", "op", then
// the type's members. The unexported conversions drop the methods, so
// encoding/json inlines the fields of the embedded struct.
type (
	attachedJSON Attached
	verifiedJSON Verified
	detachedJSON Detached
	pongJSON     Pong
	errorJSON    Error
	stopJSON     Stop
)

// MarshalJSON encodes the attached frame.
func (a *Attached) MarshalJSON() ([]byte, error) {
	c := *a
	c.Seal.SealedAt = c.Seal.SealedAt.UTC()
	return json.Marshal(struct {
		header
		attachedJSON
	}{header{Version, OpAttached}, attachedJSON(c)})
}

// MarshalJSON encodes the verified frame.
func (v *Verified) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		header
		verifiedJSON
	}{header{Version, OpVerified}, verifiedJSON(*v)})
}

// MarshalJSON encodes the detached frame.
func (d *Detached) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		header
		detachedJSON
	}{header{Version, OpDetached}, detachedJSON(*d)})
}

// MarshalJSON encodes the pong frame.
func (p *Pong) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		header
		pongJSON
	}{header{Version, OpPong}, pongJSON(*p)})
}

// MarshalJSON encodes the error frame.
func (e *Error) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		header
		errorJSON
	}{header{Version, OpError}, errorJSON(*e)})
}

// MarshalJSON encodes the stop frame, whose id is always 0.
func (s *Stop) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		header
		ID int64 `json:"id"`
		stopJSON
	}{header{Version, OpStop}, 0, stopJSON(*s)})
}
