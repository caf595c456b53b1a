"""The payload header, the error hierarchy, limits (max_depth), and the contract for bad
input: non-pyfory bytes, other format versions, trailing bytes, truncation and random
corruption raise pyfory errors (never a crash, a hang or a foreign exception), and the
same Fory instance keeps working after any failure."""

from __future__ import annotations

import datetime
import decimal
import fractions
import inspect
import json
import pickle
import random
import uuid

import pytest

import pyfory
from pyfory import error
from pyfory.error import (
    DepthLimitError,
    FormatError,
    ForyError,
    LimitExceededError,
    MalformedDataError,
    TruncatedDataError,
    TypeNotRegisteredError,
)

SAMPLE = {
    "ints": [0, -1, 2**70, 300],
    "floats": [1.5, -0.0, float("inf")],
    "strs": ["a", "é", "語", "😀"],
    "str": "hello",
    "bytes": b"\x00\x01",
    "ba": bytearray(b"ba"),
    "tuple": (1, "x", None, True, False),
    "set": {1, 2},
    "fs": frozenset({"a"}),
    "nested": {"k": [{"j": (1.5, [None])}]},
    "c": 1 - 2j,
    "types": [int, dict],
    "range": range(1, 5),
    "slice": slice(1, None),
    "dt": datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
    "date": datetime.date(2020, 1, 1),
    "td": datetime.timedelta(days=-3),
    "dec": decimal.Decimal("-1.25E-3"),
    "frac": fractions.Fraction(3, 7),
    "uuid": uuid.UUID(int=99),
    "empty": [[], {}, (), set()],
    "ellipsis": Ellipsis,
}


def nest(levels, kind="list"):
    """`levels` containers nested in each other, innermost holding the int 0."""
    obj = 0
    for _ in range(levels):
        if kind == "list":
            obj = [obj]
        elif kind == "dict":
            obj = {"k": obj}
        elif kind == "tuple":
            obj = (obj,)
        else:  # alternate
            obj = [obj] if isinstance(obj, dict) else {"k": obj}
    return obj


def depth_of(obj):
    d = 0
    while isinstance(obj, (list, dict, tuple)):
        obj = obj["k"] if isinstance(obj, dict) else obj[0]
        d += 1
    return d


def assert_same_nest(expected, got):
    """Iterative comparison of two nest() values (too deep for a recursive compare)."""
    level = 0
    while True:
        assert type(got) is type(expected), f"level {level}: {type(got)} != {type(expected)}"
        if not isinstance(expected, (list, dict, tuple)):
            assert got == expected
            return
        assert len(got) == 1, f"level {level}: {len(got)} items"
        if isinstance(expected, dict):
            assert list(got) == ["k"]
            expected, got = expected["k"], got["k"]
        else:
            expected, got = expected[0], got[0]
        level += 1


# ---------------------------------------------------------------------------------------
# header
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, 0, "s", [1], SAMPLE], ids=["none", "int", "str", "list", "sample"])
def test_header_layout(value, ref):
    # format 3: a payload without flags is its value alone; with ref tracking it starts
    # with the header byte 0x50 | F_REF
    data = pyfory.Fory(ref=ref).dumps(value)
    body = pyfory.Fory().dumps(value)
    if ref:
        assert data[0] == 0x51
        if value is None or isinstance(value, int):
            assert data[1:] == body
    else:
        assert data == body
        assert data[0] < 0x50 or data[0] > 0x5F


def test_header_byte_only_with_flags():
    assert pyfory.Fory().dumps(None) == b"\x00"
    assert pyfory.Fory().dumps(7) == bytes([0xD7])
    assert pyfory.Fory(ref=True).dumps(None) == b"\x51\x00"
    # a buffer sent out of band: the header carries F_OOB
    assert pyfory.Fory().dumps(None, buffer_callback=lambda b: True) == b"\x00"
    big = pickle.PickleBuffer(bytearray(10))
    assert pyfory.Fory().dumps(big, buffer_callback=lambda b: False)[0] == 0x54


# not a pyfory payload: every one fails with a pyfory error that is also pickle's
NOT_PYFORY = [
    pytest.param(b"", id="empty"),
    pytest.param(b"h", id="one-byte"),
    pytest.param(b"hello", id="hello"),
    pytest.param(b"\x59\xfd\x01\x00\x00", id="magic-swapped"),
    pytest.param(b"\x00\x00\x00\x00\x00", id="zeros"),
    pytest.param(json.dumps({"a": [1, 2]}).encode(), id="json"),
    pytest.param(b"\xef\xbb\xbf{}", id="json-with-bom"),
] + [pytest.param(pickle.dumps({"a": [1, 2]}, protocol=p), id=f"pickle-{p}") for p in range(6)]
# ... and those whose first byte is neither a header nor a value tag say so
SAYS_NOT_PYFORY = {"one-byte", "hello", "json", "pickle-1", "pickle-2", "pickle-3", "pickle-4", "pickle-5"}


