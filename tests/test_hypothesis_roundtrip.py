"""Property tests: arbitrarily nested builtin values round-trip exactly (equality and
exact types), with ref=False and ref=True; with ref=True, shared sub-objects and cycles
keep their identity structure."""

from __future__ import annotations

import math
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyfory

# no example database: the test run leaves no files behind
SETTINGS = settings(max_examples=200, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(SETTINGS, max_examples=100)

# text of every kind: ASCII, latin-1, BMP, astral, and lone surrogates
surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, codec=None, exclude_categories=())
any_text = st.one_of(
    st.text(),
    st.text(st.characters(max_codepoint=0x7F)),
    st.text(st.characters(max_codepoint=0xFF)),
    st.text(st.one_of(st.characters(), surrogate)),  # lone surrogates among other characters
)


def _big(bits_and_offset):
    bits, offset, negative = bits_and_offset
    value = (1 << bits) + offset
    return -value if negative else value


ints = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**64), max_value=2**64),
    # around each power of two up to 2**1000 (written here as a map: small repr)
    st.tuples(st.integers(0, 1000), st.integers(-3, 3), st.booleans()).map(_big),
)
floats = st.floats(allow_nan=False)

scalars = st.one_of(st.none(), st.booleans(), ints, floats, any_text, st.binary())
# everything hashable: scalars, and tuples/frozensets of hashables
hashables = st.recursive(
    scalars,
    lambda inner: st.one_of(st.tuples(inner, inner), st.lists(inner, max_size=4).map(tuple),
                            st.frozensets(inner, max_size=4)),
    max_leaves=8,
)


def _containers(children):
    return st.one_of(
        st.lists(children, max_size=6),
        st.lists(children, max_size=6).map(tuple),
        st.dictionaries(hashables, children, max_size=6),
        st.sets(scalars, max_size=6),
        st.frozensets(hashables, max_size=6),
        st.binary().map(bytearray),
    )


values = st.recursive(scalars, _containers, max_leaves=30)

# homogeneous containers, which the core writes in packed form
packed = st.one_of(
    st.lists(ints, max_size=30),
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=1, max_size=30),
    st.lists(floats, max_size=30),
    st.lists(any_text, max_size=30),
    st.lists(ints, max_size=30).map(tuple),
    st.lists(floats, max_size=30).map(tuple),
    st.lists(any_text, max_size=30).map(tuple),
    st.dictionaries(any_text, ints, max_size=20),
    st.dictionaries(any_text, floats, max_size=20),
    st.dictionaries(any_text, any_text, max_size=20),
    st.dictionaries(any_text, st.lists(any_text, max_size=3), max_size=20),
    st.sets(any_text, max_size=20),
    st.frozensets(any_text, max_size=20),
    st.sets(ints, max_size=20),
)


def _roundtrip_both(obj, ref):
    writer = pyfory.Fory(ref=ref)
    data = writer.dumps(obj)
    return writer.loads(data), pyfory.Fory(ref=ref).loads(bytearray(data))


@SETTINGS
@given(values)
def test_nested_values_ref_false(same, obj):
    for result in _roundtrip_both(obj, ref=False):
        same(obj, result)


@SETTINGS
@given(values)
def test_nested_values_ref_true(same_graph, obj):
    for result in _roundtrip_both(obj, ref=True):
        same_graph(obj, result)


@SETTINGS
@given(packed, st.booleans())
def test_packed_containers(same, obj, ref):
    for result in _roundtrip_both(obj, ref=ref):
        same(obj, result)


any_float_bits = st.integers(0, 2**64 - 1).map(lambda i: struct.unpack("<d", struct.pack("<Q", i))[0])


@SETTINGS
@given(st.lists(st.one_of(floats, st.just(math.nan), st.just(-math.nan), any_float_bits), max_size=20),
       st.booleans())
