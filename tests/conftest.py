"""Shared fixtures for the pyfory core tests.

Helpers are exposed as fixtures (session scoped, so hypothesis tests can use them):

- ``same(a, b)``: deep comparison that checks equality *and* the exact type of every
  value, floats bit for bit (nan, -0.0), Decimals by their exact string form, dict
  key order, and tzinfo/fold of dates and times.
- ``roundtrip(obj, ref=...)``: dumps with one Fory and loads with the same instance and
  with a fresh, independent one (as a receiver in another process would); both results
  must be the same, the function returns one of them.
"""

from __future__ import annotations

import datetime
import decimal
import math
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
        rest = list(b)
        for x in a:
            # the element of b equal to x is unique (a set has no two equal elements)
            matches = [y for y in rest if y == x]
            assert len(matches) == 1, f"{path}: {x!r} not found once in {b!r}"
            assert_same(x, matches[0], f"{path}{{{x!r}}}")
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


def _roundtrip(obj, ref=False, **kwargs):
    writer = pyfory.Fory(ref=ref, **kwargs)
    data = writer.dumps(obj)
    assert isinstance(data, bytes)
    same_instance = writer.loads(data)
    fresh = pyfory.Fory(ref=ref, **kwargs).loads(data)
    assert_same(same_instance, fresh, "result of the writer instance vs a fresh reader")
    return fresh


@pytest.fixture(scope="session")
def same():
    return assert_same


@pytest.fixture(scope="session")
def roundtrip():
    return _roundtrip


@pytest.fixture(params=[False, True], ids=["ref=False", "ref=True"])
def ref(request):
    return request.param


@pytest.fixture(scope="session")
def is_nan():
    return lambda x: isinstance(x, float) and math.isnan(x)
