package attach

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ValidShardID reports whether id is a vramseal shard ID: 1 to
// [MaxShardIDLen] bytes of ASCII letters, digits, '_' and '-'. The rule
// is vram.ValidateShardID's.
func ValidShardID(id string) bool {
	if id == "" || len(id) > MaxShardIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ValidCorrelationID reports whether id is 1 to [MaxCorrelationIDLen]
// bytes of ASCII letters, digits and ".:/-". The rule is
// narration.ValidCorrelationID's.
func ValidCorrelationID(id string) bool {
	if id == "" || len(id) > MaxCorrelationIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == ':' || c == '/' || c == '-') {
			return false
		}
	}
	return true
}

// validMessage reports whether s may be an error or stop message: at
// most [MaxMessageLen] bytes of printable characters.
func validMessage(s string) bool {
	if len(s) > MaxMessageLen {
		return false
	}
	for _, r := range s {
		if !printable(r) {
			return false
		}
	}
	return true
}

// printable excludes control characters, U+FFFD (the mark of invalid
// input) and the bidirectional overrides that could disguise a message.
func printable(r rune) bool {
	return !(r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError ||
		(r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069))
}

// CleanMessage makes s a valid message: unprintable characters become
// '?' and the result is cut to [MaxMessageLen] bytes at a character
// boundary. A daemon passes every error text through it.
func CleanMessage(s string) string {
	var b strings.Builder
	for _, r := range s {
		if !printable(r) {
			r = '?'
		}
		if b.Len()+utf8.RuneLen(r) > MaxMessageLen {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// quote renders at most 32 bytes of untrusted input for an error message.
func quote(s string) string {
	if len(s) > 32 {
		return strconv.Quote(s[:32]) + "..."
	}
	return strconv.Quote(s)
}

// object is a parsed JSON object. Values are map[string]any (objects),
// []any, string, json.Number and bool; null is refused by the parser.
type object = map[string]any

// parseObject parses body as exactly one JSON object under the rules of
// the package comment: valid UTF-8, no duplicate members, no null, and
// no nesting deeper than maxDepth (1 means members are scalars), so
// that a frame of a later version still shows its "v".
func parseObject(body []byte, maxDepth int) (object, error) {
	if !utf8.Valid(body) {
		return nil, badFrame("the frame is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, badFrame("malformed JSON: %v", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, badFrame("the frame is not a JSON object")
	}
	m, err := readObject(dec, "", 1, maxDepth)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badFrame("the frame holds more than one JSON value")
	}
	return m, nil
}

func readObject(dec *json.Decoder, path string, depth, maxDepth int) (object, error) {
	m := object{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, badFrame("malformed JSON: %v", err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, badFrame("malformed JSON: member name is not a string")
		}
		if _, dup := m[key]; dup {
			return nil, badFrame("duplicate member %s", quote(path+key))
		}
		v, err := readValue(dec, path+key, depth, maxDepth)
		if err != nil {
			return nil, err
		}
		m[key] = v
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, badFrame("malformed JSON: %v", err)
	}
	return m, nil
}

func readValue(dec *json.Decoder, path string, depth, maxDepth int) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, badFrame("malformed JSON: %v", err)
	}
	switch t := tok.(type) {
	case json.Delim:
		if depth >= maxDepth {
			return nil, badFrame("member %s is nested too deep", quote(path))
		}
		switch t {
		case '{':
			return readObject(dec, path+".", depth+1, maxDepth)
		case '[':
			a := []any{}
			for dec.More() {
				v, err := readValue(dec, path+"[]", depth+1, maxDepth)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, badFrame("malformed JSON: %v", err)
			}
			return a, nil
		}
		return nil, badFrame("malformed JSON near %s", quote(path))
	case nil:
		return nil, badFrame("member %s is null (leave out a member that does not apply)", quote(path))
	default:
		return t, nil
	}
}

// fields extracts typed members of one object, remembering the first
// fault as a bad_frame.
type fields struct {
	m    object
	path string
	err  *ProtocolError
}

func (f *fields) fail(format string, args ...any) {
	if f.err == nil {
		f.err = badFrame(format, args...)
	}
}

func (f *fields) name(key string) string { return quote(f.path + key) }

// only fails if the object has a member not in allowed.
func (f *fields) only(allowed ...string) {
	for k := range f.m {
		found := false
		for _, a := range allowed {
			if k == a {
				found = true
				break
			}
		}
		if !found {
			f.fail("unknown member %s", f.name(k))
			return
		}
	}
}

func (f *fields) has(key string) bool { _, ok := f.m[key]; return ok }

func (f *fields) get(key string, required bool) (any, bool) {
	v, ok := f.m[key]
	if !ok && required {
		f.fail("missing member %s", f.name(key))
	}
	return v, ok
}

func (f *fields) str(key string, required bool) string {
	v, ok := f.get(key, required)
	if !ok {
		return ""
	}
	s, ok := v.(string)
	if !ok {
		f.fail("member %s is not a string", f.name(key))
	}
	return s
}

// integer returns an integer member. Integers outside int64 are clamped
// to its range (for range checks to refuse).
func (f *fields) integer(key string, required bool) int64 {
	v, ok := f.get(key, required)
	if !ok {
		return 0
	}
	return f.toInt(v, f.name(key))
}

func (f *fields) toInt(v any, name string) int64 {
	n, ok := v.(json.Number)
	if !ok || strings.ContainsAny(string(n), ".eE") {
		f.fail("member %s is not an integer", name)
		return 0
	}
	i, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		f.fail("member %s is not an integer", name)
	}
	return i
}

