"""Mappings of an attached shard's descriptor: a read-only mmap of the
simulated device's memfd, or a CUDA VMM import (cuda_vmm_fd) through the
CUDA driver API loaded with ctypes."""

import ctypes
import mmap
import os
import threading
import weakref

from ._errors import CudaError, Error

# --- memfd ----------------------------------------------------------------


class MemfdMapping:
    """A read-only shared mapping of a memfd (mapping kind "memfd").

    ``memory`` is a read-only memoryview of the whole mapping; numpy arrays
    and torch tensors made from it share its pages. The kernel refuses
    writes: the mapping is PROT_READ (and the memfd is sealed against
    writes), so a store through a raw pointer kills the process with SIGSEGV
    instead of changing the shard.
    """

    kind = "memfd"

    def __init__(self, fd, size):
        # access=ACCESS_READ is mmap(NULL, size, PROT_READ, MAP_SHARED, fd,
        # 0) and, unlike prot=PROT_READ, makes Python export the buffer as
        # read-only, so numpy views are read-only too.
        self._mmap = mmap.mmap(fd, size, access=mmap.ACCESS_READ) if size else None
        self.size = size
        self.memory = memoryview(self._mmap).toreadonly() if size else memoryview(b"")

    @property
    def address(self):
        """The mapping's start address in this process (for tests and for
        handing the pages to native code that only reads them)."""
        if self._mmap is None:
            return 0
        return _buffer_address(self._mmap)

    def read(self, offset, n):
        """Returns a copy of n bytes at offset."""
        if offset < 0 or n < 0 or offset + n > self.size:
            raise Error("invalid_input", "read of %d bytes at %d outside a mapping of %d" % (n, offset, self.size))
        return bytes(self.memory[offset : offset + n])

    def close(self):
        """Unmaps when nothing else holds the pages; views made from the
        mapping keep it alive (and mapped) until they are gone."""
        self.memory.release()
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                pass  # numpy arrays or tensors still export it


def _buffer_address(obj):
    """Returns the address of a read-only buffer's first byte. ctypes cannot
    take from_buffer of a read-only buffer, so the address comes from the
    buffer protocol via PyObject_GetBuffer."""

    class Py_buffer(ctypes.Structure):
        _fields_ = [
            ("buf", ctypes.c_void_p),
            ("obj", ctypes.py_object),
            ("len", ctypes.c_ssize_t),
            ("itemsize", ctypes.c_ssize_t),
            ("readonly", ctypes.c_int),
            ("ndim", ctypes.c_int),
            ("format", ctypes.c_char_p),
            ("shape", ctypes.c_void_p),
            ("strides", ctypes.c_void_p),
            ("suboffsets", ctypes.c_void_p),
            ("internal", ctypes.c_void_p),
        ]

    view = Py_buffer()
    api = ctypes.pythonapi
    api.PyObject_GetBuffer.argtypes = [ctypes.py_object, ctypes.POINTER(Py_buffer), ctypes.c_int]
    api.PyBuffer_Release.argtypes = [ctypes.POINTER(Py_buffer)]
    if api.PyObject_GetBuffer(obj, ctypes.byref(view), 0) != 0:
        raise Error("internal", "cannot get the mapping's buffer")
    try:
        return view.buf or 0
    finally:
        api.PyBuffer_Release(ctypes.byref(view))


# --- CUDA driver ----------------------------------------------------------

CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR = 0x1
CU_MEM_LOCATION_TYPE_DEVICE = 0x1
CU_MEM_ACCESS_FLAGS_PROT_READ = 0x1

CUdeviceptr = ctypes.c_ulonglong
CUmemGenericAllocationHandle = ctypes.c_ulonglong


class CUmemLocation(ctypes.Structure):
    """struct CUmemLocation_st { CUmemLocationType type; int id; }"""

    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]


class CUmemAccessDesc(ctypes.Structure):
    """struct CUmemAccessDesc_st { CUmemLocation location; CUmemAccess_flags flags; }"""

    _fields_ = [("location", CUmemLocation), ("flags", ctypes.c_int)]


