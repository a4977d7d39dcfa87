package attach

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseRequest(t *testing.T) {
	long := strings.Repeat("a", MaxShardIDLen+1)
	for _, tt := range []struct {
		body string
		want Request
		code string
		id   int64
	}{
		{body: `{"v":1,"op":"ping","id":1}`, want: Request{V: 1, Op: "ping", ID: 1}},
		{body: " {\n\"id\" : 9007199254740991 , \"op\":\"ping\",\"v\":1}\t", want: Request{V: 1, Op: "ping", ID: MaxID}},
		{body: `{"v":1,"op":"attach","id":2,"shard_id":"s-1_A","correlation_id":"req.1:/x-2"}`, want: Request{V: 1, Op: "attach", ID: 2, ShardID: "s-1_A", CorrelationID: "req.1:/x-2"}},
		{body: `{"v":1,"op":"verify","id":3,"shard_id":"s","mode":"sampled","samples":1048576}`, want: Request{V: 1, Op: "verify", ID: 3, ShardID: "s", Mode: "sampled", Samples: MaxSamples}},
		{body: `{"v":1,"op":"verify","id":3,"shard_id":"s","mode":"full"}`, want: Request{V: 1, Op: "verify", ID: 3, ShardID: "s", Mode: "full"}},
		{body: `{"v":1,"op":"detach","id":4,"shard_id":"s"}`, want: Request{V: 1, Op: "detach", ID: 4, ShardID: "s"}},

		{body: ``, code: CodeBadFrame},
		{body: `[]`, code: CodeBadFrame},
		{body: `{"v":1,"op":"ping","id":1}{}`, code: CodeBadFrame},
		{body: `{"v":1,"op":"ping","id":1} x`, code: CodeBadFrame},
		{body: `{"v":1,"op":"ping","id":1,"id":2}`, code: CodeBadFrame},
		{body: `{"v":1,"v":1,"op":"ping","id":1}`, code: CodeBadFrame},
		{body: `{"v":1,"op":"ping","id":1,"x":1}`, code: CodeBadFrame},
		{body: `{"v":1,"op":"ping","id":1,"shard_id":"s"}`, code: CodeBadFrame},
		{body: `{"v":1,"op":"attach","id":1,"shard_id":"s","mode":"full"}`, code: CodeBadFrame},
		{body: `{"v":1,"op":"attach","id":1,"shard_id":null}`, code: CodeBadFrame},
		{body: `{"v":1,"op":"attach","id":1}`, code: CodeBadFrame},
		{body: `{"v":1,"op":"attach","id":1,"shard_id":7}`, code: CodeBadFrame},
		{body: `{"v":1,"op":"ping","id":1.0}`, code: CodeBadFrame},
		{body: `{"v":1,"op":"ping","id":1e0}`, code: CodeBadFrame},
		{body: `{"v":1.0,"op":"ping","id":1}`, code: CodeBadFrame},
		{body: `{"v":"1","op":"ping","id":1}`, code: CodeBadFrame},
		{body: `{"op":"ping","id":1}`, code: CodeBadFrame},
		{body: `{"v":1,"op":"ping","id":0}`, code: CodeBadFrame},
		{body: `{"v":1,"op":"ping","id":-1}`, code: CodeBadFrame},
		{body: `{"v":1,"op":"ping","id":9007199254740992}`, code: CodeBadFrame},
		{body: `{"v":1,"op":"ping","id":99999999999999999999999}`, code: CodeBadFrame},
		{body: `{"v":1,"op":"ping"}`, code: CodeBadFrame},
		{body: `{"v":1,"id":1}`, code: CodeBadFrame},
		{body: `{"v":1,"op":"attach","id":1,"shard_id":{"a":1}}`, code: CodeBadFrame},
		{body: "{\"v\":1,\"op\":\"attach\",\"id\":1,\"shard_id\":\"\xff\"}", code: CodeBadFrame},
		{body: `{"v":1,"op":"ping","id":1`, code: CodeBadFrame},
		{body: `{"v":2,"op":"ping","id":1}`, code: CodeUnsupportedVersion},
		{body: `{"v":2,"op":"hello","anything":null}`, code: CodeBadFrame}, // syntax rules come first
		{body: `{"v":0,"whatever":[1]}`, code: CodeUnsupportedVersion},
		{body: `{"v":1,"op":"hello","id":5}`, code: CodeUnknownOp, id: 5},
		{body: `{"v":1,"op":"hello","id":5,"extra":true}`, code: CodeUnknownOp, id: 5},
		{body: `{"v":1,"op":"attach","id":6,"shard_id":""}`, code: CodeInvalidInput, id: 6},
		{body: `{"v":1,"op":"attach","id":6,"shard_id":"a/b"}`, code: CodeInvalidInput, id: 6},
		{body: `{"v":1,"op":"attach","id":6,"shard_id":"` + long + `"}`, code: CodeInvalidInput, id: 6},
		{body: `{"v":1,"op":"attach","id":6,"shard_id":"s","correlation_id":""}`, code: CodeInvalidInput, id: 6},
		{body: `{"v":1,"op":"attach","id":6,"shard_id":"s","correlation_id":"a b"}`, code: CodeInvalidInput, id: 6},
		{body: `{"v":1,"op":"attach","id":6,"shard_id":"s","correlation_id":"` + strings.Repeat("c", 129) + `"}`, code: CodeInvalidInput, id: 6},
		{body: `{"v":1,"op":"verify","id":7,"shard_id":"s","mode":"quick"}`, code: CodeInvalidInput, id: 7},
		{body: `{"v":1,"op":"verify","id":7,"shard_id":"s","samples":0}`, code: CodeInvalidInput, id: 7},
		{body: `{"v":1,"op":"verify","id":7,"shard_id":"s","samples":1048577}`, code: CodeInvalidInput, id: 7},
		{body: `{"v":1,"op":"verify","id":7,"shard_id":"s","samples":-0}`, code: CodeInvalidInput, id: 7},
		{body: `{"v":1,"op":"verify","id":7,"shard_id":"s","samples":99999999999999999999}`, code: CodeInvalidInput, id: 7},
		{body: `{"v":1,"op":"verify","id":7,"shard_id":"s","mode":"full","samples":4}`, code: CodeInvalidInput, id: 7},
	} {
		got, err := ParseRequest([]byte(tt.body))
		if tt.code == "" {
			if err != nil {
				t.Errorf("ParseRequest(%q) = %v", tt.body, err)
			} else if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseRequest(%q) (-want +got):\n%s", tt.body, diff)
			}
			continue
		}
		var pe *ProtocolError
		if !errors.As(err, &pe) || pe.Code != tt.code || pe.ID != tt.id {
			t.Errorf("ParseRequest(%q) = %+v, %v, want code %s id %d", tt.body, got, err, tt.code, tt.id)
			continue
		}
		if got != (Request{}) {
			t.Errorf("ParseRequest(%q) returned %+v with its error", tt.body, got)
		}
	}
}

