"""Shared and circular references.

ref=True: an object reached several times comes back as one object (cycles included),
as with pickle's memo. ref=False: no identity is kept (each occurrence is a copy), and a
cycle is a clear DepthLimitError, never a crash or a hang.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import random
import uuid

import pytest

import pyfory
from pyfory.error import DepthLimitError, ForyError, LimitExceededError


def _shareable():
    return [
        pytest.param(lambda: [1, "a", None], id="list"),
        pytest.param(lambda: [], id="list-empty"),
        pytest.param(lambda: {"k": [1]}, id="dict"),
        pytest.param(lambda: {}, id="dict-empty"),
        pytest.param(lambda: {1, 2, "x"}, id="set"),
        pytest.param(lambda: set(), id="set-empty"),
        pytest.param(lambda: frozenset({1, "x"}), id="frozenset"),
        pytest.param(lambda: (1, [2], "x"), id="tuple"),
        pytest.param(lambda: (1, 2, 3), id="tuple-of-ints"),
        pytest.param(lambda: b"shared bytes" * 3, id="bytes"),
        pytest.param(lambda: bytearray(b"shared"), id="bytearray"),
        pytest.param(lambda: bytearray(), id="bytearray-empty"),
        pytest.param(lambda: decimal.Decimal("1.50"), id="decimal"),
        pytest.param(lambda: fractions.Fraction(1, 3), id="fraction"),
        pytest.param(lambda: datetime.datetime(2020, 1, 2, 3, 4), id="datetime"),
        pytest.param(lambda: datetime.date(2020, 1, 2), id="date"),
        pytest.param(lambda: datetime.timedelta(days=2), id="timedelta"),
        pytest.param(lambda: uuid.UUID(int=7), id="uuid"),
        pytest.param(lambda: range(3, 9), id="range"),
        pytest.param(lambda: slice(1, [2]), id="slice"),
    ]


# ---------------------------------------------------------------------------------------
# ref=True: identity
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", _shareable())
def test_shared_object_is_one_object(make, roundtrip, same_graph):
    x = make()
    obj = [x, x, {"k": x}, (x, 1), [[x]]]
    result = roundtrip(obj, ref=True)
    same_graph(obj, result)
    first = result[0]
    assert result[1] is first
    assert result[2]["k"] is first
    assert result[3][0] is first
    assert result[4][0][0] is first


@pytest.mark.parametrize("make", _shareable())
def test_distinct_equal_objects_stay_distinct(make, roundtrip):
    a, b = make(), make()
    if a is b:  # an interpreter-cached immutable (e.g. the empty tuple): nothing to check
        return
    result = roundtrip([a, b], ref=True)
    assert result[0] == result[1]
    if isinstance(a, (list, dict, set, bytearray)):
        assert result[0] is not result[1]


def test_mutation_through_one_path_is_seen_through_the_other(roundtrip):
    inner = [1]
    d = {"x": 0}
    obj = {"a": inner, "b": [inner], "d1": d, "d2": (d,)}
    result = roundtrip(obj, ref=True)
    result["a"].append(2)
    assert result["b"][0] == [1, 2]
    result["d1"]["y"] = 1
    assert result["d2"][0] == {"x": 0, "y": 1}


def test_shared_string_is_one_object(roundtrip):
    s = "a string long enough not to be interned by accident " * 3
    t = "é" * 40 + "語"
    obj = [s, s, {s: s}, (t, t), {"k": t}]
    result = roundtrip(obj, ref=True)
    assert result[0] == s
    assert result[1] is result[0]
    key, value = next(iter(result[2].items()))
    assert key is result[0] and value is result[0]
    assert result[3][0] is result[3][1] is result[4]["k"]


def test_list_containing_itself(roundtrip, same_graph):
    lst = [1, "x"]
    lst.append(lst)
    lst.append(lst)
    result = roundtrip(lst, ref=True)
    same_graph(lst, result)
    assert result[2] is result
    assert result[3] is result
    assert result[:2] == [1, "x"]



class _AppendsToOwner:
    """Its __setstate__ appends to the list that holds it, reached by a back-reference
    while that list's items are still being read."""

    def __init__(self, owner=None):
        self.owner = owner

    def __reduce__(self):
        return (_AppendsToOwner, (), {"owner": self.owner})

    def __setstate__(self, state):
        self.owner = state["owner"]
        self.owner.append("added while loading")


def test_list_seen_by_user_code_while_its_items_are_read_matches_pickle():
    import pickle

    lst = []
    lst.extend([_AppendsToOwner(lst), 1, "x"])
    expected = pickle.loads(pickle.dumps(lst, protocol=5))
    result = pyfory.Fory(ref=True, strict=False).loads(pyfory.Fory(ref=True, strict=False).dumps(lst))
    # pickle makes the list, then its items, then appends them: user code saw it empty
    assert expected[0] == "added while loading" and expected[1].owner is expected
    assert result[0] == "added while loading"
    assert result[1].owner is result
    assert result[2:] == [1, "x"] and len(result) == len(expected) == 4

