"""Round trips of every builtin and standard-library value type the core supports.

Each value is written with one Fory and read back both by the same instance and by a
fresh one; the result must be equal to the original AND of exactly the same type, all
the way down (see ``assert_same`` in conftest.py). Each test runs with ref=False and
ref=True.
"""

from __future__ import annotations

import array
import datetime
import decimal
import fractions
import mmap
import struct
import sys
import uuid
import zoneinfo

import pytest

import pyfory

D = decimal.Decimal
F = fractions.Fraction
UTC = datetime.timezone.utc
NAN = float("nan")
INF = float("inf")
# a quiet nan with a payload, and a negative nan: their bits must survive too
NAN_PAYLOAD = struct.unpack("<d", b"\x01\x00\x00\x00\x00\x00\xf8\x7f")[0]
NEG_NAN = struct.unpack("<d", b"\x00\x00\x00\x00\x00\x00\xf8\xff")[0]


def _p(value, id_):
    return pytest.param(value, id=id_)


INTS = [
    0, 1, -1, 63, 64, -64, -65, 127, 128, 255, 256, 2**31 - 1, -(2**31), 2**32, 2**53 + 1,
    2**62, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64 - 1, 2**64, -(2**64),
    2**127, -(2**127) - 1, 10**100, -(10**100), 2**4096 + 12345, -(3**3000),
]

FLOATS = [
    0.0, -0.0, 1.0, -1.5, 0.1, 1e300, -1e-300, 5e-324, -5e-324, sys.float_info.max,
    sys.float_info.min, sys.float_info.epsilon, INF, -INF, NAN, NAN_PAYLOAD, NEG_NAN,
]

COMPLEXES = [0j, 1 + 2j, -0.0 - 0.0j, complex(-0.0, 0.0), complex(INF, -INF), complex(NAN, 1.0),
             complex(1e308, -5e-324)]

STRINGS = [
    _p("", "empty"),
    _p("hello world", "ascii"),
    _p("\x00\x01\x7f", "ascii-controls"),
    _p("café", "latin1"),
    _p("\xff" * 10, "latin1-ff"),
    _p("ÿ\x80\xa0", "latin1-high"),
    _p("日本語テキスト", "bmp"),
    _p("Ā", "bmp-first-2byte"),
    _p("\uffff", "bmp-max"),
    _p("😀", "astral"),
    _p("a😀b\U0010ffff", "astral-mixed"),
    _p("\ud800", "lone-high-surrogate"),
    _p("\udfff", "lone-low-surrogate"),
    _p("a\udc80b\ud83d", "surrogates-inside"),
    _p("\ud83d\ude00", "surrogate-pair-as-two-code-points"),
    _p("x" * 100_000, "long-ascii"),
    _p("é" * 70_000, "long-latin1"),
    _p("語" * 50_000, "long-bmp"),
]

BYTESLIKE = [
    _p(b"", "bytes-empty"),
    _p(b"\x00\xff\x80abc", "bytes"),
    _p(bytes(range(256)) * 4096, "bytes-1MiB"),
    _p(bytearray(), "bytearray-empty"),
    _p(bytearray(b"\x00\x01mutable"), "bytearray"),
    _p(bytearray(300_000), "bytearray-large"),
]

SINGLETONS = [None, True, False, Ellipsis, NotImplemented]

RANGES_SLICES = [
    _p(range(0), "range-empty"),
    _p(range(10), "range-stop"),
    _p(range(1, 10, 3), "range-step"),
    _p(range(5, -5, -2), "range-negative-step"),
    _p(range(-(2**70), 2**70, 2**65), "range-bigint"),
    _p(slice(None), "slice-none"),
    _p(slice(1, 2, 3), "slice-ints"),
    _p(slice(-1, None, -1), "slice-reverse"),
    _p(slice("a", (1, 2.5), None), "slice-objects"),
    _p(slice(2**80, -(2**80), 2**70), "slice-bigint"),
]