func TestProtocolErrorIs(t *testing.T) {
	for code, want := range map[string]error{CodeBadFrame: ErrBadFrame, CodeUnsupportedVersion: ErrUnsupportedVersion, CodeUnknownOp: ErrUnknownOp, CodeInvalidInput: ErrInvalidInput} {
		if err := error(&ProtocolError{Code: code}); !errors.Is(err, want) {
			t.Errorf("errors.Is(%v, %v) = false", err, want)
		}
	}
}

func sampleAttached() *Attached {
	return &Attached{ID: 3, ShardID: "shard-1", Attachment: "lease-abc_1", CorrelationID: "c1",
		Seal: Seal{ShardID: "shard-1", ModelRef: "llama", ShardIndex: 0, ShardCount: 2, GPU: 0, GPUUUID: "GPU-x",
			Size: 5000, ChunkSize: 4096, Digest: strings.Repeat("ab", 32), TreeRoot: strings.Repeat("0f", 32),
			SealedAt: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), KeyID: "k1", WorkerID: "w1"},
		Mapping: Mapping{Kind: KindMemfd, Size: 8192, Granularity: 4096},
		Tensors: []Tensor{{Name: "w", DType: "BF16", Shape: []int64{2, 3}, Offset: 100, Length: 12}}}
}

// sampleResponses are real frames, one of each kind.
func sampleResponses() []any {
	return []any{
		sampleAttached(),
		&Verified{ID: 4, ShardID: "shard-1", Mode: ModeSampled, ChunksChecked: 2, Chunks: 2, DetectionProbability: 1, DurationMicros: 17, CorrelationID: "c2"},
		&Detached{ID: 5, ShardID: "shard-1"},
		&Pong{ID: 6},
		&Error{ID: 7, Code: CodeIntegrityFailed, Message: "changed", ShardID: "shard-1", CorrelationID: "c3", ChangedChunks: []ChunkRange{{1, 2, 4096, 904}}},
		&Error{ID: 0, Code: CodePermissionDenied, Message: "uid 1 is not allowed"},
		&Stop{ShardID: "shard-1", Reason: ReasonIntegrity, Message: "stopped", ChangedChunks: []ChunkRange{{0, 0, 0, 4096}}},
		&Stop{Reason: ReasonShutdown, Message: "daemon stopping"},
	}
}

func TestParseResponseRoundTrip(t *testing.T) {
	for _, v := range sampleResponses() {
		frame, err := Encode(v)
		if err != nil {
			t.Fatalf("Encode(%T) = %v", v, err)
		}
		r, err := ParseResponse(frame[4:])
		if err != nil {
			t.Fatalf("ParseResponse(%s) = %v", frame[4:], err)
		}
		var got any
		switch {
		case r.Attached != nil:
			got = r.Attached
		case r.Verified != nil:
			got = r.Verified
		case r.Detached != nil:
			got = r.Detached
		case r.Pong != nil:
			got = r.Pong
		case r.Error != nil:
			got = r.Error
		case r.Stop != nil:
			got = r.Stop
		}
		if diff := cmp.Diff(v, got); diff != "" {
			t.Errorf("ParseResponse(Encode(%T)) (-want +got):\n%s", v, diff)
		}
	}
}