func (f *fields) number(key string, required bool) float64 {
	v, ok := f.get(key, required)
	if !ok {
		return 0
	}
	n, ok := v.(json.Number)
	if !ok {
		f.fail("member %s is not a number", f.name(key))
		return 0
	}
	x, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		f.fail("member %s is out of range", f.name(key))
	}
	return x
}

// rangeOf fails unless min <= v <= max.
func (f *fields) rangeOf(key string, v, min, max int64) {
	if v < min || v > max {
		f.fail("member %s is %d, outside %d..%d", f.name(key), v, min, max)
	}
}

func (f *fields) sub(key string, required bool) *fields {
	v, ok := f.get(key, required)
	if !ok {
		return nil
	}
	m, ok := v.(object)
	if !ok {
		f.fail("member %s is not an object", f.name(key))
		return nil
	}
	return &fields{m: m, path: f.path + key + "."}
}

func (f *fields) array(key string, required bool) ([]any, bool) {
	v, ok := f.get(key, required)
	if !ok {
		return nil, false
	}
	a, ok := v.([]any)
	if !ok {
		f.fail("member %s is not an array", f.name(key))
		return nil, false
	}
	return a, true
}

// absorb takes the first fault of a nested object.
func (f *fields) absorb(g *fields) {
	if g != nil && g.err != nil && f.err == nil {
		f.err = g.err
	}
}

// header checks "v" first, then "id" (within minID..MaxID) and "op".
func (f *fields) header(minID int64) (op string, id int64, err *ProtocolError) {
	v, ok := f.m["v"]
	if !ok {
		return "", 0, badFrame(`missing member "v"`)
	}
	ver := f.toInt(v, `"v"`)
	if f.err != nil {
		return "", 0, f.err
	}
	if ver != Version {
		return "", 0, &ProtocolError{Code: CodeUnsupportedVersion, Msg: fmt.Sprintf("protocol version %d is not supported (this side speaks %d)", ver, Version)}
	}
	id = f.integer("id", true)
	op = f.str("op", true)
	if f.err != nil {
		return "", 0, f.err
	}
	if id < minID || id > MaxID {
		return "", 0, badFrame(`member "id" is %d, outside %d..%d`, id, minID, int64(MaxID))
	}
	return op, id, nil
}

