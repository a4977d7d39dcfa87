package attach

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"op":"ping","id":1}`,
		`{"v":1,"op":"attach","id":2,"shard_id":"shard-1","correlation_id":"c-1"}`,
		`{"v":1,"op":"verify","id":3,"shard_id":"s","mode":"sampled","samples":16}`,
		`{"v":1,"op":"verify","id":3,"shard_id":"s","mode":"full"}`,
		`{"v":1,"op":"detach","id":4,"shard_id":"s"}`,
		`{"v":2,"op":"ping","id":1}`,
		`{"v":1,"op":"ping","id":1,"id":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseRequest(body)
		if err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("ParseRequest error %v is not a *ProtocolError", err)
			}
			return
		}
		// A request that parses encodes to a frame that parses the same.
		frame, err := Encode(r)
		if err != nil {
			t.Fatalf("Encode(%+v) = %v", r, err)
		}
		again, err := ParseRequest(frame[4:])
		if err != nil || again != r {
			t.Fatalf("ParseRequest(Encode(%+v)) = %+v, %v", r, again, err)
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	for _, v := range sampleResponses() {
		b, err := Encode(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[4:])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseResponse(body)
		if err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("ParseResponse error %v is not a *ProtocolError", err)
			}
			return
		}
		n := 0
		for _, p := range []bool{r.Attached != nil, r.Verified != nil, r.Detached != nil, r.Pong != nil, r.Error != nil, r.Stop != nil} {
			if p {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("ParseResponse(%q) set %d answers, want 1", body, n)
		}
	})
}

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0, 0, 0x10, 0})
	f.Add([]byte{0, 0, 0x10, 1})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1})
	f.Add([]byte{0, 0, 0, 5, '{'})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		for {
			body, err := ReadFrame(r, MaxRequestFrame)
			if err == io.EOF {
				return
			}
			if err != nil {
				if !errors.Is(err, ErrBadFrame) {
					t.Fatalf("ReadFrame error %v is not a bad frame", err)
				}
				return
			}
			if len(body) == 0 || len(body) > MaxRequestFrame {
				t.Fatalf("ReadFrame returned %d bytes", len(body))
			}
		}
	})
}
