import os
import threading
import unittest

import _util
from _util import Peer, attached, error, sealed_memfd, stop, verified

import vramseal

try:
    import numpy
except ImportError:  # pragma: no cover
    numpy = None

DATA = bytes(range(256)) * 4 + b"tail"
TENSORS = [{"name": "w", "dtype": "U8", "shape": [2, 8], "offset": 16, "length": 16}]


def daemon(overrides=None):
    """A handler that behaves like the daemon for attach/verify/detach/ping;
    overrides maps an op to a function(peer, request) that answers instead."""
    overrides = overrides or {}

    def handle(peer, req):
        op, rid = req["op"], req["id"]
        if op in overrides:
            return overrides[op](peer, req)
        if op == "attach":
            fd = sealed_memfd(DATA, 4096)
            peer.answer(attached(rid, req["shard_id"], len(DATA), TENSORS), [fd])
            os.close(fd)
        elif op == "verify":
            peer.answer(verified(rid, req["shard_id"], req.get("mode", "sampled")))
        elif op == "detach":
            peer.answer({"v": 1, "op": "detached", "id": rid, "shard_id": req["shard_id"]})
        elif op == "ping":
            peer.answer({"v": 1, "op": "pong", "id": rid})

    return handle


class ClientTest(unittest.TestCase):
    def start(self, overrides=None):
        self.peer = Peer(daemon(overrides))
        self.client = vramseal.Client(self.peer.client_sock, timeout=10)
        self.addCleanup(self.peer.close)
        self.addCleanup(self.client.close)
        return self.client

    def test_attach_verify_detach(self):
        c = self.start()
        self.assertGreaterEqual(c.ping(), 0)
        shard = c.attach("s0", correlation_id="job-1")
        self.assertEqual(shard.seal["size"], len(DATA))
        self.assertEqual(shard.seal["digest"], _util.HEX)
        self.assertEqual(shard.attachment, "att-s0")
        self.assertEqual(shard.kind, "memfd")
        self.assertEqual(shard.tensors, TENSORS)
        self.assertTrue(shard.memory.readonly)
        self.assertEqual(bytes(shard.memory[: len(DATA)]), DATA)
        if numpy is not None:
            numpy.testing.assert_array_equal(shard.numpy()["w"], numpy.frombuffer(DATA[16:32], "u1").reshape(2, 8))
        self.assertEqual(shard.verify()["mode"], "sampled")
        self.assertEqual(shard.verify("full")["mode"], "full")
        shard.verify(samples=64)
        shard.close()
        reqs = self.peer.requests
        self.assertEqual([r["op"] for r in reqs], ["ping", "attach", "verify", "verify", "verify", "detach"])
        self.assertEqual(reqs[1], {"v": 1, "op": "attach", "id": 2, "shard_id": "s0", "correlation_id": "job-1"})
        self.assertNotIn("samples", reqs[2])
        self.assertEqual(reqs[3]["mode"], "full")
        self.assertEqual(reqs[4]["samples"], 64)
        self.assertEqual(len({r["id"] for r in reqs}), len(reqs))

    def test_no_descriptor_leak(self):
        c = self.start()
        before = _util.open_fds()
        for i in range(5):
            c.attach("s%d" % i).close()
        self.assertLessEqual(_util.open_fds() - before, set())

    def test_integrity_failed(self):
        chunks = [{"first_chunk": 2, "last_chunk": 3, "offset": 2048, "length": 2048}]
        c = self.start({"verify": lambda p, r: p.answer(error(r["id"], "integrity_failed", "changed", shard_id="s0", changed_chunks=chunks))})
        shard = c.attach("s0")
        with self.assertRaises(vramseal.IntegrityError) as cm:
            shard.verify()
        e = cm.exception
        self.assertEqual((e.code, e.message, e.shard_id, e.changed_chunks), ("integrity_failed", "changed", "s0", chunks))
        self.assertIsInstance(e, vramseal.Error)

    def test_error_codes(self):
        for code, cls in [("not_found", vramseal.NotFound), ("worker_stopped", vramseal.StoppedError),
                          ("invalid_input", vramseal.Error), ("already_attached", vramseal.Error),
                          ("audit_unavailable", vramseal.Error)]:
            with self.subTest(code):
                peer = Peer(daemon({"attach": lambda p, r, code=code: p.answer(error(r["id"], code, "because"))}))
                with vramseal.Client(peer.client_sock) as c:
                    with self.assertRaises(cls) as cm:
                        c.attach("s0")
                    self.assertEqual(cm.exception.code, code)
                    c.ping()  # the connection survives an answered error
                peer.close()

    def test_stop_integrity(self):
        started = threading.Event()

        def verify(peer, req):
            peer.answer(stop("s1", "integrity", changed_chunks=[{"first_chunk": 0, "last_chunk": 0, "offset": 0, "length": 1024}]))
            peer.answer(error(req["id"], "worker_stopped", "stopped"))
            started.set()

        c = self.start({"verify": verify})
        a, b = c.attach("s0"), c.attach("s1")
        self.assertIsNone(a.stopped)
        self.assertIsNone(a.wait_stopped(0.01))
        with self.assertRaises(vramseal.StoppedError):
            b.verify()
        push = a.wait_stopped(5)
        self.assertEqual((push["reason"], push["shard_id"]), ("integrity", "s1"))
        self.assertIs(b.stopped, push)
        n = len(self.peer.requests)
        for s in (a, b):
            with self.assertRaises(vramseal.StoppedError) as cm:
                s.verify()
            self.assertNotIsInstance(cm.exception, vramseal.RevokedError)
            self.assertEqual(cm.exception.reason, "integrity")
            self.assertEqual(len(cm.exception.changed_chunks), 1)
        self.assertEqual(len(self.peer.requests), n, "a verify after a stop must not reach the daemon")

    def test_stop_revoked(self):
        def ping(peer, req):
            peer.answer(stop("s1", "revoked"))
            peer.answer({"v": 1, "op": "pong", "id": req["id"]})

        c = self.start({"ping": ping})
        a, b = c.attach("s0"), c.attach("s1")
        c.ping()
        self.assertEqual(b.wait_stopped(5)["reason"], "revoked")
        with self.assertRaises(vramseal.RevokedError):
            b.verify()
        self.assertIsNone(a.stopped)
        a.verify()  # a revoke ends one lease only
        b.close()  # no detach for a revoked lease
        self.assertNotIn("detach", [r["op"] for r in self.peer.requests if r.get("shard_id") == "s1"])

    def test_wait_stopped_from_another_thread(self):
        c = self.start()
        s = c.attach("s0")
        got = []
        t = threading.Thread(target=lambda: got.append(s.wait_stopped(10)))
        t.start()
        self.peer.answer(stop("s0", "shutdown"))
        t.join(10)
        self.assertEqual(got[0]["reason"], "shutdown")

    def test_connection_error_frame(self):
        peer = Peer(lambda p, r: None)
        peer.answer(error(0, "permission_denied", "uid 65534 is not allowed"))
        c = vramseal.Client(peer.client_sock, timeout=10)
        with self.assertRaises(vramseal.PermissionDenied) as cm:
            c.attach("s0")
        self.assertIn("65534", cm.exception.message)
        with self.assertRaises(vramseal.PermissionDenied):
            c.ping()
        c.close()
        peer.close()

    def test_daemon_closes(self):
        c = self.start({"verify": lambda p, r: p.close()})
        s = c.attach("s0")
        with self.assertRaises(vramseal.ClosedError):
            s.verify()
        with self.assertRaises(vramseal.ClosedError):
            s.wait_stopped(1)
        s.close()  # the mapping stays usable and closes cleanly
        self.assertIsNotNone(c.closed)

    def test_bad_frame_ends_connection(self):
        for name, answer in [
            ("unknown member", lambda p, r: p.answer({"v": 1, "op": "pong", "id": r["id"], "x": 1})),
            ("wrong id", lambda p, r: p.answer({"v": 1, "op": "pong", "id": r["id"] + 100})),
            ("wrong op", lambda p, r: p.answer({"v": 1, "op": "detached", "id": r["id"], "shard_id": "s"})),
            ("version", lambda p, r: p.answer({"v": 2, "op": "pong", "id": r["id"]})),
        ]:
            with self.subTest(name):
                peer = Peer(daemon({"ping": answer}))
                c = vramseal.Client(peer.client_sock, timeout=10)
                with self.assertRaises(vramseal.ProtocolError):
                    c.ping()
                with self.assertRaises(vramseal.ProtocolError):
                    c.ping()
                c.close()
                self.assertTrue(peer.eof.wait(5))
                peer.close()

    def test_timeout(self):
        c = self.start({"ping": lambda p, r: None})
        c.timeout = 0.05
        with self.assertRaises(vramseal.Error) as cm:
            c.ping()
        self.assertEqual(cm.exception.code, "timeout")
        self.assertTrue(self.peer.eof.wait(5), "a timed-out connection is closed")

    def test_concurrent_requests(self):
        c = self.start()
        shards = [c.attach("s%d" % i) for i in range(4)]
        errs = []

        def work(s):
            try:
                for _ in range(50):
                    self.assertEqual(s.verify()["shard_id"], s.shard_id)
            except Exception as e:  # pragma: no cover
                errs.append(e)

        ts = [threading.Thread(target=work, args=(s,)) for s in shards]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        self.assertEqual(errs, [])

    def test_mapping_failure_detaches(self):
        def attach(peer, req):
            fd = sealed_memfd(DATA, 4096)
            f = attached(req["id"], req["shard_id"], len(DATA), TENSORS)
            f["mapping"]["size"] = 16  # smaller than the shard
            peer.answer(f, [fd])
            os.close(fd)

        c = self.start({"attach": attach})
        with self.assertRaises(vramseal.ProtocolError):
            c.attach("s0")
        self.assertEqual([r["op"] for r in self.peer.requests], ["attach", "detach"])

    def test_close_detaches_everything(self):
        c = self.start()
        c.attach("s0")
        c.close()
        self.assertTrue(self.peer.eof.wait(5))

    def test_attach_function(self):
        import socket
        import tempfile

        d = tempfile.mkdtemp()
        path = os.path.join(d, "attach.sock")
        ln = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ln.bind(path)
        ln.listen(1)
        peers = []

        def serve():
            conn, _ = ln.accept()
            peer = Peer.__new__(Peer)
            peer.sock, peer.handler, peer.requests, peer.eof = conn, daemon(), [], threading.Event()
            peers.append(peer)
            peer._run()
            conn.close()

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        old = os.environ.get("VRAMSEAL_ATTACH_SOCKET")
        os.environ["VRAMSEAL_ATTACH_SOCKET"] = path
        try:
            self.assertEqual(vramseal.default_socket(), path)
            with vramseal.attach("llama-tp0") as shard:
                self.assertEqual(shard.seal["shard_id"], "llama-tp0")
                shard.verify()
        finally:
            if old is None:
                del os.environ["VRAMSEAL_ATTACH_SOCKET"]
            else:
                os.environ["VRAMSEAL_ATTACH_SOCKET"] = old
        t.join(5)
        self.assertTrue(peers[0].eof.is_set())
        ln.close()
        os.unlink(path)
        os.rmdir(d)
        with self.assertRaises(vramseal.Error) as cm:
            vramseal.attach("x", socket=path)
        self.assertEqual(cm.exception.code, "unavailable")

    def test_default_socket(self):
        old = os.environ.pop("VRAMSEAL_ATTACH_SOCKET", None)
        try:
            self.assertEqual(vramseal.default_socket(), "vramseal-data/attach.sock")
        finally:
            if old is not None:
                os.environ["VRAMSEAL_ATTACH_SOCKET"] = old


if __name__ == "__main__":
    unittest.main()
