"""Helpers for the client's unit tests: the package on sys.path, memfds
with known bytes, and a scripted protocol peer over a socketpair."""

import array
import fcntl
import json
import os
import socket
import struct
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import vramseal  # noqa: E402,F401

F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_FUTURE_WRITE = 0x1, 0x2, 0x4, 0x10
F_ADD_SEALS = 1024 + 9

HEX = "ab" * 32


def sealed_memfd(data, size=None):
    """Returns a read-only descriptor of a sealed memfd holding data (padded
    with zeros to size), as the daemon sends it."""
    size = len(data) if size is None else size
    fd = os.memfd_create("vramseal-test", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, size)
        os.pwrite(fd, data, 0)
        fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL)
        return os.open("/proc/self/fd/%d" % fd, os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(fd)


def open_fds():
    """The set of this process's open descriptor numbers."""
    return set(int(x) for x in os.listdir("/proc/self/fd"))


def frame(obj):
    """Encodes a daemon frame."""
    body = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
    return struct.pack(">I", len(body)) + body


def seal(shard_id="s0", size=4096, gpu_uuid="GPU-00000000-0000-0000-0000-000000000000"):
    return {
        "shard_id": shard_id, "model_ref": "org/model", "shard_index": 0, "shard_count": 1, "gpu": 0,
        "gpu_uuid": gpu_uuid, "size": size, "chunk_size": 1024, "digest": HEX, "tree_root": HEX,
        "sealed_at": "2025-01-01T00:00:00Z", "key_id": "k1", "worker_id": "w1",
    }


def attached(rid, shard_id="s0", size=4096, tensors=None, kind="memfd", granularity=4096, gpu_uuid=None):
    f = {
        "v": 1, "op": "attached", "id": rid, "shard_id": shard_id, "attachment": "att-" + shard_id,
        "correlation_id": "c-%d" % rid, "seal": seal(shard_id, size, gpu_uuid or "GPU-00000000-0000-0000-0000-000000000000"),
        "mapping": {"kind": kind, "size": -(-size // granularity) * granularity, "granularity": granularity},
    }
    if tensors is not None:
        f["tensors"] = tensors
    return f


def verified(rid, shard_id="s0", mode="sampled"):
    return {"v": 1, "op": "verified", "id": rid, "shard_id": shard_id, "mode": mode, "chunks_checked": 4,
            "chunks": 4, "detection_probability": 1, "duration_us": 12, "correlation_id": "c-%d" % rid}


def error(rid, code, message="no", **extra):
    return dict({"v": 1, "op": "error", "id": rid, "code": code, "message": message}, **extra)


def stop(shard_id, reason, **extra):
    return dict({"v": 1, "op": "stop", "id": 0, "shard_id": shard_id, "reason": reason, "message": "stopped"}, **extra)


def send(sock, data, fds=()):
    """Sends bytes, with descriptors in one SCM_RIGHTS message if any."""
    if fds:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        n = sock.sendmsg([data], anc)
        if n < len(data):
            sock.sendall(data[n:])
    else:
        sock.sendall(data)


def read_request(sock):
    """Reads one request frame; returns the dict, or None at EOF."""
    head = b""
    while len(head) < 4:
        b = sock.recv(4 - len(head))
        if not b:
            return None
        head += b
    (n,) = struct.unpack(">I", head)
    body = b""
    while len(body) < n:
        b = sock.recv(n - len(body))
        if not b:
            return None
        body += b
    return json.loads(body)


class Peer:
    """A scripted daemon on one end of a socketpair: handler(peer, request)
    answers each request (by calling send/answer); it runs on a thread.
    ``requests`` records what arrived; ``eof`` is set when the client
    closes its end."""

    def __init__(self, handler):
        self.client_sock, self.sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.handler = handler
        self.requests = []
        self.eof = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while True:
                req = read_request(self.sock)
                if req is None:
                    break
                self.requests.append(req)
                self.handler(self, req)
        except OSError:
            pass
        finally:
            self.eof.set()

    def answer(self, obj, fds=()):
        send(self.sock, frame(obj), fds)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if threading.current_thread() is not self.thread:
            self.thread.join(5)
