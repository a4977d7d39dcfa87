import json
import os
import socket
import struct
import threading
import unittest

import _util
from _util import attached, frame, open_fds, send, sealed_memfd, verified

import vramseal
from vramseal import _frame


class DecodeTest(unittest.TestCase):
    def test_valid_frames(self):
        for f in [
            attached(1),
            attached(2, tensors=[{"name": "w", "dtype": "F32", "shape": [2, 3], "offset": 8, "length": 24}]),
            verified(3),
            {"v": 1, "op": "pong", "id": 4},
            {"v": 1, "op": "detached", "id": 5, "shard_id": "s"},
            _util.error(0, "permission_denied"),
            _util.error(6, "integrity_failed", shard_id="s", changed_chunks=[{"first_chunk": 1, "last_chunk": 2, "offset": 1024, "length": 2048}]),
            _util.stop("s", "revoked"),
        ]:
            with self.subTest(op=f["op"]):
                self.assertEqual(_frame.decode(json.dumps(f).encode()), f)

    def test_whitespace_allowed(self):
        self.assertEqual(_frame.decode(b' \n{ "v" : 1 , "op":"pong", "id":1 }\t'), {"v": 1, "op": "pong", "id": 1})

    def test_strictness(self):
        pong = '{"v":1,"op":"pong","id":1'
        for name, body in [
            ("duplicate member", pong + ',"id":2}'),
            ("duplicate nested", json.dumps(attached(1))[:-1].replace('"size": 4096,', '"size": 4096, "size": 4096,', 1) + "}"),
            ("unknown member", pong + ',"extra":1}'),
            ("unknown nested member", json.dumps(dict(attached(1), seal=dict(attached(1)["seal"], x=1)))),
            ("missing member", json.dumps({k: v for k, v in verified(1).items() if k != "chunks"})),
            ("missing nested member", json.dumps(dict(attached(1), mapping={"kind": "memfd", "size": 4096}))),
            ("null", pong + ',"x":null}'),
            ("null in seal", json.dumps(dict(attached(1), seal=dict(attached(1)["seal"], model_ref=None)))),
            ("fraction", '{"v":1,"op":"pong","id":1.0}'),
            ("exponent", '{"v":1,"op":"pong","id":1e0}'),
            ("bool as integer", '{"v":1,"op":"pong","id":true}'),
            ("negative size", json.dumps(dict(attached(1), mapping={"kind": "memfd", "size": -1, "granularity": 1}))),
            ("NaN", json.dumps(dict(verified(1), detection_probability=float("nan")))),
            ("probability over 1", json.dumps(dict(verified(1), detection_probability=1.5))),
            ("id too large", '{"v":1,"op":"pong","id":%d}' % (1 << 53)),
            ("id 0 on an answer", '{"v":1,"op":"pong","id":0}'),
            ("stop with an id", json.dumps(dict(_util.stop("s", "integrity"), id=3))),
            ("unknown op", '{"v":1,"op":"hello","id":1}'),
            ("unknown reason", json.dumps(_util.stop("s", "bored"))),
            ("unknown kind", json.dumps(dict(attached(1), mapping={"kind": "dmabuf", "size": 1, "granularity": 1}))),
            ("bad digest", json.dumps(dict(attached(1), seal=dict(attached(1)["seal"], digest="AB" * 32)))),
            ("array", "[1]"),
            ("string", '"pong"'),
            ("two objects", pong + "}" + pong + "}"),
            ("truncated JSON", pong),
            ("not UTF-8", b'{"v":1,"op":"pong","id":1,"\xff":1}'),
            ("BOM", b"\xef\xbb\xbf" + (pong + "}").encode()),
            ("tensor shape not integers", json.dumps(dict(attached(1), tensors=[{"name": "w", "dtype": "F32", "shape": [1.5], "offset": 0, "length": 4}]))),
        ]:
            with self.subTest(name):
                with self.assertRaises(vramseal.ProtocolError) as cm:
                    _frame.decode(body if isinstance(body, bytes) else body.encode())
                self.assertEqual(cm.exception.code, "bad_frame")

    def test_version(self):
        with self.assertRaises(vramseal.ProtocolError) as cm:
            _frame.decode(b'{"v":2,"op":"pong","id":1}')
        self.assertEqual(cm.exception.code, "unsupported_version")

    def test_encode(self):
        b = _frame.encode({"v": 1, "op": "ping", "id": 7})
        self.assertEqual(struct.unpack(">I", b[:4])[0], len(b) - 4)
        self.assertEqual(json.loads(b[4:]), {"v": 1, "op": "ping", "id": 7})
        with self.assertRaises(ValueError):
            _frame.encode({"v": 1, "op": "attach", "id": 1, "shard_id": "x" * 5000})


