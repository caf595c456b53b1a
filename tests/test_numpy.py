"""numpy arrays, dtypes and scalars: every dtype and layout, in band and out of band,
with zero copy shown on both sides of the out-of-band path.

- Round trips keep dtype (byte order, units, sizes, field layout, alignment, record
  type), shape, values bit for bit, and the memory order (C or Fortran); non-contiguous
  arrays come back C-contiguous.
- Out of band: the buffer handed to buffer_callback is a view of the array's own memory
  (same address), the loaded array is a view of the buffer passed to loads (same
  address), writable when that buffer is writable and read-only when it is read-only
  (or when the original was read-only, as pickle does).
- In band: one copy into the payload, one copy out (measured with tracemalloc).
- numpy types need no registration in strict mode; object arrays' elements follow the
  normal strict rules.
"""

from __future__ import annotations

import array
import datetime
import decimal
import os
import pickle
import random
import subprocess
import sys
import textwrap
import tracemalloc
import warnings

import pytest

np = pytest.importorskip("numpy")

import pyfory  # noqa: E402
from pyfory import arrays  # noqa: E402
from pyfory.buffers import BufferObject  # noqa: E402
from pyfory.error import (  # noqa: E402
    ForyError,
    MalformedDataError,
    OutOfBandBufferError,
    TypeNotRegisteredError,
)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
StringDType = getattr(getattr(np, "dtypes", None), "StringDType", None)


# ---- helpers ---------------------------------------------------------------------------

def _memory_order(a):
    if a.flags.c_contiguous:
        return "C"
    if a.flags.f_contiguous:
        return "F"
    return "-"


def assert_array_same(a, b, *, layout=True):
    assert type(b) is type(a), f"type {type(b)} != {type(a)}"
    assert b.dtype == a.dtype, f"dtype {b.dtype!r} != {a.dtype!r}"
    assert type(b.dtype) is type(a.dtype) and b.dtype.type is a.dtype.type
    assert b.dtype.str == a.dtype.str and b.dtype.isalignedstruct == a.dtype.isalignedstruct
    assert b.shape == a.shape, f"shape {b.shape} != {a.shape}"
    if a.dtype.hasobject:
        assert repr(b.tolist()) == repr(a.tolist())
        assert [type(x) for x in b.ravel().tolist()] == [type(x) for x in a.ravel().tolist()]
    elif a.dtype.fields is not None:
        # tobytes() of a non-C array copies field by field, padding left uninitialized
        assert repr(b.tolist()) == repr(a.tolist())
        if _memory_order(a) != "-" and a.dtype.itemsize:
            assert _raw(b) == _raw(a), "memory differs (bitwise, padding included)"
    else:
        assert b.tobytes() == a.tobytes(), "values differ (bitwise)"
    if layout:
        want = _memory_order(a)
        if want == "-":
            want = "C"
        if a.ndim >= 2 and a.size > 1:
            assert _memory_order(b) == want, f"memory order {_memory_order(b)} != {want}"


def _raw(a) -> bytes:
    """The bytes of a contiguous array in memory order."""
    return a.reshape(-1, order="A").view(np.uint8).tobytes()


def assert_scalar_same(a, b):
    assert type(b) is type(a), f"type {type(b)} != {type(a)}"
    assert b.dtype == a.dtype and b.dtype.str == a.dtype.str
    if a.dtype.hasobject:
        assert repr(a.item()) == repr(b.item())
    else:
        assert b.tobytes() == a.tobytes()


def dumps_oob(fory, obj):
    offered = []
    payload = fory.dumps(obj, buffer_callback=lambda bo: offered.append(bo) and False)
    return payload, offered


def address(buf) -> int:
    """Address of the first byte of any buffer (via a numpy view: no copy)."""
    return np.frombuffer(buf, dtype=np.uint8).ctypes.data


@pytest.fixture(params=[False, True], ids=["ref=False", "ref=True"])
def ref(request):
    return request.param


@pytest.fixture(params=["in-band", "out-of-band"])
def band(request):
    return request.param


def roundtrip(obj, ref=False, band="in-band", strict=True):
    writer = pyfory.Fory(ref=ref, strict=strict)
    if band == "in-band":
        payload, buffers = writer.dumps(obj), None
    else:
        payload, offered = dumps_oob(writer, obj)
        buffers = [bytearray(bo.raw()) for bo in offered]
    first = writer.loads(payload, buffers=buffers)
    fresh = pyfory.Fory(ref=ref, strict=strict).loads(payload, buffers=buffers)
    return first, fresh