# name -> (restype is CUresult, argtypes)
_PROTOS = {
    "cuInit": [ctypes.c_uint],
    "cuDeviceGetCount": [ctypes.POINTER(ctypes.c_int)],
    "cuDeviceGet": [ctypes.POINTER(ctypes.c_int), ctypes.c_int],
    "cuDeviceGetUuid_v2": [ctypes.c_char_p, ctypes.c_int],
    "cuDevicePrimaryCtxRetain": [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int],
    "cuDevicePrimaryCtxRelease_v2": [ctypes.c_int],
    "cuCtxSetCurrent": [ctypes.c_void_p],
    "cuMemImportFromShareableHandle": [ctypes.POINTER(CUmemGenericAllocationHandle), ctypes.c_void_p, ctypes.c_int],
    "cuMemAddressReserve": [ctypes.POINTER(CUdeviceptr), ctypes.c_size_t, ctypes.c_size_t, CUdeviceptr, ctypes.c_ulonglong],
    "cuMemMap": [CUdeviceptr, ctypes.c_size_t, ctypes.c_size_t, CUmemGenericAllocationHandle, ctypes.c_ulonglong],
    "cuMemSetAccess": [CUdeviceptr, ctypes.c_size_t, ctypes.POINTER(CUmemAccessDesc), ctypes.c_size_t],
    "cuMemUnmap": [CUdeviceptr, ctypes.c_size_t],
    "cuMemAddressFree": [CUdeviceptr, ctypes.c_size_t],
    "cuMemRelease": [CUmemGenericAllocationHandle],
    "cuMemcpyDtoH_v2": [ctypes.c_void_p, CUdeviceptr, ctypes.c_size_t],
}


def format_uuid(raw):
    """Formats 16 UUID bytes the way nvidia-smi and vramseal do."""
    h = bytes(raw).hex()
    return "GPU-%s-%s-%s-%s-%s" % (h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])


class Driver:
    """The CUDA driver API functions the cuda_vmm_fd mapping needs.

    ``lib`` is a loaded library (ctypes.CDLL) or any object with the same
    functions; by default the library at $VRAMSEAL_CUDA_LIBRARY or
    libcuda.so.1. cuInit runs once.
    """

    def __init__(self, lib=None, path=None):
        if lib is None:
            path = path or os.environ.get("VRAMSEAL_CUDA_LIBRARY") or "libcuda.so.1"
            try:
                lib = ctypes.CDLL(path)
            except OSError as e:
                raise CudaError("dlopen", -1, "cannot load the CUDA driver %s: %s" % (path, e)) from None
            for name, args in _PROTOS.items():
                fn = getattr(lib, name, None)
                if fn is not None:
                    fn.restype = ctypes.c_int
                    fn.argtypes = args
        self._lib = lib
        self._lock = threading.Lock()
        self._ctx = {}
        self.call("cuInit", 0)

    def call(self, name, *args):
        fn = getattr(self._lib, name, None)
        if fn is None:
            raise CudaError(name, -1, "the CUDA driver has no %s" % name)
        r = fn(*args)
        if r != 0:
            raise CudaError(name, r)

    def device_by_uuid(self, uuid):
        """Returns the ordinal of the device whose UUID is ``uuid``."""
        n = ctypes.c_int()
        self.call("cuDeviceGetCount", ctypes.byref(n))
        seen = []
        for i in range(n.value):
            dev = ctypes.c_int()
            self.call("cuDeviceGet", ctypes.byref(dev), i)
            raw = ctypes.create_string_buffer(16)
            self.call("cuDeviceGetUuid_v2", raw, dev.value)
            u = format_uuid(raw.raw[:16])
            if u.lower() == uuid.lower():
                return dev.value
            seen.append(u)
        raise Error("not_found", "no CUDA device has UUID %s (this process sees %d)" % (uuid, len(seen)))

    def use(self, dev):
        """Makes dev's primary context current on the calling thread."""
        with self._lock:
            ctx = self._ctx.get(dev)
            if ctx is None:
                c = ctypes.c_void_p()
                self.call("cuDevicePrimaryCtxRetain", ctypes.byref(c), dev)
                ctx = self._ctx[dev] = c
        self.call("cuCtxSetCurrent", ctx)


