import os
import signal
import subprocess
import sys
import textwrap
import unittest

import _util
from _util import sealed_memfd

import vramseal
from vramseal import _tensors

try:
    import numpy
except ImportError:  # pragma: no cover
    numpy = None
try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def layout():
    """A safetensors-like byte layout: a header-sized gap, then tensors of
    several dtypes with known values. Returns (bytes, tensor map, expected
    numpy arrays)."""
    rng = numpy.random.default_rng(7)
    want = {
        "f32": rng.standard_normal((3, 4)).astype("<f4"),
        "f16": rng.standard_normal((5,)).astype("<f2"),
        "bf16": (rng.standard_normal((2, 3)).astype("<f4").view("<u4") >> 16).astype("<u2"),
        "i32": rng.integers(-1000, 1000, (2, 2, 2), dtype="<i4"),
        "i64": rng.integers(-(1 << 40), 1 << 40, (3,), dtype="<i8"),
        "u8": rng.integers(0, 255, (7,), dtype="u1"),
        "bool": numpy.array([True, False, True], dtype="?"),
        "scalar": numpy.array(3.5, dtype="<f4"),
        "empty": numpy.zeros((0, 4), dtype="<f4"),
        "f64": rng.standard_normal((2,)).astype("<f8"),
        "u16": rng.integers(0, 65535, (4,), dtype="<u2"),
    }
    dtypes = {"f32": "F32", "f16": "F16", "bf16": "BF16", "i32": "I32", "i64": "I64", "u8": "U8",
              "bool": "BOOL", "scalar": "F32", "empty": "F32", "f64": "F64", "u16": "U16"}
    data = bytearray(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    tensors = []
    for name, a in want.items():
        b = a.tobytes()
        tensors.append({"name": name, "dtype": dtypes[name], "shape": list(a.shape), "offset": len(data), "length": len(b)})
        data += b
    return bytes(data), tensors, want


@unittest.skipIf(numpy is None, "numpy is not installed")
class ViewTest(unittest.TestCase):
    def setUp(self):
        self.data, self.tensors, self.want = layout()
        fd = sealed_memfd(self.data, 8192)
        self.m = vramseal.MemfdMapping(fd, 8192)
        os.close(fd)

    def tearDown(self):
        self.m.close()

    def test_memory(self):
        self.assertTrue(self.m.memory.readonly)
        self.assertEqual(bytes(self.m.memory[: len(self.data)]), self.data)
        self.assertEqual(self.m.read(3, 5), self.data[3:8])
        with self.assertRaises(TypeError):
            self.m.memory[0] = 1

    def test_numpy(self):
        views = _tensors.numpy_views(self.m.memory, self.tensors, len(self.data))
        self.assertEqual(set(views), set(self.want))
        for t in self.tensors:
            a, w = views[t["name"]], self.want[t["name"]]
            with self.subTest(t["name"]):
                numpy.testing.assert_array_equal(a, w)
                self.assertEqual(a.shape, w.shape)
                self.assertFalse(a.flags.writeable)
                if a.size:
                    # Zero-copy: the array's data is the mapping's page.
                    self.assertEqual(a.__array_interface__["data"][0], self.m.address + t["offset"])
                with self.assertRaises(ValueError):
                    a.setflags(write=True)
        self.assertEqual(views["bf16"].dtype, numpy.dtype("<u2"))

    @unittest.skipIf(torch is None, "torch is not installed")
    def test_torch(self):
        views = _tensors.torch_views(self.m.memory, self.tensors, len(self.data))
        for t in self.tensors:
            x, w = views[t["name"]], self.want[t["name"]]
            with self.subTest(t["name"]):
                self.assertEqual(tuple(x.shape), w.shape)
                if t["dtype"] == "BF16":
                    self.assertEqual(x.dtype, torch.bfloat16)
                    f32 = (w.astype("<u4") << 16).view("<f4")
                    numpy.testing.assert_array_equal(x.float().numpy(), f32)
                elif t["dtype"] == "U16":
                    self.assertEqual(x.dtype, getattr(torch, "uint16", torch.int16))
                    numpy.testing.assert_array_equal(x.numpy().view("<u2"), w)
                else:
                    numpy.testing.assert_array_equal(x.numpy(), w)
                if x.numel():
                    self.assertEqual(x.data_ptr(), self.m.address + t["offset"])

    @unittest.skipIf(torch is None, "torch is not installed")
    def test_readme_recipe(self):
        """The README's recipe: parameters are the mapping's pages."""
        w = numpy.arange(12, dtype="<f4").reshape(3, 4)
        b = numpy.ones(3, dtype="<f4")
        data = b"\0" * 64 + w.tobytes() + b.tobytes()
        tensors = [{"name": "fc.weight", "dtype": "F32", "shape": [3, 4], "offset": 64, "length": 48},
                   {"name": "fc.bias", "dtype": "F32", "shape": [3], "offset": 112, "length": 12}]
        fd = sealed_memfd(data, 4096)
        m = vramseal.MemfdMapping(fd, 4096)
        os.close(fd)
        model = torch.nn.Sequential()
        model.add_module("fc", torch.nn.Linear(4, 3))
        for name, t in _tensors.torch_views(m.memory, tensors, len(data)).items():
            module_name, _, attr = name.rpartition(".")
            module = model.get_submodule(module_name) if module_name else model
            setattr(module, attr, torch.nn.Parameter(t, requires_grad=False))
        self.assertEqual(model.fc.weight.data_ptr(), m.address + 64)
        with torch.no_grad():
            out = model(torch.ones(1, 4))
        numpy.testing.assert_array_equal(out.numpy(), (w.sum(axis=1) + 1).reshape(1, 3))
        del model
        m.close()

    @unittest.skipIf(torch is None, "torch is not installed")
    def test_torch_dtypes(self):
        for st, tt in [("BF16", torch.bfloat16), ("F16", torch.float16), ("F32", torch.float32), ("F64", torch.float64),
                       ("BOOL", torch.bool), ("U8", torch.uint8), ("I8", torch.int8), ("I16", torch.int16),
                       ("I32", torch.int32), ("I64", torch.int64),
                       ("F8_E4M3", getattr(torch, "float8_e4m3fn", torch.uint8)),
                       ("F8_E5M2", getattr(torch, "float8_e5m2", torch.uint8))]:
            with self.subTest(st):
                self.assertEqual(vramseal.torch_dtype(st), tt)
                self.assertEqual(tt.itemsize if hasattr(tt, "itemsize") else torch.empty(0, dtype=tt).element_size(),
                                 vramseal.DTYPES[st][0])

    def test_numpy_dtypes(self):
        for st, nt in [("BF16", "<u2"), ("F16", "<f2"), ("F32", "<f4"), ("BOOL", "|b1"), ("F8_E4M3", "|u1"), ("I64", "<i8")]:
            with self.subTest(st):
                self.assertEqual(vramseal.numpy_dtype(st), nt)
                self.assertEqual(numpy.dtype(nt).itemsize, vramseal.DTYPES[st][0])
        with self.assertRaises(vramseal.Error):
            vramseal.numpy_dtype("Q4_K")

    def test_bad_map(self):
        for name, t in [
            ("outside", {"name": "w", "dtype": "F32", "shape": [4], "offset": len(self.data) - 8, "length": 16}),
            ("length mismatch", {"name": "w", "dtype": "F32", "shape": [4], "offset": 0, "length": 12}),
            ("unknown dtype", {"name": "w", "dtype": "Q8", "shape": [4], "offset": 0, "length": 4}),
        ]:
            with self.subTest(name), self.assertRaises(vramseal.Error):
                _tensors.numpy_views(self.m.memory, [t], len(self.data))


class ReadOnlyTest(unittest.TestCase):
    def test_write_kills_the_writer(self):
        """A process that stores into its mapping dies with SIGSEGV and the
        memfd is unchanged: the kernel, not the client, refuses the write."""
        data = b"sealed bytes" * 100
        fd = sealed_memfd(data, 4096)
        child = textwrap.dedent(
            """
            import ctypes, os, sys
            sys.path.insert(0, %r)
            import vramseal
            m = vramseal.MemfdMapping(%d, 4096)
            assert m.read(0, 6) == b"sealed"
            sys.stdout.write("mapped\\n"); sys.stdout.flush()
            ctypes.memmove(m.address + 10, b"XX", 2)
            sys.stdout.write("wrote\\n")
            """
            % (PKG, fd)
        )
        p = subprocess.run([sys.executable, "-c", child], pass_fds=[fd], capture_output=True, timeout=60)
        self.assertEqual(p.returncode, -signal.SIGSEGV, p.stderr.decode())
        self.assertEqual(p.stdout, b"mapped\n")
        self.assertEqual(os.pread(fd, len(data), 0), data)
        os.close(fd)

    def test_writable_mapping_refused(self):
        import mmap

        fd = sealed_memfd(b"x" * 4096)
        with self.assertRaises(OSError):
            mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        os.close(fd)


if __name__ == "__main__":
    unittest.main()
