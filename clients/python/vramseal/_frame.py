"""Frames of the attach protocol (attach/doc.go): a 4-byte big-endian
length, then one strict JSON object. This module encodes requests, parses
and validates daemon frames, and reassembles frames and the descriptors
that travel with them from a byte stream."""

import array
import json
import math
import os
import re
import socket
import struct

from ._errors import ProtocolError

VERSION = 1
MAX_REQUEST_FRAME = 4 << 10
MAX_RESPONSE_FRAME = 16 << 20
MAX_ID = (1 << 53) - 1
_MAX_INT64 = (1 << 63) - 1

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


def _bad(msg):
    return ProtocolError("bad_frame", msg)


# --- strict JSON ----------------------------------------------------------


def _pairs(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise _bad("duplicate member %r" % k)
        if v is None:
            raise _bad("member %r is null" % k)
        obj[k] = v
    return obj


def _no_constant(name):
    raise _bad("%s is not JSON" % name)


_decoder = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_no_constant, strict=True)


def parse_json(body):
    """Parses one frame body (bytes) into a dict, strictly: UTF-8, one
    object, no duplicate members, no nulls, no NaN or Infinity."""
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad("frame is not UTF-8: %s" % e) from None
    try:
        obj = _decoder.decode(text)
    except ProtocolError:
        raise
    except (ValueError, RecursionError) as e:
        raise _bad("frame is not JSON: %s" % e) from None
    if not isinstance(obj, dict):
        raise _bad("frame is a JSON %s, not an object" % type(obj).__name__)
    return obj


# --- schemas --------------------------------------------------------------
#
# A schema is a callable check(value, path) that raises on a bad value.


def _str(v, path):
    if not isinstance(v, str):
        raise _bad("%s: want a string" % path)


def _int(lo=0, hi=_MAX_INT64):
    def check(v, path):
        if type(v) is not int:
            raise _bad("%s: want an integer without fraction or exponent" % path)
        if not lo <= v <= hi:
            raise _bad("%s: %d is out of range [%d, %d]" % (path, v, lo, hi))

    return check


def _prob(v, path):
    if type(v) not in (int, float) or not math.isfinite(v) or not 0 <= v <= 1:
        raise _bad("%s: want a number from 0 to 1" % path)


def _hex64(v, path):
    if not isinstance(v, str) or not _HEX64.match(v):
        raise _bad("%s: want 64 lowercase hexadecimal digits" % path)


def _one_of(*values):
    def check(v, path):
        if v not in values:
            raise _bad("%s: %r is not one of %s" % (path, v, ", ".join(values)))

    return check


def _array(elem):
    def check(v, path):
        if not isinstance(v, list):
            raise _bad("%s: want an array" % path)
        for i, x in enumerate(v):
            elem(x, "%s[%d]" % (path, i))

    return check


def _object(required, optional=None):
    optional = optional or {}

    def check(v, path):
        if not isinstance(v, dict):
            raise _bad("%s: want an object" % path)
        for k in v:
            if k not in required and k not in optional:
                raise _bad("%s: unknown member %r" % (path, k))
        for k, c in required.items():
            if k not in v:
                raise _bad("%s: missing member %r" % (path, k))
            c(v[k], "%s.%s" % (path, k))
        for k, c in optional.items():
            if k in v:
                c(v[k], "%s.%s" % (path, k))

    return check


_uint = _int()
_range = _object({"first_chunk": _uint, "last_chunk": _uint, "offset": _uint, "length": _uint})

# The seal's descriptive members (model_ref, index and count, key and
# worker IDs) are optional here; what a mapping depends on is required.
_seal = _object(
    {
        "shard_id": _str,
        "gpu": _uint,
        "gpu_uuid": _str,
        "size": _uint,
        "chunk_size": _int(1),
        "digest": _hex64,
        "tree_root": _hex64,
        "sealed_at": _str,
    },
    {
        "model_ref": _str,
        "shard_index": _uint,
        "shard_count": _uint,
        "key_id": _str,
        "worker_id": _str,
    },
)
_mapping = _object({"kind": _one_of("memfd", "cuda_vmm_fd"), "size": _uint, "granularity": _int(1)})
_tensor = _object({"name": _str, "dtype": _str, "shape": _array(_uint), "offset": _uint, "length": _uint})