// ParseRequest parses a request frame's JSON under the rules of the
// package comment. Its errors are [*ProtocolError]s: bad_frame for
// malformed JSON, duplicate, unknown, null, missing or mistyped members
// and an id out of range; unsupported_version when "v" is an integer
// other than [Version]; unknown_op (with the id) when "op" names no
// operation; invalid_input (with the id) for a member value out of range.
// Nothing is returned but the zero Request on error.
func ParseRequest(body []byte) (Request, error) {
	if len(body) > MaxRequestFrame {
		return Request{}, badFrame("frame of %d bytes exceeds the limit of %d", len(body), MaxRequestFrame)
	}
	m, err := parseObject(body, maxResponseDepth)
	if err != nil {
		return Request{}, err
	}
	f := &fields{m: m}
	op, id, perr := f.header(1)
	if perr != nil {
		return Request{}, perr
	}
	switch op {
	case OpAttach, OpDetach:
		f.only("v", "op", "id", "shard_id", "correlation_id")
	case OpVerify:
		f.only("v", "op", "id", "shard_id", "mode", "samples", "correlation_id")
	case OpPing:
		f.only("v", "op", "id")
	default:
		return Request{}, &ProtocolError{Code: CodeUnknownOp, Msg: fmt.Sprintf("no operation %s (use attach, verify, detach or ping)", quote(op)), ID: id}
	}
	r := Request{V: Version, Op: op, ID: id}
	if op != OpPing {
		r.ShardID = f.str("shard_id", true)
		r.CorrelationID = f.str("correlation_id", false)
	}
	if op == OpVerify {
		r.Mode = f.str("mode", false)
		if f.has("samples") {
			s := f.integer("samples", false)
			r.Samples = int(max(min(s, math.MaxInt32), math.MinInt32))
		}
	}
	if f.err != nil {
		return Request{}, f.err
	}
	invalid := func(format string, args ...any) (Request, error) {
		return Request{}, &ProtocolError{Code: CodeInvalidInput, Msg: fmt.Sprintf(format, args...), ID: id}
	}
	if op == OpPing {
		return r, nil
	}
	if !ValidShardID(r.ShardID) {
		return invalid("shard_id %s is not a shard ID (1 to %d bytes of A-Z a-z 0-9 _ -)", quote(r.ShardID), MaxShardIDLen)
	}
	if f.has("correlation_id") && !ValidCorrelationID(r.CorrelationID) {
		return invalid("correlation_id %s is not 1 to %d bytes of A-Z a-z 0-9 . : / -", quote(r.CorrelationID), MaxCorrelationIDLen)
	}
	if op == OpVerify {
		if f.has("mode") && r.Mode != ModeSampled && r.Mode != ModeFull {
			return invalid("mode %s: use sampled or full", quote(r.Mode))
		}
		if f.has("samples") {
			if r.Mode == ModeFull {
				return invalid("samples applies to sampled mode only")
			}
			if r.Samples < 1 || r.Samples > MaxSamples {
				return invalid("samples is %d, outside 1..%d", r.Samples, MaxSamples)
			}
		}
	}
	return r, nil
}

// maxResponseDepth is the deepest nesting of a response: the frame, the
// tensors array, a tensor, its shape.
const maxResponseDepth = 4

// ParseResponse parses an answer or push frame's JSON under the rules of
// the package comment, and checks every member's value. Its errors are
// [*ProtocolError]s with code bad_frame, or unsupported_version when "v"
// is an integer other than [Version].
func ParseResponse(body []byte) (Response, error) {
	if len(body) > MaxResponseFrame {
		return Response{}, badFrame("frame of %d bytes exceeds the limit of %d", len(body), MaxResponseFrame)
	}
	m, err := parseObject(body, maxResponseDepth)
	if err != nil {
		return Response{}, err
	}
	f := &fields{m: m}
	op, id, perr := f.header(0)
	if perr != nil {
		return Response{}, perr
	}
	r := Response{Op: op, ID: id}
	needID := func() {
		if id == 0 {
			f.fail(`an %s frame must have an "id" of 1 or more`, op)
		}
	}
	switch op {
	case OpAttached:
		needID()
		r.Attached = parseAttached(f, id)
	case OpVerified:
		needID()
		f.only("v", "op", "id", "shard_id", "mode", "chunks_checked", "chunks", "detection_probability", "duration_us", "correlation_id")
		v := &Verified{ID: id, ShardID: shardID(f, "shard_id", true), Mode: f.str("mode", true),
			ChunksChecked: f.integer("chunks_checked", true), Chunks: f.integer("chunks", true),
			DetectionProbability: f.number("detection_probability", true), DurationMicros: f.integer("duration_us", true),
			CorrelationID: correlationID(f, true)}
		if v.Mode != ModeSampled && v.Mode != ModeFull {
			f.fail("mode %s is not sampled or full", quote(v.Mode))
		}
		f.rangeOf("chunks", v.Chunks, 0, math.MaxInt64)
		f.rangeOf("chunks_checked", v.ChunksChecked, 0, v.Chunks)
		f.rangeOf("duration_us", v.DurationMicros, 0, math.MaxInt64)
		if !(v.DetectionProbability >= 0 && v.DetectionProbability <= 1) {
			f.fail(`member "detection_probability" is outside 0..1`)
		}
		r.Verified = v
	case OpDetached:
		needID()
		f.only("v", "op", "id", "shard_id")
		r.Detached = &Detached{ID: id, ShardID: shardID(f, "shard_id", true)}
	case OpPong:
		needID()
		f.only("v", "op", "id")
		r.Pong = &Pong{ID: id}
	case OpError:
		f.only("v", "op", "id", "code", "message", "shard_id", "correlation_id", "changed_chunks")
		e := &Error{ID: id, Code: f.str("code", true), Message: message(f),
			ShardID: shardID(f, "shard_id", false), CorrelationID: correlationID(f, false),
			ChangedChunks: chunkRanges(f)}
		if !validCode(e.Code) {
			f.fail("error code %s is not 1 to 64 bytes of a-z and _", quote(e.Code))
		}
		r.Error = e
	case OpStop:
		if id != 0 {
			f.fail(`a stop frame must have "id" 0`)
		}
		f.only("v", "op", "id", "shard_id", "reason", "message", "changed_chunks")
		s := &Stop{ShardID: shardID(f, "shard_id", false), Reason: f.str("reason", true), Message: message(f), ChangedChunks: chunkRanges(f)}
		switch s.Reason {
		case ReasonIntegrity, ReasonPolicy, ReasonRevoked, ReasonShutdown:
		default:
			f.fail("stop reason %s is not integrity, policy, revoked or shutdown", quote(s.Reason))
		}
		r.Stop = s
	default:
		f.fail("no answer or push %s", quote(op))
	}
	if f.err != nil {
		return Response{}, f.err
	}
	return r, nil
}

