// Package audit is a tamper-evident, forward-secure, crash-safe append-only
// log of typed events, verifiable offline with a key kept off the machine.
//
// It is domain-agnostic: callers define their events ([Event] with typed
// [Field]s); the package seals, stores, recovers, verifies, queries and
// prunes them. [Init] creates a log and returns its [VerificationKey];
// [Open] returns a [Log] for appending; [Verify] checks a log; [Query] and
// [Tail] read it.
//
// # Guarantees
//
// Every record carries an HMAC-SHA256 (RFC 2104) over its exact bytes and
// the MAC of the record before it, so a change, deletion, insertion,
// duplication or reordering of records is found by [Verify]. The MAC key
// evolves one way at every segment rotation (including the one at [Open]
// when the previous live segment holds records) and at least every
// [Options.EpochInterval], even when the log is idle; the previous key is erased, so whoever takes
// the machine at epoch e cannot forge records of earlier epochs (after
// Bellare and Yee, "Forward-Security in Private-Key Cryptography", CT-RSA
// 2003). Such an attacker can still cut the newest records and append
// forgeries after them; only copies of the manifest or of checkpoints kept
// elsewhere reveal that (planned: signed tlog checkpoints and witnesses).
//
// Writing uses one goroutine with group commit: one write and one fsync per
// batch. Critical events are durable before [Log.Append] returns. After a
// crash, [Open] cuts a torn tail and continues the chain; anything else that
// does not check out is reported as a [*CorruptionError] and the log refuses
// to append.
//
// # Directory
//
// A log directory (mode 0700; every file 0600) holds:
//
//	state.json                               current epoch and its key (secret)
//	manifest.json                            the list of segments
//	lock                                     flock(2) lock: one writer at a time
//	audit-YYYYMMDD-NNNNNNNNNNNNNNNNNNNN.ndjson   segments: records
//	<segment>.sha256                         checksum of a closed segment
//	<segment>.<offset>.broken                bytes cut from a torn tail
//
// A segment's name holds the UTC day it was started and its first sequence
// number in 20 decimal digits. Files are replaced atomically: write
// "<name>.tmp", fsync it, rename it over <name>, fsync the directory.
//
// # Records (format version 1)
//
// A segment is a sequence of lines, each one record: a JSON object
// (RFC 8259) in UTF-8 ended by "\n" (0x0A). Its members come in exactly this
// order, with no whitespace, and nothing else:
//
//	{"v":1,"seq":S,"time":"T","id":"I","type":"Y","sev":"V","service":"A","node":"N",
//	 "worker":"W","cid":"C","fields":{...},"epoch":E,"prev":"P","mac":"M"}
//
// (shown on two lines here; it is one line in the file).
//
//   - v: the format version, 1.
//   - seq: the sequence number, from 1, one more than the record before it,
//     across segments and restarts.
//   - time: when the writer wrote it, UTC, exactly "2006-01-02T15:04:05.000000000Z"
//     (Go layout: 30 bytes, nanoseconds, so string order is time order).
//     Never less than the time of the record before it.
//   - id: the audit ID, "<log id>-<seq>": the log's 16 lowercase hex digit
//     ID (from the manifest) and seq in decimal.
//   - type: the event type, snake_case: [a-z][a-z0-9_]*, 1 to 64 bytes.
//   - sev: one of "info", "low", "medium", "high", "critical".
//   - service, node, worker: who wrote it; service and node are not empty.
//   - cid: the correlation ID, possibly empty.
//   - fields: an object of the event's fields in the caller's order; keys
//     are snake_case (as type) and unique. A value is one of:
//     a string; an integer (int64); true or false; a byte count
//     {"bytes":N} with 0 <= N <= 2^63-1; a SHA-256 digest
//     {"sha256":"<64 lowercase hex digits>"}.
//   - epoch: the key epoch whose MAC key made mac; never less than the
//     epoch of the record before it.
//   - prev: the mac of the record before it, 64 lowercase hex digits; for
//     the first record of a log the genesis value
//     SHA-256("vramseal audit genesis v1") =
//     f0780beb7c764a22cd2e3508c8593dece9241bf0de8ceda142f6f8875a9c6a85.
//   - mac: HMAC-SHA256, keyed with the MAC key of the epoch, over the bytes
//     of the line from its first byte "{" up to, not including, the
//     `,"mac":` member: that is, all but the last 74 bytes of the line
//     without its newline. 64 lowercase hex digits.
//
// Numbers are canonical decimals: no sign on seq and epoch, no leading
// zeros, "-" only before a nonzero integer. Strings are canonical: the
// characters '"' and '\' are written \" and \\; these code points, and only
// these, are written \u followed by four lowercase hex digits: U+0000 to
// U+001F, U+007F to U+009F, U+061C, U+200E, U+200F, U+2028, U+2029, U+202A
// to U+202E, U+2066 to U+2069 and U+FEFF (controls, separators and
// bidirectional formatting, so a terminal showing the raw file cannot be
// misled); everything else is raw UTF-8, which must be valid. No other
// escape is allowed. A line is at most 1 MiB; a decoded string at most
// 65536 bytes; an event has at most 256 fields. A reader rejects any line
// that breaks these rules, so every record has exactly one encoding.
//
// # Keys
//
// A log's initial key k_0 is 32 random bytes made by [Init]; it is the
// verification key. Keys use HKDF-SHA256 (RFC 5869) with an empty salt:
//
//	k_{e+1}   = HKDF-SHA256(secret k_e, salt "", info "vramseal audit key v1 evolve", 32 bytes)
//	macKey_e  = HKDF-SHA256(secret k_e, salt "", info "vramseal audit mac v1", 32 bytes)
//
// A verifier derives every epoch's key forward from k_0. The writer keeps
// only the current k_e, in state.json:
//
//	{"v":1,"log_id":"<16 hex>","epoch":E,"epoch_started":"T","key":"<64 hex>"}
//
// which it replaces atomically before the first record of the new epoch.
// The verification key file written by `vramseal audit init` is one line:
//
//	vramseal-audit-verification-key v1 <16 hex log id> <64 hex k_0>
//
// # Manifest
//
// manifest.json is a JSON object (any whitespace; no unknown members):
//
//	{"v":1,"log_id":"<16 hex>","genesis":"<the genesis value>",
//	 "pruned":[<segment>...],"segments":[<segment>...]}
//
// where each segment is
//
//	{"name":..., "state":"open"|"closed", "first_seq":F, "last_seq":L,
//	 "records":R, "size":B, "first_mac":..., "last_mac":..., "first_epoch":..,
//	 "last_epoch":.., "first_time":..., "last_time":..., "sha256":...}
//
// Segments are listed oldest first, pruned ones before the rest, and are
// contiguous: each first_seq is the previous last_seq plus one (the first is
// 1), R = L - F + 1, and first_seq matches the name. Only the last segment
// may be open; it is the live segment, and its counts are a checkpoint: the
// records durable when the manifest was last written (at most once per
// [Options.CheckpointInterval], at rotation and at Close); the file may hold
// more. An empty segment has R = 0, L = F - 1, and empty macs and times.
// first_mac, last_mac and sha256 are 64 lowercase hex digits; sha256 (closed
// segments only, else "") is SHA-256 of the segment's bytes. Epochs are the
// first and last record's (for an empty segment, the epoch it started in).
// Times use the record time layout. "pruned" keeps the entries of segments
// deleted by retention, so the chain of the remaining segments starts from
// the last pruned segment's last_seq and last_mac.
//
// The checksum file of a closed segment is "<64 hex>  <segment name>\n", the
// format of sha256sum, so `sha256sum -c *.sha256` checks a copy.
//
// # Verification
//
// [Verify] reads the manifest, then every listed segment in order, each
// line as it comes (constant memory), and checks: the line's format; that
// the record continues the chain (seq is the last seq + 1, prev is the last
// mac; the first after the pruned segments or the genesis value); epochs
// never decrease; times never decrease; with the key, the MAC under the
// record's epoch key; every segment's records, bytes, first and last MACs,
// epochs and times against the manifest; every closed segment's checksum
// file and manifest checksum against its bytes; no segment file outside the
// manifest; the live segment holds at least its checkpoint; and every pruned
// segment is covered by an "audit_pruned" record (field through_seq). The
// first failure is reported as a [*VerifyError] with its [Problem].
//
// # Opening
//
// [Open] checks, before it appends anything: the state and manifest agree
// (log ID, epoch not rolled back); every closed segment exists with the
// manifest's size and a checksum file naming the manifest's checksum; the
// newest closed segment hashes to that checksum; no segment file outside
// the manifest (except leftovers of an interrupted pruning); and the live
// segment record by record (links, sequence, epochs, times, the
// manifest's checkpoint, and the MACs of records of the current epoch). A torn tail of the live segment (an unterminated or unparsable
// last line) is copied to a ".broken" file and cut; anything else is a
// [*CorruptionError] and the log refuses to open. The bytes and MACs of
// older closed segments are left to [Verify], offline, with the
// verification key: the machine no longer holds their keys.
//
// # Records written by the log itself
//
//   - audit_recovered (critical): [Open] cut a torn tail; fields segment,
//     offset, cut (bytes), broken_file, last_seq.
//   - audit_pruned (high): [Log.Prune] deleted segments; fields before,
//     segments, records, first_seq, through_seq, through_mac (digest).
package audit
