"""Integration tests of the Python client against a real vramseal daemon.

clients/python/python_test.go starts the daemon and runs this module with
the environment below; without VRAMSEAL_IT_SOCKET every test is skipped.

  VRAMSEAL_IT_SOCKET       the daemon's attach socket
  VRAMSEAL_IT_ADDR         its HTTP address (http://127.0.0.1:PORT)
  VRAMSEAL_IT_BIN          the vramseal binary, for shard add/rm and reset
  VRAMSEAL_IT_SAFETENSORS  a safetensors file (testdata/models)
  VRAMSEAL_IT_RANDOM       a file of random bytes
  VRAMSEAL_IT_FAULTS=1     the daemon serves POST /v1/test/corrupt
  VRAMSEAL_IT_CUDA=1       the daemon runs the fake CUDA driver; the client
                           loads it too (VRAMSEAL_CUDA_LIBRARY)
"""

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import unittest
import urllib.request
import uuid

import _util  # noqa: F401

import vramseal

ENV = os.environ.get
SOCKET = ENV("VRAMSEAL_IT_SOCKET")
ADDR = ENV("VRAMSEAL_IT_ADDR")
BIN = ENV("VRAMSEAL_IT_BIN")
CUDA = ENV("VRAMSEAL_IT_CUDA") == "1"
PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    import numpy
except ImportError:  # pragma: no cover
    numpy = None


