// Package attach is vramseal's attach protocol: how an inference process
// (a PyTorch, vLLM or SGLang worker, a llama.cpp host) on the same machine
// maps a sealed shard's memory read-only and without a copy, asks the
// execute gate before it runs, and learns at once when the worker stops.
// This comment is the protocol's specification, complete enough for a
// second implementation (clients/python is one). The package holds the
// frame codec, strict parsers and a Go client; the daemon side lives in
// internal/server.
//
// # Transport
//
// The daemon listens on a Unix domain stream socket (SOCK_STREAM),
// DATA-DIR/attach.sock by default, mode 0660. On accept it reads the peer's
// credentials (SO_PEERCRED: pid, uid, gid) and admits the connection only
// when the uid is one of the allowed uids or the gid one of the allowed
// gids (by default the daemon's own uid). A refused peer gets one error
// frame with code permission_denied, then the connection closes. The daemon
// bounds its connections; one over the bound gets an error frame with code
// too_many_connections and is closed.
//
// # Frames
//
// Both directions carry frames: a 4-byte unsigned big-endian length L,
// then L bytes holding exactly one JSON object (RFC 8259) in UTF-8.
// Requests (client to daemon) have 1 <= L <= [MaxRequestFrame]; responses
// and pushes (daemon to client) have 1 <= L <= [MaxResponseFrame]. Frames
// are parsed strictly: the object may have no duplicate members, no
// members other than those listed below for its op, no null values (a
// member that does not apply is left out), and every integer is written
// without fraction or exponent. Whitespace around and inside the object is
// allowed. A request that breaks these rules, lacks a member its op
// requires, has a member of the wrong JSON type, or has a missing or
// out-of-range "id", is answered with an error frame (code bad_frame, id
// 0) and the connection is closed, since the stream can no longer be
// trusted. The version is checked right after the syntax: a frame with an
// integer "v" other than 1 is unsupported_version whatever its other
// members are. Once a request frame's first byte has arrived, the
// rest must arrive within 10 seconds.
//
// Every frame has the members:
//
//	"v"   integer, the protocol version: 1. A request of another version
//	      gets an error frame with code unsupported_version (and "v": 1),
//	      then the connection closes.
//	"op"  string, the operation (below).
//	"id"  integer, 1 <= id <= 2^53-1, chosen by the client for each request
//	      and echoed in its answer. Pushes and errors not tied to a request
//	      carry id 0.
//
// # Requests
//
// A connection's requests are answered one at a time, in the order they
// were sent; pushes may arrive between answers.
//
// attach maps a shard. Members: "shard_id" (string, a vramseal shard ID),
// optionally "correlation_id" (string of 1 to 128 characters from
// [A-Za-z0-9.:/-]; the daemon makes one when it is absent). The answer is
// an attached frame with one file descriptor (below). A connection may
// attach several shards, each once (a second attach of the same shard is
// an error with code already_attached).
//
// verify runs the execute gate on an attached shard, with the same result
// and the same audit records as POST /v1/shards/ID/verify. Members:
// "shard_id", optionally "mode" ("sampled", the default, or "full"),
// "samples" (1 to 1048576, sampled mode only; default 16) and
// "correlation_id". The answer is a verified frame, or an error frame.
//
// detach ends this connection's attachment to a shard. Members:
// "shard_id", optionally "correlation_id". The answer is a detached frame.
// Closing the connection detaches every shard it attached.
//
// ping has no other members; the answer is a pong frame.
//
// # Answers
//
// attached: "shard_id"; "attachment" (string of 1 to 128 characters from
// [A-Za-z0-9_.:/-], the lease ID the daemon's audit records and listings
// use); "correlation_id"; "seal", an object with
// the shard's seal: "shard_id", "model_ref", "shard_index", "shard_count",
// "gpu" (vramseal's GPU index), "gpu_uuid", "size" (bytes), "chunk_size",
// "digest" (flat SHA-256) and "tree_root" (the chunk Merkle tree's root,
// RFC 6962 hashing) as 64 lowercase hexadecimal digits, "sealed_at" (RFC
// 3339, UTC), "key_id", "worker_id"; "mapping", an object: "kind" ("memfd"
// or "cuda_vmm_fd"), "size" (the bytes to map: the shard size rounded up to
// the granularity), "granularity" (bytes); and, when the shard is a
// safetensors file, "tensors": an array of objects "name", "dtype" (the
// safetensors dtype, for example "BF16"), "shape" (array of integers),
// "offset" and "length" (the tensor's bytes, from the start of the
// mapping, which is the start of the file).
//
// The attached frame's bytes are sent with exactly one descriptor in an
// SCM_RIGHTS control message. A client reads with recvmsg and room for one
// descriptor on every read, and queues the descriptors it receives in
// order; each attached frame takes the oldest queued descriptor (the
// kernel may deliver it with a read that also returns the end of the frame
// before). The daemon never sends descriptors with any other frame, and
// never accepts any: a request that arrives with a descriptor is a
// bad_frame (the daemon closes the descriptor).
//
// How to map the descriptor depends on mapping.kind:
//
//	memfd        the simulated device: mmap(NULL, size, PROT_READ,
//	             MAP_SHARED, fd, 0). The memfd is sealed (F_SEAL_SEAL,
//	             F_SEAL_SHRINK, F_SEAL_GROW and F_SEAL_FUTURE_WRITE) and the
//	             descriptor is opened read-only, so a writable mapping is
//	             refused by the kernel.
//	cuda_vmm_fd  a CUDA virtual memory management allocation exported with
//	             CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR:
//	             cuMemImportFromShareableHandle, cuMemAddressReserve(size,
//	             granularity), cuMemMap(ptr, size, 0, handle, 0), and
//	             cuMemSetAccess with CU_MEM_ACCESS_FLAGS_PROT_READ on the
//	             device whose UUID is seal.gpu_uuid. Compliant clients
//	             never ask for write access; the gate and the background
//	             scrub catch any write that happens anyway.
//
// verified: "shard_id", "mode" (what was done: a sampled verify of a
// shard with no more chunks than samples checks them all and says
// "full"), "chunks_checked", "chunks",
// "detection_probability" (a number from 0 to 1), "duration_us" (integer
// microseconds), "correlation_id".
//
// detached: "shard_id". pong: no other members.
//
// error: "code" (below), "message" (a human sentence, printable, at most
// 1024 bytes; the daemon writes other characters as "?"), and where they
// apply "shard_id", "correlation_id" and, for
// integrity_failed, "changed_chunks" (as in stop).
//
// # Pushes
//
// stop (id 0) tells a connection to stop serving: "shard_id" (the shard
// that failed or was revoked; left out when no shard applies, as for
// shutdown), "reason" ("integrity": a verify or scrub
// found changed chunks, and the worker is stopped; "policy": a VRAM-only
// policy violation stopped the worker; "revoked": an operator released
// the shard with --force, and this connection's lease of it has ended;
// "shutdown": the daemon is stopping), "message", and for integrity
// "changed_chunks": an array of objects "first_chunk", "last_chunk",
// "offset", "length" (byte ranges in the shard). A stop for integrity or
// policy goes to every attached connection at once, whatever shard it
// holds: while the worker is stopped every gate fails; so does a stop for
// shutdown, after which the daemon closes the connection. After a stop the
// client must not use the memory of a revoked shard, and every verify
// fails until an operator resets the worker.
//
// # Error codes
//
// A client accepts codes it does not know (1 to 64 characters from
// [a-z_]) as internal errors, so that a daemon may add codes.
//
//	bad_frame             malformed, oversized or truncated frame, or a
//	                      descriptor from the client (connection closed)
//	unsupported_version   "v" is not 1 (connection closed)
//	unknown_op            "op" names no operation
//	invalid_input         a member's value is out of range (bad shard ID,
//	                      samples, mode, correlation ID)
//	permission_denied     the peer's uid and gid are not allowed
//	                      (connection closed)
//	too_many_connections  the daemon's connection bound is reached
//	                      (connection closed)
//	too_many_attachments  the connection's attachment bound is reached
//	not_found             no such shard
//	already_attached      the shard is attached on this connection
//	not_attached          verify or detach of a shard this connection has
//	                      not attached
//	worker_stopped        the worker is stopped; nothing attaches or passes
//	                      the gate until an operator resets it
//	integrity_failed      the verify found changed chunks (the worker stops)
//	audit_unavailable     the audit log cannot record the operation
//	                      (fail-closed)
//	shutting_down         the daemon is stopping
//	internal              anything else
package attach