_driver = None
_driver_lock = threading.Lock()


def default_driver():
    """Returns the process's Driver, loading it on first use."""
    global _driver
    with _driver_lock:
        if _driver is None:
            _driver = Driver()
        return _driver


def _release(driver, dev, ptr, size, handle, mapped, reserved):
    """Undoes a cuda_vmm_fd mapping; errors are ignored, since nothing can
    be done about them at this point."""
    try:
        driver.use(dev)
    except Error:
        pass
    for name, args, done in (
        ("cuMemUnmap", (ptr, size), mapped),
        ("cuMemAddressFree", (ptr, size), reserved),
        ("cuMemRelease", (handle,), handle is not None),
    ):
        if done:
            try:
                driver.call(name, *args)
            except Error:
                pass


class CudaMapping:
    """A read-only mapping of a cuda_vmm_fd descriptor in this process's
    address space on the device whose UUID is the seal's gpu_uuid.

    ``ptr`` is the device address, ``ordinal`` the CUDA device ordinal.
    ``__cuda_array_interface__`` describes the whole mapping as bytes, read-
    only. The mapping is undone (cuMemUnmap, cuMemAddressFree, cuMemRelease)
    when close() is called and no CudaArray or torch tensor made from it is
    alive, or when the last of them goes.
    """

    kind = "cuda_vmm_fd"

    def __init__(self, fd, size, granularity, gpu_uuid, driver=None):
        self.driver = driver or default_driver()
        self.size = size
        self.ordinal = self.driver.device_by_uuid(gpu_uuid)
        self.driver.use(self.ordinal)
        d = self.driver
        handle, ptr = CUmemGenericAllocationHandle(), CUdeviceptr()
        state = {"handle": None, "reserved": False, "mapped": False}
        try:
            d.call("cuMemImportFromShareableHandle", ctypes.byref(handle), ctypes.c_void_p(fd), CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
            state["handle"] = handle.value
            d.call("cuMemAddressReserve", ctypes.byref(ptr), size, granularity, 0, 0)
            state["reserved"] = True
            d.call("cuMemMap", ptr.value, size, 0, handle.value, 0)
            state["mapped"] = True
            desc = CUmemAccessDesc(CUmemLocation(CU_MEM_LOCATION_TYPE_DEVICE, self.ordinal), CU_MEM_ACCESS_FLAGS_PROT_READ)
            d.call("cuMemSetAccess", ptr.value, size, ctypes.byref(desc), 1)
        except BaseException:
            _release(d, self.ordinal, ptr.value, size, state["handle"], state["mapped"], state["reserved"])
            raise
        self.ptr = ptr.value
        self.__cuda_array_interface__ = {"shape": (size,), "typestr": "|u1", "data": (self.ptr, True), "version": 3, "strides": None}
        self._finalizer = weakref.finalize(self, _release, d, self.ordinal, self.ptr, size, handle.value, True, True)

    @property
    def memory(self):
        return self

    def read(self, offset, n):
        """Returns a copy of n bytes at offset (cuMemcpyDtoH_v2)."""
        if offset < 0 or n < 0 or offset + n > self.size:
            raise Error("invalid_input", "read of %d bytes at %d outside a mapping of %d" % (n, offset, self.size))
        buf = ctypes.create_string_buffer(n)
        if n:
            self.driver.use(self.ordinal)
            self.driver.call("cuMemcpyDtoH_v2", buf, self.ptr + offset, n)
        return buf.raw

    def close(self):
        """Lets the mapping go: it is undone now, or when the last view of
        it is collected. The shard holds the only other reference."""
        # Nothing to do explicitly: views hold strong references, so the
        # finalizer runs when the last one, or this object, is collected.
        pass

    def release_now(self):
        """Undoes the mapping at once, whatever still points into it."""
        self._finalizer()