TZ_IST = datetime.timezone(datetime.timedelta(hours=5, minutes=30), "IST")
TZ_NEG = datetime.timezone(-datetime.timedelta(hours=23, minutes=59, seconds=59, microseconds=999999))
TZ_NAMED_UTC = datetime.timezone(datetime.timedelta(0), "Zulu")

DATETIMES = [
    _p(datetime.date(2024, 2, 29), "date"),
    _p(datetime.date.min, "date-min"),
    _p(datetime.date.max, "date-max"),
    _p(datetime.date(1969, 12, 31), "date-before-epoch"),
    _p(datetime.time(0), "time-midnight"),
    _p(datetime.time(23, 59, 59, 999999), "time-max"),
    _p(datetime.time(12, 30, tzinfo=UTC), "time-utc"),
    _p(datetime.time(1, 2, 3, 4, tzinfo=TZ_IST, fold=1), "time-tz-fold"),
    _p(datetime.time(5, 6, fold=1), "time-fold"),
    _p(datetime.datetime(2024, 1, 2, 3, 4, 5, 6), "datetime-naive"),
    _p(datetime.datetime.min, "datetime-min"),
    _p(datetime.datetime.max, "datetime-max"),
    _p(datetime.datetime(1900, 1, 1, tzinfo=UTC), "datetime-utc"),
    _p(datetime.datetime(2020, 6, 1, 12, tzinfo=TZ_IST), "datetime-named-tz"),
    _p(datetime.datetime(2020, 6, 1, 12, tzinfo=TZ_NEG), "datetime-negative-offset"),
    _p(datetime.datetime(2020, 6, 1, 12, tzinfo=TZ_NAMED_UTC), "datetime-named-zero-offset"),
    _p(datetime.datetime(2021, 10, 31, 2, 30, fold=1), "datetime-naive-fold"),
    _p(datetime.timedelta(0), "timedelta-zero"),
    _p(datetime.timedelta(days=-1), "timedelta-negative"),
    _p(datetime.timedelta(microseconds=-1), "timedelta-minus-1us"),
    _p(datetime.timedelta(days=3, seconds=7, microseconds=11), "timedelta"),
    _p(datetime.timedelta.max, "timedelta-max"),
    _p(datetime.timedelta.min, "timedelta-min"),
    _p(UTC, "timezone-utc"),
    _p(TZ_IST, "timezone-named"),
    _p(TZ_NEG, "timezone-negative"),
    _p(TZ_NAMED_UTC, "timezone-named-zero"),
]

DECIMALS = [
    "0", "-0", "1", "-1", "1.10", "0.000", "-0.00E+3", "1E+10", "1e-10", "-1.5E-300",
    "123456789012345678901234567890.123456789012345678901234567890", "9.999E+999999",
    "NaN", "-NaN", "NaN123", "sNaN", "-sNaN45", "Infinity", "-Infinity",
]

FRACTIONS = [F(0), F(1, 3), F(-7, 2), F(2**100, 3**50), F(-(10**40), 7)]

UUIDS = [
    uuid.UUID(int=0),
    uuid.UUID(int=2**128 - 1),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    uuid.uuid4(),
    uuid.uuid1(),
    uuid.UUID(int=42, is_safe=uuid.SafeUUID.safe),
]


def _tz_paris():
    try:
        return zoneinfo.ZoneInfo("Europe/Paris")
    except zoneinfo.ZoneInfoNotFoundError:
        return None


PARIS = _tz_paris()
needs_tzdata = pytest.mark.skipif(PARIS is None, reason="no IANA time zone data on this machine")


# ---------------------------------------------------------------------------------------
# scalars
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", INTS, ids=[f"int{i}" for i in range(len(INTS))])
def test_int(value, ref, roundtrip, same):
    same(value, roundtrip(value, ref=ref))
    same(-value, roundtrip(-value, ref=ref))


@pytest.mark.parametrize("value", FLOATS, ids=[repr(f) for f in FLOATS])
def test_float_bit_exact(value, ref, roundtrip):
    result = roundtrip(value, ref=ref)
    assert type(result) is float
    assert struct.pack("<d", result) == struct.pack("<d", value)


