"""Shared fixtures for the pyfory core tests.

Helpers are exposed as fixtures (session scoped, so hypothesis tests can use them):

- ``same(a, b)``: deep comparison that checks equality *and* the exact type of every
  value, floats bit for bit (nan, -0.0), Decimals by their exact string form, dict
  key order, and tzinfo/fold of dates and times.
- ``same_graph(a, b)``: assert_same plus the identity structure (sharing, cycles).
- ``roundtrip(obj, ref=...)``: dumps with one Fory and loads with the same instance and
  with a fresh, independent one (as a receiver in another process would); both results
  must be the same, the function returns one of them.
"""

from __future__ import annotations

import datetime
import decimal
import struct

import pytest

import pyfory


def _float_bits(x: float) -> bytes:
    return struct.pack("<d", x)


def assert_same(a, b, path="value"):
    """Assert b is a faithful copy of a: equal, of the exact same type, recursively."""
    assert type(a) is type(b), f"{path}: type {type(b).__name__} != {type(a).__name__}"
    t = type(a)
    if t is float:
        assert _float_bits(a) == _float_bits(b), f"{path}: {b!r} != {a!r} (bitwise)"
    elif t is complex:
        assert _float_bits(a.real) == _float_bits(b.real), f"{path}: real part {b!r} != {a!r}"
        assert _float_bits(a.imag) == _float_bits(b.imag), f"{path}: imag part {b!r} != {a!r}"
    elif t is decimal.Decimal:
        assert str(a) == str(b), f"{path}: {b!r} != {a!r}"
    elif t in (list, tuple):
        assert len(a) == len(b), f"{path}: length {len(b)} != {len(a)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif t is dict:
        assert len(a) == len(b), f"{path}: length {len(b)} != {len(a)}"
        for i, ((ka, va), (kb, vb)) in enumerate(zip(a.items(), b.items())):
            assert_same(ka, kb, f"{path}.keys()[{i}]")
            assert_same(va, vb, f"{path}[{ka!r}]")
    elif t in (set, frozenset):
        assert len(a) == len(b), f"{path}: length {len(b)} != {len(a)}"
        assert a == b, f"{path}: {b!r} != {a!r}"
        # the element of b equal to x is unique (a set has no two equal elements)
        by_value = {y: y for y in b}
        for x in a:
            assert_same(x, by_value[x], f"{path}{{{x!r}}}")
    elif t in (datetime.datetime, datetime.time):
        assert a == b, f"{path}: {b!r} != {a!r}"
        assert a.replace(tzinfo=None) == b.replace(tzinfo=None), f"{path}: wall time {b!r} != {a!r}"
        assert type(a.tzinfo) is type(b.tzinfo), f"{path}: tzinfo {b.tzinfo!r} != {a.tzinfo!r}"
        assert a.tzinfo == b.tzinfo, f"{path}: tzinfo {b.tzinfo!r} != {a.tzinfo!r}"
        assert a.fold == b.fold, f"{path}: fold {b.fold} != {a.fold}"
    elif t is datetime.timezone:
        assert a == b, f"{path}: {b!r} != {a!r}"
        assert a.tzname(None) == b.tzname(None), f"{path}: name {b!r} != {a!r}"
    elif a is None or a is Ellipsis or a is NotImplemented or isinstance(a, type):
        assert a is b, f"{path}: {b!r} is not {a!r}"
    else:
        assert a == b, f"{path}: {b!r} != {a!r}"


_MUTABLE = (list, dict, set, bytearray)
_IMMUTABLE_CONTAINERS = (tuple, frozenset, bytes)


def assert_same_graph(a, b):
    """Like assert_same, and the object graph of b has the shape of a's: an object
    reached twice in a is one object in b (cycles included), and distinct mutable
    objects of a stay distinct in b. Works on cyclic structures."""
    seen = {}  # id(object of a) -> object of b
    owner = {}  # id(mutable object of b) -> object of a

    def walk(x, y, path):
        t = type(x)
        assert type(y) is t, f"{path}: type {type(y).__name__} != {t.__name__}"
        if t in _MUTABLE or t in _IMMUTABLE_CONTAINERS:
            if id(x) in seen:
                assert seen[id(x)] is y, f"{path}: an object reached twice came back as two objects"
                return
            if t in _MUTABLE:
                assert id(y) not in owner, f"{path}: two distinct objects came back as one"
                owner[id(y)] = x
            seen[id(x)] = y
        if t in (list, tuple):
            assert len(x) == len(y), f"{path}: length {len(y)} != {len(x)}"
            for i, (p, q) in enumerate(zip(x, y)):
                walk(p, q, f"{path}[{i}]")
        elif t is dict:
            assert len(x) == len(y), f"{path}: length {len(y)} != {len(x)}"
            for i, ((kx, vx), (ky, vy)) in enumerate(zip(x.items(), y.items())):
                walk(kx, ky, f"{path}.keys()[{i}]")
                walk(vx, vy, f"{path}[{kx!r}]")
        elif t in (set, frozenset):
            assert len(x) == len(y), f"{path}: length {len(y)} != {len(x)}"
            by_value = {q: q for q in y}
            for p in x:
                assert p in by_value, f"{path}: {p!r} missing"
                walk(p, by_value[p], f"{path}{{{p!r}}}")
        else:
            assert_same(x, y, path)

    walk(a, b, "value")


def _roundtrip(obj, ref=False, **kwargs):
    writer = pyfory.Fory(ref=ref, **kwargs)
    data = writer.dumps(obj)
    assert isinstance(data, bytes)
    same_instance = writer.loads(data)
    fresh = pyfory.Fory(ref=ref, **kwargs).loads(data)
    if ref:
        assert_same_graph(same_instance, fresh)
    else:
        assert_same(same_instance, fresh, "result of the writer instance vs a fresh reader")
    return fresh


@pytest.fixture(scope="session")
def same():
    return assert_same


@pytest.fixture(scope="session")
def same_graph():
    return assert_same_graph


@pytest.fixture(scope="session")
def roundtrip():
    return _roundtrip


@pytest.fixture(params=[False, True], ids=["ref=False", "ref=True"])
def ref(request):
    return request.param
