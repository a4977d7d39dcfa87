"""Exceptions of the vramseal client, one per error code a caller branches on."""

__all__ = [
    "Error",
    "ProtocolError",
    "IntegrityError",
    "StoppedError",
    "RevokedError",
    "PermissionDenied",
    "NotFound",
    "ClosedError",
    "CudaError",
]


class Error(Exception):
    """Base of every vramseal error.

    ``code`` is the protocol's error code (``"integrity_failed"``,
    ``"not_found"``, ...) or a client-side one (``"bad_frame"`` for a frame
    from the daemon that breaks the protocol, ``"closed"`` for a connection
    that ended, ``"cuda"`` for a CUDA driver failure). ``message`` is the
    daemon's sentence, or the client's. ``shard_id`` and ``correlation_id``
    are set when the error frame carried them; ``frame`` is the error frame
    itself (a dict), or None for client-side errors.
    """

    def __init__(self, code, message, *, shard_id=None, correlation_id=None, frame=None):
        super().__init__("vramseal: %s: %s" % (code, message))
        self.code = code
        self.message = message
        self.shard_id = shard_id
        self.correlation_id = correlation_id
        self.frame = frame


class ProtocolError(Error):
    """The daemon sent something the protocol forbids (or refused ours:
    codes bad_frame, unsupported_version, unknown_op). The connection is
    closed, since the stream can no longer be trusted."""


class IntegrityError(Error):
    """The execute gate found changed chunks (code integrity_failed); the
    worker is stopped. ``changed_chunks`` is a list of dicts with
    ``first_chunk``, ``last_chunk``, ``offset`` and ``length``."""

    def __init__(self, code, message, *, changed_chunks=(), **kw):
        super().__init__(code, message, **kw)
        self.changed_chunks = list(changed_chunks)


class StoppedError(Error):
    """The worker is stopped (code worker_stopped), or a stop push arrived
    for this shard. ``reason`` is the push's reason ("integrity", "policy",
    "revoked", "shutdown") when a push caused it, ``push`` the push itself,
    and ``changed_chunks`` the push's changed chunks (empty if none)."""

    def __init__(self, code, message, *, reason=None, push=None, changed_chunks=(), **kw):
        super().__init__(code, message, **kw)
        self.reason = reason
        self.push = push
        self.changed_chunks = list(changed_chunks)


class RevokedError(StoppedError):
    """An operator released the shard with --force: this connection's lease
    has ended and the shard's memory must not be used any more."""


class PermissionDenied(Error):
    """The daemon refused this process's uid and gid (code
    permission_denied), or the socket's file mode did (code
    permission_denied, from connect's EACCES)."""


class NotFound(Error):
    """No such shard (code not_found), or no socket at the path."""


class ClosedError(Error):
    """The connection is closed (code closed), by this client or the daemon."""


class CudaError(Error):
    """A CUDA driver call failed (code cuda). ``function`` names it and
    ``result`` is its CUresult."""

    def __init__(self, function, result, message=None):
        super().__init__("cuda", message or "%s returned CUresult %d" % (function, result))
        self.function = function
        self.result = result


_BY_CODE = {
    "bad_frame": ProtocolError,
    "unsupported_version": ProtocolError,
    "unknown_op": ProtocolError,
    "integrity_failed": IntegrityError,
    "worker_stopped": StoppedError,
    "permission_denied": PermissionDenied,
    "not_found": NotFound,
}


def from_frame(frame):
    """Returns the exception for an error frame (already validated)."""
    code = frame["code"]
    cls = _BY_CODE.get(code, Error)
    kw = {"shard_id": frame.get("shard_id"), "correlation_id": frame.get("correlation_id"), "frame": frame}
    if cls is IntegrityError:
        kw["changed_chunks"] = frame.get("changed_chunks", ())
    return cls(code, frame["message"], **kw)


def from_stop(push):
    """Returns the exception a verify raises after the stop push ``push``."""
    reason = push["reason"]
    cls = RevokedError if reason == "revoked" else StoppedError
    return cls(
        "revoked" if reason == "revoked" else "worker_stopped",
        "stop (%s): %s" % (reason, push["message"]),
        reason=reason,
        push=push,
        changed_chunks=push.get("changed_chunks", ()),
        shard_id=push.get("shard_id"),
    )
