package seal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestBinaryRoundTrip(t *testing.T) {
	for _, mutate := range []func(*Seal){
		func(*Seal) {},
		func(s *Seal) { s.ModelRef = "" },
		func(s *Seal) { s.ModelRef = strings.Repeat("é", MaxTextLen/2) },
		func(s *Seal) { s.ShardIndex, s.ShardCount, s.DeviceIndex = MaxIndex-1, MaxIndex, MaxIndex },
		func(s *Seal) { s.SealedAt = minTime },
		func(s *Seal) { s.SealedAt = maxTime },
	} {
		s := testSeal(t)
		mutate(&s)
		if err := testKey(t).Sign(&s); err != nil {
			t.Fatal(err)
		}
		b, err := s.MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary: %v", err)
		}
		if !bytes.Equal(b[:len(b)-32], s.AppendCanonical(nil)) || !bytes.Equal(b[len(b)-32:], s.Signature[:]) {
			t.Errorf("MarshalBinary is not AppendCanonical followed by the signature")
		}
		var got Seal
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("UnmarshalBinary: %v", err)
		}
		if diff := cmp.Diff(s, got); diff != "" {
			t.Errorf("UnmarshalBinary(MarshalBinary(s)) differs (-want +got):\n%s", diff)
		}
		if got.SealedAt.Location() != time.UTC {
			t.Errorf("decoded SealedAt is in %v, want UTC", got.SealedAt.Location())
		}
		if err := testKey(t).Verify(&got); err != nil {
			t.Errorf("Verify(decoded) = %v", err)
		}
	}

	var unsigned Seal = testSeal(t)
	if _, err := unsigned.MarshalBinary(); err == nil {
		t.Errorf("MarshalBinary(unsigned seal) = nil error")
	}
}

// TestBinaryTamper changes every bit of a sealed encoding, and truncates
// and extends it; every variant must fail to decode or to verify.
func TestBinaryTamper(t *testing.T) {
	k := testKey(t)
	s := signedSeal(t)
	enc, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, b []byte) {
		t.Helper()
		var got Seal
		if err := got.UnmarshalBinary(b); err != nil {
			if !strings.HasPrefix(err.Error(), "seal: ") {
				t.Errorf("%s: error %q lacks the seal: prefix", what, err)
			}
			return
		}
		if err := k.Verify(&got); !errors.Is(err, ErrSignatureInvalid) {
			t.Errorf("%s: decoded and Verify = %v, want ErrSignatureInvalid", what, err)
		}
	}
	for i := range enc {
		for bit := range 8 {
			b := bytes.Clone(enc)
			b[i] ^= 1 << bit
			check("flip byte "+itoa(i)+" bit "+itoa(bit), b)
		}
	}
	for n := range len(enc) {
		check("truncate to "+itoa(n), enc[:n])
	}
	for _, extra := range [][]byte{{0}, {0xff}, enc} {
		var got Seal
		if err := got.UnmarshalBinary(append(bytes.Clone(enc), extra...)); err == nil || !strings.Contains(err.Error(), "trailing") {
			t.Errorf("UnmarshalBinary with %d trailing bytes = %v, want trailing-bytes error", len(extra), err)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestUnmarshalBinaryErrors(t *testing.T) {
	s := signedSeal(t)
	enc, _ := s.MarshalBinary()
	// Offset of the shard id length: magic and version.
	const lenOff = len(magic) + 1
	tests := []struct {
		name    string
		edit    func([]byte) []byte
		wantErr string
	}{
		{"empty", func([]byte) []byte { return nil }, "bad magic"},
		{"bad magic", func(b []byte) []byte { b[0] = 'V'; return b }, "bad magic"},
		{"version 2", func(b []byte) []byte { b[len(magic)] = 2; return b }, "unsupported format version 2"},
		{"version 0", func(b []byte) []byte { b[len(magic)] = 0; return b }, "unsupported format version 0"},
		{"huge text length", func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[lenOff:], MaxTextLen+1)
			return b
		}, "exceeds"},
		{"text length past end", func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[lenOff:], MaxTextLen)
			return b
		}, "truncated"},
		{"over size cap", func(b []byte) []byte { return append(b, make([]byte, MaxEncodedLen)...) }, "limit"},
		{"shard index over MaxIndex", func(b []byte) []byte {
			off := lenOff + 4 + len(s.ShardID) + 4 + len(s.ModelRef)
			binary.BigEndian.PutUint64(b[off:], 1<<40)
			return b
		}, "exceeds"},
		{"size over int64", func(b []byte) []byte {
			off := lenOff + 4 + len(s.ShardID) + 4 + len(s.ModelRef) + 24 + 4 + len(s.DeviceUUID)
			binary.BigEndian.PutUint64(b[off:], 1<<63)
			return b
		}, "2^63-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := signedSeal(t)
			before := got
			err := got.UnmarshalBinary(tt.edit(bytes.Clone(enc)))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("UnmarshalBinary = %v, want error containing %q", err, tt.wantErr)
			}
			if diff := cmp.Diff(before, got); diff != "" {
				t.Errorf("failed UnmarshalBinary changed the seal (-before +after):\n%s", diff)
			}
		})
	}
}