func TestParseResponseRejects(t *testing.T) {
	good, _ := Encode(sampleAttached())
	body := string(good[4:])
	for _, tt := range []struct{ name, body string }{
		{"version", `{"v":2,"op":"pong","id":1}`},
		{"pong id 0", `{"v":1,"op":"pong","id":0}`},
		{"stop with id", `{"v":1,"op":"stop","id":3,"reason":"shutdown","message":""}`},
		{"stop reason", `{"v":1,"op":"stop","id":0,"reason":"bored","message":""}`},
		{"error code", `{"v":1,"op":"error","id":0,"code":"Bad","message":""}`},
		{"error message control", `{"v":1,"op":"error","id":0,"code":"internal","message":"a\nb"}`},
		{"error null", `{"v":1,"op":"error","id":0,"code":"internal","message":"m","shard_id":null}`},
		{"empty ranges", `{"v":1,"op":"error","id":0,"code":"internal","message":"m","changed_chunks":[]}`},
		{"range backwards", `{"v":1,"op":"error","id":0,"code":"internal","message":"m","changed_chunks":[{"first_chunk":2,"last_chunk":1,"offset":0,"length":1}]}`},
		{"unknown op", `{"v":1,"op":"hello","id":0}`},
		{"extra member", strings.Replace(body, `"id":3`, `"id":3,"x":1`, 1)},
		{"seal extra", strings.Replace(body, `"model_ref"`, `"x":1,"model_ref"`, 1)},
		{"digest case", strings.Replace(body, strings.Repeat("ab", 32), strings.Repeat("AB", 32), 1)},
		{"kind", strings.Replace(body, `"memfd"`, `"dmabuf"`, 1)},
		{"mapping small", strings.Replace(body, `"size":8192`, `"size":4096`, 1)},
		{"seal shard", strings.Replace(body, `"seal":{"shard_id":"shard-1"`, `"seal":{"shard_id":"shard-2"`, 1)},
		{"time zone", strings.Replace(body, `Z"`, `+01:00"`, 1)},
		{"tensor past end", strings.Replace(body, `"offset":100`, `"offset":4999`, 1)},
		{"shape fraction", strings.Replace(body, `[2,3]`, `[2,3.0]`, 1)},
		{"deep", `{"v":1,"op":"pong","id":1,"a":[[[[1]]]]}`},
		{"probability", `{"v":1,"op":"verified","id":1,"shard_id":"s","mode":"full","chunks_checked":1,"chunks":1,"detection_probability":1.5,"duration_us":1,"correlation_id":"c"}`},
	} {
		if tt.body == body {
			t.Fatalf("%s: the replacement did not apply", tt.name)
		}
		if _, err := ParseResponse([]byte(tt.body)); err == nil {
			t.Errorf("%s: ParseResponse(%s) = nil error", tt.name, tt.body)
		}
	}
}

func TestReadFrame(t *testing.T) {
	for _, tt := range []struct {
		in   []byte
		want string
		err  error
	}{
		{in: []byte{0, 0, 0, 2, '{', '}'}, want: "{}"},
		{in: nil, err: io.EOF},
		{in: []byte{0, 0}, err: ErrBadFrame},
		{in: []byte{0, 0, 0, 0}, err: ErrBadFrame},
		{in: []byte{0, 0, 0x10, 1}, err: ErrBadFrame}, // 4097 > request limit
		{in: []byte{0xff, 0xff, 0xff, 0xff}, err: ErrBadFrame},
		{in: []byte{0, 0, 0, 3, '{', '}'}, err: ErrBadFrame},
	} {
		got, err := ReadFrame(bytes.NewReader(tt.in), MaxRequestFrame)
		if !errors.Is(err, tt.err) || string(got) != tt.want {
			t.Errorf("ReadFrame(%x) = %q, %v, want %q, %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestEncodeLimits(t *testing.T) {
	if _, err := Encode(Request{Op: OpAttach, ShardID: strings.Repeat("a", MaxRequestFrame)}); err == nil {
		t.Error("Encode(oversized request) = nil error")
	}
	b, err := Encode(Request{V: 1, Op: OpPing, ID: 1})
	if err != nil || string(b[4:]) != `{"v":1,"op":"ping","id":1}` || int(b[3]) != len(b)-4 {
		t.Errorf("Encode(ping) = %q, %v", b, err)
	}
}

func TestCleanMessage(t *testing.T) {
	got := CleanMessage("a\nb\u202e" + strings.Repeat("é", 600))
	if !validMessage(got) || !strings.HasPrefix(got, "a?b?é") || len(got) > MaxMessageLen {
		t.Errorf("CleanMessage = %q (%d bytes), not a valid message", got, len(got))
	}
}
