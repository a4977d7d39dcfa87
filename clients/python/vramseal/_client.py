"""The attach protocol's client: one connection, a background reader that
routes answers by id and records stop pushes, and the attached shards."""

import errno
import os
import socket as _socket
import threading
import time

from . import _errors, _frame, _memory, _tensors
from ._errors import ClosedError, Error, PermissionDenied

DEFAULT_SOCKET = "vramseal-data/attach.sock"

# Stops for these reasons end every shard on the connection: while the
# worker is stopped every gate fails. "revoked" ends one shard's lease.
_CONNECTION_WIDE = ("integrity", "policy", "shutdown")


def default_socket():
    """The attach socket's path: $VRAMSEAL_ATTACH_SOCKET, or
    vramseal-data/attach.sock (the daemon's default data directory)."""
    return os.environ.get("VRAMSEAL_ATTACH_SOCKET") or DEFAULT_SOCKET


class Client:
    """A connection to the daemon's attach socket.

    One connection can attach several shards (each once). Methods may be
    called from several threads; the daemon answers one request at a time,
    in order. A background thread reads every frame: answers go to the
    request with their id, stop pushes are recorded (``stops``) and wake
    ``wait_stopped``. A protocol violation by the daemon, or the daemon's
    id-0 error, ends the connection: every later call raises.

    ``socket`` is the socket's path (default: :func:`default_socket`) or
    a connected AF_UNIX stream socket, which the client then owns.
    ``timeout`` (seconds, None for no limit) bounds each request; a request
    that times out closes the connection, since its answer could arrive at
    any later moment.
    """

    def __init__(self, socket=None, timeout=None, cuda_driver=None):
        self.path = socket or default_socket()
        self.timeout = timeout
        self._cuda_driver = cuda_driver
        self._cv = threading.Condition()
        self._send_lock = threading.Lock()
        self._pending = {}  # id -> [answer frame, fd] once answered, [] before
        self._next_id = 1
        self._closed = None  # the Error every call raises once the connection has ended
        self._stops = []
        self._shards = {}
        if isinstance(socket, _socket.socket):
            self.path = None
            self._start(socket)
            return
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            s.connect(self.path)
        except OSError as e:
            s.close()
            if e.errno in (errno.EACCES, errno.EPERM):
                raise PermissionDenied("permission_denied", "connect to %s: %s" % (self.path, e.strerror)) from None
            raise ClosedError("unavailable", "connect to %s: %s" % (self.path, e.strerror)) from None
        self._start(s)

    def _start(self, s):
        self._sock = s
        self._reader = _frame.Reader(s)
        self._thread = threading.Thread(target=self._read_loop, name="vramseal-attach-reader", daemon=True)
        self._thread.start()

    # --- reading ---------------------------------------------------------

    def _read_loop(self):
        err = None
        try:
            while True:
                frame, fd = self._reader.next()
                self._route(frame, fd)
        except EOFError:
            err = ClosedError("closed", "the daemon closed the connection")
        except Error as e:
            err = e
        except OSError as e:
            err = ClosedError("closed", "reading the attach socket: %s" % e)
        finally:
            self._end(err or ClosedError("closed", "connection ended"))

    def _route(self, frame, fd):
        op, rid = frame["op"], frame["id"]
        with self._cv:
            if op == "stop":
                self._stops.append(frame)
                self._cv.notify_all()
                return
            if rid == 0:  # an error not tied to a request ends the connection
                raise _errors.from_frame(frame)
            slot = self._pending.get(rid)
            if slot is None or slot:
                if fd is not None:
                    os.close(fd)
                raise _frame.ProtocolError("bad_frame", "%s frame answers id %d, which no request is waiting for" % (op, rid))
            slot.extend((frame, fd))
            self._cv.notify_all()

    def _end(self, err):
        with self._cv:
            if self._closed is None:
                self._closed = err
            for slot in self._pending.values():
                if slot and slot[1] is not None:
                    os.close(slot[1])
                    slot[1] = None
            self._cv.notify_all()
        try:
            self._sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass
        self._reader.close()

    # --- requests --------------------------------------------------------

    def _request(self, op, members, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        with self._cv:
            if self._closed is not None:
                raise self._closed
            rid = self._next_id
            self._next_id += 1
            slot = self._pending[rid] = []
        req = {"v": _frame.VERSION, "op": op, "id": rid}
        req.update((k, v) for k, v in members.items() if v is not None)
        data = _frame.encode(req)
        try:
            with self._send_lock:
                self._sock.sendall(data)
        except OSError as e:
            with self._cv:
                self._pending.pop(rid, None)
            self._end(ClosedError("closed", "writing the attach socket: %s" % e))
            with self._cv:
                raise self._closed from None
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while not slot and self._closed is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cv.wait(left)
            del self._pending[rid]
            if not slot:
                if self._closed is None:
                    timed_out = True
                else:
                    raise self._closed
            else:
                timed_out = False
        if timed_out:
            self._end(Error("timeout", "%s: no answer within %gs; connection closed" % (op, timeout)))
            raise Error("timeout", "%s: no answer within %gs; connection closed" % (op, timeout))
        frame, fd = slot
        if frame["op"] == "error":
            raise _errors.from_frame(frame)
        want = {"attach": "attached", "verify": "verified", "detach": "detached", "ping": "pong"}[op]
        if frame["op"] != want:
            if fd is not None:
                os.close(fd)
            err = _frame.ProtocolError("bad_frame", "%s answered with %s" % (op, frame["op"]))
            self._end(err)
            raise err
        return frame, fd

    def ping(self, timeout=None):
        """Sends ping and waits for pong; returns the round trip in seconds."""
        t = time.monotonic()
        self._request("ping", {}, timeout)
        return time.monotonic() - t

    def attach(self, shard_id, correlation_id=None, timeout=None):
        """Attaches a shard and maps it read-only; returns a :class:`Shard`.
        A mapping that fails detaches the shard again and raises."""
        frame, fd = self._request("attach", {"shard_id": shard_id, "correlation_id": correlation_id}, timeout)
        try:
            m = frame["mapping"]
            if m["size"] < frame["seal"]["size"]:
                raise _frame.ProtocolError("bad_frame", "mapping of %d bytes is smaller than the shard's %d" % (m["size"], frame["seal"]["size"]))
            if m["kind"] == "memfd":
                mapping = _memory.MemfdMapping(fd, m["size"])
            else:
                mapping = _memory.CudaMapping(fd, m["size"], m["granularity"], frame["seal"]["gpu_uuid"], self._cuda_driver)
        except BaseException:
            try:
                self.detach(shard_id)
            except Error:
                pass
            raise
        finally:
            os.close(fd)
        shard = Shard(self, frame, mapping)
        with self._cv:
            self._shards[shard_id] = shard
        return shard

    def verify(self, shard_id, mode="sampled", samples=None, correlation_id=None, timeout=None):
        """Runs the execute gate on an attached shard; returns the verified
        frame (a dict). Raises IntegrityError when chunks changed,
        StoppedError (RevokedError) once a stop for the shard arrived or
        the worker is stopped, other Errors as the daemon says."""
        stop = self.stopped(shard_id)
        if stop is not None:
            raise _errors.from_stop(stop)
        if mode not in ("sampled", "full"):
            raise Error("invalid_input", "verify mode %r: use sampled or full" % (mode,))
        if mode == "full" and samples is not None:
            raise Error("invalid_input", "samples apply to sampled mode only")
        frame, _ = self._request(
            "verify", {"shard_id": shard_id, "mode": mode, "samples": samples, "correlation_id": correlation_id}, timeout
        )
        return frame

    def detach(self, shard_id, correlation_id=None, timeout=None):
        """Ends this connection's attachment to a shard. The shard's mapping
        stays until its Shard is closed and its views are gone."""
        with self._cv:
            self._shards.pop(shard_id, None)
        frame, _ = self._request("detach", {"shard_id": shard_id, "correlation_id": correlation_id}, timeout)
        return frame

    # --- stops -----------------------------------------------------------

    @property
    def stops(self):
        """Every stop push received on this connection, oldest first."""
        with self._cv:
            return list(self._stops)

    def _stop_for(self, shard_id):
        for s in self._stops:
            if shard_id is None or s["reason"] in _CONNECTION_WIDE or s["shard_id"] == shard_id:
                return s
        return None

    def stopped(self, shard_id=None):
        """The first stop push that applies to shard_id (any, when None),
        or None."""
        with self._cv:
            return self._stop_for(shard_id)

    def wait_stopped(self, timeout=None, shard_id=None):
        """Waits for a stop push that applies to shard_id (any, when None)
        and returns it, or None after timeout seconds. Raises ClosedError
        if the connection ends first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while True:
                s = self._stop_for(shard_id)
                if s is not None:
                    return s
                if self._closed is not None:
                    raise self._closed
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cv.wait(left)

    @property
    def closed(self):
        """The Error that ended the connection, or None while it is open."""
        with self._cv:
            return self._closed

    def close(self):
        """Closes the connection, which detaches every shard it attached.
        Mappings stay valid until their Shards are closed and their views
        are gone."""
        self._end(ClosedError("closed", "the client closed the connection"))
        if threading.current_thread() is not self._thread:
            self._thread.join()
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Shard:
    """An attached shard, mapped read-only into this process.

    Attributes: ``shard_id``; ``seal`` (dict: shard_id, model_ref, digest,
    tree_root, size, chunk_size, gpu, gpu_uuid, ...); ``attachment`` (the
    lease ID); ``correlation_id``; ``mapping_info`` (kind, size,
    granularity); ``tensors`` (the tensor map, a list of dicts; empty when
    the shard is not a safetensors file); ``memory`` (memfd: a read-only
    memoryview of the mapping; cuda_vmm_fd: an object with
    ``__cuda_array_interface__`` and ``read``).
    """

    def __init__(self, client, frame, mapping, owns_client=False):
        self.client = client
        self.shard_id = frame["shard_id"]
        self.attachment = frame["attachment"]
        self.correlation_id = frame["correlation_id"]
        self.seal = frame["seal"]
        self.mapping_info = frame["mapping"]
        self.tensors = frame.get("tensors", [])
        self._mapping = mapping
        self._owns_client = owns_client
        self._closed = False
        for t in self.tensors:
            _tensors.check(t, self.seal["size"])

    @property
    def kind(self):
        """The mapping kind: "memfd" or "cuda_vmm_fd"."""
        return self._mapping.kind

    @property
    def memory(self):
        return self._mapping.memory

    @property
    def cuda_ordinal(self):
        """The CUDA device ordinal the shard is mapped on (cuda_vmm_fd), or None."""
        return getattr(self._mapping, "ordinal", None)

    def read(self, offset, n):
        """Returns a copy of n bytes of the mapping at offset."""
        return self._mapping.read(offset, n)

    def numpy(self):
        """Returns {tensor name: read-only numpy array}, zero-copy views of
        the mapping (memfd only). BF16 and F8 tensors are raw uint16 and
        uint8 arrays."""
        if self._mapping.kind != "memfd":
            raise Error("invalid_input", "numpy views need host memory; %s memory is on the GPU: use torch() or read()" % self._mapping.kind)
        return _tensors.numpy_views(self._mapping.memory, self.tensors, self.seal["size"])

    def torch(self):
        """Returns {tensor name: torch.Tensor}, zero-copy: CPU tensors over
        the mapping on the simulated device (memfd), CUDA tensors on the
        shard's GPU (cuda_vmm_fd). Never write to them: see README."""
        if self._mapping.kind == "memfd":
            return _tensors.torch_views(self._mapping.memory, self.tensors, self.seal["size"])
        return _tensors.torch_cuda_views(self._mapping, self.tensors, self.seal["size"], "cuda:%d" % self._mapping.ordinal)

    def verify(self, mode="sampled", samples=None, correlation_id=None, timeout=None):
        """Runs the execute gate (sampled: 16 chunks by default; "full":
        every chunk); returns the verified frame. Raises IntegrityError,
        StoppedError or RevokedError, and the daemon's other errors."""
        return self.client.verify(self.shard_id, mode, samples, correlation_id, timeout)

    @property
    def stopped(self):
        """The stop push that applies to this shard, or None."""
        return self.client.stopped(self.shard_id)

    def wait_stopped(self, timeout=None):
        """Waits for a stop push that applies to this shard; returns it, or
        None after timeout seconds."""
        return self.client.wait_stopped(timeout, self.shard_id)

    def close(self):
        """Detaches (if the connection is open and the lease not revoked)
        and lets the mapping go; it is unmapped once no view of it is left.
        Closes the connection if attach() opened it."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.client.closed is None and not self._owns_client:
                stop = self.stopped
                if stop is None or stop["reason"] != "revoked":
                    self.client.detach(self.shard_id)
        except Error:
            pass  # the lease ends with the connection, or has ended already
        finally:
            self._mapping.close()
            if self._owns_client:
                self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def attach(shard_id, socket=None, correlation_id=None, timeout=None, cuda_driver=None):
    """Connects to the attach socket (default: $VRAMSEAL_ATTACH_SOCKET or
    vramseal-data/attach.sock), attaches shard_id and maps it; returns a
    :class:`Shard` that owns its connection (closing it detaches)."""
    c = Client(socket, timeout=timeout, cuda_driver=cuda_driver)
    try:
        shard = c.attach(shard_id, correlation_id)
    except BaseException:
        c.close()
        raise
    shard._owns_client = True
    return shard