# ---- arrays of every dtype and layout --------------------------------------------------

def _dt64(unit):
    return np.array(["1970-01-01", "2000-02-29T12:34:56.789", "NaT", "2262-04-11"], dtype=f"M8[{unit}]")


NUMERIC = {
    "bool": np.array([True, False, True]),
    "int8": np.array([-128, 0, 127], dtype=np.int8),
    "uint8": np.array([0, 1, 255], dtype=np.uint8),
    "int16": np.array([-(2**15), 2**15 - 1], dtype=np.int16),
    "uint16": np.array([0, 2**16 - 1], dtype=np.uint16),
    "int32": np.array([-(2**31), 2**31 - 1], dtype=np.int32),
    "uint32": np.array([0, 2**32 - 1], dtype=np.uint32),
    "int64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
    "uint64": np.array([0, 2**64 - 1], dtype=np.uint64),
    "longlong": np.array([-5, 5], dtype=np.longlong),
    "ulonglong": np.array([5, 7], dtype=np.ulonglong),
    "intp": np.arange(4, dtype=np.intp),
    "float16": np.array([0.5, -0.0, np.inf, np.nan], dtype=np.float16),
    "float32": np.array([1.5, np.nan, -np.inf, 1e-40], dtype=np.float32),
    "float64": np.array([0.1, -0.0, np.nan, 5e-324, 1e308]),
    "longdouble": np.array([1, 2, 3], dtype=np.longdouble) / 3,
    "complex64": np.array([1 + 2j, np.nan - 1j], dtype=np.complex64),
    "complex128": np.array([1 + 2j, complex(np.inf, -0.0)], dtype=np.complex128),
    "clongdouble": np.array([1 + 2j], dtype=np.clongdouble) / 3,
    "big-endian-int32": np.arange(5, dtype=">i4"),
    "big-endian-float64": np.linspace(0, 1, 5).astype(">f8"),
    "big-endian-complex": np.array([1 + 1j], dtype=">c16"),
    **{f"datetime64[{u}]": _dt64(u) for u in ("D", "s", "ms", "us", "ns")},
    "datetime64[Y]": np.array(["2000", "1969", "NaT"], dtype="M8[Y]"),
    "datetime64[25s]": np.array([0, 1, 2], dtype="M8[25s]"),
    **{f"timedelta64[{u}]": np.array([0, -1, 10**9, "NaT"], dtype=f"m8[{u}]")
       for u in ("D", "h", "m", "s", "ms", "us", "ns")},
    "unicode": np.array(["", "a", "héllo", "日本語", "\U0001f600" * 3]),
    "unicode-big-endian": np.array(["ab", "c"], dtype=">U2"),
    "bytes": np.array([b"", b"\x00\xff", b"abc"]),
    "void": np.array([b"\x01\x02\x03", b"abc"], dtype="V3"),
    "structured": np.array([(1, 2.5, b"x"), (-3, np.nan, b"yz")],
                           dtype=[("i", "<i4"), ("f", "<f8"), ("s", "S2")]),
    "structured-aligned": np.zeros(3, dtype=np.dtype([("a", "u1"), ("b", "<f8"), ("c", "<i2")], align=True)),
    "structured-nested": np.array([((1, [1.0, 2.0]), "u")],
                                  dtype=[("n", [("x", "<i8"), ("v", "<f4", (2,))]), ("s", "<U3")]),
    "structured-offsets-titles": np.zeros(
        2, dtype={"names": ["x", "y"], "formats": ["u1", ">f4"], "offsets": [0, 8], "itemsize": 16,
                  "titles": ["first", None]}),
    "structured-subarray-2d": np.arange(24, dtype="<i4").view([("m", "<i4", (2, 3))]),
    "structured-datetime": np.array([("2020-01-01", 5)], dtype=[("t", "M8[ms]"), ("n", "m8[s]")]),
    "structured-empty": np.zeros(3, dtype=[]),
    "record": np.zeros(2, dtype=np.dtype((np.record, [("a", "<i4"), ("b", "<f8")]))),
}

