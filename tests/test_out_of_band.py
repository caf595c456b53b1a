"""The pickle protocol 5 out-of-band buffer contract (PEP 574), without numpy.

- dumps(obj, buffer_callback=cb): each large binary buffer is offered to cb as a
  pyfory.BufferObject; cb returns falsy -> out of band, truthy -> in band; no callback ->
  everything in band.
- loads(data, buffers=...) takes the out-of-band buffers in order, as anything with the
  buffer protocol; too few, none, or one of the wrong size is an OutOfBandBufferError.
- Zero copy: the BufferObject is a view of the original memory, and a value loaded out of
  band is a view of the buffer passed in (shown by mutating one and seeing the other).

These are also the opcode-free parts of CPython's pickletester buffer tests
(test_in_band_buffers, test_oob_buffers, test_oob_buffers_writable_to_readonly,
test_buffers_error, test_buffer_callback_error), which test_pickletester.py skips.
"""

from __future__ import annotations

import array
import io
import pickle
import sys

import pytest

import pyfory
from pyfory.buffers import OOB_THRESHOLD, BufferObject
from pyfory.error import ForyError, OutOfBandBufferError

BIG = OOB_THRESHOLD              # the smallest size that is offered to buffer_callback
MARK = b"abcdefgh"


def _data(n: int = BIG, seed: int = 7) -> bytes:
    return bytes((i * seed + i // 251) & 0xFF for i in range(n))


def collect(result=None):
    """A buffer_callback recording what it is offered; returns `result` for each."""
    offered = []

    def cb(buf):
        offered.append(buf)
        return result

    cb.offered = offered
    return cb


def dumps_oob(fory, obj):
    cb = collect(False)
    return fory.dumps(obj, buffer_callback=cb), cb.offered


@pytest.fixture(params=[False, True], ids=["ref=False", "ref=True"])
def fory(request):
    return pyfory.Fory(ref=request.param)


# ---- the callback decides ------------------------------------------------------------

@pytest.mark.parametrize("falsy", [None, False, 0, "", b"", []])
def test_falsy_callback_result_sends_the_buffer_out_of_band(fory, falsy):
    data = _data()
    cb = collect(falsy)
    payload = fory.dumps(data, buffer_callback=cb)
    assert len(cb.offered) == 1 and isinstance(cb.offered[0], BufferObject)
    assert len(payload) < 32, "the payload keeps only the buffer's size"
    assert data[:64] not in payload
    loaded = fory.loads(payload, buffers=cb.offered)
    assert type(loaded) is bytes and loaded == data


@pytest.mark.parametrize("truthy", [True, 1, "yes", [0]])
def test_truthy_callback_result_keeps_the_buffer_in_band(fory, truthy):
    data = _data()
    cb = collect(truthy)
    payload = fory.dumps(data, buffer_callback=cb)
    assert len(cb.offered) == 1, "the buffer is still offered"
    assert data in payload
    assert len(payload) <= len(fory.dumps(data)) + 2, "in band costs what no callback costs"
    assert fory.loads(payload) == data
    assert fory.loads(payload, buffers=[]) == data


def test_without_callback_everything_is_in_band(fory):
    value = [_data(), bytearray(_data(seed=3)), pickle.PickleBuffer(MARK), memoryview(_data(seed=5))]
    payload = fory.dumps(value)
    assert len(payload) > 3 * BIG
    loaded = fory.loads(payload)
    assert loaded[0] == value[0] and loaded[1] == value[1]
    assert bytes(loaded[2].raw()) == MARK
    assert loaded[3] == value[3]


def test_callback_can_choose_per_buffer(fory):
    parts = [_data(seed=s) for s in (1, 2, 3, 4)]
    decisions = iter([False, True, False, True])
    offered = []

    def cb(buf):
        offered.append(buf)
        return next(decisions)

    payload = fory.dumps(parts, buffer_callback=cb)
    assert len(offered) == 4
    out_of_band = [offered[0], offered[2]]
    assert parts[1][:64] in payload and parts[3][:64] in payload
    assert parts[0][:64] not in payload and parts[2][:64] not in payload
    assert fory.loads(payload, buffers=out_of_band) == parts


def test_small_buffers_are_not_offered_but_pickle_buffers_always_are(fory):
    small = _data(BIG - 1)
    cb = collect(False)
    payload = fory.dumps([small, bytearray(small), memoryview(small)], buffer_callback=cb)
    assert cb.offered == []
    assert fory.loads(payload) == [small, bytearray(small), memoryview(small)]
    # PickleBuffer: always offered, as pickle does, whatever its size
    payload, offered = dumps_oob(fory, pickle.PickleBuffer(MARK))
    assert len(offered) == 1 and MARK not in payload


def test_threshold_is_configurable():
    fory = pyfory.Fory()
    fory.oob_threshold = 4
    payload, offered = dumps_oob(fory, MARK)
    assert len(offered) == 1 and MARK not in payload
    assert fory.loads(payload, buffers=offered) == MARK


def test_callback_exception_propagates_and_fory_stays_usable(fory):
    def cb(buf):
        1 / 0

    with pytest.raises(ZeroDivisionError):
        fory.dumps(pickle.PickleBuffer(b"foobar"), buffer_callback=cb)
    assert fory.loads(fory.dumps([1, b"x"])) == [1, b"x"]


# ---- types and what comes back --------------------------------------------------------

def test_bytes_out_of_band_is_the_buffer_passed_in(fory):
    data = _data()
    payload, offered = dumps_oob(fory, data)
    # the view handed out is of the original bytes object (no copy on write)
    assert offered[0].getbuffer().obj is data
    given = bytes(offered[0].raw())
    loaded = fory.loads(payload, buffers=[given])
    assert loaded is given, "a bytes buffer of the right size is used as is (zero copy)"


def test_bytearray_out_of_band_is_zero_copy_both_ways(fory):
    data = bytearray(_data())
    payload, offered = dumps_oob(fory, data)
    view = offered[0].getbuffer()
    data[0] ^= 0xFF
    assert view[0] == data[0], "the BufferObject is a view of the original bytearray"
    receiver = bytearray(offered[0].raw())
    loaded = fory.loads(payload, buffers=[receiver])
    assert loaded is receiver
    assert loaded == data


def test_memoryview_keeps_format_shape_and_readonly(fory):
    src = array.array("d", [i * 0.5 for i in range(BIG // 8 * 2)])   # 2 * BIG bytes
    view = memoryview(src).cast("B").cast("d", [len(src) // 4, 4])
    payload, offered = dumps_oob(fory, view)
    bo = offered[0]
    assert bo.getbuffer().format == "d" and bo.getbuffer().shape == (len(src) // 4, 4)
    assert bo.raw().format == "B" and bo.raw().nbytes == view.nbytes
    src[0] = 42.0
    assert bo.getbuffer()[0, 0] == 42.0, "the BufferObject is a view of the array's memory"
    receiver = bytearray(bo.raw())
    loaded = fory.loads(payload, buffers=[receiver])
    assert type(loaded) is memoryview
    assert loaded.format == "d" and loaded.shape == view.shape and loaded.tolist() == view.tolist()
    assert not loaded.readonly
    receiver[:8] = array.array("d", [-1.0]).tobytes()
    assert loaded[0, 0] == -1.0, "the loaded memoryview is a view of the buffer passed in"
    # in band: same layout, and a copy
    loaded = fory.loads(fory.dumps(view))
    assert loaded.format == "d" and loaded.shape == view.shape and loaded.tolist() == view.tolist()
    ro = memoryview(bytes(_data())).cast("i")
    loaded = fory.loads(fory.dumps(ro))
    assert loaded.readonly and loaded.format == "i" and loaded.tolist() == ro.tolist()


def test_non_contiguous_memoryview_round_trips(fory):
    src = memoryview(bytearray(_data(2 * BIG)))[::2]
    assert not src.c_contiguous
    for cb in (None, collect(False)):
        payload = fory.dumps(src, buffer_callback=cb)
        buffers = cb.offered if cb is not None else None
        loaded = fory.loads(payload, buffers=buffers)
        assert loaded.tobytes() == src.tobytes() and loaded.shape == src.shape



# ---- dumps_with_buffers: the buffers collected in C, as frames ------------------------

def test_dumps_with_buffers_keeps_large_buffers_out_of_band_as_views(fory):
    big = bytearray(_data(2 * BIG))
    exact = _data(BIG, seed=3)
    small = _data(BIG - 1, seed=5)
    doubles = array.array("d", [i * 0.25 for i in range(BIG // 4)])    # 2 * BIG bytes
    obj = {"big": big, "exact": exact, "small": small, "doubles": doubles, "n": 1}
    frames = fory.dumps_with_buffers(obj, BIG)
    # payload first, then one flat byte view per buffer of at least BIG bytes, in order
    assert type(frames[0]) is bytes and len(frames) == 4
    views = frames[1:]
    assert all(type(v) is memoryview and v.format == "B" and v.ndim == 1 for v in views)
    assert sorted(v.nbytes for v in views) == sorted([2 * BIG, BIG, 2 * BIG])
    big[0] ^= 0xFF
    assert any(v.obj is big and v[0] == big[0] for v in views), "a view of the original, no copy"
    assert BIG - 1 < len(frames[0]) < BIG + 200, "only the small buffer is in the payload"
    loaded = fory.loads(frames[0], buffers=[bytearray(v) for v in views])
    assert loaded == obj
    # the same payload as a buffer_callback that refuses what is smaller than BIG
    cb_frames = [None]

    def offer(buf):
        if buf.total_bytes() < BIG:
            return True
        cb_frames.append(buf.raw())
        return False

    cb_frames[0] = fory.dumps(obj, buffer_callback=offer)
    assert cb_frames[0] == frames[0] and [bytes(v) for v in cb_frames[1:]] == [bytes(v) for v in views]


def test_dumps_with_buffers_without_buffers_is_dumps(fory):
    for obj in (1, "text", [1, 2.5, None], {"k": b"x" * 10}):
        frames = fory.dumps_with_buffers(obj)
        assert frames == [fory.dumps(obj)]
    # everything stays in band when the threshold is above every buffer
    data = _data(2 * BIG)
    frames = fory.dumps_with_buffers(data, 4 * BIG)
    assert len(frames) == 1 and fory.loads(frames[0]) == data


def test_dumps_with_buffers_non_contiguous_and_thread_safe():
    class Unregistered:
        pass

    src = memoryview(bytearray(_data(4 * BIG)))[::2]
    for fory in (pyfory.Fory(), pyfory.ThreadSafeFory()):
        frames = fory.dumps_with_buffers([src, "after"], BIG)
        assert len(frames) == 2
        loaded = fory.loads(frames[0], buffers=frames[1:])
        assert loaded[0].tobytes() == src.tobytes() and loaded[1] == "after"
        # a failed call leaves the writer clean for the next one
        with pytest.raises(ForyError):
            fory.dumps_with_buffers([_data(2 * BIG), Unregistered()], BIG)
        assert fory.dumps_with_buffers(7) == [fory.dumps(7)]

@pytest.mark.parametrize("readonly", [True, False], ids=["bytes", "bytearray"])
def test_picklebuffer_round_trip(fory, readonly):
    data = bytes(MARK) if readonly else bytearray(MARK)
    pb = pickle.PickleBuffer(data)
    # in band
    loaded = fory.loads(fory.dumps(pb))
    assert type(loaded) is pickle.PickleBuffer
    assert bytes(loaded.raw()) == MARK
    assert loaded.raw().readonly == readonly
    # out of band, handed back as the raw views
    payload, offered = dumps_oob(fory, pb)
    assert MARK not in payload
    loaded = fory.loads(payload, buffers=[b.raw() for b in offered])
    assert bytes(loaded.raw()) == MARK
    # out of band: the PickleBuffer wraps the caller's own object (zero copy). Unlike
    # pickle (READONLY_BUFFER), a read-only original loaded from a writable buffer stays
    # writable: the core hands back the caller's object rather than a read-only
    # memoryview over it (PickleBuffer over a memoryview can crash CPython <= 3.12's GC).
    frozen = bytes(MARK)
    loaded = fory.loads(payload, buffers=[frozen])
    assert loaded.raw().readonly and bytes(loaded.raw()) == MARK
    receiver = bytearray(MARK)
    loaded = fory.loads(payload, buffers=[receiver])
    assert bytes(loaded.raw()) == MARK
    receiver[0] = ord("X")
    assert bytes(loaded.raw())[:1] == b"X", "zero copy: a view of the buffer passed in"


def test_array_array_out_of_band(fory):
    arr = array.array("q", range(BIG // 8 + 1))
    payload, offered = dumps_oob(fory, arr)
    assert len(offered) == 1 and offered[0].total_bytes() == arr.itemsize * len(arr)
    arr[0] = -5
    assert offered[0].getbuffer()[0] == -5, "the BufferObject is a view of the array"
    loaded = fory.loads(payload, buffers=offered)
    assert type(loaded) is array.array and loaded.typecode == "q" and loaded == arr
    small = array.array("b", [1, 2, 3])
    payload, offered = dumps_oob(fory, small)
    assert offered == [] and fory.loads(payload) == small


def _sample_array(typecode):
    if typecode in "uw":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return array.array(typecode, "héllo wörld \U0001f600" if typecode == "w" else "héllo wörld")
    if typecode in "fd":
        return array.array(typecode, [0.0, -1.5, float("inf"), 1e30 if typecode == "f" else 1e300])
    lo, hi = {"b": (-128, 127), "B": (0, 255)}.get(typecode, (None, None))
    size = array.array(typecode).itemsize
    signed = typecode.islower()
    if lo is None:
        lo, hi = (-(2 ** (8 * size - 1)), 2 ** (8 * size - 1) - 1) if signed else (0, 2 ** (8 * size) - 1)
    return array.array(typecode, [lo, 0, 1, hi])


@pytest.mark.parametrize("typecode", list(array.typecodes))
@pytest.mark.parametrize("oob", [False, True], ids=["in-band", "out-of-band"])
def test_array_array_every_typecode(fory, typecode, oob):
    arr = _sample_array(typecode)
    big = arr * (BIG // (arr.itemsize * len(arr)) + 1)
    for value in (arr, big, arr[:0]):
        if oob:
            payload, offered = dumps_oob(fory, value)
            assert len(offered) == (1 if value is big else 0)
        else:
            payload, offered = fory.dumps(value), None
        for reader in (fory, pyfory.Fory(ref=fory.ref)):
            loaded = reader.loads(payload, buffers=offered)
            assert type(loaded) is array.array and loaded.typecode == typecode
            assert loaded.tobytes() == value.tobytes()


def test_array_array_in_strict_mode_and_subclasses():
    strict = pyfory.Fory(strict=True)
    assert strict.loads(strict.dumps(array.array("i", [1, 2]))) == array.array("i", [1, 2])
    sub = MyArray("d", [1.0, 2.0])
    sub.tag = "x"
    loose = pyfory.Fory(strict=False)
    loaded = loose.loads(loose.dumps(sub))
    assert type(loaded) is MyArray and loaded == sub and loaded.tag == "x"
    with pytest.raises(pyfory.error.TypeNotRegisteredError):
        strict.dumps(sub)


def test_array_array_bad_payloads():
    fory = pyfory.Fory()
    payload = fory.dumps(array.array("i", [1, 2, 3]))
    # the typecode is a plain string: header (1 byte << 3) then "i" (docs/format.md)
    idx = payload.index(b"\x08i") + 1
    for bad in (b"Z", b"\x7f"):
        with pytest.raises(ForyError):
            fory.loads(payload[:idx] + bad + payload[idx + 1:])
    # 12 bytes of data cannot be an array of 8-byte items
    with pytest.raises(ForyError, match="multiple"):
        fory.loads(payload[:idx] + b"d" + payload[idx + 1:])
    assert fory.loads(payload) == array.array("i", [1, 2, 3])


class MyArray(array.array):
    pass


# ---- BufferObject -------------------------------------------------------------------

def test_buffer_object_api():
    fory = pyfory.Fory()
    view = memoryview(bytearray(_data(2 * BIG))).cast("H", [BIG // 2, 2])
    _, offered = dumps_oob(fory, view)
    (bo,) = offered
    mv = bo.getbuffer()
    assert type(mv) is memoryview and mv.format == "H" and mv.shape == (BIG // 2, 2)
    raw = bo.raw()
    assert type(raw) is memoryview and raw.format == "B" and raw.ndim == 1
    assert raw.nbytes == bo.total_bytes() == len(bo) == 2 * BIG
    assert raw.tobytes() == view.tobytes()
    out = io.BytesIO()
    bo.write_to(out)
    assert out.getvalue() == view.tobytes()
    assert "BufferObject" in repr(bo) and str(2 * BIG) in repr(bo)


def test_buffer_object_exposes_the_buffer_protocol():
    data = bytearray(_data())
    _, (bo,) = dumps_oob(pyfory.Fory(), data)
    assert bytes(bo) == data and bytearray(bo) == data
    view = memoryview(bo)
    data[0] ^= 0xFF
    assert view[0] == data[0], "memoryview(BufferObject) is a view of the original"


# ---- what loads accepts as buffers ---------------------------------------------------

def _as(kind, bo: BufferObject):
    raw = bo.raw()
    if kind == "memoryview":
        return raw
    if kind == "bytes":
        return raw.tobytes()
    if kind == "bytearray":
        return bytearray(raw)
    if kind == "BufferObject":
        return bo
    if kind == "array":
        return array.array("B", raw.tobytes())
    if kind == "array-of-doubles":
        return array.array("d", raw.tobytes())
    if kind == "PickleBuffer":
        return pickle.PickleBuffer(bytearray(raw))
    if kind == "mmap":
        import mmap

        m = mmap.mmap(-1, raw.nbytes)
        m.write(raw)
        return m
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["memoryview", "bytes", "bytearray", "BufferObject", "array",
                                  "array-of-doubles", "PickleBuffer", "mmap"])
def test_buffers_may_be_anything_with_the_buffer_protocol(fory, kind):
    value = {"a": _data(seed=1), "b": bytearray(_data(seed=2)), "c": pickle.PickleBuffer(MARK * 2)}
    payload, offered = dumps_oob(fory, value)
    assert len(offered) == 3
    loaded = fory.loads(payload, buffers=[_as(kind, bo) for bo in offered])
    assert loaded["a"] == value["a"] and loaded["b"] == value["b"]
    assert bytes(loaded["c"].raw()) == MARK * 2


def test_buffers_may_be_any_iterable(fory):
    value = [_data(seed=1), _data(seed=2)]
    payload, offered = dumps_oob(fory, value)
    assert fory.loads(payload, buffers=iter(offered)) == value
    assert fory.loads(payload, buffers=(b.raw() for b in offered)) == value
    assert fory.loads(payload, buffers=tuple(offered)) == value
    assert fory.loads(payload, buffers=map(bytearray, (b.raw() for b in offered))) == value


# ---- errors --------------------------------------------------------------------------

def test_missing_buffers_are_a_clear_error(fory):
    value = [_data(seed=1), _data(seed=2)]
    payload, offered = dumps_oob(fory, value)
    with pytest.raises(OutOfBandBufferError, match="buffers="):
        fory.loads(payload)
    with pytest.raises(OutOfBandBufferError, match="too few"):
        fory.loads(payload, buffers=[])
    with pytest.raises(OutOfBandBufferError, match="too few"):
        fory.loads(payload, buffers=offered[:1])
    assert issubclass(OutOfBandBufferError, ForyError)
    # the same Fory works afterwards
    assert fory.loads(payload, buffers=offered) == value


@pytest.mark.parametrize("delta", [-1, 1, -BIG])
def test_buffer_of_the_wrong_size_is_a_clear_error(fory, delta):
    payload, offered = dumps_oob(fory, _data())
    wrong = bytes(BIG + delta)
    with pytest.raises(OutOfBandBufferError, match=f"{BIG + delta} bytes"):
        fory.loads(payload, buffers=[wrong])
    assert fory.loads(payload, buffers=offered) == _data()


@pytest.mark.parametrize("bad", [123, "a string", None, memoryview(bytearray(2 * BIG))[::2]],
                         ids=["int", "str", "None", "non-contiguous"])
def test_unusable_buffer_is_a_clear_error(fory, bad):
    payload, offered = dumps_oob(fory, _data())
    with pytest.raises(OutOfBandBufferError, match="#0"):
        fory.loads(payload, buffers=[bad])
    assert fory.loads(payload, buffers=offered) == _data()


def test_non_iterable_buffers_is_an_error(fory):
    payload, _ = dumps_oob(fory, pickle.PickleBuffer(b"foobar"))
    with pytest.raises((TypeError, ForyError)):
        fory.loads(payload, buffers=object())


def test_extra_buffers_are_ignored_like_pickle(fory):
    payload, offered = dumps_oob(fory, _data())
    assert fory.loads(payload, buffers=offered + [b"extra"]) == _data()


# ---- objects whose __reduce_ex__(5) returns PickleBuffers -------------------------------

def _reconstruct(cls, obj):
    # as pickletester's ZeroCopyBytes: zero copy when handed an object of cls itself
    with memoryview(obj) as m:
        obj = m.obj
        if type(obj) is cls:
            return obj
        return cls(obj)


class ZeroCopyBytes(bytes):
    def __reduce_ex__(self, protocol):
        return _reconstruct, (type(self), pickle.PickleBuffer(self))


class ZeroCopyBytearray(bytearray):
    def __reduce_ex__(self, protocol):
        return _reconstruct, (type(self), pickle.PickleBuffer(self))


class Blob:
    """An object holding a large buffer, reduced with a PickleBuffer as pickle-5 advises."""

    def __init__(self, name, data):
        self.name = name
        self.data = data

    def __reduce_ex__(self, protocol):
        return _make_blob, (self.name, pickle.PickleBuffer(self.data))


def _make_blob(name, data):
    return Blob(name, bytearray(data) if not isinstance(data, bytearray) else data)


ZERO_COPY_CLASSES = [ZeroCopyBytes, ZeroCopyBytearray]


@pytest.mark.parametrize("cls", ZERO_COPY_CLASSES, ids=lambda c: c.__name__)
def test_reduce_with_picklebuffer_in_band(cls):
    fory = pyfory.Fory(ref=True, strict=False)
    obj = cls(MARK)
    payload = fory.dumps(obj)
    assert MARK in payload, "the raw memory is in the payload"
    assert payload == fory.dumps(obj, buffer_callback=lambda b: True)
    new = fory.loads(payload)
    assert new is not obj and type(new) is cls and new == obj


@pytest.mark.parametrize("cls", ZERO_COPY_CLASSES, ids=lambda c: c.__name__)
def test_reduce_with_picklebuffer_goes_out_of_band(cls):
    fory = pyfory.Fory(ref=True, strict=False)
    obj = cls(MARK)
    buffers = []
    payload = fory.dumps(obj, buffer_callback=lambda bo: buffers.append(bo.raw()))
    assert MARK not in payload
    assert len(buffers) == 1 and bytes(buffers[0]) == MARK
    assert buffers[0].obj is obj, "the buffer handed out is a view of the object itself"
    with pytest.raises(OutOfBandBufferError):
        fory.loads(payload)
    new = fory.loads(payload, buffers=buffers)
    assert type(new) is cls and new == obj
    # a read-only object rebuilt from a writable buffer (pickletester's
    # test_oob_buffers_writable_to_readonly)
    new = fory.loads(payload, buffers=map(bytearray, buffers))
    assert type(new) is cls and new == obj


@pytest.mark.parametrize("cls", ZERO_COPY_CLASSES, ids=lambda c: c.__name__)
def test_reduce_with_picklebuffer_reconstructs_from_the_callers_object(cls):
    """The reducer's callable sees the caller's own buffer object, so
    ZeroCopyBytes._reconstruct returns the original object: zero copy."""
    fory = pyfory.Fory(ref=True, strict=False)
    obj = cls(MARK)
    payload, _ = dumps_oob(fory, obj)
    assert fory.loads(payload, buffers=[obj]) is obj


@pytest.mark.parametrize("cls", ZERO_COPY_CLASSES, ids=lambda c: c.__name__)
def test_reduce_with_picklebuffer_reconstructs_from_raw_views(cls):
    """pickletester's test_oob_buffers: the callback keeps `pb.raw()` (a memoryview of
    the original) and loads gets those views back; pickle hands the view itself to the
    reducer's callable, whose memoryview(...).obj is then the original object, so
    ZeroCopyBytes._reconstruct returns it (assertIs(new, obj))."""
    fory = pyfory.Fory(ref=True, strict=False)
    obj = cls(MARK)
    buffers = []
    payload = fory.dumps(obj, buffer_callback=lambda bo: buffers.append(bo.raw()))
    assert fory.loads(payload, buffers=buffers) is obj


def test_object_reducing_to_picklebuffer_in_a_graph():
    fory = pyfory.Fory(ref=True, strict=False)
    blobs = [Blob(f"b{i}", bytearray(_data(BIG // 4, seed=i + 1))) for i in range(3)]
    value = {"blobs": blobs, "again": blobs[0]}
    payload, offered = dumps_oob(fory, value)
    assert len(offered) == 3 and len(payload) < 400
    receivers = [bytearray(bo.raw()) for bo in offered]
    loaded = fory.loads(payload, buffers=receivers)
    assert [b.name for b in loaded["blobs"]] == ["b0", "b1", "b2"]
    assert [bytes(b.data) for b in loaded["blobs"]] == [bytes(b.data) for b in blobs]
    assert loaded["again"] is loaded["blobs"][0]


def test_large_payload_in_band_and_out_of_band_agree(fory):
    data = _data(1 << 20)
    value = {"x": data, "y": [bytearray(data), memoryview(data)], "n": 5}
    in_band = fory.loads(fory.dumps(value))
    payload, offered = dumps_oob(fory, value)
    out_of_band = fory.loads(payload, buffers=offered)
    assert in_band == out_of_band == value
    assert sum(bo.total_bytes() for bo in offered) == 3 * len(data)


def test_refcount_of_original_unchanged_after_dumps():
    data = bytearray(_data())
    before = sys.getrefcount(data)
    fory = pyfory.Fory()
    payload, offered = dumps_oob(fory, data)
    del offered
    assert sys.getrefcount(data) == before
    assert len(payload) < 32


class _Blob:
    def __init__(self, data: bytes):
        self.data = data


class _BlobSerializer(pyfory.Serializer):
    """A custom serializer that reads its buffer without a copy (read_buffer_view)."""

    seen: list = []

    def write(self, ctx, obj):
        ctx.write_buffer(obj.data)

    def read(self, ctx):
        view, in_band = ctx.read_buffer_view()
        self.seen.append((type(view), view.readonly, in_band))
        return _Blob(bytes(view))


@pytest.mark.parametrize("oob", [False, True])
def test_read_buffer_view_gives_the_bytes_without_a_copy(oob):
    fory = pyfory.Fory()
    fory.register(_Blob, name="blob", serializer=_BlobSerializer(fory, _Blob))
    data = bytes(range(256)) * 300
    bufs: list = []
    payload = fory.dumps([_Blob(data), _Blob(b"xy")],
                         buffer_callback=(lambda b: bufs.append(b) and False) if oob else None)
    _BlobSerializer.seen.clear()
    loaded = fory.loads(payload, buffers=[b.getbuffer() for b in bufs] if oob else None)
    assert [b.data for b in loaded] == [data, b"xy"]
    # write_buffer offers every buffer (always_offer=True), so both take the same road
    assert _BlobSerializer.seen == [(memoryview, True, not oob)] * 2
    if not oob:
        # in band the view points into the payload itself
        view, _ = _view_of_first_blob(fory, payload)
        assert view.obj is payload


def _view_of_first_blob(fory, payload):
    got = []

    class Grab(_BlobSerializer):
        def read(self, ctx):
            view, in_band = ctx.read_buffer_view()
            got.append((view, in_band))
            return _Blob(b"")

    fory2 = pyfory.Fory()
    fory2.register(_Blob, name="blob", serializer=Grab(fory2, _Blob))
    fory2.loads(payload)
    return got[0]


def test_read_buffer_view_truncated_payload_is_a_clear_error():
    fory = pyfory.Fory()
    fory.register(_Blob, name="blob", serializer=_BlobSerializer(fory, _Blob))
    payload = fory.dumps(_Blob(b"z" * 1000))
    with pytest.raises(ForyError):
        fory.loads(payload[:-10])


def test_a_read_only_view_of_a_writable_buffer_stays_read_only():
    # the caller lends the buffer read-only: the loaded object must not become writable
    fory = pyfory.Fory(strict=False)
    data = bytearray(b"x" * 100_000)
    buffers = []
    payload = fory.dumps(pickle.PickleBuffer(data), buffer_callback=buffers.append)
    lent = fory.loads(payload, buffers=[memoryview(data).toreadonly()])
    assert memoryview(lent).readonly
    with pytest.raises(TypeError):
        memoryview(lent)[0] = 0
    # a writable view of the whole object still hands back the object itself
    assert memoryview(fory.loads(payload, buffers=[memoryview(data)])).obj is data