def test_dict_containing_itself(roundtrip, same_graph):
    d = {"name": "root"}
    d["self"] = d
    d["list"] = [d, {"parent": d}]
    result = roundtrip(d, ref=True)
    same_graph(d, result)
    assert result["self"] is result
    assert result["list"][0] is result
    assert result["list"][1]["parent"] is result
    assert list(result) == ["name", "self", "list"]


def test_tuple_containing_list_containing_the_tuple(roundtrip, same_graph):
    lst = ["payload"]
    tup = (lst, 42)
    lst.append(tup)
    for root in (tup, lst, [tup, lst], [lst, tup], {"t": tup, "l": lst}):
        result = roundtrip(root, ref=True)
        same_graph(root, result)
    t2 = roundtrip(tup, ref=True)
    assert type(t2) is tuple and t2[1] == 42
    assert t2[0][1] is t2
    l2 = roundtrip(lst, ref=True)
    assert l2[1][0] is l2


def test_tuple_reached_again_while_its_items_are_written(roundtrip, same_graph):
    # the tuple is first met at the top, but completed inside its own first item
    a = []
    b = ["b"]
    t = (a, b, (a, b))
    a.append(t)
    a.append(b)
    obj = [t, a, b, t, (t,)]
    result = roundtrip(obj, ref=True)
    same_graph(obj, result)
    rt, ra, rb = result[0], result[1], result[2]
    assert rt[0] is ra and rt[1] is rb
    assert ra[0] is rt and ra[1] is rb
    assert result[3] is rt and result[4][0] is rt
    assert rt[2][0] is ra and rt[2][1] is rb


def test_tuple_cycle_through_dict(roundtrip, same_graph):
    d = {}
    t = (d, "x")
    d["t"] = t
    d["again"] = (t, t)
    result = roundtrip(t, ref=True)
    same_graph(t, result)
    assert result[0]["t"] is result
    assert result[0]["again"][0] is result


def test_mutually_referencing_containers(roundtrip, same_graph):
    a, b, c = [], {}, []
    a.append(b)
    b["c"] = c
    c.append(a)
    c.append(b)
    result = roundtrip([c, b, a], ref=True)
    same_graph([c, b, a], result)
    rc, rb, ra = result
    assert ra[0] is rb and rb["c"] is rc and rc[0] is ra and rc[1] is rb


def test_set_reached_twice(roundtrip, same_graph):
    s = {1, "two", (3, 4)}
    fs = frozenset({"k"})
    obj = {"a": s, "b": [s, fs], "c": {fs: s}, "d": {fs, 5}}
    result = roundtrip(obj, ref=True)
    same_graph(obj, result)
    assert result["a"] is result["b"][0]
    assert result["c"][result["b"][1]] is result["a"]
    key = next(iter(result["c"]))
    assert key is result["b"][1]
    assert any(e is key for e in result["d"])


def test_bytes_reached_twice(roundtrip):
    data = bytes(range(256)) * 100
    result = roundtrip([data, data, {"k": data}, (data,)], ref=True)
    assert result[0] == data
    assert result[1] is result[0] and result[2]["k"] is result[0] and result[3][0] is result[0]


def test_shared_key_and_value(roundtrip):
    key = (1, "k", frozenset({2}))
    result = roundtrip({key: key, "other": [key]}, ref=True)
    k = next(iter(result))
    assert result[k] is k
    assert result["other"][0] is k


def test_many_shared_objects(roundtrip, same_graph):
    # more objects than the identity table's initial capacity, each referring back to
    # earlier ones (the depth stays small); two payloads to reuse the cleared tables
    rng = random.Random(1234)
    nodes = []
    for i in range(20_000):
        node = [i]
        node.extend(rng.choice(nodes) for _ in range(min(i, 3)))
        node.append(node)
        nodes.append(node)
    result = roundtrip(nodes, ref=True)
    same_graph(nodes, result)
    small = [1]
    result = roundtrip([small, small], ref=True)
    assert result[0] is result[1] and result == [[1], [1]]


def test_many_distinct_strings_and_repeats(roundtrip, same):
    words = [f"word-{i}" for i in range(20_000)]
    obj = [words, words[::-1], {w: w for w in words[:1000]}]
    result = roundtrip(obj, ref=True)
    same(obj, result)
    assert result[0][0] is result[1][-1]