def test_floats_bit_exact_including_nan(obj, ref):
    # every bit pattern, nan payloads included, in each container layout
    bits = [struct.pack("<d", x) for x in obj]
    layouts = [
        (obj, list),
        (tuple(obj), list),
        ({str(i): x for i, x in enumerate(obj)}, lambda d: list(d.values())),
        ([obj, 1, "x"], lambda r: r[0]),
        (obj + ["not a float"], lambda r: r[:-1]),
    ]
    for container, extract in layouts:
        for result in _roundtrip_both(container, ref=ref):
            got = extract(result)
            assert [type(x) for x in got] == [float] * len(obj)
            assert [struct.pack("<d", x) for x in got] == bits


@FEWER
@given(values, st.booleans())
def test_dumps_is_deterministic(obj, ref):
    fory = pyfory.Fory(ref=ref)
    first = fory.dumps(obj)
    assert fory.dumps(obj) == first
    assert pyfory.Fory(ref=ref).dumps(obj) == first


# ---------------------------------------------------------------------------------------
# shared sub-objects and cycles (ref=True)
# ---------------------------------------------------------------------------------------


@st.composite
def shared_graphs(draw, allow_cycles=True):
    """A few mutable containers (lists, dicts, sets, bytearrays) with scalar contents,
    linked to each other by random edges (possibly cyclic, possibly through tuples),
    and a root list that refers to some of them several times."""
    n = draw(st.integers(min_value=1, max_value=6))
    kinds = draw(st.lists(st.sampled_from(["list", "dict", "set", "bytearray"]), min_size=n, max_size=n))
    nodes = []
    for kind in kinds:
        if kind == "list":
            nodes.append(draw(st.lists(scalars, max_size=3)))
        elif kind == "dict":
            nodes.append(draw(st.dictionaries(any_text, scalars, max_size=3)))
        elif kind == "set":
            nodes.append(draw(st.sets(scalars, max_size=3)))
        else:
            nodes.append(bytearray(draw(st.binary(max_size=8))))
    holders = [i for i, k in enumerate(kinds) if k in ("list", "dict")]
    if holders:
        edges = draw(st.lists(st.tuples(st.sampled_from(holders), st.integers(0, n - 1), st.booleans(),
                                        st.integers(0, 10**6)), max_size=10))
        for src, dst, via_tuple, key in edges:
            if not allow_cycles and dst <= src:
                continue
            target = (nodes[dst], key) if via_tuple else nodes[dst]
            if kinds[src] == "list":
                nodes[src].append(target)
            else:
                nodes[src][f"edge{key}"] = target
    picks = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=12))
    return [nodes[i] for i in picks] + [tuple(nodes[i] for i in picks[:3])]


@SETTINGS
@given(shared_graphs())
def test_shared_and_cyclic_structures_ref_true(same_graph, root):
    for result in _roundtrip_both(root, ref=True):
        same_graph(root, result)
        # identity between positions of the root mirrors the original exactly
        for i, a in enumerate(root):
            for j, b in enumerate(root):
                assert (result[i] is result[j]) == (a is b), (i, j)


@SETTINGS
@given(shared_graphs(allow_cycles=False))
def test_shared_acyclic_structures_ref_false(same, root):
    for result in _roundtrip_both(root, ref=False):
        same(root, result)
        mutable = [i for i, x in enumerate(root) if isinstance(x, (list, dict, set, bytearray))]
        for i in mutable:
            for j in mutable:
                if i != j:
                    assert result[i] is not result[j]


@FEWER
@given(values, st.integers(min_value=2, max_value=5))
def test_same_inner_list_at_several_positions(same_graph, inner, copies):
    inner_list = [inner]
    outer = [inner_list] * copies + [{"again": inner_list}, (inner_list,)]
    for result in _roundtrip_both(outer, ref=True):
        same_graph(outer, result)
        first = result[0]
        assert all(result[i] is first for i in range(copies))
        assert result[copies]["again"] is first and result[copies + 1][0] is first
        first.append("mutated")
        assert result[1][-1] == "mutated"
