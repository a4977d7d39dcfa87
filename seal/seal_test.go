package seal

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// testData is the shard of the test seals.
var testData = randBytes(42, 3*4096+100)

// testSeal returns a valid, unsigned seal of testData.
func testSeal(t testing.TB) Seal {
	t.Helper()
	leaves := Leaves(testData, 4096)
	return Seal{
		ShardID:     "llama-3-8b-part-00",
		ModelRef:    "meta-llama/Meta-Llama-3-8B@sha256:abc",
		ShardIndex:  0,
		ShardCount:  2,
		DeviceIndex: 1,
		DeviceUUID:  "GPU-3b1ae2d2-6a0c-4f1e-9f2a-2f1c0d6b7e11",
		Size:        int64(len(testData)),
		ChunkSize:   4096,
		Digest:      Hash(sha256Sum(testData)),
		Root:        Root(leaves),
		SealedAt:    time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC),
		WorkerID:    "worker-a",
	}
}

func signedSeal(t testing.TB) Seal {
	t.Helper()
	s := testSeal(t)
	if err := testKey(t).Sign(&s); err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return s
}

func TestSignVerify(t *testing.T) {
	k := testKey(t)
	s := signedSeal(t)
	if s.KeyID != k.ID() {
		t.Errorf("Sign set KeyID = %q, want %q", s.KeyID, k.ID())
	}
	if s.Signature.IsZero() {
		t.Errorf("Sign left the signature zero")
	}
	if err := k.Verify(&s); err != nil {
		t.Errorf("Verify(signed seal) = %v, want nil", err)
	}
	// A location or monotonic reading does not change the signature.
	loc := s
	loc.SealedAt = s.SealedAt.In(time.FixedZone("X", 3600))
	if err := k.Verify(&loc); err != nil {
		t.Errorf("Verify(same instant in another zone) = %v", err)
	}
	if err := s.CheckLeaves(Leaves(testData, 4096)); err != nil {
		t.Errorf("CheckLeaves(real leaves) = %v", err)
	}
	bad := Leaves(testData, 4096)
	bad[2][0] ^= 1
	if err := s.CheckLeaves(bad); err == nil {
		t.Errorf("CheckLeaves(changed leaf) = nil")
	}
	if err := s.CheckLeaves(bad[:3]); err == nil {
		t.Errorf("CheckLeaves(missing leaf) = nil")
	}

	var zero Key
	if err := zero.Sign(&s); err == nil {
		t.Errorf("zero Key Sign = nil, want error")
	}
	if err := zero.Verify(&s); err == nil {
		t.Errorf("zero Key Verify = nil, want error")
	}
	if err := k.Verify(nil); !errors.Is(err, ErrSignatureInvalid) {
		t.Errorf("Verify(nil) = %v, want ErrSignatureInvalid", err)
	}
	if err := k.Sign(nil); err == nil {
		t.Errorf("Sign(nil) = nil, want error")
	}
}

func TestVerifyWrongKey(t *testing.T) {
	s := signedSeal(t)
	other, err := DeriveKey([]byte(strings.Repeat("another worker secret ", 2)))
	if err != nil {
		t.Fatal(err)
	}
	err = other.Verify(&s)
	if !errors.Is(err, ErrSignatureInvalid) || !strings.Contains(err.Error(), "key id mismatch") {
		t.Errorf("Verify with another key = %v, want ErrSignatureInvalid with key id mismatch", err)
	}
	// Claiming the other key's ID does not help a forger.
	s.KeyID = other.ID()
	err = other.Verify(&s)
	if !errors.Is(err, ErrSignatureInvalid) || !strings.Contains(err.Error(), "signature mismatch") {
		t.Errorf("Verify with a relabelled key ID = %v, want ErrSignatureInvalid with signature mismatch", err)
	}
}