@pytest.mark.parametrize("data", NOT_PYFORY)
def test_not_a_pyfory_payload(data, request):
    fory = pyfory.Fory()
    with pytest.raises(ForyError) as info:
        fory.loads(data)
    assert isinstance(info.value, pickle.UnpicklingError)
    if request.node.callspec.id in SAYS_NOT_PYFORY:
        assert isinstance(info.value, FormatError)
        assert "not a pyfory payload" in str(info.value)
    assert fory.loads(fory.dumps(["ok"])) == ["ok"]


@pytest.mark.parametrize("protocol", range(2, 6))
def test_a_pickle_is_named(protocol):
    with pytest.raises(FormatError, match="looks like a pickle"):
        pyfory.Fory().loads(pickle.dumps([1], protocol=protocol))


@pytest.mark.parametrize("data", [b"\xfd\x59", b"\xfd\x59\x02"], ids=["magic-only", "no-flags"])
def test_header_cut_short(data):
    with pytest.raises(ForyError):
        pyfory.Fory().loads(data)


@pytest.mark.parametrize("version", [0, 1, 2, 127, 255])
def test_other_format_version(version, ref):
    # versions 1 and 2 started with fd 59 and the version byte
    fory = pyfory.Fory(ref=ref)
    data = b"\xfd\x59" + bytes([version, 3 if ref else 2]) + b"\x08\x02\x00\x03\x02\x06\x08x"
    with pytest.raises(FormatError, match="(?i)version") as info:
        fory.loads(data)
    assert str(version) in str(info.value)
    assert fory.loads(fory.dumps([1, "x"])) == [1, "x"]


@pytest.mark.parametrize("first", [0x52, 0x53, 0x56, 0x57] + list(range(0x58, 0x60)))
def test_header_of_a_later_version(first):
    # header bytes this version does not write: flags it does not know
    fory = pyfory.Fory()
    with pytest.raises(FormatError, match="later version"):
        fory.loads(bytes([first]) + fory.dumps([1, "x"]))


@pytest.mark.parametrize("tail", [b"\x00", b"\xff", b"junk", b"\xfd\x59\x02\x00\x00"], ids=repr)
def test_trailing_bytes(tail, ref):
    fory = pyfory.Fory(ref=ref)
    for value in (None, 5, "s", [1, 2], SAMPLE):
        data = fory.dumps(value)
        with pytest.raises(MalformedDataError):
            fory.loads(data + tail)
        with pytest.raises(MalformedDataError):
            fory.loads(memoryview(data + tail))
        assert fory.loads(data) == value


def test_two_payloads_concatenated_are_not_one():
    fory = pyfory.Fory()
    with pytest.raises(MalformedDataError):
        fory.loads(fory.dumps([1]) + fory.dumps([2]))


# ---------------------------------------------------------------------------------------
# the error hierarchy
# ---------------------------------------------------------------------------------------


def _error_classes():
    return [obj for _, obj in inspect.getmembers(error, inspect.isclass)
            if issubclass(obj, BaseException) and obj.__module__ == error.__name__]


def test_every_error_is_a_fory_error():
    classes = _error_classes()
    expected = {"ForyError", "FormatError", "MalformedDataError", "TruncatedDataError",
                "TypeNotRegisteredError", "PolicyViolationError", "LimitExceededError", "DepthLimitError"}
    assert expected <= {c.__name__ for c in classes}
    for cls in classes:
        assert issubclass(cls, ForyError), cls
    for name in error.__all__:
        assert issubclass(getattr(error, name), ForyError), name


def test_error_categories():
    assert issubclass(TruncatedDataError, MalformedDataError)
    assert issubclass(DepthLimitError, LimitExceededError)
    assert pyfory.ForyError is ForyError
    assert pyfory.error is error


# ---------------------------------------------------------------------------------------
# truncation and corruption
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", [False, True], ids=["ref=False", "ref=True"])
def test_every_prefix_is_rejected(ref):
    fory = pyfory.Fory(ref=ref)
    shared = [1, "shared"]
    data = fory.dumps([SAMPLE, shared, shared, SAMPLE["nested"]])
    for cut in range(len(data)):
        prefix = data[:cut]
        with pytest.raises(ForyError) as info:
            fory.loads(prefix)
        if cut >= 4:
            assert isinstance(info.value, MalformedDataError), (cut, info.value)
    fory.loads(data)