OBJECT = {
    "object-mixed": np.array([1, "two", 3.0, None, (4, 5), {"k": [6]}, b"7", 2**100, decimal.Decimal("1.5"),
                              datetime.date(2020, 1, 2)], dtype=object),
    "object-lists": np.array([None, None], dtype=object),   # filled below: two equal lists
    "object-numpy-scalars": np.array([np.float32(1.5), np.int8(-2), np.datetime64("2020-01-01", "D")],
                                     dtype=object),
    "object-2d": np.array([[1, "a"], [2.5, None]], dtype=object),
    "object-empty": np.empty((0, 2), dtype=object),
    "structured-with-object": np.array([(1, "x"), (2, None), (3, [1, 2])], dtype=[("i", "<i4"), ("o", "O")]),
}
with warnings.catch_warnings():     # numpy 2.x deprecates the generic datetime unit
    warnings.simplefilter("ignore", DeprecationWarning)
    NUMERIC["datetime64-generic"] = np.array(["NaT", "NaT"], dtype="M8")
OBJECT["object-lists"][0] = [1, 2]
OBJECT["object-lists"][1] = [3, 4]

if StringDType is not None:
    OBJECT["StringDType"] = np.array(["", "a", "héllo", "日本語" * 10], dtype=StringDType())
    OBJECT["StringDType-na"] = np.array(["x", None, "y"], dtype=StringDType(na_object=None))

ALL = {**NUMERIC, **OBJECT}


def _layouts(base):
    """The array itself and other shapes/layouts of the same data."""
    a = base
    yield "1d", a
    if a.size == 0:
        return
    yield "0d", a.ravel()[:1].reshape(())
    rep = np.concatenate([a.ravel()] * 24)[:24]
    yield "2d-C", rep[:12].reshape(3, 4)
    yield "2d-F", np.asfortranarray(rep[:12].reshape(3, 4))
    yield "3d-F", np.asfortranarray(rep.reshape(2, 3, 4))
    yield "transposed", rep[:12].reshape(3, 4).T
    yield "strided", rep[::3]
    yield "reversed", rep[::-1]
    yield "2d-sliced", rep[:12].reshape(3, 4)[:, 1:3]
    yield "empty", rep[:0].reshape(0, 3)


CASES = [pytest.param(arr, id=f"{name}-{layout}") for name, base in ALL.items()
         for layout, arr in _layouts(base)]


@pytest.mark.parametrize("arr", CASES)
def test_array_round_trip(arr, ref, band):
    for loaded in roundtrip(arr, ref=ref, band=band):
        assert_array_same(arr, loaded)


@pytest.mark.parametrize("arr", CASES)
def test_array_round_trip_not_strict(arr):
    for loaded in roundtrip(arr, strict=False, band="out-of-band"):
        assert_array_same(arr, loaded)


def test_zero_d_arrays(ref, band):
    for value in (np.array(1.5), np.array("abc"), np.array(None, dtype=object), np.array(7, dtype=">i2"),
                  np.array((1, 2.0), dtype=[("a", "i1"), ("b", "f4")])):
        for loaded in roundtrip(value, ref=ref, band=band):
            assert loaded.shape == () and type(loaded) is np.ndarray
            assert_array_same(value, loaded)


def test_large_multidimensional_layouts_out_of_band():
    base = np.random.default_rng(0).standard_normal((64, 32, 16))
    fory = pyfory.Fory()
    for arr in (base, np.asfortranarray(base), base.transpose(2, 0, 1), base[:, ::2, :]):
        payload, offered = dumps_oob(fory, arr)
        assert len(offered) == 1 and len(payload) < 64
        loaded = fory.loads(payload, buffers=offered)
        assert_array_same(arr, loaded)


# ---- zero copy ---------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("name", ["float64", "int8", "complex128", "datetime64[ns]", "unicode",
                                  "structured", "big-endian-float64", "bool"])
