"""The cuda_vmm_fd mapping against a fake driver written in Python: device
memory is a host mmap of the descriptor, so the calls, their arguments and
the bytes read back through cuMemcpyDtoH_v2 can all be checked."""

import ctypes
import mmap
import os
import unittest

import _util
from _util import Peer, attached, sealed_memfd

import vramseal
from vramseal import _memory, _tensors

UUIDS = [bytes(range(16)), bytes(range(0x20, 0x30))]


class FakeDriver:
    def __init__(self):
        self.calls = []
        self.live = {}  # handle -> mmap
        self.maps = {}  # ptr -> (mmap, size)
        self.reserved = {}
        self.access = None
        self.current = None

    def _log(self, name, *args):
        self.calls.append((name,) + args)
        return 0

    def cuInit(self, flags):
        return self._log("cuInit", flags)

    def cuDeviceGetCount(self, n):
        n._obj.value = len(UUIDS)
        return self._log("cuDeviceGetCount")

    def cuDeviceGet(self, dev, i):
        dev._obj.value = i
        return self._log("cuDeviceGet", i)

    def cuDeviceGetUuid_v2(self, buf, dev):
        ctypes.memmove(buf, UUIDS[dev], 16)
        return self._log("cuDeviceGetUuid_v2", dev)

    def cuDevicePrimaryCtxRetain(self, ctx, dev):
        ctx._obj.value = 0x1000 + dev
        return self._log("cuDevicePrimaryCtxRetain", dev)

    def cuCtxSetCurrent(self, ctx):
        self.current = ctx.value
        return 0

    def cuMemImportFromShareableHandle(self, handle, fd, typ):
        m = mmap.mmap(fd.value, 8192, access=mmap.ACCESS_READ)
        h = 0x7000 + len(self.live)
        self.live[h] = m
        handle._obj.value = h
        return self._log("import", typ)

    def cuMemAddressReserve(self, ptr, size, align, addr, flags):
        ptr._obj.value = 0xD0000000 + 0x100000 * len(self.reserved)
        self.reserved[ptr._obj.value] = size
        return self._log("reserve", size, align, addr, flags)

    def cuMemMap(self, ptr, size, off, handle, flags):
        self.maps[ptr] = (self.live[handle], size)
        return self._log("map", ptr, size, off, handle, flags)

    def cuMemSetAccess(self, ptr, size, desc, count):
        d = desc._obj
        self.access = (d.location.type, d.location.id, d.flags, count)
        return self._log("access", ptr, size)

    def cuMemcpyDtoH_v2(self, dst, src, n):
        for base, (m, size) in self.maps.items():
            if base <= src and src + n <= base + size:
                ctypes.memmove(dst, m[src - base : src - base + n], n)
                return 0
        return 1  # CUDA_ERROR_INVALID_VALUE

    def cuMemUnmap(self, ptr, size):
        del self.maps[ptr]
        return self._log("unmap", ptr, size)

    def cuMemAddressFree(self, ptr, size):
        del self.reserved[ptr]
        return self._log("free", ptr, size)

    def cuMemRelease(self, handle):
        self.live.pop(handle).close()
        return self._log("release", handle)