@pytest.mark.parametrize("value", [b"x" * 1000, "y" * 1000, "é" * 500, "語" * 300, list(range(500)),
                                   [0.5] * 300, 2**4000], ids=["bytes", "ascii", "latin1", "utf8",
                                                              "ints", "floats", "bigint"])
def test_truncated_long_value_is_truncated_data_error(value):
    fory = pyfory.Fory()
    data = fory.dumps(value)
    for cut in (len(data) - 1, len(data) // 2, 8):
        with pytest.raises(TruncatedDataError):
            fory.loads(data[:cut])


def _mutations(data, rng, count):
    for _ in range(count):
        b = bytearray(data)
        op = rng.randrange(5)
        if op == 0:  # flip one byte (never the magic, to test the body)
            i = rng.randrange(4, len(b))
            b[i] = rng.randrange(256)
        elif op == 1:  # flip several bytes
            for _ in range(rng.randint(2, 6)):
                b[rng.randrange(4, len(b))] ^= 1 << rng.randrange(8)
        elif op == 2:  # delete a slice
            i = rng.randrange(4, len(b))
            del b[i : i + rng.randint(1, 8)]
        elif op == 3:  # insert random bytes
            i = rng.randrange(4, len(b) + 1)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:  # huge varint where a length might be
            i = rng.randrange(4, len(b))
            b[i:i + 1] = b"\xff" * rng.randint(1, 9) + b"\x7f"
        yield bytes(b)


FUZZ_VALUES = [
    pytest.param(SAMPLE, id="sample"),
    pytest.param([{"id": i, "name": f"n{i}", "v": i / 3} for i in range(20)], id="records"),
    pytest.param(list(range(-50, 50)) + [2**80], id="ints"),
    pytest.param({"s": {"a", "b"}, "t": ("é", b"\x00", 1.5)}, id="small"),
]


@pytest.mark.parametrize("value", FUZZ_VALUES)
@pytest.mark.parametrize("ref", [False, True], ids=["ref=False", "ref=True"])
def test_corrupted_payloads_raise_fory_errors(value, ref):
    # a corrupted payload either still decodes to *something* or raises a ForyError;
    # any other exception (or a crash) fails the test
    fory = pyfory.Fory(ref=ref)
    data = fory.dumps(value)
    rng = random.Random(f"{len(data)}-{ref}")
    check = fory.dumps(SAMPLE)
    for i, bad in enumerate(_mutations(data, rng, 10_000)):
        try:
            fory.loads(bad)
        except ForyError:
            pass
        if i % 100 == 0:
            assert fory.dumps(SAMPLE) == check
            assert fory.loads(check) == SAMPLE


@pytest.mark.parametrize(
    "value",
    [b"ab" * 10, bytearray(b"ab"), "ab", "é" * 5, "語", [1, 2], [1.5, 2.5], ["a", "b"], (1, "x"),
     {"a": 1}, {1: [2]}, {1, 2}, frozenset({"a"}), 2**100, [SAMPLE["dec"], SAMPLE["uuid"]]],
    ids=["bytes", "bytearray", "ascii", "latin1", "utf8", "ints", "floats", "strs", "tuple", "dict",
         "dict-any", "set", "frozenset", "bigint", "objects"],
)
def test_huge_length_fields_are_not_trusted(value):
    # a varint of the largest size put in place of (or before) every byte of the body, so
    # that every length field gets a huge value somewhere: each such payload must fail
    # with a ForyError (or decode), never try to allocate (MemoryError) or hang
    fory = pyfory.Fory()
    data = fory.dumps(value)
    huge = b"\xff" * 8 + b"\x7f"
    for i in range(4, len(data)):
        for bad in (data[:i] + huge + data[i + 1 :], data[:i] + huge + data[i:]):
            try:
                fory.loads(bad)
            except ForyError:
                pass
    assert fory.loads(data) == value


# ---------------------------------------------------------------------------------------
# max_depth
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["list", "dict", "tuple", "alternate"])
@pytest.mark.parametrize("max_depth", [1, 5, 50, 2000])
def test_max_depth_on_dumps(kind, max_depth, ref):
    fory = pyfory.Fory(ref=ref, max_depth=max_depth)
    ok = nest(max_depth, kind)
    assert depth_of(ok) == max_depth
    assert_same_nest(ok, fory.loads(fory.dumps(ok)))
    with pytest.raises(DepthLimitError) as info:
        fory.dumps(nest(max_depth + 1, kind))
    assert isinstance(info.value, ForyError)
    assert str(max_depth) in str(info.value)
    assert_same_nest(ok, fory.loads(fory.dumps(ok)))