def test_out_of_band_is_zero_copy_on_write_and_read(name, order):
    base = NUMERIC[name]
    arr = np.asfortranarray(np.stack([base] * 4)) if order == "F" else np.stack([base] * 4)
    fory = pyfory.Fory()
    payload, offered = dumps_oob(fory, arr)
    assert len(offered) == 1
    bo = offered[0]
    assert isinstance(bo, BufferObject) and bo.total_bytes() == arr.nbytes
    # write side: the buffer handed out is the array's own memory
    view = np.frombuffer(bo.getbuffer(), dtype=np.uint8)
    assert np.shares_memory(view, arr)
    assert view.ctypes.data == arr.ctypes.data
    assert len(payload) < 120, "out of band, the payload is only a header"
    # read side: the array is built on the buffer passed in
    receiver = bytearray(bo.raw())
    loaded = fory.loads(payload, buffers=[receiver])
    assert_array_same(arr, loaded)
    assert np.shares_memory(loaded, np.frombuffer(receiver, dtype=np.uint8))
    assert loaded.ctypes.data == address(receiver)
    assert loaded.flags.writeable, "a writable buffer gives a writable array"
    # read-only buffer -> read-only array
    frozen = bytes(bo.raw())
    loaded = fory.loads(payload, buffers=[frozen])
    assert_array_same(arr, loaded)
    assert loaded.ctypes.data == address(frozen)
    assert not loaded.flags.writeable
    with pytest.raises(ValueError):
        loaded.flat[0] = loaded.flat[1]


def test_loaded_array_is_a_live_view_of_the_buffer():
    arr = np.arange(100_000, dtype=np.float64)
    fory = pyfory.Fory()
    payload, offered = dumps_oob(fory, arr)
    receiver = bytearray(offered[0].raw())
    loaded = fory.loads(payload, buffers=[receiver])
    loaded[0] = -1.0
    assert np.frombuffer(receiver, dtype=np.float64)[0] == -1.0
    receiver[8:16] = np.float64(42.0).tobytes()
    assert loaded[1] == 42.0


def test_buffer_object_handed_back_shares_memory_with_the_original():
    arr = np.arange(10_000, dtype=np.int32).reshape(100, 100)
    fory = pyfory.Fory()
    payload, offered = dumps_oob(fory, arr)
    loaded = fory.loads(payload, buffers=offered)
    assert np.shares_memory(loaded, arr) and loaded.ctypes.data == arr.ctypes.data
    # pickle's own check (test_buffers_numpy) for contiguous arrays
    loaded = fory.loads(payload, buffers=[bo.raw() for bo in offered])
    assert loaded.ctypes.data == arr.ctypes.data
    np.testing.assert_array_equal(loaded, arr)


def test_read_only_original_loads_read_only_even_from_a_writable_buffer():
    arr = np.arange(1000.0)
    arr.flags.writeable = False
    fory = pyfory.Fory()
    payload, offered = dumps_oob(fory, arr)
    loaded = fory.loads(payload, buffers=[bytearray(offered[0].raw())])
    assert not loaded.flags.writeable
    loaded = fory.loads(fory.dumps(arr))       # in band too
    assert not loaded.flags.writeable
    np.testing.assert_array_equal(loaded, arr)


def test_non_contiguous_arrays_are_copied_once_on_write():
    base = np.arange(1000.0).reshape(10, 100)
    arr = base[:, ::2]
    fory = pyfory.Fory()
    payload, offered = dumps_oob(fory, arr)
    assert len(offered) == 1 and offered[0].total_bytes() == arr.nbytes
    assert not np.shares_memory(np.frombuffer(offered[0].getbuffer(), np.uint8), base)
    loaded = fory.loads(payload, buffers=offered)
    assert loaded.flags.c_contiguous
    np.testing.assert_array_equal(loaded, arr)


def test_broadcast_read_only_array():
    arr = np.broadcast_to(np.arange(4.0), (1000, 4))
    for loaded in roundtrip(arr, band="out-of-band"):
        np.testing.assert_array_equal(loaded, arr)
        assert not loaded.flags.writeable


def _root(a):
    """The object that owns an array's memory (following views and memoryviews)."""
    while True:
        if isinstance(a, np.ndarray) and a.base is not None:
            a = a.base
        elif isinstance(a, memoryview) and a.obj is not None:
            a = a.obj
        else:
            return a