_OPS = {
    "attached": (
        {"shard_id": _str, "attachment": _str, "correlation_id": _str, "seal": _seal, "mapping": _mapping},
        {"tensors": _array(_tensor)},
    ),
    "verified": (
        {
            "shard_id": _str,
            "mode": _one_of("sampled", "full"),
            "chunks_checked": _uint,
            "chunks": _uint,
            "detection_probability": _prob,
            "duration_us": _uint,
            "correlation_id": _str,
        },
        {},
    ),
    "detached": ({"shard_id": _str}, {}),
    "pong": ({}, {}),
    "error": (
        {"code": _str, "message": _str},
        {"shard_id": _str, "correlation_id": _str, "changed_chunks": _array(_range)},
    ),
    "stop": (
        {"shard_id": _str, "reason": _one_of("integrity", "policy", "revoked", "shutdown"), "message": _str},
        {"changed_chunks": _array(_range)},
    ),
}
_CHECKS = {
    op: _object(dict({"v": _int(), "op": _str, "id": _int(0, MAX_ID)}, **req), opt) for op, (req, opt) in _OPS.items()
}


def validate(frame):
    """Checks a parsed daemon frame against the protocol: version 1, a
    known op, exactly its members with their types. Raises ProtocolError."""
    v = frame.get("v")
    if v != VERSION or type(v) is not int:
        raise ProtocolError("unsupported_version", "frame has protocol version %r, want %d" % (v, VERSION))
    op = frame.get("op")
    check = _CHECKS.get(op) if isinstance(op, str) else None
    if check is None:
        raise _bad("unknown op %r" % (op,))
    check(frame, op)
    if op == "stop" and frame["id"] != 0:
        raise _bad("stop: id %d, want 0" % frame["id"])
    if op not in ("stop", "error") and frame["id"] == 0:
        raise _bad("%s: id 0 on an answer" % op)
    return frame


def decode(body):
    """Parses and validates one daemon frame body."""
    return validate(parse_json(body))


def encode(obj, limit=MAX_REQUEST_FRAME):
    """Returns the frame (length prefix and JSON) for the request ``obj``."""
    body = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    if not 1 <= len(body) <= limit:
        raise ValueError("vramseal: request frame of %d bytes exceeds %d" % (len(body), limit))
    return struct.pack(">I", len(body)) + body


# --- stream reassembly ----------------------------------------------------


class Reader:
    """Reassembles daemon frames from a stream socket, and the descriptors
    that SCM_RIGHTS messages carry.

    Every read is a recvmsg with room for one descriptor; descriptors are
    queued in the order they arrive, and each attached frame takes the
    oldest (the kernel may deliver it with a read that also returns the end
    of the frame before). A descriptor still queued when no partial frame
    is buffered belongs to no attached frame: it is closed. Not thread-safe:
    one thread reads.
    """

    def __init__(self, sock, limit=MAX_RESPONSE_FRAME, bufsize=1 << 16):
        self._sock = sock
        self._limit = limit
        self._bufsize = bufsize
        self._buf = bytearray()
        self._fds = []
        self._ready = []

    def _recv(self):
        data, anc, flags, _ = self._sock.recvmsg(self._bufsize, socket.CMSG_SPACE(4))
        for level, typ, cdata in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(cdata[: len(cdata) - len(cdata) % fds.itemsize])
                self._fds.extend(fds)
                if len(fds) > 1:
                    # CMSG_SPACE(4) is padded, so the kernel can pass two.
                    raise _bad("%d descriptors in one message, want one" % len(fds))
        if flags & socket.MSG_CTRUNC:
            raise _bad("control message truncated: more than one descriptor sent at once")
        return data

    def _split(self):
        buf = self._buf
        while len(buf) >= 4:
            (n,) = struct.unpack_from(">I", buf)
            if not 1 <= n <= self._limit:
                raise _bad("frame length %d is outside [1, %d]" % (n, self._limit))
            if len(buf) < 4 + n:
                break
            body = bytes(buf[4 : 4 + n])
            del buf[: 4 + n]
            frame = decode(body)
            fd = None
            if frame["op"] == "attached":
                if not self._fds:
                    raise _bad("attached frame without a descriptor")
                fd = self._fds.pop(0)
            self._ready.append((frame, fd))
        if not buf:
            self._close_strays()

    def _close_strays(self):
        while self._fds:
            os.close(self._fds.pop(0))

    def next(self):
        """Returns the next (frame, fd) pair; fd is None unless the frame is
        attached, and the caller owns it. Raises EOFError at the end of the
        stream (ProtocolError if it ends inside a frame), ProtocolError on a
        bad frame, OSError from the socket."""
        while not self._ready:
            data = self._recv()
            if not data:
                if self._buf:
                    raise _bad("connection closed inside a frame (%d bytes buffered)" % len(self._buf))
                self._close_strays()
                raise EOFError
            self._buf += data
            self._split()
        return self._ready.pop(0)

    def close(self):
        """Closes every descriptor not handed out yet."""
        self._close_strays()
        for _, fd in self._ready:
            if fd is not None:
                os.close(fd)
        self._ready.clear()
