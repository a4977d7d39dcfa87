package provenance

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
)

// maxKeySize caps a public key PEM file; a P-384 key is under 300 bytes.
const maxKeySize = 64 << 10

// PublicKey is a publisher's verification key: ECDSA P-256, ECDSA P-384 or
// Ed25519. It is safe for concurrent use.
type PublicKey struct {
	key         crypto.PublicKey
	fingerprint string
}

// ParsePublicKey parses a PEM "PUBLIC KEY" block (DER SubjectPublicKeyInfo,
// RFC 5280) holding an ECDSA P-256, ECDSA P-384 or Ed25519 key. Any other
// key type, curve, PEM type, or bytes after the block are rejected with an
// error that wraps [ErrMalformed].
func ParsePublicKey(pemBytes []byte) (*PublicKey, error) {
	if len(pemBytes) > maxKeySize {
		return nil, fmt.Errorf("%w: public key is %d bytes, more than %d", ErrMalformed, len(pemBytes), maxKeySize)
	}
	block, rest := pem.Decode(pemBytes)
	if block == nil {
		return nil, fmt.Errorf("%w: public key is not PEM", ErrMalformed)
	}
	if block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%w: public key PEM type is %q, want %q", ErrMalformed, printable(block.Type), "PUBLIC KEY")
	}
	if len(block.Headers) != 0 {
		return nil, fmt.Errorf("%w: public key PEM has headers", ErrMalformed)
	}
	if b, _ := pem.Decode(rest); b != nil {
		return nil, fmt.Errorf("%w: public key file holds more than one PEM block", ErrMalformed)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: public key: %v", ErrMalformed, err)
	}
	switch k := k.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("%w: public key curve %s is not P-256 or P-384", ErrMalformed, k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("%w: public key type %T is not ECDSA or Ed25519", ErrMalformed, k)
	}
	sum := sha256.Sum256(block.Bytes)
	return &PublicKey{key: k, fingerprint: hex.EncodeToString(sum[:])}, nil
}

// Fingerprint returns the key's fingerprint: the lower-case hex SHA-256 of
// its DER SubjectPublicKeyInfo (the bytes inside the PEM block), the same as
// `openssl pkey -pubin -outform DER | sha256sum`. It is not the bundle's
// "hint", which model_signing computes over the PEM text.
func (k *PublicKey) Fingerprint() string { return k.fingerprint }

// Algorithm names the key: "ecdsa-p256", "ecdsa-p384" or "ed25519".
func (k *PublicKey) Algorithm() string {
	switch k := k.key.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P384() {
			return "ecdsa-p384"
		}
		return "ecdsa-p256"
	default:
		return "ed25519"
	}
}

// verify reports whether sig is a signature of msg by k. ECDSA signatures are
// ASN.1 DER over SHA-256 (P-256) or SHA-384 (P-384) of msg, as model_signing
// makes them; Ed25519 signs msg itself (RFC 8032).
func (k *PublicKey) verify(msg, sig []byte) bool {
	switch key := k.key.(type) {
	case *ecdsa.PublicKey:
		if key.Curve == elliptic.P384() {
			h := sha512.Sum384(msg)
			return ecdsa.VerifyASN1(key, h[:], sig)
		}
		h := sha256.Sum256(msg)
		return ecdsa.VerifyASN1(key, h[:], sig)
	case ed25519.PublicKey:
		return ed25519.Verify(key, msg, sig)
	}
	panic("provenance: unreachable key type")
}