def test_in_band_is_one_copy_in_and_one_copy_out():
    arr = np.random.default_rng(1).standard_normal(4_000_000)        # 32 MB
    fory = pyfory.Fory()
    fory.loads(fory.dumps(np.zeros(3)))                                # warm up
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        payload = fory.dumps(arr)
        peak = tracemalloc.get_traced_memory()[1] - base
        # the payload itself is the one copy (plus growth headroom); a second copy of
        # the data would need at least 2x
        assert len(payload) < arr.nbytes + 100
        assert peak < 1.6 * arr.nbytes, f"dumps allocated {peak / arr.nbytes:.2f}x the array"
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        loaded = fory.loads(payload)
        peak = tracemalloc.get_traced_memory()[1] - base
        assert peak < 1.1 * arr.nbytes, f"loads allocated {peak / arr.nbytes:.2f}x the array"
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(loaded, arr)
    assert loaded.flags.writeable
    # the one copy out: a flat byte array (numpy-allocated, for huge pages) the array
    # is a view of, not the payload
    root = _root(loaded)
    assert isinstance(root, np.ndarray) and root.flags.owndata and root.nbytes == arr.nbytes
    assert not np.shares_memory(loaded, np.frombuffer(payload, np.uint8))


def test_in_band_with_truthy_callback_equals_no_callback():
    arr = np.arange(1000, dtype=np.int16)
    fory = pyfory.Fory()
    offered = []
    payload = fory.dumps(arr, buffer_callback=lambda bo: offered.append(bo) or True)
    assert len(offered) == 1, "numpy arrays are always offered, as pickle does"
    assert payload == fory.dumps(arr)
    np.testing.assert_array_equal(fory.loads(payload), arr)


def test_out_of_band_errors():
    arr = np.arange(100.0)
    fory = pyfory.Fory()
    payload, offered = dumps_oob(fory, [arr, arr * 2])
    with pytest.raises(OutOfBandBufferError):
        fory.loads(payload)
    with pytest.raises(OutOfBandBufferError, match="too few"):
        fory.loads(payload, buffers=offered[:1])
    with pytest.raises(OutOfBandBufferError, match="bytes"):
        fory.loads(payload, buffers=[offered[0], bytearray(10)])
    loaded = fory.loads(payload, buffers=offered)
    np.testing.assert_array_equal(loaded[1], arr * 2)


def test_numpy_arrays_as_out_of_band_buffers():
    arr = np.arange(50, dtype=np.int64)
    fory = pyfory.Fory()
    payload, offered = dumps_oob(fory, arr)
    receiver = np.frombuffer(bytearray(offered[0].raw()), dtype=np.float64)   # any format
    loaded = fory.loads(payload, buffers=[receiver])
    np.testing.assert_array_equal(loaded, arr)
    assert np.shares_memory(loaded, receiver)


# ---- identity, references, object arrays -------------------------------------------------

def test_same_array_twice_is_written_once(ref, band):
    arr = np.arange(10_000.0)
    value = [arr, arr, {"again": arr}]
    writer = pyfory.Fory(ref=ref)
    if band == "out-of-band":
        payload, offered = dumps_oob(writer, value)
        assert len(offered) == 1
    else:
        payload, offered = writer.dumps(value), None
        assert len(payload) < arr.nbytes + 100
    loaded = pyfory.Fory(ref=ref).loads(payload, buffers=offered)
    assert loaded[0] is loaded[1] is loaded[2]["again"]
    np.testing.assert_array_equal(loaded[0], arr)


def test_object_array_elements_are_values(ref, band):
    shared = [1, 2, 3]
    big = np.arange(100_000.0)
    arr = np.array([shared, shared, big, "s", None], dtype=object)
    arr[0], arr[1] = shared, shared
    writer = pyfory.Fory(ref=ref)
    if band == "out-of-band":
        payload, offered = dumps_oob(writer, arr)
        assert len(offered) == 1, "an array inside an object array goes out of band too"
        assert len(payload) < 200
    else:
        payload, offered = writer.dumps(arr), None
    loaded = pyfory.Fory(ref=ref).loads(payload, buffers=offered)
    assert loaded.dtype == object and loaded.shape == (5,)
    assert loaded[0] == shared and loaded[3] == "s" and loaded[4] is None
    np.testing.assert_array_equal(loaded[2], big)
    assert (loaded[0] is loaded[1]) == ref


def test_object_array_containing_itself():
    for ref in (True, False):
        arr = np.empty(3, dtype=object)
        arr[0] = arr
        arr[1] = "x"
        arr[2] = [arr]
        fory = pyfory.Fory(ref=ref)
        loaded = fory.loads(fory.dumps(arr))
        assert loaded[0] is loaded and loaded[2][0] is loaded and loaded[1] == "x"


