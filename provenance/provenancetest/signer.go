// Package provenancetest makes OpenSSF model-signing bundles with keys
// generated for a test, in the format the model_signing tool writes (a
// Sigstore bundle v0.3 holding a DSSE envelope of an in-toto statement,
// serialization method "files"), so that tests can sign what they build.
// The real tool's own signatures are in testdata/models.
package provenancetest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"

	"github.com/vramseal/vramseal/provenance"
)

// Signer signs bundles with one generated key.
type Signer struct {
	priv crypto.Signer
	opts crypto.SignerOpts
	hash func([]byte) []byte
	pem  []byte
	pub  *provenance.PublicKey
}

// NewSigner generates a key of kind "p256", "p384" or "ed25519".
func NewSigner(kind string) (*Signer, error) {
	s := &Signer{}
	switch kind {
	case "p256":
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		s.priv, s.opts, s.hash = k, crypto.SHA256, func(m []byte) []byte { h := sha256.Sum256(m); return h[:] }
	case "p384":
		k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if err != nil {
			return nil, err
		}
		s.priv, s.opts, s.hash = k, crypto.SHA384, func(m []byte) []byte { h := sha512.Sum384(m); return h[:] }
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		s.priv, s.opts, s.hash = k, crypto.Hash(0), func(m []byte) []byte { return m }
	default:
		return nil, fmt.Errorf("provenancetest: key kind %q: want p256, p384 or ed25519", kind)
	}
	der, err := x509.MarshalPKIXPublicKey(s.priv.Public())
	if err != nil {
		return nil, err
	}
	s.pem = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	if s.pub, err = provenance.ParsePublicKey(s.pem); err != nil {
		return nil, err
	}
	return s, nil
}

// PublicKeyPEM is the public key as a PEM "PUBLIC KEY" block.
func (s *Signer) PublicKeyPEM() []byte { return s.pem }

// PublicKey is the parsed public key.
func (s *Signer) PublicKey() *provenance.PublicKey { return s.pub }

// Resource is one file of a statement: its name and hex digest (either may
// be malformed on purpose).
type Resource struct{ Name, Digest string }

// Statement returns the JSON of a model-signing statement for a model
// named name with the given files. The subject digest is computed from
// the resources that parse; mutate, when set, edits the statement before
// it is encoded.
func Statement(name string, rs []Resource, mutate func(map[string]any)) []byte {
	files := provenance.Digests{}
	list := []any{}
	for _, r := range rs {
		d, _ := hex.DecodeString(r.Digest)
		var a [32]byte
		copy(a[:], d)
		files[r.Name] = a
		list = append(list, map[string]any{"name": r.Name, "algorithm": "sha256", "digest": r.Digest})
	}
	sd := provenance.SubjectDigest(files)
	st := map[string]any{
		"_type":         provenance.StatementType,
		"subject":       []any{map[string]any{"name": name, "digest": map[string]any{"sha256": hex.EncodeToString(sd[:])}}},
		"predicateType": provenance.PredicateType,
		"predicate": map[string]any{
			"serialization": map[string]any{"method": "files", "hash_type": "sha256", "allow_symlinks": false},
			"resources":     list,
		},
	}
	if mutate != nil {
		mutate(st)
	}
	b, _ := json.Marshal(st)
	return b
}

// Sign signs files as the model name and returns the bundle.
func (s *Signer) Sign(name string, files provenance.Digests) ([]byte, error) {
	var rs []Resource
	for n, d := range files {
		rs = append(rs, Resource{n, hex.EncodeToString(d[:])})
	}
	return s.Bundle(Statement(name, rs, nil))
}

// Bundle signs a statement's JSON and wraps it in a bundle.
func (s *Signer) Bundle(payload []byte) ([]byte, error) {
	sig, err := s.priv.Sign(rand.Reader, s.hash(provenance.PAE(provenance.PayloadType, payload)), s.opts)
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{
		"mediaType":            provenance.MediaTypeV03,
		"verificationMaterial": map[string]any{"publicKey": map[string]any{"hint": "test"}},
		"dsseEnvelope": map[string]any{
			"payload":     base64.StdEncoding.EncodeToString(payload),
			"payloadType": provenance.PayloadType,
			"signatures":  []any{map[string]any{"sig": base64.StdEncoding.EncodeToString(sig), "keyid": ""}},
		},
	})
}
