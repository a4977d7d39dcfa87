// Package audit is a tamper-evident, forward-secure, crash-safe append-only
// log of typed events, verifiable offline with a key kept off the machine.
//
// It is domain-agnostic: callers define their events ([Event] with typed
// [Field]s); the package seals, stores, recovers, verifies, queries and
// prunes them. [Init] creates a log and returns its [VerificationKey];
// [Open] returns a [Log] for appending; [Verify] checks a log; [Query] and
// [Tail] read it. [LatestCheckpoint], [ProveInclusion] and
// [ProveConsistency] give signed checkpoints and proofs that anyone holding
// the log's [PublicKey] checks offline ([CheckInclusion],
// [CheckConsistency]). [NewRecordReader], [NewCheckpointReader],
// [NewAnchorReader] and [Log.DurableSeq] read a log for a copy kept
// elsewhere (package replicate), and [Copy] turns such a copy back into a
// log directory that [Verify] checks like any other.
//
// # Guarantees
//
// Every record carries an HMAC-SHA256 (RFC 2104) over its exact bytes and
// the MAC of the record before it, so a change, deletion, insertion,
// duplication or reordering of records is found by [Verify]. The MAC key
// evolves one way at every segment rotation (including the one at [Open]
// when the previous live segment holds records) and at least every
// [Options.EpochInterval], even when the log is idle; the previous key is
// erased (after Bellare and Yee, "Forward-Security in Private-Key
// Cryptography", CT-RSA 2003). In format version 2 every epoch is also
// bound to its start: before the writer erases the key of epoch e-1 it
// seals, with that key, an anchor naming the first sequence number and the
// start time of epoch e (see Epochs). So whoever takes the machine in epoch
// e, and copies its state, holds k_e and nothing before it: with the
// verification key, [Verify] refuses every record it could make with a
// sequence number before epoch e's first or a time before epoch e's start,
// however the records, manifest, checksums and anchors after it are
// rewritten (relabelling old records with later epochs included). The
// machine never holds the verification key k_0 itself: [Init] leaves the
// writer at k_1. Nor can they cut records of earlier epochs and leave the
// anchors: an anchor past the log's last record names a record the log no
// longer holds, and [Verify] reports the cut (Truncated, at the epochs
// file), unless the live segment has grown since it was read. What such an
// attacker can still do is rewrite or cut the records of epoch e onwards,
// cut the epochs file with them, and append forgeries after them; only
// copies of checkpoints, anchors or the manifest kept elsewhere (see the
// replicate package) reveal that. Version 1
// logs have no anchors: there, the holder of k_e can relabel and re-MAC the
// whole log, and only a checkpoint copied elsewhere reveals it.
//
// The records are also the leaves of an RFC 6962 Merkle tree, and the log
// signs checkpoints of it (C2SP tlog-checkpoint, Ed25519) with a key
// separate from the MAC key. Its public half verifies the log's structure,
// tree and checkpoints and checks inclusion and consistency proofs, and can
// forge nothing, so auditors need no secret. The signing key lives on the
// machine too: whoever takes the machine can rewrite the log and sign the
// rewrite, and cut the newest checkpoints. What such a rewrite cannot do is
// stay consistent with a checkpoint copied off the machine before it: a
// consistency proof from that checkpoint to any later one fails.
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
//	epochs                                   epoch anchors (version 2)
//	manifest.json                            the list of segments
//	lock                                     flock(2) lock: one writer at a time
//	audit-YYYYMMDD-NNNNNNNNNNNNNNNNNNNN.ndjson   segments: records
//	<segment>.sha256                         checksum of a closed segment
//	<segment>.<offset>.broken                bytes cut from a torn tail
//	checkpoint.key                           checkpoint signing key (secret)
//	checkpoint.pub                           its public key
//	tree.hashes                              the Merkle tree's stored hashes
//	<segment>.checkpoints                    checkpoints signed while it was live
//
// A segment's name holds the UTC day it was started (by the writer's clock)
// and its first sequence number in 20 decimal digits. The day must be a
// real date (YYYYMMDD); it is informational: no reader compares it with the
// records' times, which may lie on later days (a segment rotates at the
// first record of a new day) or, with a clock set back, earlier ones.
// Files are replaced atomically: write "<name>.tmp", fsync it, rename it
// over <name>, fsync the directory.
//
// # Rotation
//
// The writer closes the live segment and starts the next, and only then,
// when: a record would grow the segment past [Options.SegmentMaxBytes] (a
// segment holds at least one record, so one record larger than that makes
// a segment of its own); the first record (or idle tick) of a new UTC day
// finds records in the segment; [Open] finds records in the live segment
// of the previous run. Every rotation starts a new epoch, anchored at the
// new segment's first sequence number. [Options.EpochInterval] evolves the
// key without rotating. An empty live segment is never rotated; [Open]
// reuses it.
//
// # Records (format versions 1 and 2)
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
//   - v: the format version: 2 for a log made by this version of [Init], 1
//     for older logs, which keep it. Every record of a log has the
//     manifest's version.
//   - seq: the sequence number, from 1, one more than the record before it,
//     across segments and restarts; at most 2^63-1.
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
//     epoch of the record before it; at most 2^63-1. In version 2 it is at
//     least 1 and the epoch its anchors place the record in (see Epochs).
//   - prev: the mac of the record before it, 64 lowercase hex digits; for
//     the first record of a log the genesis value (the same in both
//     versions)
//     SHA-256("vramseal audit genesis v1") =
//     f0780beb7c764a22cd2e3508c8593dece9241bf0de8ceda142f6f8875a9c6a85.
//   - mac: HMAC-SHA256, keyed with the MAC key of the epoch, over the bytes
//     of the line from its first byte "{" up to, not including, the
//     `,"mac":` member: that is, all but the last 74 bytes of the line
//     without its newline. 64 lowercase hex digits.
//
// Numbers are canonical decimals: no sign on seq and epoch, no leading
// zeros, "-" only before a nonzero integer. Tools that read JSON numbers
// as doubles (jq) lose precision above 2^53; no log gets near that. Strings are canonical: the
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
//	k_{e+1}     = HKDF-SHA256(secret k_e, salt "", info "vramseal audit key v1 evolve", 32 bytes)
//	macKey_e    = HKDF-SHA256(secret k_e, salt "", info "vramseal audit mac v1", 32 bytes)
//	anchorKey_e = HKDF-SHA256(secret k_e, salt "", info "vramseal audit epoch anchor v2", 32 bytes)
//
// A verifier derives every epoch's key forward from k_0. The writer keeps
// only the current k_e, in state.json:
//
//	{"v":V,"log_id":"<16 hex>","epoch":E,"epoch_started":"T","key":"<64 hex>"}
//
// (V the log's format version, T in the record time layout; every member
// required, none twice), which it replaces atomically before the first
// record of the new epoch. In version 2, [Init] writes the anchor of epoch
// 1 with k_0 and a state at epoch 1 holding k_1, so no file on the machine
// ever holds k_0, and no record is MACed with it. (Version 1 logs began at
// epoch 0 with k_0 in state.json.)
//
// The verification key file written by `vramseal audit init` (and by the
// daemon on first start) is one line:
//
//	vramseal-audit-verification-key v<V> <16 hex log id> <64 hex k_0>
//
// with V the log's format version, ended by "\n". A reader also takes it
// without the final newline (a key copied by hand often loses it); nothing
// else (no "\r", no second newline, no other spacing). A key of version V
// verifies only a log of version V: a version 2 log rewritten as version 1
// (which has no anchors) does not pass with its key.
//
// # Epochs (format version 2)
//
// The file "epochs" holds one anchor per epoch, epoch 1 first, each a line:
//
//	vramseal-audit-epoch v2 <16 hex log id> <E> <S> <T> <P> <M>
//
// ended by "\n", single spaces between the fields: E the epoch (from 1), S
// the first sequence number it may hold, T the time it began (the record
// time layout), P the MAC of record S-1 (the genesis value for S = 1), M
// the HMAC-SHA256 keyed with anchorKey_{E-1} over the line up to, not
// including, the space before M; all numbers canonical decimals from 1 to
// 2^63-1, all hex lowercase. The writer appends the anchor of epoch e+1
// (S the next sequence number, T the time of evolving, never before the
// last record's time, P the last record's MAC) and fsyncs it before it
// replaces state.json with k_{e+1}, then erases k_e; [Init] appends the
// anchor of epoch 1 (S 1, P the genesis value) with k_0. The file is never
// pruned or rewritten. A reader takes an unterminated last line as an
// append in progress and ignores it ([Open] cuts it).
//
// Anchors must name the manifest's log ID and be in order: the first of
// epoch 1 with S = 1 and P the genesis value, then epochs 2, 3, ... with no
// gap; S and T never
// decrease; two anchors with the same S have the same P (epochs without
// records). The rule a verifier enforces, for every record R of a version 2
// log: let A be the anchor with the highest S not above R.seq (the last
// such one), and B the anchor after A, if any. Then R.epoch = A.E;
// A.T <= R.time; R.time <= B.T when B exists; if R.seq = A.S, R.prev = A.P;
// and the first record of every segment but the log's first (after
// pruning: every segment) has R.seq = A.S, since every rotation starts an
// epoch. With the verification key, every anchor's MAC must verify with
// anchorKey_{E-1}. Since anchors 1 to e were sealed with keys the holder of
// k_e never had, the starts of epochs 1 to e are fixed; every epoch after
// them starts no earlier (S and T never decrease); so every record that
// the holder of k_e can MAC (epoch e or later) has a sequence number of at
// least epoch e's S and a time of at least its T, and every record before
// S is one he could not MAC. Without the verification key the anchors'
// order and the rule are still checked, but a forged set of anchors is
// not found.
//
// # Manifest
//
// manifest.json is a JSON object (any whitespace; every member below
// present, no unknown member, no member named twice in any object: a
// second log_id is refused, not taken):
//
//	{"v":V,"log_id":"<16 hex>","genesis":"<the genesis value>",
//	 "pruned":[<segment>...],"segments":[<segment>...]}
//
// where each segment is
//
//	{"name":..., "state":"open"|"closed", "first_seq":F, "last_seq":L,
//	 "records":R, "size":B, "first_mac":..., "last_mac":..., "first_epoch":..,
//	 "last_epoch":.., "first_time":..., "last_time":..., "sha256":...}
//
// V is the log's format version (1 or 2; state.json and every record
// agree). Segments are listed oldest first, pruned ones before the rest, and are
// contiguous: each first_seq is the previous last_seq plus one (the first is
// 1), R = L - F + 1, first_seq matches the name, and every seq, count and
// epoch is at most 2^63-1. Only the last segment
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
// An empty log takes one of two forms, and both verify with no records: a
// manifest with no segment (as [Init] leaves it), or one whose only
// segment (after any pruned ones) is open with R = 0 (as [Open] leaves it
// before the first record); that segment's file may not exist yet (the
// writer lists a segment before it creates the file).
//
// The checksum file of a closed segment is "<64 hex>  <segment name>\n", the
// format of sha256sum, so `sha256sum -c *.sha256` checks a copy.
//
// # Verification
//
// [Verify] reads the manifest, then every listed segment in order, each
// line as it comes (constant memory), and checks: the line's format and
// version; that the record continues the chain (seq is the last seq + 1,
// prev is the last mac; the first after the pruned segments or the genesis
// value); epochs never decrease; times never decrease; with the key, the
// MAC under the record's epoch key; in version 2, the epoch rule against
// the anchors (see Epochs; the anchors are read as the records need them,
// and the rest after the last record); every segment's records, bytes,
// first and last MACs, epochs and times against the manifest; every closed
// segment's checksum file and manifest checksum against its bytes; no
// segment file outside the manifest; the live segment holds at least its
// checkpoint; and every pruned segment is covered by an "audit_pruned"
// record (field through_seq). Every audit_pruned record must have exactly
// the fields the log writes, in order and of these kinds: before (string,
// a time), segments (int, at least 1), records (int, at least 0),
// first_seq (int, at least 1), through_seq (int, at least first_seq),
// through_mac (sha256); [Log.Append] refuses events of that type. The
// key's version must be the log's. Verify does not read state.json (the
// writer's secret, absent from an auditor's copy; [Open] checks it). The
// first failure is reported as a [*VerifyError] with its [Problem]; one
// found by the epoch rule is WrongEpoch and names the record, a bad anchor
// names the epochs file's line and the seq of the record that needed it.
//
// # Opening
//
// [Open] refuses a directory without state.json: with [ErrNotInitialized]
// when it holds no manifest either, else with a [*CorruptionError] naming
// state.json. It checks, before it appends anything: the state and
// manifest agree (log ID, version, and an epoch not rolled back: not
// below the last epoch of any segment, the empty live segment's included);
// in version 2, the epochs file's anchors are in order (their MACs cannot
// be checked here), an unterminated last anchor line is cut (an evolution
// cut short before the state moved on), and the last anchor is the state's
// epoch and start, or the epoch after it (the state's replacement was cut
// short: Open finishes it), else the state or the epochs file was rolled
// back or replaced ([*CorruptionError], WrongEpoch); every closed segment exists with the
// manifest's size and a checksum file naming the manifest's checksum; the
// newest closed segment hashes to that checksum; no segment file outside
// the manifest (except leftovers of an interrupted pruning); and the live
// segment record by record (links, sequence, epochs, times, the
// manifest's checkpoint, and the MACs of records of the current epoch). A
// torn tail of the live segment (an unterminated or unparsable
// last line) is copied to a ".broken" file and cut; anything else is a
// [*CorruptionError] and the log refuses to open. The bytes and MACs of
// older closed segments are left to [Verify], offline, with the
// verification key: the machine no longer holds their keys.
//
// # Tree
//
// The records of a log, from seq 1, are the leaves of one RFC 6962
// (section 2.1) Merkle tree with SHA-256: the leaf of record seq S is leaf
// index S-1 and its hash is SHA-256(0x00 || line), over the record's exact
// line without its newline (what golang.org/x/mod/sumdb/tlog.RecordHash
// computes). The leaf covers the whole line, MAC included, so a proof
// names one exact record; it is not the MAC, which nobody without the key
// can check. Interior nodes are SHA-256(0x01 || left || right).
//
// tree.hashes holds the tree's stored hashes in the order of package tlog
// (tlog.StoredHashIndex): for a tree of N records, tlog.StoredHashCount(N)
// hashes of 32 bytes, nothing else. It is derived data. The writer hands
// the lines of every batch it writes to a second goroutine, the tree
// writer, which hashes them into the tree, appends to tree.hashes, and
// fsyncs it before it signs a checkpoint; so hashing and signing do not
// slow the writer, which waits for the tree writer only at rotation,
// pruning and Close, and while 8 batches are queued. [Open] keeps the file
// only up to the latest checkpoint, and only if its root at that size is
// the checkpoint's (else it rebuilds it from seq 1), and hashes the records
// after that again. Open refuses (a [*CorruptionError], CheckpointMismatch)
// a rebuild whose root at the checkpoint's size is not the signed one, so
// the log never signs a tree inconsistent with one it signed before; and it
// cannot rebuild over pruned segments (keep tree.hashes with the log).
// Proofs read the file at offsets. Memory stays bounded: the tree writer
// and [Verify] keep only the hashes of the complete subtrees at the tree's
// right edge (at most 62).
//
// # Checkpoints
//
// A checkpoint is a C2SP signed note (c2sp.org/signed-note) whose text is
// exactly the three lines of c2sp.org/tlog-checkpoint and no extension
// lines:
//
//	vramseal/audit/<16 hex log id>
//	<tree size: records, canonical decimal>
//	<base64 (RFC 4648, padded) of the tree's root hash>
//
// followed by an empty line and one signature line,
// "— vramseal/audit/<log id> <base64 of key hash (4 bytes) || Ed25519 signature>",
// made with golang.org/x/mod/sumdb/note. The origin is the key's name.
// Readers take only canonical forms (base64 that re-encodes the same) and
// ignore signature lines of other keys, as C2SP requires.
//
// The writer signs a checkpoint of the durable records whenever it writes
// the manifest's checkpoint (at most every [Options.CheckpointInterval]),
// before every rotation (so a closed segment ends with a checkpoint of its
// last record), at Close, and at Open for records the previous run left
// unsigned; never twice for the same tree size, and never of an empty tree.
// A checkpoint of tree size K is appended to "<segment>.checkpoints" of
// the segment that holds record K, fsynced; so tree sizes grow through the
// files in segment order, and pruning a segment removes its checkpoints.
// Open cuts an unfinished last checkpoint of the newest checkpoint file
// (a prefix of a checkpoint: origin, size, root, empty line, signature line,
// cut anywhere); anything else there that does not verify is a
// [*CorruptionError].
//
// checkpoint.key (0600) holds two lines: the note signer key
// "PRIVATE+KEY+vramseal/audit/<log id>+<8 hex key hash>+<base64>" and its
// verifier key. checkpoint.pub, and the public key file that `vramseal
// audit init` writes beside the verification key, hold the verifier key,
// one line ("vramseal/audit/<log id>+<8 hex>+<base64 of 0x01 || Ed25519
// public key>"): see [PublicKey]. [Init] makes the key from [Options.Rand];
// [Open] of a log that has none (one made before checkpoints) makes one,
// records an audit_checkpoint_key record, and signs the whole log.
//
// # Proofs
//
// An inclusion proof is a C2SP tlog-proof (c2sp.org/tlog-proof@v1):
//
//	c2sp.org/tlog-proof@v1
//	extra <base64 of the record's line, without its newline>
//	index <seq - 1>
//	<base64 hash>            one per line: the RFC 6962 audit path
//	...
//	                         (an empty line)
//	<the checkpoint, verbatim>
//
// The extra line carries the record for convenience and is not trusted:
// [CheckInclusion] checks that the record (given, or carried) parses, is
// seq index+1 of the key's log, and hashes with the path to the signed root
// (tlog.CheckRecord).
//
// A consistency proof has the same shape in a format of this package:
//
//	vramseal/audit-consistency-proof@v1
//	old <old tree size>
//	new <new tree size>
//	<base64 hash>            one per line: the RFC 6962 consistency proof
//	...
//	                         (an empty line)
//	<the old checkpoint, verbatim><the new checkpoint, verbatim>
//
// [CheckConsistency] checks both signatures, the sizes, and the proof
// (tlog.CheckTree). Both checkpoints must be ones the log signed and kept
// (proofs are made only between stored checkpoints). Numbers are canonical
// decimals, hashes canonical base64 of 32 bytes, at most 126 hashes; the
// parsers take nothing else.
//
// # Verification with the public key
//
// With [VerifyOptions.PublicKey], [Verify] also rebuilds the tree from the
// records as it reads them (from the stored hashes of the last pruned
// record, read from tree.hashes, when segments were pruned) and reads each
// segment's checkpoint file: every checkpoint must verify, its tree size
// must be above the tree so far and at least the segment's first seq, and
// its root must be the tree's when the tree reaches that size; so every
// checkpoint is consistent with all before it. A checkpoint beyond the
// segment's records is Truncated; every closed segment after the first
// checkpoint must end with a checkpoint of its last record, and no closed
// segment may hold records beyond the last checkpoint. An unfinished last
// checkpoint of the live segment is a write in progress and is not counted;
// records of the live segment after the last checkpoint are not signed yet
// (the writer signs them within a checkpoint interval), and the report
// counts them. Failures are [*VerifyError]s with Problem CheckpointMismatch
// (or Truncated) and the checkpoint file, line and tree size.
//
// # Records written by the log itself
//
//   - audit_recovered (critical): [Open] cut a torn tail; fields segment,
//     offset, cut (bytes), broken_file, last_seq.
//   - audit_pruned (high): [Log.Prune] deleted segments; fields before,
//     segments, records, first_seq, through_seq, through_mac (digest).
//   - audit_checkpoint_key (high): [Open] created the checkpoint key of a
//     log that had none; fields public_key (the verifier key) and reason.
package audit