def test_read_only_object_array():
    arr = np.array([1, "a", None], dtype=object)
    arr.flags.writeable = False
    for loaded in roundtrip(arr):
        assert loaded.tolist() == [1, "a", None] and not loaded.flags.writeable
    arr = np.array([1, "a", None], dtype=object)
    for loaded in roundtrip(arr):
        assert loaded.flags.writeable


def test_object_arrays_keep_fortran_order():
    arr = np.asfortranarray(np.array([[1, "a", None], [2.5, (1,), b"z"]], dtype=object))
    for loaded in roundtrip(arr, band="in-band"):
        assert loaded.flags.f_contiguous and not loaded.flags.c_contiguous
        assert_array_same(arr, loaded)


# ---- scalars, dtypes, classes ------------------------------------------------------------

SCALARS = [
    np.bool_(True), np.bool_(False), np.int8(-8), np.uint8(200), np.int16(-3000), np.uint16(60000),
    np.int32(-(2**31)), np.uint32(2**32 - 1), np.int64(-(2**63)), np.uint64(2**64 - 1), np.longlong(-7),
    np.ulonglong(7), np.float16(1.5), np.float32(np.nan), np.float64(-0.0), np.float64(1e308),
    np.longdouble(1) / 3, np.complex64(1 - 2j), np.complex128(complex(np.nan, 1)), np.clongdouble(2 + 3j) / 3,
    np.datetime64("2020-02-29", "D"), np.datetime64("2020-02-29T01:02:03.123456789", "ns"),
    np.datetime64("NaT", "s"), np.datetime64(5, "25s"), np.timedelta64(-5, "h"), np.timedelta64("NaT", "ns"),
    np.str_(""), np.str_("héllo 日本"), np.bytes_(b"\x00abc"), np.void(b"\x01\x02"),
    np.array([(1, 2.5)], dtype=[("a", "<i2"), ("b", ">f8")])[0],
    np.array([(1, "x")], dtype=[("a", "<i2"), ("o", "O")])[0],
]


@pytest.mark.parametrize("x", SCALARS, ids=lambda x: f"{type(x).__name__}-{x.dtype.str}")
def test_scalar_round_trip(x, ref):
    for loaded in roundtrip(x, ref=ref):
        assert_scalar_same(x, loaded)
    for loaded in roundtrip([x, x], ref=ref):
        assert_scalar_same(x, loaded[0])


def test_scalars_are_compact():
    fory = pyfory.Fory()
    assert len(fory.dumps(np.float64(1.5))) <= len(pickle.dumps(np.float64(1.5), protocol=5)) // 3
    values = [np.float32(i) for i in range(100)]
    assert len(fory.dumps(values)) < 100 * 8


DTYPES = [
    np.dtype(c) for c in "?bBhHiIlLqQefdgFDGSUVOMm"
] + [
    np.dtype("M8[ns]"), np.dtype("m8[25us]"), np.dtype(">i8"), np.dtype("<U7"), np.dtype("S3"),
    np.dtype("V5"), NUMERIC["structured"].dtype, NUMERIC["structured-aligned"].dtype,
    NUMERIC["structured-nested"].dtype, NUMERIC["structured-offsets-titles"].dtype,
    NUMERIC["record"].dtype, OBJECT["structured-with-object"].dtype, np.dtype(("<f4", (2, 3))),
    np.dtype([]),
]
if StringDType is not None:
    DTYPES += [StringDType(), StringDType(na_object=None), StringDType(na_object=np.nan, coerce=False)]


@pytest.mark.parametrize("dt", DTYPES, ids=repr)
def test_dtype_round_trip(dt, ref):
    for loaded in roundtrip(dt, ref=ref):
        assert loaded == dt and type(loaded) is type(dt)
        assert loaded.str == dt.str and loaded.type is dt.type
        assert loaded.isalignedstruct == dt.isalignedstruct
        assert repr(loaded) == repr(dt)


CLASSES = [np.ndarray, np.dtype, np.float64, np.int8, np.bool_, np.datetime64, np.str_, np.void,
           np.longlong, type(np.dtype("f8")), type(np.dtype("O")), type(np.dtype([("a", "i1")]))]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__qualname__)
