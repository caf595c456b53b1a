"""dump/load on file-like objects: length-prefixed framing, several values one after
another, streams that return fewer bytes than asked, end of stream and truncation."""

from __future__ import annotations

import io
import os
import random
import threading

import pytest

import pyfory
from pyfory.error import FormatError, ForyError, MalformedDataError, TruncatedDataError

VALUES = [
    None,
    0,
    -(2**100),
    3.5,
    "text é 語 😀",
    b"\x00raw\xff",
    [1, 2, 3],
    {"a": [1, {"b": (2, 3)}], "c": {4, 5}},
    list(range(1000)),
    b"x" * 300_000,
]


class TrickleReader:
    """A readable stream whose read(n) returns at most `chunk` bytes (1 by default),
    like a pipe or socket under load."""

    def __init__(self, data: bytes, chunk=1, seed=None):
        self._data = data
        self._pos = 0
        self._chunk = chunk
        self._rng = random.Random(seed) if seed is not None else None
        self.calls = 0

    def read(self, n=-1):
        self.calls += 1
        if n is None or n < 0:
            n = len(self._data) - self._pos
        size = self._rng.randint(1, self._chunk) if self._rng else self._chunk
        size = min(n, size)
        out = self._data[self._pos : self._pos + size]
        self._pos += len(out)
        return out

    def rest(self) -> bytes:
        return self._data[self._pos :]


class WriteOnly:
    """A sink with only write(): no seek, tell, or getvalue."""

    def __init__(self):
        self.parts = []

    def write(self, data):
        self.parts.append(bytes(data))
        return len(data)

    def getbytes(self):
        return b"".join(self.parts)


def _dump_all(fory, values):
    out = io.BytesIO()
    for v in values:
        fory.dump(v, out)
    return out.getvalue()


def test_several_values_one_after_another(ref, same):
    fory = pyfory.Fory(ref=ref)
    stream = io.BytesIO(_dump_all(fory, VALUES))
    for expected in VALUES:
        same(expected, fory.load(stream))
    with pytest.raises(EOFError) as info:
        fory.load(stream)
    assert not isinstance(info.value, TruncatedDataError)


def test_load_at_end_of_empty_stream():
    fory = pyfory.Fory()
    with pytest.raises(EOFError) as info:
        fory.load(io.BytesIO(b""))
    assert not isinstance(info.value, TruncatedDataError)
    # EOF again on a stream already at its end, and the instance still works
    stream = io.BytesIO(_dump_all(fory, [1]))
    assert fory.load(stream) == 1
    for _ in range(2):
        with pytest.raises(EOFError):
            fory.load(stream)
    assert fory.loads(fory.dumps([1])) == [1]


@pytest.mark.parametrize("chunk,seed", [(1, None), (3, 1), (7, 2), (64, 3)],
                         ids=["one-byte", "up-to-3", "up-to-7", "up-to-64"])
def test_short_reads(chunk, seed, ref, same):
    fory = pyfory.Fory(ref=ref)
    values = VALUES[:-1] + [b"y" * 5000, "z" * 200]
    stream = TrickleReader(_dump_all(fory, values), chunk=chunk, seed=seed)
    for expected in values:
        same(expected, fory.load(stream))
    with pytest.raises(EOFError):
        fory.load(stream)


def test_one_byte_stream_with_a_large_value(same):
    fory = pyfory.Fory()
    value = {"blob": bytes(range(256)) * 1000, "list": list(range(2000))}
    stream = TrickleReader(_dump_all(fory, [value, "after"]), chunk=1)
    same(value, fory.load(stream))
    assert fory.load(stream) == "after"


def test_load_reads_exactly_one_frame():
    # whatever follows a frame is left in the stream for its owner
    fory = pyfory.Fory()
    stream = io.BytesIO()
    fory.dump({"a": 1}, stream)
    stream.write(b"NOT-PYFORY-TAIL")
    stream.seek(0)
    assert fory.load(stream) == {"a": 1}
    assert stream.read() == b"NOT-PYFORY-TAIL"
    trickle = TrickleReader(stream.getvalue(), chunk=1)
    assert fory.load(trickle) == {"a": 1}
    assert trickle.rest() == b"NOT-PYFORY-TAIL"


def test_dump_writes_the_same_payload_as_dumps():
    fory = pyfory.Fory()
    value = ["x", 1, 2.5, {"k": None}]
    sink = WriteOnly()
    fory.dump(value, sink)
    framed = sink.getbytes()
    assert framed.endswith(fory.dumps(value))
    assert len(framed) > len(fory.dumps(value))  # a length prefix comes first


def test_dump_to_write_only_sink_and_other_instance_loads(ref, same):
    writer, reader = pyfory.Fory(ref=ref), pyfory.Fory(ref=ref)
    sink = WriteOnly()
    for v in VALUES:
        writer.dump(v, sink)
    stream = io.BytesIO(sink.getbytes())
    for expected in VALUES:
        same(expected, reader.load(stream))