def test_negative_zero_keeps_its_sign(ref, roundtrip):
    result = roundtrip(-0.0, ref=ref)
    assert str(result) == "-0.0"


@pytest.mark.parametrize("value", COMPLEXES, ids=[repr(c) for c in COMPLEXES])
def test_complex(value, ref, roundtrip, same):
    same(value, roundtrip(value, ref=ref))


@pytest.mark.parametrize("value", STRINGS)
def test_str(value, ref, roundtrip, same):
    same(value, roundtrip(value, ref=ref))


@pytest.mark.parametrize("value", STRINGS)
def test_str_in_containers(value, ref, roundtrip, same):
    # lists/tuples/sets/dicts of strings take packed code paths of their own
    values = [value, value + "x", "y" + value]
    obj = {
        "list": list(values),
        "tuple": tuple(values),
        "set": set(values),
        "frozenset": frozenset(values),
        "keys": {v: i for i, v in enumerate(values)},
        "str-values": {str(i): v for i, v in enumerate(values)},
        "mixed": [1, value, None, value],
    }
    same(obj, roundtrip(obj, ref=ref))


def test_repeated_distinct_strings(ref, roundtrip, same):
    # equal strings that are different objects, and the same object many times
    words = ["alpha", "beta", "\ud800", "日本", "é"]
    copies = [w.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass") for w in words]
    obj = words * 50 + copies * 50 + [{w: w for w in words} for _ in range(20)]
    same(obj, roundtrip(obj, ref=ref))


@pytest.mark.parametrize("value", BYTESLIKE)
def test_bytes_and_bytearray(value, ref, roundtrip, same):
    result = roundtrip(value, ref=ref)
    same(value, result)
    if isinstance(value, bytearray):
        assert result is not value
        result.append(1)  # a real, mutable bytearray
        assert len(result) == len(value) + 1


@pytest.mark.parametrize("value", SINGLETONS, ids=repr)
def test_singletons_keep_identity(value, ref, roundtrip):
    assert roundtrip(value, ref=ref) is value
    assert roundtrip([value, value], ref=ref)[1] is value


@pytest.mark.parametrize("value", RANGES_SLICES)
def test_range_and_slice(value, ref, roundtrip, same):
    result = roundtrip(value, ref=ref)
    same(value, result)
    assert (result.start, result.stop, result.step) == (value.start, value.stop, value.step)
    same(list(value.__reduce__()[1]), list(result.__reduce__()[1]))


@pytest.mark.parametrize("value", DATETIMES)
def test_datetime_types(value, ref, roundtrip, same):
    same(value, roundtrip(value, ref=ref))


def test_utc_singleton(ref, roundtrip):
    assert roundtrip(UTC, ref=ref) is UTC
    assert roundtrip(datetime.datetime(2000, 1, 1, tzinfo=UTC), ref=ref).tzinfo is UTC


@pytest.mark.parametrize("tz", [UTC, TZ_IST, TZ_NEG, None], ids=["utc", "ist", "neg", "naive"])
def test_datetime_fold_and_tz_kept(tz, ref, roundtrip):
    for fold in (0, 1):
        dt = datetime.datetime(2021, 10, 31, 2, 30, 15, 123, tzinfo=tz, fold=fold)
        t = dt.timetz()
        for value in (dt, t):
            result = roundtrip(value, ref=ref)
            assert type(result) is type(value)
            assert result.fold == fold
            assert result.tzinfo == tz
            assert result.utcoffset() == value.utcoffset()
            assert result.tzname() == value.tzname()
            assert result.replace(tzinfo=None) == value.replace(tzinfo=None)


@needs_tzdata
def test_zoneinfo(ref, roundtrip):
    assert roundtrip(PARIS, ref=ref) is PARIS  # ZoneInfo objects are cached by key
    for fold, offset in ((0, 2), (1, 1)):  # the ambiguous hour at the end of summer time
        dt = datetime.datetime(2021, 10, 31, 2, 30, tzinfo=PARIS, fold=fold)
        result = roundtrip(dt, ref=ref)
        assert type(result) is datetime.datetime
        assert result.tzinfo is PARIS
        assert result.fold == fold
        assert result.utcoffset() == datetime.timedelta(hours=offset)
        assert result == dt
        t = datetime.time(4, 5, tzinfo=PARIS, fold=fold)
        result = roundtrip(t, ref=ref)
        assert result.tzinfo is PARIS and result.fold == fold and result == t


@pytest.mark.parametrize("text", DECIMALS)
def test_decimal(text, ref, roundtrip):
    value = D(text)
    result = roundtrip(value, ref=ref)
    assert type(result) is D
    assert str(result) == str(value)
    assert result.as_tuple() == value.as_tuple()
    assert result.is_signed() == value.is_signed()


def test_decimal_in_other_context(ref, roundtrip):
    # the reader's decimal context must not round the value
    value = D("3.14159265358979323846264338327950288419716939937510582097494459")
    with decimal.localcontext() as ctx:
        ctx.prec = 5
        result = roundtrip(value, ref=ref)
    assert str(result) == str(value)


@pytest.mark.parametrize("value", FRACTIONS, ids=str)
def test_fraction(value, ref, roundtrip, same):
    result = roundtrip(value, ref=ref)
    same(value, result)
    assert (result.numerator, result.denominator) == (value.numerator, value.denominator)


@pytest.mark.parametrize("value", UUIDS, ids=str)
def test_uuid(value, ref, roundtrip, same):
    result = roundtrip(value, ref=ref)
    same(value, result)
    assert result.int == value.int
    assert result.is_safe == value.is_safe


# ---------------------------------------------------------------------------------------
# containers
# ---------------------------------------------------------------------------------------

CONTAINERS = [
    _p([], "list-empty"),
    _p((), "tuple-empty"),
    _p({}, "dict-empty"),
    _p(set(), "set-empty"),
    _p(frozenset(), "frozenset-empty"),
    _p([1, 2, 3], "list-ints"),
    _p([1, 2**64, 3], "list-ints-with-bigint"),
    _p([2**64] + list(range(100)), "list-bigint-first"),
    _p([1.5, -0.0, INF, 2.0], "list-floats"),
    _p(["a", "é", "語", "😀", "\ud800"], "list-strs"),
    _p([1, True, 1.0, "1", b"1", None, 1j], "list-mixed-equal-values"),
    _p([True, False, True], "list-bools"),
    _p([None] * 10, "list-nones"),
    _p((1, 2, 3), "tuple-ints"),
    _p((1.0, 2.5), "tuple-floats"),
    _p(("a", "b"), "tuple-strs"),
    _p((1, True, 1.0, None), "tuple-mixed"),
    _p(((), ((),), [()]), "tuple-nested-empty"),
    _p({"b": 1, "a": 2, "c": 3}, "dict-str-int"),
    _p({"x": 1.5, "y": -0.0}, "dict-str-float"),
    _p({"x": "1", "y": "é"}, "dict-str-str"),
    _p({"x": 1, "y": 2**70}, "dict-str-bigint"),
    _p({"x": 1, "y": True}, "dict-int-and-bool-values"),
    _p(dict([(1, "a"), (True, "b"), (False, "c")]), "dict-int-key-then-bool"),
    _p({2: "a", 1.5: "b", None: "c", (1, 2): "d", frozenset({1}): "e", "s": "f", b"b": "g"},
       "dict-mixed-keys"),
    _p({i: str(i) for i in range(100, 0, -1)}, "dict-insertion-order"),
    _p({"z" * i: i for i in range(50, 0, -1)}, "dict-insertion-order-str"),
    _p({1, 2, 3, -(2**80)}, "set-ints"),
    _p({"a", "b", "é"}, "set-strs"),
    _p({1, "a", None, (1, 2), 2.5, frozenset({3})}, "set-mixed"),
    _p({True, 2}, "set-bool-int"),
    _p(frozenset({"a", 1, (2, 3)}), "frozenset-mixed"),
    _p(frozenset({frozenset({1, 2}), frozenset()}), "frozenset-nested"),
    _p([[[]], [[], [[]]], {}], "nested-empties"),
    _p({"a": [1, {"b": (2, {3, 4}), "c": [None, "x"]}], "d": {"e": {"f": {}}}}, "nested"),
]


@pytest.mark.parametrize("value", CONTAINERS)
def test_containers(value, ref, roundtrip, same):
    same(value, roundtrip(value, ref=ref))


def test_dict_insertion_order_after_deletes(ref, roundtrip):
    d = {k: k for k in "abcdefgh"}
    for k in "bdf":
        del d[k]
    d["b"] = "again"
    result = roundtrip(d, ref=ref)
    assert list(result.items()) == list(d.items())


@pytest.mark.parametrize("n", [1, 2, 100, 20_000])
def test_large_homogeneous_lists(n, ref, roundtrip, same):
    obj = {
        "ints": list(range(-n // 2, n - n // 2)),
        "floats": [i * 0.5 - 7.25 for i in range(n)],
        "strs": [str(i) for i in range(n)],
        "bools": [i % 3 == 0 for i in range(n)],
        "tuples": tuple(range(n)),
        "dict": {str(i): i for i in range(n)},
        "set": set(range(n)),
    }
    same(obj, roundtrip(obj, ref=ref))


def test_float_list_special_values_bit_exact(ref, roundtrip):
    values = [0.0, -0.0, NAN, NAN_PAYLOAD, NEG_NAN, INF, -INF, 5e-324]
    for obj in (values, tuple(values), {str(i): v for i, v in enumerate(values)}):
        result = roundtrip(obj, ref=ref)
        got = list(result.values()) if isinstance(result, dict) else list(result)
        assert [struct.pack("<d", x) for x in got] == [struct.pack("<d", x) for x in values]


def test_records(ref, roundtrip, same):
    # JSON-like records: the same keys again and again, values of several types
    obj = [
        {"id": i, "name": f"user{i}", "score": i / 7, "active": i % 2 == 0, "tags": ["a", "b"][: i % 3],
         "parent": None if i == 0 else i - 1, "nested": {"id": i, "name": "é" * (i % 4)}}
        for i in range(500)
    ]
    same(obj, roundtrip(obj, ref=ref))


def test_results_are_fresh_objects(ref):
    fory = pyfory.Fory(ref=ref)
    data = fory.dumps({"a": [1, 2], "b": {3}})
    first = fory.loads(data)
    first["a"].append(3)
    first["b"].add(4)
    first["c"] = 1
    second = fory.loads(data)
    assert second == {"a": [1, 2], "b": {3}}
    assert second["a"] is not first["a"]


# ---------------------------------------------------------------------------------------
# type objects
# ---------------------------------------------------------------------------------------

TYPES = [
    type(None), bool, int, float, complex, str, bytes, bytearray, list, tuple, dict, set,
    frozenset, range, slice, type(Ellipsis), type(NotImplemented), datetime.date, datetime.time,
    datetime.datetime, datetime.timedelta, datetime.timezone, datetime.tzinfo, decimal.Decimal,
    fractions.Fraction, uuid.UUID, zoneinfo.ZoneInfo, type, object,
]


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
def test_type_objects(cls, ref, roundtrip):
    assert roundtrip(cls, ref=ref) is cls
    result = roundtrip([cls, 1, cls, {"t": cls}, (cls,)], ref=ref)
    assert result[0] is cls and result[2] is cls and result[3]["t"] is cls and result[4][0] is cls


def test_many_type_objects_in_one_payload(ref, roundtrip):
    obj = {cls.__name__: [cls, cls] for cls in TYPES}
    obj["all"] = list(TYPES) * 3
    result = roundtrip(obj, ref=ref)
    assert list(result) == list(obj)
    for key, value in obj.items():
        assert len(result[key]) == len(value)
        assert all(a is b for a, b in zip(value, result[key]))


# ---------------------------------------------------------------------------------------
# everything at once, and the API surface around the round trip
# ---------------------------------------------------------------------------------------


def _all_values():
    values = list(INTS) + list(FLOATS) + list(COMPLEXES) + list(SINGLETONS)
    for group in (STRINGS, BYTESLIKE, RANGES_SLICES, DATETIMES, CONTAINERS):
        values.extend(p.values[0] for p in group)
    values += [D(t) for t in DECIMALS] + list(FRACTIONS) + list(UUIDS) + list(TYPES)
    return values


def test_everything_in_one_payload(ref, roundtrip, same):
    values = _all_values()
    obj = {"list": values, "tuple": tuple(values), "dict": {str(i): v for i, v in enumerate(values)}}
    same(obj, roundtrip(obj, ref=ref))


def test_dumps_is_deterministic_and_instances_are_independent(ref):
    values = _all_values()
    fory = pyfory.Fory(ref=ref)
    first = fory.dumps(values)
    assert fory.dumps(values) == first
    assert pyfory.Fory(ref=ref).dumps(values) == first


def test_serialize_and_deserialize_aliases(ref, same):
    fory = pyfory.Fory(ref=ref)
    obj = {"a": [1, 2.5, "x"], "b": (None, b"y")}
    data = fory.serialize(obj)
    assert data == fory.dumps(obj)
    same(obj, fory.deserialize(data))
    same(obj, fory.loads(data))


def _as_array(data):
    return array.array("B", data)


@pytest.mark.parametrize(
    "wrap",
    [bytes, bytearray, memoryview, _as_array, lambda d: memoryview(bytearray(d)),
     lambda d: memoryview(b"junk" + d + b"more")[4 : 4 + len(d)],
     lambda d: memoryview(d).cast("B", (len(d),))],
    ids=["bytes", "bytearray", "memoryview", "array", "memoryview-bytearray", "memoryview-slice",
         "memoryview-cast"],
)
def test_loads_accepts_buffer_objects(wrap, ref, same):
    fory = pyfory.Fory(ref=ref)
    obj = {"k": ["v", 1, 2.5, b"bytes", bytearray(b"ba")], "big": b"\x01" * 10_000}
    same(obj, fory.loads(wrap(fory.dumps(obj))))


def test_loads_releases_its_view_of_the_input(ref):
    # a bytearray cannot be resized while a buffer view on it is alive
    fory = pyfory.Fory(ref=ref)
    data = bytearray(fory.dumps([1, "two", b"three"]))
    assert fory.loads(data) == [1, "two", b"three"]
    data.extend(b"\x00")
    del data[-1]
    bad = bytearray(data[:-1])
    with pytest.raises(pyfory.error.ForyError):
        fory.loads(bad)
    bad.extend(b"\x00")  # also released after a failed loads


def test_loads_from_mmap(tmp_path, ref, same):
    fory = pyfory.Fory(ref=ref)
    obj = {"payload": b"m" * 50_000, "list": list(range(1000))}
    path = tmp_path / "payload.bin"
    path.write_bytes(fory.dumps(obj))
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            same(obj, fory.loads(mm))
        finally:
            mm.close()  # raises BufferError if loads kept an export alive


def test_bytes_results_do_not_alias_the_input(ref):
    fory = pyfory.Fory(ref=ref)
    data = bytearray(fory.dumps([b"abc", bytearray(b"def"), "ghi"]))
    result = fory.loads(data)
    data[:] = b"\x00" * len(data)
    assert result == [b"abc", bytearray(b"def"), "ghi"]


def test_xlang_is_not_implemented():
    with pytest.raises(NotImplementedError, match="(?i)native"):
        pyfory.Fory(xlang=True)


def test_default_configuration():
    fory = pyfory.Fory()
    assert fory.ref is False
    assert fory.strict is True
    assert fory.max_depth == 50
