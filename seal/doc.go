// Package seal is the cryptography of vramseal: the seal key, the flat
// digest and chunk tree of a shard, and the signed [Seal] record with its
// binary and JSON encodings.
//
// # Digests
//
// The flat digest of a shard is SHA-256 of its bytes (FIPS 180-4), the value
// model catalogs publish.
//
// The chunk tree cuts the shard into chunks of ChunkSize bytes (default
// [DefaultChunkSize], 64 KiB; only the last chunk may be shorter; see
// [ChunkRange]) and hashes them as RFC 6962 section 2.1 does:
//
//	leaf = SHA-256(0x00 || chunk)
//	node = SHA-256(0x01 || left || right)
//
// The root of n leaves splits them at k, the largest power of two below n,
// and hashes the roots of the first k and the remaining n-k leaves; the root
// of one leaf is that leaf; the root of no leaves is SHA-256 of the empty
// string. This is the hashing of golang.org/x/mod/sumdb/tlog, so that
// package computes the same roots ([Root]) and inclusion proofs.
// [Leaves] hashes the leaves on all cores; [Hasher] computes the flat
// digest and the leaves in one streaming pass.
//
// # Key
//
// A [Key] is derived from a worker secret of at least [MinSecretLen] bytes
// with HKDF-SHA256 (RFC 5869): no salt (which RFC 5869 section 2.2 defines
// as 32 zero bytes), info "vramseal seal key v1", 32 bytes of output. Its ID is "k1:" followed by the first 8 bytes, in
// lowercase hexadecimal, of SHA-256("vramseal key id v1" || 0x00 || key).
// The key bytes never appear in any printed, logged or encoded form.
//
// # Canonical encoding, version 1
//
// A seal is signed with HMAC-SHA256 (RFC 2104) under the key over its
// canonical encoding ([Seal.AppendCanonical]). The canonical encoding is
// the concatenation of the following items, with no padding, all integers
// big-endian, in this order:
//
//	magic         16 bytes   ASCII "vramseal-seal-v1"
//	version        1 byte    0x01
//	shard id      text
//	model ref     text
//	shard index    8 bytes   unsigned, <= 2^31-1
//	shard count    8 bytes   unsigned, in [1, 2^31-1], > shard index
//	device index   8 bytes   unsigned, <= 2^31-1
//	device uuid   text
//	size           8 bytes   unsigned, in [1, 2^63-1]
//	chunk size     8 bytes   unsigned, in [1, 2^30]
//	digest        32 bytes   flat SHA-256
//	tree root     32 bytes   RFC 6962 root
//	sealed at      8 bytes   two's complement signed Unix time in
//	                         nanoseconds (UTC)
//	key id        text
//	worker id     text
//
// where text is a 4-byte unsigned length n (at most [MaxTextLen]) followed
// by n bytes of UTF-8 without control characters (Unicode category Cc).
// Shard id, device uuid, key id and worker id are non-empty; model ref may
// be empty. Digest and tree root are not all zero, and the number of chunks,
// ceil(size / chunk size), is at most [MaxChunkCount].
//
// The binary form of a seal ([Seal.MarshalBinary]) is its canonical
// encoding followed by the 32-byte signature, and nothing else: at most
// [MaxEncodedLen] bytes. Every field has exactly one encoding, so a decoder
// that enforces the rules above ([Seal.UnmarshalBinary]) accepts exactly one
// byte string per seal. A decoder checks the magic and the version first
// and refuses other versions; a new version changes both the version byte
// and the magic.
//
// # JSON
//
// [Seal.MarshalJSON] writes one object with the members shard_id,
// model_ref, shard_index, shard_count, gpu, gpu_uuid,
// size_bytes, chunk_size, digest, tree_root, sealed_at, key_id, worker_id
// and signature. Hashes are written as 64 lowercase hexadecimal digits;
// sealed_at is RFC 3339 in UTC with the fractional seconds Go's
// time.RFC3339Nano layout writes (trailing zeros dropped). [DecodeJSON]
// also accepts uppercase hex digits, and refuses unknown members, hashes of
// any other length or alphabet, and any other time form. The
// signature covers the canonical encoding, not the JSON text, so a seal
// read from JSON verifies with [Key.Verify].
package seal