// goldenSeal is the seal in testdata/seal.v1.golden; it must decode and
// verify with the test key forever.
func goldenSeal(t testing.TB) Seal {
	s := testSeal(t)
	s.ShardID = "golden-shard"
	s.ModelRef = "vramseal/golden@v1"
	s.ShardIndex, s.ShardCount = 2, 4
	s.DeviceIndex = 3
	s.DeviceUUID = "GPU-00000000-1111-2222-3333-444444444444"
	s.WorkerID = "worker-golden"
	s.Digest = mustParseHash(t, "6428cc6290c21707a3fb7cab724c71418950f227747c80a8d510c5188fbd03f6")
	s.Root = mustParseHash(t, "e5e02b7c0c24c9a853c62ecbe34c8fd3b478fdd8ab9d124a50f640d614bb33bd")
	if err := testKey(t).Sign(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestGolden(t *testing.T) {
	want := goldenSeal(t)
	binPath := filepath.Join("testdata", "seal.v1.golden")
	jsonPath := filepath.Join("testdata", "seal.v1.json.golden")
	if *update {
		b, err := want.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		j, err := want.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(binPath, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(jsonPath, append(j, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	k := testKey(t)
	b, err := os.ReadFile(binPath)
	if err != nil {
		t.Fatalf("read golden (run go test ./seal/ -run TestGolden -update to create it): %v", err)
	}
	var got Seal
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatalf("UnmarshalBinary(golden) = %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("golden seal differs (-want +got):\n%s", diff)
	}
	if err := k.Verify(&got); err != nil {
		t.Errorf("Verify(golden) = %v", err)
	}
	if re, _ := got.MarshalBinary(); !bytes.Equal(re, b) {
		t.Errorf("MarshalBinary(golden) does not reproduce the golden bytes")
	}

	j, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	fromJSON, err := DecodeJSON(j)
	if err != nil {
		t.Fatalf("DecodeJSON(golden) = %v", err)
	}
	if diff := cmp.Diff(want, *fromJSON); diff != "" {
		t.Errorf("golden JSON seal differs (-want +got):\n%s", diff)
	}
	if err := k.Verify(fromJSON); err != nil {
		t.Errorf("Verify(golden JSON) = %v", err)
	}
	if re, _ := fromJSON.MarshalJSON(); !bytes.Equal(append(re, '\n'), j) {
		t.Errorf("MarshalJSON(golden) = %s, want %s", re, j)
	}
}

func mustParseHash(t testing.TB, s string) Hash {
	t.Helper()
	h, err := ParseHash(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
