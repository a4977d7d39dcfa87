"""vramseal: attach to model shards sealed in GPU memory by the vramseal
daemon, read-only and without a copy, and ask its execute gate before
running on them.

The protocol is specified in the Go package attach (attach/doc.go)::

    import vramseal
    with vramseal.attach("llama-tp0") as shard:
        shard.verify()
        tensors = shard.torch()
"""

from ._client import DEFAULT_SOCKET, Client, Shard, attach, default_socket
from ._errors import (
    ClosedError,
    CudaError,
    Error,
    IntegrityError,
    NotFound,
    PermissionDenied,
    ProtocolError,
    RevokedError,
    StoppedError,
)
from ._frame import MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME, VERSION
from ._memory import CudaMapping, Driver, MemfdMapping
from ._tensors import DTYPES, numpy_dtype, torch_dtype

__version__ = "0.1.0"

__all__ = [
    "attach",
    "Client",
    "Shard",
    "default_socket",
    "DEFAULT_SOCKET",
    "Error",
    "ProtocolError",
    "IntegrityError",
    "StoppedError",
    "RevokedError",
    "PermissionDenied",
    "NotFound",
    "ClosedError",
    "CudaError",
    "Driver",
    "MemfdMapping",
    "CudaMapping",
    "DTYPES",
    "numpy_dtype",
    "torch_dtype",
    "VERSION",
    "MAX_REQUEST_FRAME",
    "MAX_RESPONSE_FRAME",
]