def test_numpy_classes_as_values(cls):
    for loaded in roundtrip([cls, cls]):
        assert loaded[0] is cls and loaded[1] is cls


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")   # np.matrix
def test_subclasses_go_through_reduce():
    fory = pyfory.Fory(strict=False, ref=True)
    mat = np.matrix([[1, 2], [3, 4]])
    rec = np.rec.array([(1, 2.0), (3, 4.0)], dtype=[("a", "i4"), ("b", "f8")])
    masked = np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, True, False])
    for value in (mat, rec, masked):
        payload, offered = dumps_oob(fory, value)
        loaded = fory.loads(payload, buffers=offered)
        assert type(loaded) is type(value)
        np.testing.assert_array_equal(np.asarray(loaded), np.asarray(value))
    assert fory.loads(fory.dumps(masked)).mask.tolist() == [False, True, False]
    assert fory.loads(fory.dumps(rec)).b.tolist() == [2.0, 4.0]


# ---- strict mode -------------------------------------------------------------------------

class Point:
    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return type(other) is Point and other.x == self.x


def test_strict_mode_allows_numpy_data_without_registration():
    fory = pyfory.Fory(strict=True)
    value = {"a": np.arange(5), "dt": np.dtype([("x", "f4")]), "s": np.float32(2.5),
             "o": np.array([1, "x", None], dtype=object), "cls": np.float64}
    loaded = fory.loads(fory.dumps(value))
    np.testing.assert_array_equal(loaded["a"], value["a"])
    assert loaded["dt"] == value["dt"] and loaded["s"] == value["s"] and loaded["cls"] is np.float64
    assert loaded["o"].tolist() == [1, "x", None]


def test_strict_mode_object_array_elements_follow_the_rules():
    arr = np.array([Point(1), Point(2)], dtype=object)
    with pytest.raises(TypeNotRegisteredError):
        pyfory.Fory(strict=True).dumps(arr)
    payload = pyfory.Fory(strict=False).dumps(arr)
    with pytest.raises(TypeNotRegisteredError):
        pyfory.Fory(strict=True).loads(payload)
    writer, reader = pyfory.Fory(strict=True), pyfory.Fory(strict=True)
    writer.register(Point, type_id=7)
    reader.register(Point, type_id=7)
    assert reader.loads(writer.dumps(arr)).tolist() == [Point(1), Point(2)]


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")   # np.matrix
def test_strict_mode_refuses_ndarray_subclasses():
    with pytest.raises(TypeNotRegisteredError):
        pyfory.Fory(strict=True).dumps(np.matrix([[1]]))


def test_registered_serializer_for_ndarray_wins():
    class AsList(pyfory.Serializer):
        def write(self, ctx, obj):
            ctx.write_value(obj.tolist())

        def read(self, ctx):
            return ("as-list", ctx.read_value())

    fory = pyfory.Fory()
    fory.register(np.ndarray, name="nd", serializer=AsList)
    assert fory.loads(fory.dumps(np.arange(3))) == ("as-list", [0, 1, 2])


# ---- malformed and hostile payloads -------------------------------------------------------

def _payloads():
    yield pyfory.Fory().dumps([np.arange(6, dtype="<i4").reshape(2, 3), np.float64(1.5), np.dtype("f8")])
    yield pyfory.Fory().dumps(OBJECT["object-mixed"])
    yield pyfory.Fory().dumps(NUMERIC["structured-nested"])
    yield pyfory.Fory().dumps(OBJECT["structured-with-object"])


def test_truncated_payloads_raise_fory_errors():
    for payload in _payloads():
        fory = pyfory.Fory()
        for n in range(len(payload)):
            with pytest.raises(ForyError):
                fory.loads(payload[:n])
        fory.loads(payload)


def test_mutated_payloads_never_crash():
    rng = random.Random(1234)
    for payload in _payloads():
        fory = pyfory.Fory()
        for _ in range(1500):
            data = bytearray(payload)
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(4, len(data))] = rng.randrange(256)
            try:
                fory.loads(bytes(data))
            except ForyError:
                pass
        assert len(fory.loads(payload)) >= 1


def test_object_dtype_cannot_be_built_from_raw_bytes(monkeypatch):
    """A payload naming an object dtype for a raw buffer never turns bytes into pointers."""
    payload = pyfory.Fory().dumps(np.array([1, 2], dtype="<i8"))
    assert payload.count(b"<i8") == 1
    hostile = payload.replace(b"<i8", b"|O8")
    with pytest.raises(MalformedDataError):
        pyfory.Fory().loads(hostile)