def test_default_max_depth_is_50():
    fory = pyfory.Fory()
    assert fory.loads(fory.dumps(nest(50))) == nest(50)
    with pytest.raises(DepthLimitError):
        fory.dumps(nest(51))


@pytest.mark.parametrize("kind", ["list", "dict", "tuple", "alternate"])
def test_max_depth_on_loads(kind, ref, same):
    writer = pyfory.Fory(ref=ref, max_depth=200)
    reader = pyfory.Fory(ref=ref, max_depth=50)
    deep = writer.dumps(nest(100, kind))
    with pytest.raises(DepthLimitError) as info:
        reader.loads(deep)
    assert isinstance(info.value, ForyError)
    same(nest(100, kind), pyfory.Fory(ref=ref, max_depth=200).loads(deep))
    same(nest(50, kind), reader.loads(writer.dumps(nest(50, kind))))


def test_depth_beyond_the_python_recursion_limit():
    # the C-level core must neither hit RecursionError nor overflow the C stack
    fory = pyfory.Fory(max_depth=2000)
    for kind in ("list", "dict", "tuple", "alternate"):
        value = nest(2000, kind)
        assert_same_nest(value, fory.loads(fory.dumps(value)))
    with pytest.raises(DepthLimitError):
        fory.dumps(nest(2001))
    with pytest.raises(DepthLimitError):
        fory.dumps(nest(100_000))


def test_deep_nesting_through_python_serializers():
    # slices nest through a serializer written in Python: deep nesting there must be a
    # pyfory error or a correct round trip, never a bare RecursionError
    fory = pyfory.Fory(max_depth=2000)
    value = 0
    for _ in range(1500):
        value = slice(value, None, None)
    try:
        data = fory.dumps(value)
    except RecursionError as e:
        assert isinstance(e, DepthLimitError), f"bare {type(e).__name__}: {e}"
    else:
        result = fory.loads(data)
        assert result == value
    assert fory.loads(fory.dumps(nest(10))) == nest(10)


@pytest.mark.parametrize("bad", [0, -1, 2001, 10**6])
def test_max_depth_out_of_range(bad):
    with pytest.raises(ValueError):
        pyfory.Fory(max_depth=bad)


@pytest.mark.parametrize("good", [1, 2000])
def test_max_depth_limits_accepted(good):
    assert pyfory.Fory(max_depth=good).max_depth == good


# ---------------------------------------------------------------------------------------
# the same instance keeps working after any failure
# ---------------------------------------------------------------------------------------


class NotRegistered:
    pass


def _cycle():
    a = [1]
    a.append(a)
    return a


FAILURES = [
    pytest.param(lambda f: f.loads(b"hello"), FormatError, id="not-pyfory"),
    pytest.param(lambda f: f.loads(b"\xfd\x59\x01\x00\x00"), FormatError, id="version"),
    pytest.param(lambda f: f.loads(f.dumps(SAMPLE)[:-5]), MalformedDataError, id="truncated"),
    pytest.param(lambda f: f.loads(f.dumps(SAMPLE) + b"\x00"), MalformedDataError, id="trailing"),
    pytest.param(lambda f: f.loads(pyfory.Fory(max_depth=200, ref=f.ref).dumps(nest(120))),
                 DepthLimitError, id="loads-too-deep"),
    pytest.param(lambda f: f.dumps([SAMPLE, nest(60)]), DepthLimitError, id="dumps-too-deep"),
    pytest.param(lambda f: f.dumps([SAMPLE, {"x": NotRegistered()}]), TypeNotRegisteredError,
                 id="unregistered"),
    pytest.param(lambda f: f.dumps([SAMPLE, _cycle()]) if not f.ref else f.dumps(nest(51)),
                 DepthLimitError, id="cycle-or-deep"),
]


@pytest.mark.parametrize("fail,exc", FAILURES)
def test_instance_recovers_after_failure(fail, exc, ref, same, same_graph):
    fory = pyfory.Fory(ref=ref)
    fresh = pyfory.Fory(ref=ref)
    shared = [1, 2]
    good = {"sample": SAMPLE, "a": shared, "b": shared, "deep": nest(40)}
    for _ in range(2):
        with pytest.raises(exc):
            fail(fory)
        data = fory.dumps(good)
        assert data == fresh.dumps(good)
        result = fory.loads(data)
        if ref:
            same_graph(good, result)
            assert result["a"] is result["b"]
        else:
            same(good, result)
