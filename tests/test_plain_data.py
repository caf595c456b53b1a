"""The reading shortcuts for plain data of issue 21: what they give back must be what
the plain path gives (equal values, exact types), whatever the input."""

from __future__ import annotations

import random

import pytest

import pyfory
from pyfory.error import ForyError


# ---- the dict key cache (ReadContext.read_key) ------------------------------------------
def _keys(rng, count):
    # ASCII keys of 0..40 characters (some longer than what the cache keeps), and a few
    # Latin-1 and wide ones, which never go through it
    alphabet = "abcdefghijklmnopqrstuvwxyz_0123456789"
    out = []
    for i in range(count):
        n = rng.randint(0, 40)
        key = "".join(rng.choice(alphabet) for _ in range(n))
        if i % 17 == 0:
            key += "é"
        elif i % 23 == 0:
            key += "日"
        out.append(key)
    return out


@pytest.mark.parametrize("ref", [False, True])
def test_many_small_dicts_round_trip_through_the_key_cache(ref):
    # far more distinct keys than the cache has slots: entries are replaced, collide,
    # and keys of the same length and different bytes meet in one slot
    rng = random.Random(21)
    keys = _keys(rng, 3000)
    fory = pyfory.Fory(ref=ref)
    for _ in range(3):
        rng.shuffle(keys)
        for start in range(0, len(keys), 7):
            d = {k: i for i, k in enumerate(keys[start:start + 7])}
            out = fory.loads(fory.dumps(d))
            assert out == d and list(out) == list(d)
            assert all(type(k) is str for k in out)
            # the same dict of str values, and a record list sharing the keys
            d2 = {k: k for k in d}
            assert fory.loads(fory.dumps(d2)) == d2
            assert fory.loads(fory.dumps([d, d2, d])) == [d, d2, d]


def test_keys_that_differ_in_one_byte_are_not_confused():
    fory = pyfory.Fory()
    for n in (1, 2, 8, 31, 32):
        base = "k" * n
        for i in range(n):
            other = base[:i] + "j" + base[i + 1:]
            assert list(fory.loads(fory.dumps({base: 1}))) == [base]
            assert list(fory.loads(fory.dumps({other: 1}))) == [other]


def test_cached_keys_are_shared_between_loads_without_ref_only():
    d = {"id": 1, "name": "x"}
    fory = pyfory.Fory()
    a, b = fory.loads(fory.dumps(d)), fory.loads(fory.dumps(d))
    assert [x is y for x, y in zip(a, b)] == [True, True]
    # with ref=True, identity is the payload's: each loads makes its own strings
    fory = pyfory.Fory(ref=True)
    a, b = fory.loads(fory.dumps(d)), fory.loads(fory.dumps(d))
    assert [x is y for x, y in zip(a, b)] == [False, False]


def test_truncated_key_raises():
    fory = pyfory.Fory()
    data = fory.dumps({"abcdef": 1})
    fory.loads(data)     # the key is in the cache now
    for cut in range(4, len(data)):
        with pytest.raises(ForyError):
            fory.loads(data[:cut])