def test_huge_shape_claims_are_refused_before_allocating(monkeypatch):
    real = arrays._write_shape

    def lying(ctx, shape):
        real(ctx, (10**6, 10**6))

    monkeypatch.setattr(arrays, "_write_shape", lying)
    for value in (np.array([1, "x"], dtype=object), np.zeros(4)):
        payload = pyfory.Fory().dumps(value)
        with pytest.raises(MalformedDataError):
            pyfory.Fory().loads(payload)


def test_bad_dtype_strings_are_refused():
    payload = pyfory.Fory().dumps(np.dtype("<f8"))
    for bad in (b"<x8", b"<f3", b"<M9"):
        with pytest.raises(ForyError):
            pyfory.Fory().loads(payload.replace(b"<f8", bad))


# ---- numpy is optional --------------------------------------------------------------------

def _run(code: str):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=120)


def test_numpy_is_imported_only_when_the_data_has_numpy_objects():
    payload = pyfory.Fory().dumps({"a": np.arange(3), "s": np.float64(2.0)})
    result = _run(f"""
        import sys, array
        import pyfory
        fory = pyfory.Fory()
        assert fory.loads(fory.dumps([1, "x", array.array("d", [1.0]), b"y"]))[0] == 1
        assert "numpy" not in sys.modules, "pyfory imported numpy"
        value = fory.loads({payload!r})
        assert "numpy" in sys.modules
        import numpy as np
        assert value["a"].tolist() == [0, 1, 2] and type(value["s"]) is np.float64
        # a Fory made before numpy was imported serializes numpy objects (lazy lookup)
        assert fory.loads(fory.dumps(np.arange(4.0))).tolist() == [0.0, 1.0, 2.0, 3.0]
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_reader_without_numpy_gets_a_clear_error():
    payload = pyfory.Fory().dumps([np.arange(3)])
    result = _run(f"""
        import sys
        class NoNumpy:
            def find_spec(self, name, path=None, target=None):
                if name == "numpy" or name.startswith("numpy."):
                    raise ImportError("numpy is not installed (test)")
        sys.meta_path.insert(0, NoNumpy())
        import pyfory
        fory = pyfory.Fory()
        try:
            fory.loads({payload!r})
        except pyfory.ForyError as e:
            assert "numpy" in str(e), e
        else:
            raise AssertionError("no error")
        assert fory.loads(fory.dumps([1, 2])) == [1, 2]
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ---- property-based round trips ------------------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
hnp = pytest.importorskip("hypothesis.extra.numpy")
st = hypothesis.strategies


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(
    arr=hnp.arrays(
        dtype=st.one_of(hnp.scalar_dtypes(), hnp.byte_string_dtypes(), hnp.unicode_string_dtypes(),
                        hnp.array_dtypes(allow_subarrays=True)),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)),
    fortran=st.booleans(), oob=st.booleans(), ref=st.booleans())
def test_hypothesis_arrays(arr, fortran, oob, ref):
    if fortran:
        arr = np.asfortranarray(arr)
    for loaded in roundtrip(arr, ref=ref, band="out-of-band" if oob else "in-band"):
        assert_array_same(arr, loaded)


def test_in_band_arrays_load_from_any_buffer_format():
    # the in-band copy reads the payload through a byte view of whatever object was
    # passed to loads, here a float64 memoryview over the payload's bytes
    fory = pyfory.Fory(strict=False)
    big = np.arange(300_000, dtype=np.float64)          # above the numpy-allocation size
    small = array.array("i", range(1000))
    value = [big, small, big[::2].copy()]
    pad = -len(fory.dumps(value)) % 8
    if pad:
        value.append("x" * (pad - 1))     # a short string: pad bytes (its tag and pad - 1)
    padded = fory.dumps(value)
    assert len(padded) % 8 == 0
    loaded = fory.loads(memoryview(padded).cast("d"))
    np.testing.assert_array_equal(loaded[0], big)
    assert loaded[1] == small
    np.testing.assert_array_equal(loaded[2], big[::2])
    assert loaded[0].flags.writeable and loaded[0].flags.c_contiguous