class ReaderTest(unittest.TestCase):
    def setUp(self):
        self.a, self.b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.reader = _frame.Reader(self.b)
        self.fds_before = open_fds()

    def tearDown(self):
        self.reader.close()
        self.a.close()
        self.b.close()

    def assertNoLeak(self, *expected_open):
        extra = open_fds() - self.fds_before - set(expected_open)
        # socketpair/listdir transient fds are in fds_before; only leaks remain
        self.assertFalse(extra, "descriptors left open: %s" % extra)

    def content(self, fd):
        return os.pread(fd, 8, 0)

    def test_fd_with_frame(self):
        fd = sealed_memfd(b"one-----")
        send(self.a, frame(attached(1)), [fd])
        os.close(fd)
        f, got = self.reader.next()
        self.assertEqual(f["op"], "attached")
        self.assertEqual(self.content(got), b"one-----")
        os.close(got)
        self.assertNoLeak()

    def test_fd_arrives_with_end_of_previous_frame(self):
        # The pong and the attached frame are both queued before the read,
        # so one recvmsg returns the pong, the start of attached and the fd.
        fd = sealed_memfd(b"two-----")
        send(self.a, frame({"v": 1, "op": "pong", "id": 1}))
        send(self.a, frame(attached(2)), [fd])
        os.close(fd)
        f, got = self.reader.next()
        self.assertEqual((f["op"], got), ("pong", None))
        f, got = self.reader.next()
        self.assertEqual(f["op"], "attached")
        self.assertEqual(self.content(got), b"two-----")
        os.close(got)
        self.assertNoLeak()

    def test_fd_in_the_middle_of_a_frame(self):
        data = frame(attached(1))
        fd = sealed_memfd(b"mid-----")
        send(self.a, data[:2])
        send(self.a, data[2:30])
        send(self.a, data[30:60], [fd])
        os.close(fd)
        send(self.a, data[60:])
        f, got = self.reader.next()
        self.assertEqual(self.content(got), b"mid-----")
        os.close(got)

    def test_oldest_fd_first(self):
        fds = [sealed_memfd(b"first---"), sealed_memfd(b"second--")]
        send(self.a, frame(attached(1, "s1")), [fds[0]])
        send(self.a, frame(attached(2, "s2")), [fds[1]])
        for fd in fds:
            os.close(fd)
        got = []
        for _ in range(2):
            f, fd = self.reader.next()
            got.append((f["shard_id"], self.content(fd)))
            os.close(fd)
        self.assertEqual(got, [("s1", b"first---"), ("s2", b"second--")])

    def test_stray_fd_closed(self):
        fd = sealed_memfd(b"stray---")
        send(self.a, frame({"v": 1, "op": "pong", "id": 1}), [fd])
        os.close(fd)
        f, got = self.reader.next()
        self.assertEqual((f["op"], got), ("pong", None))
        self.assertNoLeak()

    def test_attached_without_fd(self):
        send(self.a, frame(attached(1)))
        with self.assertRaises(vramseal.ProtocolError):
            self.reader.next()

    def test_two_fds_at_once(self):
        fds = [sealed_memfd(b"a"), sealed_memfd(b"b")]
        send(self.a, frame(attached(1)), fds)
        for fd in fds:
            os.close(fd)
        with self.assertRaises(vramseal.ProtocolError):
            self.reader.next()
        self.reader.close()
        self.assertNoLeak()

    def test_oversized(self):
        self.a.sendall(struct.pack(">I", (16 << 20) + 1))
        with self.assertRaises(vramseal.ProtocolError):
            self.reader.next()

    def test_zero_length(self):
        self.a.sendall(struct.pack(">I", 0))
        with self.assertRaises(vramseal.ProtocolError):
            self.reader.next()

    def test_largest_frame_accepted(self):
        f = {"v": 1, "op": "error", "id": 1, "code": "internal", "message": ""}
        body = json.dumps(f).encode()
        body = body[:-1] + b" " * ((16 << 20) - len(body)) + b"}"
        t = threading.Thread(target=self.a.sendall, args=(frame(body),))
        t.start()
        got, _ = self.reader.next()
        t.join()
        self.assertEqual(got, f)

    def test_truncated(self):
        data = frame({"v": 1, "op": "pong", "id": 1})
        for cut in range(1, len(data)):
            with self.subTest(cut=cut):
                a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                a.sendall(data[:cut])
                a.close()
                r = _frame.Reader(b)
                with self.assertRaises(vramseal.ProtocolError):
                    r.next()
                b.close()

    def test_eof(self):
        self.a.close()
        with self.assertRaises(EOFError):
            self.reader.next()


if __name__ == "__main__":
    unittest.main()
