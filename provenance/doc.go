// Package provenance checks the digests a model's publisher vouches for: an
// OpenSSF model-signing signature verified with the publisher's public key,
// a sha256sum file, or one expected SHA-256. It reads no weights itself; the
// sealer hashes each weight file once and hands the digest to [Expect.Check].
//
// # Signature format
//
// [VerifyBundle] accepts the bundle the model_signing tool (1.x) writes for
// `model_signing sign key`, and checks, in this order:
//
//   - size: at most [MaxBundleSize] bytes of UTF-8 JSON, one value, nothing after it;
//   - mediaType is "application/vnd.dev.sigstore.bundle.v0.3+json" or the v0.1/v0.2 form
//     "application/vnd.dev.sigstore.bundle+json;version=0.N"; verificationMaterial is
//     not used (the key comes from the caller, the "hint" is advisory);
//   - dsseEnvelope.payloadType is "application/vnd.in-toto+json"; payload and each
//     signatures[].sig are base64 (standard, padded; URL-safe accepted); 1 to 16 signatures;
//   - at least one signature verifies over the DSSE v1 pre-authentication encoding
//     "DSSEv1 " + len(payloadType) + " " + payloadType + " " + len(payload) + " " + payload
//     (lengths in decimal ASCII). ECDSA P-256 signs SHA-256 of it, P-384 SHA-384, both as
//     ASN.1 DER; Ed25519 signs it directly. Otherwise [*SignatureError], naming the key's
//     fingerprint. Nothing in the payload is trusted before this step;
//   - the payload is an in-toto statement: _type "https://in-toto.io/Statement/v1",
//     predicateType "https://model_signing/signature/v1.0", exactly one subject with a
//     non-empty name without control characters and a digest of exactly {"sha256": HEX};
//   - predicate.serialization.method is "files" and hash_type "sha256" (other keys such
//     as ignore_paths and allow_symlinks are recorded by the signer and ignored here);
//   - predicate.resources holds 1 to [MaxResources] entries {name, algorithm "sha256",
//     digest: 64 hex digits}; names are unique and are either "." ([SingleFile]: the one
//     file of a single-file model, alone) or a relative slash-separated path: UTF-8, at
//     most 4096 bytes, no control characters, no backslash, not absolute, no empty, "."
//     or ".." element;
//   - the subject digest equals SHA-256 over the 32-byte resource digests concatenated
//     in byte order of their names (how model_signing digests a "files" manifest).
//
// Violations wrap [ErrMalformed] and say which rule failed. [Statement.Digest],
// the statement digest, is the SHA-256 of the payload bytes. A statement for
// another model is refused by [Statement.CheckName] with [*NameError].
//
// # Digests
//
// [ParseSHA256Sums] reads `sha256sum` output ("HEX  path" or "HEX *path", a
// leading "./" dropped, names under the rules above, no duplicates).
// [Expect.Check] returns [*MismatchError] for a different digest and
// [ErrNotCovered] for a file not listed; [Expect.Missing] lists what is
// signed but absent. [HashFile] opens files through an [os.Root], so
// symlinks leaving the model directory and non-regular files are refused.
//
// Key fingerprints ([PublicKey.Fingerprint]) are the hex SHA-256 of the
// key's DER SubjectPublicKeyInfo.
package provenance
