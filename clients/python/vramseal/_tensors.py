"""Views of a shard's tensors: safetensors dtypes mapped to numpy and torch
types, and numpy arrays and torch tensors built over the mapping without a
copy."""

import warnings

from ._errors import Error

# safetensors dtype -> (element size in bytes, numpy typestr). numpy has no
# bfloat16 or float8: those are raw unsigned integers of the same size
# (BF16 as uint16, F8_* as uint8); view them in torch or ml_dtypes.
DTYPES = {
    "BOOL": (1, "|b1"),
    "U8": (1, "|u1"),
    "I8": (1, "|i1"),
    "F8_E4M3": (1, "|u1"),
    "F8_E5M2": (1, "|u1"),
    "F8_E8M0": (1, "|u1"),
    "U16": (2, "<u2"),
    "I16": (2, "<i2"),
    "F16": (2, "<f2"),
    "BF16": (2, "<u2"),
    "U32": (4, "<u4"),
    "I32": (4, "<i4"),
    "F32": (4, "<f4"),
    "U64": (8, "<u8"),
    "I64": (8, "<i8"),
    "F64": (8, "<f8"),
    "C64": (8, "<c8"),
}

# safetensors dtype -> torch dtype names, best first. The first one this
# torch has is used; the last is the raw same-size fallback (torch 1.13 has
# no unsigned 16-, 32- or 64-bit integers and no float8).
_TORCH = {
    "BOOL": ("bool",),
    "U8": ("uint8",),
    "I8": ("int8",),
    "F8_E4M3": ("float8_e4m3fn", "uint8"),
    "F8_E5M2": ("float8_e5m2", "uint8"),
    "F8_E8M0": ("float8_e8m0fnu", "uint8"),
    "U16": ("uint16", "int16"),
    "I16": ("int16",),
    "F16": ("float16",),
    "BF16": ("bfloat16",),
    "U32": ("uint32", "int32"),
    "I32": ("int32",),
    "F32": ("float32",),
    "U64": ("uint64", "int64"),
    "I64": ("int64",),
    "F64": ("float64",),
    "C64": ("complex64",),
}

# Carrier typestrs torch 1.13 accepts in __cuda_array_interface__, by size:
# the tensor is made with the carrier and then viewed as its real dtype.
_CARRIER = {1: "|u1", 2: "<i2", 4: "<i4", 8: "<i8"}


def numpy_dtype(dtype):
    """Returns the numpy dtype string for a safetensors dtype."""
    try:
        return DTYPES[dtype][1]
    except KeyError:
        raise Error("invalid_input", "unknown tensor dtype %r" % dtype) from None


def torch_dtype(dtype):
    """Returns the torch dtype for a safetensors dtype: the exact one when
    this torch has it, else the raw integer type of the same size."""
    import torch

    names = _TORCH.get(dtype)
    if names is None:
        raise Error("invalid_input", "unknown tensor dtype %r" % dtype)
    for n in names:
        t = getattr(torch, n, None)
        if isinstance(t, torch.dtype):
            return t
    raise Error("invalid_input", "torch %s has no dtype for %s" % (torch.__version__, dtype))


def check(tensor, size):
    """Checks that a tensor map entry describes bytes inside a mapping of
    ``size`` bytes and that its shape and dtype account for its length."""
    itemsize = DTYPES.get(tensor["dtype"], (None,))[0]
    if itemsize is None:
        raise Error("invalid_input", "tensor %r: unknown dtype %r" % (tensor["name"], tensor["dtype"]))
    count = 1
    for d in tensor["shape"]:
        count *= d
    if count * itemsize != tensor["length"]:
        raise Error(
            "bad_frame",
            "tensor %r: shape %s of %s is %d bytes, the map says %d"
            % (tensor["name"], tensor["shape"], tensor["dtype"], count * itemsize, tensor["length"]),
        )
    if tensor["offset"] + tensor["length"] > size:
        raise Error("bad_frame", "tensor %r lies outside the mapping" % tensor["name"])
    return count


def numpy_views(buffer, tensors, size):
    """Returns {name: read-only numpy array} over ``buffer`` (a read-only
    buffer of the mapping), without a copy."""
    import numpy

    out = {}
    for t in tensors:
        count = check(t, size)
        a = numpy.frombuffer(buffer, dtype=numpy_dtype(t["dtype"]), count=count, offset=t["offset"])
        out[t["name"]] = a.reshape(t["shape"])
    return out


def torch_views(buffer, tensors, size):
    """Returns {name: CPU torch.Tensor} over ``buffer``, without a copy.

    torch tensors have no read-only flag, and torch.frombuffer warns that
    the buffer is not writable; the warning is silenced because the kernel
    enforces it: the mapping is PROT_READ, so a write through one of these
    tensors kills the process with SIGSEGV rather than changing the shard.
    """
    import torch

    out = {}
    for t in tensors:
        count = check(t, size)
        dt = torch_dtype(t["dtype"])
        if count == 0:
            out[t["name"]] = torch.empty(t["shape"], dtype=dt)
            continue
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not writable.*")
            x = torch.frombuffer(buffer, dtype=dt, count=count, offset=t["offset"])
        out[t["name"]] = x.reshape(t["shape"])
    return out


class CudaArray:
    """A CUDA array (``__cuda_array_interface__`` version 3) over part of a
    mapping; it keeps the mapping alive as long as it lives, and so does
    any torch tensor made from it (torch holds the object)."""

    def __init__(self, owner, ptr, shape, typestr, readonly=True):
        self._owner = owner
        self.__cuda_array_interface__ = {
            "shape": tuple(shape),
            "typestr": typestr,
            "data": (ptr, bool(readonly)),
            "strides": None,
            "version": 3,
        }


def torch_cuda_views(mapping, tensors, size, device):
    """Returns {name: CUDA torch.Tensor} over a cuda_vmm_fd mapping,
    without a copy.

    torch (1.13 and later) refuses ``__cuda_array_interface__`` with the
    read-only flag set ("the read only flag is not supported"), so the
    objects handed to torch say readonly False. The memory is still read-
    only: the mapping's access is CU_MEM_ACCESS_FLAGS_PROT_READ, so a kernel
    that writes it faults, and the gate and the daemon's scrub catch any
    write that lands anyway. ``mapping.__cuda_array_interface__`` itself
    says readonly True.
    """
    import torch

    out = {}
    for t, arr in zip(tensors, cuda_arrays(mapping, tensors, size)):
        dt = torch_dtype(t["dtype"])
        if arr is None:
            out[t["name"]] = torch.empty(t["shape"], dtype=dt, device=device)
            continue
        x = torch.as_tensor(arr, device=device)
        if x.dtype != dt:
            x = x.view(dt)
        out[t["name"]] = x.reshape(t["shape"])
    return out


def cuda_arrays(mapping, tensors, size):
    """Returns one CudaArray per tensor (None for an empty one) for torch:
    readonly False, and the carrier typestr of the tensor's element size
    (torch parses typestrs with numpy, which knows no bfloat16 or float8,
    and torch 1.13 takes no unsigned type but uint8), shape () as (1,)."""
    out = []
    for t in tensors:
        if check(t, size) == 0:
            out.append(None)
            continue
        itemsize = DTYPES[t["dtype"]][0]
        shape = tuple(t["shape"]) or (1,)
        out.append(CudaArray(mapping, mapping.ptr + t["offset"], shape, _CARRIER[itemsize], readonly=False))
    return out