def test_real_file(tmp_path, ref, same):
    fory = pyfory.Fory(ref=ref)
    path = tmp_path / "values.bin"
    with open(path, "wb") as f:
        for v in VALUES:
            fory.dump(v, f)
    with open(path, "rb") as f:
        for expected in VALUES:
            same(expected, fory.load(f))
        with pytest.raises(EOFError):
            fory.load(f)
    with open(path, "rb", buffering=0) as f:  # raw FileIO
        for expected in VALUES:
            same(expected, fory.load(f))


def test_pipe_between_threads(same):
    # a real pipe: the reader sees data in pieces as the writer produces it
    values = [{"i": i, "blob": b"p" * (i * 10_000)} for i in range(8)]
    r, w = os.pipe()
    errors = []

    def produce():
        try:
            with open(w, "wb", buffering=0) as out:
                fory = pyfory.Fory()
                for v in values:
                    fory.dump(v, out)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        with open(r, "rb", buffering=0) as inp:
            fory = pyfory.Fory()
            for expected in values:
                same(expected, fory.load(inp))
            with pytest.raises(EOFError):
                fory.load(inp)
    finally:
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert errors == []


def test_ref_structure_through_a_stream(same_graph):
    fory = pyfory.Fory(ref=True)
    lst = [1]
    lst.append(lst)
    shared = {"s": 1}
    obj = [lst, shared, shared, (shared,)]
    stream = io.BytesIO()
    fory.dump(obj, stream)
    fory.dump(obj, stream)
    stream.seek(0)
    first, second = fory.load(stream), fory.load(stream)
    same_graph(obj, first)
    same_graph(obj, second)
    assert first is not second and first[1] is not second[1]


# ---------------------------------------------------------------------------------------
# truncated and garbage streams
# ---------------------------------------------------------------------------------------


def _framed(value):
    out = io.BytesIO()
    pyfory.Fory().dump(value, out)
    return out.getvalue()


@pytest.mark.parametrize("value", ["short", b"z" * 1000, list(range(300))], ids=["small", "bytes", "list"])
def test_truncated_stream(value):
    framed = _framed(value)
    fory = pyfory.Fory()
    # every cut point after the first byte and before the end is a truncation
    cuts = sorted(set(range(1, min(len(framed), 40))) | {len(framed) // 2, len(framed) - 1})
    for cut in cuts:
        for stream in (io.BytesIO(framed[:cut]), TrickleReader(framed[:cut])):
            with pytest.raises(TruncatedDataError):
                fory.load(stream)
    assert fory.load(io.BytesIO(framed)) == value


def test_truncated_inside_length_prefix():
    framed = _framed(b"q" * 100_000)  # a length prefix of several bytes
    assert framed[0] & 0x80
    with pytest.raises(TruncatedDataError):
        pyfory.Fory().load(io.BytesIO(framed[:1]))


def test_second_value_truncated():
    fory = pyfory.Fory()
    data = _dump_all(fory, ["first", ["second", 2]])
    stream = io.BytesIO(data[:-3])
    assert fory.load(stream) == "first"
    with pytest.raises(TruncatedDataError):
        fory.load(stream)


def test_huge_length_prefix_is_not_trusted():
    # claims ~2**62 bytes, has 10: must fail fast, without trying to allocate
    prefix = bytearray()
    n = 2**62
    while n >= 0x80:
        prefix.append((n & 0x7F) | 0x80)
        n >>= 7
    prefix.append(n)
    stream = io.BytesIO(bytes(prefix) + b"\xfd\x59\x02\x00" + b"\x00" * 6)
    with pytest.raises(TruncatedDataError):
        pyfory.Fory().load(stream)


def test_overlong_length_prefix():
    stream = io.BytesIO(b"\xff" * 12 + b"\x00")
    with pytest.raises(MalformedDataError):
        pyfory.Fory().load(stream)


def test_frame_that_is_not_a_pyfory_payload():
    stream = io.BytesIO(b"\x05hello")
    with pytest.raises(FormatError, match="(?i)not a pyfory payload"):
        pyfory.Fory().load(stream)


def test_frame_with_trailing_garbage_inside():
    payload = pyfory.Fory().dumps([1, 2]) + b"\x00"
    stream = io.BytesIO(bytes([len(payload)]) + payload)
    with pytest.raises(MalformedDataError):
        pyfory.Fory().load(stream)


def test_stream_errors_leave_the_instance_usable(same):
    fory = pyfory.Fory(ref=True)
    for bad in (b"\x05hello", b"\xff" * 12, _framed([1, 2, 3])[:-1]):
        with pytest.raises(ForyError):
            fory.load(io.BytesIO(bad))
        value = {"ok": [1, 2.5, "x"]}
        stream = io.BytesIO()
        fory.dump(value, stream)
        stream.seek(0)
        same(value, fory.load(stream))