// validCode accepts codes this version does not know, so that a daemon
// may add codes without breaking clients: a-z and '_', 1 to 64 bytes.
func validCode(c string) bool {
	if c == "" || len(c) > 64 {
		return false
	}
	for i := 0; i < len(c); i++ {
		if !(c[i] >= 'a' && c[i] <= 'z' || c[i] == '_') {
			return false
		}
	}
	return true
}

func shardID(f *fields, key string, required bool) string {
	s := f.str(key, required)
	if f.has(key) && !ValidShardID(s) {
		f.fail("member %s is not a shard ID", f.name(key))
	}
	return s
}

func correlationID(f *fields, required bool) string {
	s := f.str("correlation_id", required)
	if f.has("correlation_id") && !ValidCorrelationID(s) {
		f.fail(`member "correlation_id" is not a correlation ID`)
	}
	return s
}

func message(f *fields) string {
	s := f.str("message", true)
	if !validMessage(s) {
		f.fail(`member "message" is longer than %d bytes or not printable`, MaxMessageLen)
	}
	return s
}

func chunkRanges(f *fields) []ChunkRange {
	a, ok := f.array("changed_chunks", false)
	if !ok {
		return nil
	}
	if len(a) == 0 {
		f.fail(`member "changed_chunks" is empty (leave it out)`)
	}
	out := make([]ChunkRange, 0, len(a))
	for _, v := range a {
		m, ok := v.(object)
		if !ok {
			f.fail(`member "changed_chunks" holds a value that is not an object`)
			return nil
		}
		g := &fields{m: m, path: "changed_chunks[]."}
		g.only("first_chunk", "last_chunk", "offset", "length")
		c := ChunkRange{FirstChunk: g.integer("first_chunk", true), LastChunk: g.integer("last_chunk", true),
			Offset: g.integer("offset", true), Length: g.integer("length", true)}
		g.rangeOf("first_chunk", c.FirstChunk, 0, math.MaxInt64)
		g.rangeOf("last_chunk", c.LastChunk, c.FirstChunk, math.MaxInt64)
		g.rangeOf("offset", c.Offset, 0, math.MaxInt64)
		g.rangeOf("length", c.Length, 1, math.MaxInt64-c.Offset)
		f.absorb(g)
		out = append(out, c)
	}
	return out
}

// validAttachmentID accepts the lease IDs of the daemon: 1 to
// [MaxCorrelationIDLen] bytes of ASCII letters, digits and "_.:/-".
func validAttachmentID(id string) bool {
	return ValidCorrelationID(strings.ReplaceAll(id, "_", "-"))
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !(s[i] >= '0' && s[i] <= '9' || s[i] >= 'a' && s[i] <= 'f') {
			return false
		}
	}
	return true
}

