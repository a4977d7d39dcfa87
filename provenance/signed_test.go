package provenance_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/vramseal/vramseal/provenance"
	"github.com/vramseal/vramseal/provenance/provenancetest"
)

var (
	d1 = strings.Repeat("ab", 32)
	d2 = strings.Repeat("cd", 32)
)

type res struct{ name, digest string }

func resources(rs []res) []provenancetest.Resource {
	out := make([]provenancetest.Resource, len(rs))
	for i, r := range rs {
		out[i] = provenancetest.Resource{Name: r.name, Digest: r.digest}
	}
	return out
}

func newSigner(t testing.TB, kind string) *provenancetest.Signer {
	t.Helper()
	s, err := provenancetest.NewSigner(kind)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func bundle(t testing.TB, s *provenancetest.Signer, payload []byte) []byte {
	t.Helper()
	b, err := s.Bundle(payload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestKeyKinds(t *testing.T) {
	for _, kind := range []string{"p256", "p384", "ed25519"} {
		t.Run(kind, func(t *testing.T) {
			s := newSigner(t, kind)
			b := bundle(t, s, provenancetest.Statement("m", resources([]res{{"a/b.safetensors", d1}, {"c.json", d2}}), nil))
			st, err := provenance.VerifyBundle(b, s.PublicKey())
			if err != nil {
				t.Fatalf("provenance.VerifyBundle(%s) = %v", kind, err)
			}
			if len(st.Files) != 2 {
				t.Errorf("Files = %v, want 2", st.Files)
			}
			other := newSigner(t, kind)
			var se *provenance.SignatureError
			if _, err := provenance.VerifyBundle(b, other.PublicKey()); !errors.As(err, &se) {
				t.Errorf("provenance.VerifyBundle(other %s key) = %v, want *provenance.SignatureError", kind, err)
			}
		})
	}
}

func TestSignedButMalformed(t *testing.T) {
	s := newSigner(t, "p256")
	set := func(path string, v any) func(map[string]any) {
		return func(m map[string]any) {
			parts := strings.Split(path, ".")
			for _, p := range parts[:len(parts)-1] {
				m = m[p].(map[string]any)
			}
			m[parts[len(parts)-1]] = v
		}
	}
	ok := []res{{"a", d1}}
	for _, tt := range []struct {
		name   string
		subj   string
		rs     []res
		mutate func(map[string]any)
	}{
		{"duplicate resource", "m", []res{{"a", d1}, {"a", d1}}, nil},
		{"dot dot", "m", []res{{"../etc/passwd", d1}}, nil},
		{"inner dot dot", "m", []res{{"a/../../b", d1}}, nil},
		{"absolute", "m", []res{{"/etc/passwd", d1}}, nil},
		{"backslash", "m", []res{{`a\b`, d1}}, nil},
		{"control char", "m", []res{{"a\nb", d1}}, nil},
		{"empty element", "m", []res{{"a//b", d1}}, nil},
		{"empty name", "m", []res{{"", d1}}, nil},
		{"single beside others", "m", []res{{".", d1}, {"b", d2}}, nil},
		{"bad hex", "m", []res{{"a", strings.Repeat("zz", 32)}}, nil},
		{"short digest", "m", []res{{"a", "abcd"}}, nil},
		{"no resources", "m", nil, nil},
		{"subject name control", "m\x1b[31m", ok, nil},
		{"statement type", "m", ok, set("_type", "https://in-toto.io/Statement/v0.1")},
		{"predicate type", "m", ok, set("predicateType", "https://example/other")},
		{"method", "m", ok, set("predicate.serialization.method", "shards")},
		{"hash type", "m", ok, set("predicate.serialization.hash_type", "blake2")},
		{"subject digest", "m", ok, func(m map[string]any) {
			m["subject"].([]any)[0].(map[string]any)["digest"] = map[string]any{"sha256": d2}
		}},
		{"extra resource", "m", ok, func(m map[string]any) {
			p := m["predicate"].(map[string]any)
			p["resources"] = append(p["resources"].([]any), map[string]any{"name": "x", "algorithm": "sha256", "digest": d2})
		}},
		{"two subjects", "m", ok, func(m map[string]any) {
			m["subject"] = append(m["subject"].([]any), m["subject"].([]any)[0])
		}},
		{"resource algorithm", "m", ok, func(m map[string]any) {
			m["predicate"].(map[string]any)["resources"].([]any)[0].(map[string]any)["algorithm"] = "md5"
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := bundle(t, s, provenancetest.Statement(tt.subj, resources(tt.rs), tt.mutate))
			_, err := provenance.VerifyBundle(b, s.PublicKey())
			if !errors.Is(err, provenance.ErrMalformed) {
				t.Fatalf("provenance.VerifyBundle(%s) = %v, want malformed", tt.name, err)
			}
			if strings.ContainsAny(err.Error(), "\n\x1b") {
				t.Errorf("error %q has control characters", err)
			}
		})
	}
}