def test_writer_and_payload_state_do_not_leak_between_dumps(same_graph):
    fory = pyfory.Fory(ref=True)
    shared = [1, 2]
    first = fory.dumps([shared, shared])
    # the second payload must not refer to objects of the first one
    second = fory.dumps([[3], shared])
    fresh = pyfory.Fory(ref=True)
    same_graph([shared, shared], fresh.loads(first))
    same_graph([[3], shared], fresh.loads(second))
    same_graph([[3], shared], pyfory.Fory(ref=True).loads(second))


def test_temporary_objects_written_by_a_serializer_are_not_confused(same):
    # a serializer that writes temporary containers: with ref=True, the identity table
    # must keep them alive, or a later temporary at the same address would be written
    # as a back-reference to an earlier one
    class Pair:
        def __init__(self, a, b):
            self.a, self.b = a, b

        def __eq__(self, other):
            return type(other) is Pair and (self.a, self.b) == (other.a, other.b)

    class PairSerializer(pyfory.Serializer):
        def write(self, ctx, obj):
            ctx.write_value([obj.a, obj.b])
            ctx.write_value({"a": obj.a})

        def read(self, ctx):
            a, b = ctx.read_value()
            assert ctx.read_value() == {"a": a}
            return Pair(a, b)

    def make():
        fory = pyfory.Fory(ref=True)
        fory.register(Pair, type_id=1, serializer=PairSerializer)
        return fory

    obj = [Pair(i, -i) for i in range(500)]
    result = make().loads(make().dumps(obj))
    assert result == obj


# ---------------------------------------------------------------------------------------
# ref=False: no identity, cycles are errors
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", _shareable())
def test_no_identity_without_ref(make, roundtrip, same):
    x = make()
    obj = [x, x, {"k": x}]
    result = roundtrip(obj, ref=False)
    same(obj, result)
    if isinstance(x, (list, dict, set, bytearray)):
        assert result[0] is not result[1]
        assert result[2]["k"] is not result[0]


def test_copies_are_independent_without_ref(roundtrip):
    inner = [1]
    result = roundtrip([inner, inner], ref=False)
    result[0].append(2)
    assert result[1] == [1]


def test_shared_dag_without_ref(roundtrip, same):
    # sharing without cycles is fine: it comes back as equal copies
    leaf = {"leaf": [1, 2, 3]}
    level = [leaf, leaf]
    for _ in range(6):
        level = [level, (level, {"x": level})]
    result = roundtrip(level, ref=False)
    same(level, result)


def _cycles():
    lst = [1]
    lst.append(lst)
    d = {"a": 1}
    d["self"] = d
    inner = []
    tup = (inner,)
    inner.append(tup)
    a, b = [], {}
    a.append(b)
    b["a"] = a
    deep = [1, {"x": [2, (3, [])]}]
    deep[1]["x"][1][1].append(deep)
    big = [list(range(100)), {"k": "v"}, deep]
    return [
        pytest.param(lst, id="list-in-itself"),
        pytest.param(d, id="dict-in-itself"),
        pytest.param(tup, id="tuple-list-tuple"),
        pytest.param(inner, id="list-tuple-list"),
        pytest.param(a, id="list-dict-list"),
        pytest.param(big, id="cycle-deep-inside"),
    ]


@pytest.mark.parametrize("obj", _cycles())
@pytest.mark.parametrize("max_depth", [1, 50, 2000])
def test_cycle_without_ref_is_a_depth_error(obj, max_depth, same_graph):
    fory = pyfory.Fory(ref=False, max_depth=max_depth)
    with pytest.raises(DepthLimitError) as info:
        fory.dumps(obj)
    assert isinstance(info.value, LimitExceededError)
    assert isinstance(info.value, ForyError)
    # the same instance still works afterwards
    assert fory.loads(fory.dumps([1, "2", 3.5, None])) == [1, "2", 3.5, None]
    # and the same cycle is fine with ref=True
    same_graph(obj, pyfory.Fory(ref=True).loads(pyfory.Fory(ref=True).dumps(obj)))


# ---------------------------------------------------------------------------------------
# the payload says whether it tracks references
# ---------------------------------------------------------------------------------------


def test_ref_payload_read_by_a_reader_configured_without_ref(same_graph):
    lst = [1]
    lst.append(lst)
    shared = {"s": 1}
    obj = [lst, shared, shared]
    data = pyfory.Fory(ref=True).dumps(obj)
    same_graph(obj, pyfory.Fory(ref=False).loads(data))


def test_plain_payload_read_by_a_reader_configured_with_ref(same):
    shared = {"s": [1, 2]}
    obj = [shared, shared, ("t", shared)]
    data = pyfory.Fory(ref=False).dumps(obj)
    same(obj, pyfory.Fory(ref=True).loads(data))
