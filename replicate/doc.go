// Package replicate copies an audit log (package audit) off the machine, to
// a NATS JetStream stream, and verifies the copy.
//
// A [Shipper] reads the local log (never an in-memory queue) and publishes
// every durable record and every signed checkpoint; [Verify] reads the
// stream back, checks each node's copy with the audit package's own
// verification, and compares it with a node's local log.
//
// # Stream
//
// One stream (default name VRAMSEAL_AUDIT) takes the subjects
// "vramseal.audit.>", file storage, created with deny_delete and
// deny_purge, without rollup, with discard "new" (a full stream refuses new
// messages rather than dropping old ones), a duplicate window of two
// minutes and allow_atomic (atomic batch publish, nats-server 2.12 or
// later). A Shipper refuses a stream of that name that lacks any of these.
// Each log writes three subjects:
//
//	vramseal.audit.<log id>.<node>.records       one message per record
//	vramseal.audit.<log id>.<node>.checkpoints   one message per signed checkpoint
//	vramseal.audit.<log id>.<node>.epochs        one message per epoch anchor (format version 2)
//
// where <log id> is the log's 16 hex digit ID and <node> the node name with
// every byte outside [A-Za-z0-9_-] replaced by "_" ([Token]).
//
// A record message's data is the record's exact line without its newline;
// its header Nats-Msg-Id is "<log id>-<seq>". A checkpoint message's data is
// the signed note, verbatim; its Nats-Msg-Id is "<log id>-checkpoint-<tree
// size>". An anchor message's data is the anchor's line of the epochs file
// without its newline; its Nats-Msg-Id is "<log id>-epoch-<epoch>".
// Messages of a subject are in order, each once, from seq 1 and epoch 1; an
// anchor is published before any record of its epoch, and a checkpoint only
// after the record it covers.
//
// # No gap, no duplicate
//
// Records go in atomic batches (headers Nats-Batch-Id, Nats-Batch-Sequence,
// Nats-Batch-Commit) of at most [Options.BatchRecords] records (1000 by
// default, the server's default limit) and 4 MiB: the stream stores all of
// a batch or none of it. When the server refuses a batch as larger than its
// limit (err_code 10199), the shipper takes the limit the server states and
// sends the same records again in batches that size. The first message of every batch carries
// Nats-Expected-Last-Subject-Sequence, the stream sequence of the last
// record message the stream acknowledged on the subject, so a batch that
// does not continue exactly where the subject ends is refused. At start, and
// after every failure (disconnection, timeout, a refused batch), the shipper
// reads the last message of the subject and goes on from the record after
// it. So whatever fails, and however often, the subject holds each record
// once and in order; a duplicate of a batch whose acknowledgement was lost
// is refused by the expected sequence (and the message IDs). Checkpoints and
// anchors go one at a time with the same expected-sequence rule.
//
// A record is shipped only once it is durable in the local log
// ([audit.Log.DurableSeq]), so the stream never holds a record the machine
// could lose in a crash and then write again with other contents. The
// backlog is the local log itself: memory holds one batch.
//
// At start the shipper also compares the stream's last record with the
// local log: a stream ahead of the local log, or holding another record at
// that sequence, means the local log was rolled back or replaced; the
// shipper then stops shipping and reports it, and never writes after it.
package replicate
