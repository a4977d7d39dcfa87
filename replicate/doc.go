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
// messages rather than dropping old ones) and a duplicate window of two
// minutes. A Shipper refuses a stream of that name that lacks any of these.
// Each log writes three subjects:
//
//	vramseal.audit.<log id>.<node>.records       messages of one or more records
//	vramseal.audit.<log id>.<node>.checkpoints   one message per signed checkpoint
//	vramseal.audit.<log id>.<node>.epochs        one message per epoch anchor (format version 2)
//
// where <log id> is the log's 16 hex digit ID and <node> the node name with
// every byte outside [A-Za-z0-9_-] replaced by "_" ([Token]).
//
// A record message's data is the exact lines of one or more consecutive
// records, each but the last followed by its newline (no empty line, no
// final newline: a message of one record is that record's line without
// its newline). Its header Nats-Msg-Id is "<log id>-<first seq>" for one
// record and "<log id>-<first seq>-<last seq>" for more. A message holds
// at most [Options.MaxMessageBytes] of data (1 MiB by default, NATS's
// default max_payload), less where the server's max_payload or the
// stream's max_msg_size is smaller; a record larger than that is not
// shipped, and the shipper reports it. A checkpoint message's data is
// the signed note, verbatim; its Nats-Msg-Id is "<log id>-checkpoint-<tree
// size>". An anchor message's data is the anchor's line of the epochs file
// without its newline; its Nats-Msg-Id is "<log id>-epoch-<epoch>".
// Records of a subject are in order, each once, from seq 1, and anchors
// from epoch 1; an anchor is published before any record of its epoch, and
// a checkpoint only after the record it covers.
//
// # No gap, no duplicate
//
// Every message carries Nats-Expected-Last-Subject-Sequence, the stream
// sequence of the last message the stream acknowledged on its subject, so
// a message that does not continue exactly where the subject ends is
// refused, and the shipper sends a message only once the one before was
// acknowledged. At start, and after every failure (disconnection, timeout,
// a refusal), the shipper reads the last message of the subject and goes
// on from the record after its last. So whatever fails, and however often,
// the subject holds each record once and in order; a message sent again
// after its acknowledgement was lost is refused by the expected sequence,
// or answered as a duplicate of the same records by its message ID.
//
// A record is shipped only once it is durable in the local log
// ([audit.Log.DurableSeq]), so the stream never holds a record the machine
// could lose in a crash and then write again with other contents. The
// backlog is the local log itself: memory holds one message.
//
// At start the shipper also compares the stream's last record with the
// local log: a stream ahead of the local log, or holding another record at
// that sequence, means the local log was rolled back or replaced; the
// shipper then stops shipping and reports it, and never writes after it.
package replicate