class CudaMappingTest(unittest.TestCase):
    def setUp(self):
        self.fake = FakeDriver()
        self.driver = vramseal.Driver(lib=self.fake)
        self.uuid = _memory.format_uuid(UUIDS[1])

    def test_format_uuid(self):
        self.assertEqual(self.uuid, "GPU-20212223-2425-2627-2829-2a2b2c2d2e2f")

    def test_map_read_release(self):
        data = os.urandom(5000)
        fd = sealed_memfd(data, 8192)
        m = vramseal.CudaMapping(fd, 8192, 4096, self.uuid.upper(), self.driver)
        os.close(fd)
        self.assertEqual(m.ordinal, 1)
        self.assertEqual(self.fake.current, 0x1001)
        self.assertEqual(self.fake.access, (1, 1, 1, 1))  # DEVICE, ordinal 1, PROT_READ, one descriptor
        names = [c[0] for c in self.fake.calls]
        self.assertEqual(names[-4:], ["import", "reserve", "map", "access"])
        self.assertIn(("import", 1), self.fake.calls)  # CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR
        self.assertIn(("reserve", 8192, 4096, 0, 0), self.fake.calls)
        self.assertEqual(m.__cuda_array_interface__, {"shape": (8192,), "typestr": "|u1", "data": (m.ptr, True), "version": 3, "strides": None})
        self.assertEqual(m.read(0, 5000), data)
        self.assertEqual(m.read(4000, 10), data[4000:4010])
        with self.assertRaises(vramseal.Error):
            m.read(8190, 4)
        tensors = [{"name": "a", "dtype": "BF16", "shape": [2, 3], "offset": 64, "length": 12},
                   {"name": "s", "dtype": "F32", "shape": [], "offset": 128, "length": 4},
                   {"name": "e", "dtype": "F32", "shape": [0], "offset": 0, "length": 0}]
        arrs = _tensors.cuda_arrays(m, tensors, 5000)
        self.assertEqual(arrs[0].__cuda_array_interface__, {"shape": (2, 3), "typestr": "<i2", "data": (m.ptr + 64, False), "strides": None, "version": 3})
        self.assertEqual(arrs[1].__cuda_array_interface__["shape"], (1,))
        self.assertIsNone(arrs[2])
        del arrs
        m.release_now()
        self.assertEqual([c[0] for c in self.fake.calls[-3:]], ["unmap", "free", "release"])
        self.assertEqual((self.fake.maps, self.fake.reserved, self.fake.live), ({}, {}, {}))

    def test_views_keep_the_mapping(self):
        import gc

        fd = sealed_memfd(b"x" * 100, 8192)
        m = vramseal.CudaMapping(fd, 8192, 4096, self.uuid, self.driver)
        os.close(fd)
        arr = _tensors.cuda_arrays(m, [{"name": "a", "dtype": "U8", "shape": [4], "offset": 0, "length": 4}], 100)[0]
        del m
        gc.collect()
        self.assertEqual(len(self.fake.maps), 1, "a live view keeps the mapping")
        del arr
        gc.collect()
        self.assertEqual(self.fake.maps, {})

    def test_unknown_uuid(self):
        fd = sealed_memfd(b"x", 8192)
        with self.assertRaises(vramseal.Error) as cm:
            vramseal.CudaMapping(fd, 8192, 4096, "GPU-ffffffff-ffff-ffff-ffff-ffffffffffff", self.driver)
        os.close(fd)
        self.assertEqual(cm.exception.code, "not_found")

    def test_failure_undoes(self):
        self.fake.cuMemSetAccess = lambda *a: 101
        fd = sealed_memfd(b"x", 8192)
        with self.assertRaises(vramseal.CudaError) as cm:
            vramseal.CudaMapping(fd, 8192, 4096, self.uuid, self.driver)
        os.close(fd)
        self.assertEqual((cm.exception.function, cm.exception.result), ("cuMemSetAccess", 101))
        self.assertEqual((self.fake.maps, self.fake.reserved, self.fake.live), ({}, {}, {}))

    def test_attach_over_protocol(self):
        data = os.urandom(3000)

        def handle(peer, req):
            if req["op"] == "attach":
                fd = sealed_memfd(data, 8192)
                peer.answer(attached(req["id"], req["shard_id"], len(data), [], kind="cuda_vmm_fd", granularity=8192, gpu_uuid=self.uuid), [fd])
                os.close(fd)
            else:
                peer.answer({"v": 1, "op": "detached", "id": req["id"], "shard_id": req["shard_id"]})

        peer = Peer(handle)
        with vramseal.Client(peer.client_sock, cuda_driver=self.driver) as c:
            s = c.attach("s0")
            self.assertEqual(s.kind, "cuda_vmm_fd")
            self.assertEqual(s.cuda_ordinal, 1)
            self.assertEqual(s.read(0, len(data)), data)
            self.assertEqual(s.memory.__cuda_array_interface__["data"][1], True)
            with self.assertRaises(vramseal.Error):
                s.numpy()
            s.close()
        peer.close()

    def test_missing_library(self):
        with self.assertRaises(vramseal.CudaError):
            vramseal.Driver(path="/nonexistent/libcuda.so.1")


if __name__ == "__main__":
    unittest.main()