func parseAttached(f *fields, id int64) *Attached {
	f.only("v", "op", "id", "shard_id", "attachment", "correlation_id", "seal", "mapping", "tensors")
	a := &Attached{ID: id, ShardID: shardID(f, "shard_id", true), Attachment: f.str("attachment", true), CorrelationID: correlationID(f, true)}
	if f.has("attachment") && !validAttachmentID(a.Attachment) {
		f.fail(`member "attachment" is not 1 to %d bytes of A-Z a-z 0-9 _ . : / -`, MaxCorrelationIDLen)
	}
	if s := f.sub("seal", true); s != nil {
		s.only("shard_id", "model_ref", "shard_index", "shard_count", "gpu", "gpu_uuid", "size", "chunk_size", "digest", "tree_root", "sealed_at", "key_id", "worker_id")
		a.Seal = Seal{ShardID: shardID(s, "shard_id", true), ModelRef: s.str("model_ref", true),
			ShardIndex: int(s.integer("shard_index", true)), ShardCount: int(s.integer("shard_count", true)),
			GPU: int(s.integer("gpu", true)), GPUUUID: s.str("gpu_uuid", true), Size: s.integer("size", true),
			ChunkSize: s.integer("chunk_size", true), Digest: s.str("digest", true), TreeRoot: s.str("tree_root", true),
			KeyID: s.str("key_id", true), WorkerID: s.str("worker_id", true)}
		s.rangeOf("shard_count", int64(a.Seal.ShardCount), 1, math.MaxInt32)
		s.rangeOf("shard_index", int64(a.Seal.ShardIndex), 0, int64(a.Seal.ShardCount)-1)
		s.rangeOf("gpu", int64(a.Seal.GPU), 0, math.MaxInt32)
		s.rangeOf("size", a.Seal.Size, 1, math.MaxInt64)
		s.rangeOf("chunk_size", a.Seal.ChunkSize, 1, math.MaxInt64)
		if !isHex64(a.Seal.Digest) || !isHex64(a.Seal.TreeRoot) {
			s.fail(`members "seal.digest" and "seal.tree_root" must be 64 lowercase hexadecimal digits`)
		}
		at := s.str("sealed_at", true)
		t, err := time.Parse(time.RFC3339Nano, at)
		if s.err == nil && (err != nil || !strings.HasSuffix(at, "Z")) {
			s.fail(`member "seal.sealed_at" is not an RFC 3339 time in UTC`)
		}
		a.Seal.SealedAt = t
		if a.Seal.ShardID != a.ShardID {
			s.fail(`member "seal.shard_id" differs from "shard_id"`)
		}
		for _, k := range []string{"model_ref", "gpu_uuid", "key_id", "worker_id"} {
			if v, _ := s.m[k].(string); !validMessage(v) {
				s.fail("member %s is longer than %d bytes or not printable", s.name(k), MaxMessageLen)
			}
		}
		f.absorb(s)
	}
	if p := f.sub("mapping", true); p != nil {
		p.only("kind", "size", "granularity")
		a.Mapping = Mapping{Kind: p.str("kind", true), Size: p.integer("size", true), Granularity: p.integer("granularity", true)}
		if a.Mapping.Kind != KindMemfd && a.Mapping.Kind != KindCUDAVMM {
			p.fail("mapping kind %s is not memfd or cuda_vmm_fd", quote(a.Mapping.Kind))
		}
		p.rangeOf("granularity", a.Mapping.Granularity, 1, math.MaxInt64)
		p.rangeOf("size", a.Mapping.Size, max(a.Seal.Size, 1), math.MaxInt64)
		if p.err == nil && a.Mapping.Size%a.Mapping.Granularity != 0 {
			p.fail(`member "mapping.size" is not a multiple of the granularity`)
		}
		f.absorb(p)
	}
	if ts, ok := f.array("tensors", false); ok {
		a.Tensors = make([]Tensor, 0, len(ts))
		for _, v := range ts {
			m, ok := v.(object)
			if !ok {
				f.fail(`member "tensors" holds a value that is not an object`)
				break
			}
			g := &fields{m: m, path: "tensors[]."}
			g.only("name", "dtype", "shape", "offset", "length")
			t := Tensor{Name: g.str("name", true), DType: g.str("dtype", true), Offset: g.integer("offset", true), Length: g.integer("length", true)}
			if !validMessage(t.Name) || !validMessage(t.DType) {
				g.fail("a tensor name or dtype is longer than %d bytes or not printable", MaxMessageLen)
			}
			if shape, ok := g.array("shape", true); ok {
				t.Shape = make([]int64, 0, len(shape))
				for _, d := range shape {
					n := g.toInt(d, `"tensors[].shape[]"`)
					g.rangeOf("shape[]", n, 0, math.MaxInt64)
					t.Shape = append(t.Shape, n)
				}
			}
			g.rangeOf("offset", t.Offset, 0, a.Seal.Size)
			g.rangeOf("length", t.Length, 0, a.Seal.Size-t.Offset)
			f.absorb(g)
			a.Tensors = append(a.Tensors, t)
		}
	}
	return a
}