// TestVerifyDetectsEveryFieldChange changes each field of a signed seal in
// turn; Verify must fail every time.
func TestVerifyDetectsEveryFieldChange(t *testing.T) {
	k := testKey(t)
	tests := []struct {
		field  string
		mutate func(*Seal)
	}{
		{"ShardID", func(s *Seal) { s.ShardID += "x" }},
		{"ShardID empty", func(s *Seal) { s.ShardID = "" }},
		{"ModelRef", func(s *Seal) { s.ModelRef = "other" }},
		{"ModelRef empty", func(s *Seal) { s.ModelRef = "" }},
		{"ShardIndex", func(s *Seal) { s.ShardIndex = 1 }},
		{"ShardCount", func(s *Seal) { s.ShardCount = 3 }},
		{"DeviceIndex", func(s *Seal) { s.DeviceIndex = 0 }},
		{"DeviceUUID", func(s *Seal) { s.DeviceUUID = strings.ToUpper(s.DeviceUUID) }},
		{"Size", func(s *Seal) { s.Size-- }},
		{"ChunkSize", func(s *Seal) { s.ChunkSize *= 2 }},
		{"Digest", func(s *Seal) { s.Digest[31] ^= 0x80 }},
		{"Root", func(s *Seal) { s.Root[0] ^= 1 }},
		{"SealedAt", func(s *Seal) { s.SealedAt = s.SealedAt.Add(time.Nanosecond) }},
		{"KeyID", func(s *Seal) { s.KeyID = "k1:0000000000000000" }},
		{"KeyID empty", func(s *Seal) { s.KeyID = "" }},
		{"WorkerID", func(s *Seal) { s.WorkerID = "worker-b" }},
		{"Signature", func(s *Seal) { s.Signature[5] ^= 4 }},
		{"Signature zero", func(s *Seal) { s.Signature = Hash{} }},
		// Moving bytes between adjacent text fields keeps their
		// concatenation; the length prefixes must still tell them apart.
		{"ShardID/ModelRef boundary", func(s *Seal) {
			s.ModelRef = s.ShardID[len(s.ShardID)-1:] + s.ModelRef
			s.ShardID = s.ShardID[:len(s.ShardID)-1]
		}},
		{"KeyID/WorkerID boundary", func(s *Seal) { s.WorkerID = s.KeyID[len(s.KeyID)-1:] + s.WorkerID; s.KeyID = s.KeyID[:len(s.KeyID)-1] }},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			s := signedSeal(t)
			tt.mutate(&s)
			if err := k.Verify(&s); !errors.Is(err, ErrSignatureInvalid) {
				t.Errorf("Verify(seal with changed %s) = %v, want ErrSignatureInvalid", tt.field, err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Seal)
		wantErr string // substring; "" means valid
	}{
		{"valid", func(*Seal) {}, ""},
		{"empty model ref", func(s *Seal) { s.ModelRef = "" }, ""},
		{"last shard", func(s *Seal) { s.ShardIndex = 1 }, ""},
		{"one byte", func(s *Seal) { s.Size = 1 }, ""},
		{"chunk larger than shard", func(s *Seal) { s.ChunkSize = MaxChunkSize }, ""},
		{"max text", func(s *Seal) { s.ModelRef = strings.Repeat("m", MaxTextLen) }, ""},
		{"unicode text", func(s *Seal) { s.ModelRef = "modèle/日本語" }, ""},
		{"empty shard id", func(s *Seal) { s.ShardID = "" }, "shard id is empty"},
		{"empty device uuid", func(s *Seal) { s.DeviceUUID = "" }, "device uuid is empty"},
		{"empty worker id", func(s *Seal) { s.WorkerID = "" }, "worker id is empty"},
		{"long text", func(s *Seal) { s.ModelRef = strings.Repeat("m", MaxTextLen+1) }, "longer than"},
		{"invalid utf-8", func(s *Seal) { s.ShardID = "a\xffb" }, "UTF-8"},
		{"nul", func(s *Seal) { s.ShardID = "a\x00b" }, "control character"},
		{"newline", func(s *Seal) { s.WorkerID = "w\n" }, "control character"},
		{"c1 control", func(s *Seal) { s.ModelRef = "a\u0085" }, "control character"},
		{"key id control", func(s *Seal) { s.KeyID = "k\x1b[31m" }, "control character"},
		{"shard count 0", func(s *Seal) { s.ShardCount = 0 }, "shard count"},
		{"shard count huge", func(s *Seal) { s.ShardCount = MaxIndex + 1; s.ShardIndex = 0 }, "shard count"},
		{"shard index = count", func(s *Seal) { s.ShardIndex = 2 }, "shard index"},
		{"negative shard index", func(s *Seal) { s.ShardIndex = -1 }, "shard index"},
		{"negative device", func(s *Seal) { s.DeviceIndex = -1 }, "device index"},
		{"huge device", func(s *Seal) { s.DeviceIndex = MaxIndex + 1 }, "device index"},
		{"zero size", func(s *Seal) { s.Size = 0 }, "size 0"},
		{"negative size", func(s *Seal) { s.Size = -5 }, "size -5"},
		{"zero chunk", func(s *Seal) { s.ChunkSize = 0 }, "chunk size"},
		{"huge chunk", func(s *Seal) { s.ChunkSize = MaxChunkSize + 1 }, "chunk size"},
		{"too many chunks", func(s *Seal) { s.ChunkSize = 1; s.Size = MaxChunkCount + 1 }, "exceed"},
		{"zero digest", func(s *Seal) { s.Digest = Hash{} }, "digest is zero"},
		{"zero root", func(s *Seal) { s.Root = Hash{} }, "tree root is zero"},
		{"zero time", func(s *Seal) { s.SealedAt = time.Time{} }, "time is zero"},
		{"year 1600", func(s *Seal) { s.SealedAt = time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC) }, "outside"},
		{"year 2300", func(s *Seal) { s.SealedAt = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC) }, "outside"},
		{"max size", func(s *Seal) { s.Size = MaxChunkCount * MaxChunkSize; s.ChunkSize = MaxChunkSize }, ""},
		{"int64 size", func(s *Seal) { s.Size = math.MaxInt64; s.ChunkSize = MaxChunkSize }, "exceed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := testSeal(t)
			tt.mutate(&s)
			err := s.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "seal: ") {
				t.Fatalf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
			// Sign refuses it and leaves the seal untouched.
			before := s
			if err := testKey(t).Sign(&s); err == nil {
				t.Errorf("Sign(invalid seal) = nil")
			}
			if diff := cmp.Diff(before, s); diff != "" {
				t.Errorf("Sign(invalid seal) changed it (-before +after):\n%s", diff)
			}
		})
	}
	var nilSeal *Seal
	if err := nilSeal.Validate(); err == nil {
		t.Errorf("(*Seal)(nil).Validate() = nil")
	}
}