def cli(*args):
    p = subprocess.run([BIN, *args, "--addr", ADDR], capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


def add(path):
    sid = "py-" + uuid.uuid4().hex[:12]
    code, out = cli("shard", "add", path, "--shard-id", sid)
    if code != 0:
        raise AssertionError("shard add %s: exit %d\n%s" % (path, code, out))
    return sid


def read_safetensors(path):
    """Reads a safetensors file independently of the client: {name:
    numpy array} (BF16 as uint16), by its header."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack_from("<Q", data)
    header = json.loads(data[8 : 8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        out[name] = numpy.frombuffer(data[8 + n + a : 8 + n + b], vramseal.numpy_dtype(t["dtype"])).reshape(t["shape"])
    return data, out


def child(code, *args, user=None):
    """Runs Python code in a child process with the package importable."""
    cmd = [sys.executable, "-c", textwrap.dedent(code), *args]
    if user:
        cmd = ["setpriv", "--reuid=" + user, "--regid=nogroup", "--clear-groups"] + cmd
    env = dict(os.environ, PYTHONPATH=PKG)
    return cmd, env


@unittest.skipUnless(SOCKET, "VRAMSEAL_IT_SOCKET is not set: run through clients/python/python_test.go")
class IntegrationTest(unittest.TestCase):
    def setUp(self):
        self.shards = []

    def tearDown(self):
        for sid in self.shards:
            cli("shard", "rm", sid, "--force")

    def shard(self, path):
        sid = add(path)
        self.shards.append(sid)
        return sid

    def test_bytes_and_tensors_match_the_file(self):
        path = ENV("VRAMSEAL_IT_SAFETENSORS")
        sid = self.shard(path)
        data, want = read_safetensors(path)
        with vramseal.attach(sid, socket=SOCKET) as s:
            self.assertEqual(s.seal["shard_id"], sid)
            self.assertEqual(s.seal["size"], len(data))
            self.assertEqual(s.kind, "cuda_vmm_fd" if CUDA else "memfd")
            self.assertEqual(s.read(0, len(data)), data)
            # A shard of no more chunks than the 16 samples is checked whole,
            # and the answer says what was done.
            chunks = -(-len(data) // s.seal["chunk_size"])
            self.assertEqual(s.verify()["mode"], "full" if chunks <= 16 else "sampled")
            self.assertEqual(s.verify("full")["chunks_checked"], s.verify("full")["chunks"])
            self.assertEqual({t["name"] for t in s.tensors}, set(want))
            if CUDA:
                return
            self.assertEqual(bytes(s.memory[: len(data)]), data)
            arrays = s.numpy()
            for name, w in want.items():
                numpy.testing.assert_array_equal(arrays[name], w)
                self.assertFalse(arrays[name].flags.writeable)
            try:
                import torch  # noqa: F401
            except ImportError:
                return
            for name, x in s.torch().items():
                self.assertEqual(tuple(x.shape), want[name].shape)
            del arrays

    def test_random_bytes(self):
        path = ENV("VRAMSEAL_IT_RANDOM")
        sid = self.shard(path)
        with open(path, "rb") as f:
            data = f.read()
        with vramseal.attach(sid, socket=SOCKET) as s:
            self.assertEqual(s.tensors, [])
            self.assertGreaterEqual(s.mapping_info["size"], len(data))
            self.assertEqual(s.read(0, len(data)), data)
            s.verify("full")

    @unittest.skipIf(CUDA, "host memory writes: the simulated device")
    def test_writer_dies_and_shard_still_verifies(self):
        sid = self.shard(ENV("VRAMSEAL_IT_RANDOM"))
        cmd, env = child(
            """
            import ctypes, sys, vramseal
            s = vramseal.attach(sys.argv[1], socket=sys.argv[2])
            print("attached", flush=True)
            ctypes.memmove(s._mapping.address + 100, b"XXXX", 4)
            print("wrote", flush=True)
            """,
            sid,
            SOCKET,
        )
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, -signal.SIGSEGV, p.stdout + p.stderr)
        self.assertEqual(p.stdout, "attached\n")
        with vramseal.attach(sid, socket=SOCKET) as s:
            s.verify("full")

    def test_two_consumers(self):
        sid = self.shard(ENV("VRAMSEAL_IT_RANDOM"))
        with vramseal.attach(sid, socket=SOCKET) as a, vramseal.attach(sid, socket=SOCKET) as b:
            self.assertNotEqual(a.attachment, b.attachment)
            self.assertEqual(a.read(0, 4096), b.read(0, 4096))
            a.verify()
            b.verify("full")

    def test_one_connection_several_shards(self):
        s1, s2 = self.shard(ENV("VRAMSEAL_IT_RANDOM")), self.shard(ENV("VRAMSEAL_IT_SAFETENSORS"))
        with vramseal.Client(SOCKET) as c:
            c.ping()
            a, b = c.attach(s1), c.attach(s2)
            with self.assertRaises(vramseal.Error) as cm:
                c.attach(s1)
            self.assertEqual(cm.exception.code, "already_attached")
            c.verify(s1)
            b.verify("full")
            a.close()
            with self.assertRaises(vramseal.Error) as cm:
                c.verify(s1)
            self.assertEqual(cm.exception.code, "not_attached")
            with self.assertRaises(vramseal.NotFound):
                c.attach("py-no-such-shard")

    def test_kill9_ends_the_lease(self):
        sid = self.shard(ENV("VRAMSEAL_IT_RANDOM"))
        cmd, env = child(
            """
            import sys, time, vramseal
            s = vramseal.attach(sys.argv[1], socket=sys.argv[2])
            print("attached", flush=True)
            sys.stdin.read()
            """,
            sid,
            SOCKET,
        )
        p = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(p.stdout.readline(), "attached\n")
            code, out = cli("shard", "rm", sid)
            self.assertNotEqual(code, 0, "shard rm while attached succeeded:\n" + out)
            self.assertIn(str(p.pid), out)
        finally:
            p.kill()
            p.wait()
            p.stdout.close()
            p.stdin.close()
        # The daemon sees the connection close and ends the lease; the
        # release may race it, so retry until a deadline.
        import time

        deadline = time.monotonic() + 10
        while True:
            code, out = cli("shard", "rm", sid)
            if code == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(code, 0, out)
        self.shards.remove(sid)

    def test_rm_refused_then_force_revokes(self):
        sid = self.shard(ENV("VRAMSEAL_IT_RANDOM"))
        with vramseal.attach(sid, socket=SOCKET) as s:
            code, out = cli("shard", "rm", sid)
            # TODO(attach): pin the exit status of a conflict once the
            # daemon side defines it.
            self.assertNotEqual(code, 0, out)
            self.assertIn(str(os.getpid()), out)
            self.assertIn(str(os.getuid()), out)
            s.verify()
            code, out = cli("shard", "rm", sid, "--force")
            self.assertEqual(code, 0, out)
            push = s.wait_stopped(10)
            self.assertIsNotNone(push, "no stop push after shard rm --force")
            self.assertEqual((push["reason"], push["shard_id"]), ("revoked", sid))
            with self.assertRaises(vramseal.RevokedError):
                s.verify()
        self.shards.remove(sid)

    @unittest.skipUnless(ENV("VRAMSEAL_IT_FAULTS") == "1", "the daemon has no test fault hook (--enable-test-faults)")
    def test_stop_after_corruption(self):
        sid = self.shard(ENV("VRAMSEAL_IT_RANDOM"))
        with vramseal.attach(sid, socket=SOCKET) as s, vramseal.Client(SOCKET) as other:
            o = other.attach(self.shard(ENV("VRAMSEAL_IT_SAFETENSORS")))
            req = urllib.request.Request(ADDR + "/v1/test/corrupt", data=json.dumps({"shard_id": sid, "offset": 5000}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
            urllib.request.urlopen(req, timeout=30).close()
            try:
                with self.assertRaises(vramseal.IntegrityError) as cm:
                    s.verify("full")
                self.assertTrue(any(r["offset"] <= 5000 < r["offset"] + r["length"] for r in cm.exception.changed_chunks))
                push = s.wait_stopped(10)
                self.assertIsNotNone(push)
                self.assertEqual(push["reason"], "integrity")
                # A stop for integrity reaches every connection.
                self.assertEqual(o.wait_stopped(10)["reason"], "integrity")
                with self.assertRaises(vramseal.StoppedError):
                    o.verify()
            finally:
                code, out = cli("reset", "--reason", "python client integration test")
                self.assertEqual(code, 0, out)

    @unittest.skipIf(CUDA, "one daemon run checks the uid policy")
    def test_disallowed_uid_refused(self):
        if os.getuid() != 0 or shutil.which("setpriv") is None:
            self.skipTest("needs root and setpriv to run a consumer as nobody")
        sid = self.shard(ENV("VRAMSEAL_IT_RANDOM"))
        pkg = tempfile.mkdtemp()
        os.chmod(pkg, 0o755)
        shutil.copytree(os.path.join(PKG, "vramseal"), os.path.join(pkg, "vramseal"), ignore=shutil.ignore_patterns("__pycache__"))
        for root, dirs, files in os.walk(pkg):
            for n in dirs + files:
                os.chmod(os.path.join(root, n), 0o755)
        mode = os.stat(SOCKET).st_mode & 0o777
        os.chmod(SOCKET, 0o666)  # let the connect through, so the daemon's own check refuses
        try:
            cmd, env = child(
                """
                import sys, vramseal
                try:
                    vramseal.attach(sys.argv[1], socket=sys.argv[2])
                except vramseal.PermissionDenied as e:
                    print(e.code, e.message)
                    sys.exit(0)
                print("attached")
                sys.exit(1)
                """,
                sid,
                SOCKET,
                user="nobody",
            )
            env["PYTHONPATH"] = pkg
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd="/")
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertTrue(p.stdout.startswith("permission_denied"), p.stdout)
        finally:
            os.chmod(SOCKET, mode)
            shutil.rmtree(pkg)


if __name__ == "__main__":
    unittest.main()
