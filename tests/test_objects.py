"""Objects and classes (issue 3): dataclasses, plain and slotted classes, subclasses of
builtins, namedtuples, the standard collections, enums, exceptions, things that travel by
reference, the full pickle reduce protocol, strict mode and schema evolution.

Every value is written with one Fory and read by a fresh one (as a receiver in another
process would), with ref=False and ref=True unless the value has a cycle. The classes
live at module level so that they can be imported by name (by reference), as an
application's classes would be.
"""

from __future__ import annotations

import collections
import copyreg
import dataclasses
import enum
import functools
import importlib
import operator
import os
import pathlib
import re
import sys
import textwrap
import types
import typing
from dataclasses import InitVar, dataclass, field
from typing import ClassVar, List, NamedTuple, Optional

import pytest

import pyfory
from pyfory.error import (
    DepthLimitError,
    ForyError,
    SchemaMismatchError,
    SerializationError,
    TypeNotRegisteredError,
)

PY310 = sys.version_info >= (3, 10)
PY311 = sys.version_info >= (3, 11)
# enum's pickle-by-name helper (3.12, and 3.11 from 3.11.3 on)
PICKLE_BY_ENUM_NAME = getattr(enum, "pickle_by_enum_name", None)
needs_310 = pytest.mark.skipif(not PY310, reason="dataclass(slots=True) is new in Python 3.10")


def roundtrip(obj, ref=False, strict=False, register=(), **kwargs):
    """dumps with one Fory, loads with a fresh one; returns the loaded value."""
    writer = pyfory.Fory(ref=ref, strict=strict, **kwargs)
    reader = pyfory.Fory(ref=ref, strict=strict, **kwargs)
    for cls in register:
        writer.register(cls)
        reader.register(cls)
    return reader.loads(writer.dumps(obj))


def slot_state(obj):
    """{slot: value} of the slots that are set, along the MRO (like copyreg._slotnames)."""
    out = {}
    for name in copyreg._slotnames(type(obj)):
        if hasattr(obj, name):
            out[name] = getattr(obj, name)
    return out


def assert_copy(a, b):
    """b is a faithful copy of a: same type, equal, same attributes, not the same object
    (unless a is immutable and interned-like)."""
    assert type(b) is type(a), f"{type(b)!r} is not {type(a)!r}"
    assert b == a
    if hasattr(a, "__dict__") and not isinstance(a, type):
        assert vars(b) == vars(a)
    assert slot_state(b) == slot_state(a)


# =======================================================================================
# classes used by the tests (module level: importable by name)
# =======================================================================================
@dataclass
class Point:
    x: int
    y: int


@dataclass
class Record:
    id: int
    name: str = "anon"
    tags: List[str] = field(default_factory=list)
    score: Optional[float] = None


@dataclass(frozen=True)
class FrozenPoint:
    x: int
    y: int = 0


@dataclass(eq=True)
class WithInitVar:
    a: int
    scale: InitVar[int] = 2
    unit: ClassVar[str] = "m"
    computed: int = field(init=False, default=0)

    def __post_init__(self, scale):
        self.a *= scale
        self.computed = self.a + 1
        self.cache = {"derived": self.a * 10}   # not a field: kept as pickle keeps it


@dataclass
class Base:
    a: int = 1
    b: str = "b"


@dataclass
class Derived(Base):
    c: float = 3.0
    a: int = 10


@dataclass
class Node:
    value: int
    children: list = field(default_factory=list)
    parent: Optional["Node"] = None


if PY310:
    @dataclass(slots=True)
    class SlotsPoint:
        x: int
        y: int = 5

    @dataclass(slots=True, frozen=True)
    class FrozenSlotsPoint:
        x: int
        y: int = 5

    @dataclass(slots=True)
    class SlotsChild(SlotsPoint):
        z: int = 9


class Plain:
    def __init__(self, a, b):
        self.a = a
        self.b = b

    def __eq__(self, other):
        return type(other) is type(self) and vars(other) == vars(self)

    __hash__ = None


class NeedsArgs:
    """__init__ must not run on load (pickle does not call it)."""

    def __init__(self, required):
        self.required = required

    def __eq__(self, other):
        return type(other) is type(self) and vars(other) == vars(self)


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a=1, b=2):
        self.a = a
        self.b = b

    def __eq__(self, other):
        return type(other) is type(self) and slot_state(other) == slot_state(self)


class SlottedChild(Slotted):
    __slots__ = ("c", "__weakref__", "__secret")

    def __init__(self):
        super().__init__(3, 4)
        self.c = [5]
        self.__secret = "mangled"

    def secret(self):
        return self.__secret


class SlotsAndDict(Slotted):
    def __init__(self):
        super().__init__(7, 8)
        self.extra = "in __dict__"

    def __eq__(self, other):
        return super().__eq__(other) and vars(other) == vars(self)


class CustomNew:
    def __new__(cls, *args):
        self = super().__new__(cls)
        self.from_new = "set by __new__"
        return self

    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return type(other) is type(self) and vars(other) == vars(self)


class GuardedSetattr:
    """Loading must not call __setattr__ or property setters (pickle updates __dict__)."""

    def __init__(self):
        object.__setattr__(self, "value", 1)
        self.__dict__["prop"] = "shadowed by the property"

    def __setattr__(self, name, value):
        raise AssertionError("__setattr__ called on load")

    @property
    def prop(self):
        return "property"

    @prop.setter
    def prop(self, value):
        raise AssertionError("property setter called on load")


class MyInt(int):
    pass


class MyStr(str):
    pass


class MyBytes(bytes):
    pass


class MyList(list):
    pass


class MyDict(dict):
    pass


class MyTuple(tuple):
    pass


class MySet(set):
    pass


class MyFrozenSet(frozenset):
    pass


PairNT = collections.namedtuple("PairNT", "left right")
DefaultsNT = collections.namedtuple("DefaultsNT", ["a", "b", "c"], defaults=[2, 3])


class Employee(NamedTuple):
    name: str
    id: int = 3
    tags: tuple = ()


class PairWithMethods(PairNT):
    __slots__ = ()

    def total(self):
        return self.left + self.right


class PairWithNew(PairNT):
    __slots__ = ()

    def __new__(cls, left, right):
        return super().__new__(cls, left * 1, right)


class PairWithDict(PairNT):
    """A namedtuple subclass without __slots__ = (): instances have a __dict__."""


class Color(enum.Enum):
    RED = 1
    GREEN = "green"
    BLUE = (0, 0, 255)


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    R = 4
    W = 2
    X = 1


class IPerm(enum.IntFlag):
    R = 4
    W = 2
    X = 1


class Aliased(enum.Enum):
    ONE = 1
    UNO = 1


class ReducedEnum(enum.Enum):
    A = 1
    B = 2

    def __reduce_ex__(self, proto):
        return getattr, (type(self), self.name)


if PICKLE_BY_ENUM_NAME is not None:
    class ByNameEnum(enum.Enum):
        X = 1
        Y = 2
        __reduce_ex__ = PICKLE_BY_ENUM_NAME


class AppError(Exception):
    def __init__(self, message, code):
        super().__init__(message, code)
        self.code = code
        self.details = {"retry": False}


class PlainAppError(ValueError):
    pass


class Outer:
    class Inner:
        def __init__(self, v=1):
            self.v = v

        def __eq__(self, other):
            return type(other) is type(self) and other.v == self.v

        class Deepest:
            pass

    def method(self):
        return "method"

    @classmethod
    def cmethod(cls):
        return cls

    @staticmethod
    def smethod():
        return "static"


def module_function(x):
    return x * 2


class EqMeta(type):
    """A metaclass with __eq__ and no __hash__: its classes are unhashable."""

    def __eq__(cls, other):
        return cls is other

    __hash__ = None


class UnhashableClass(metaclass=EqMeta):
    def __init__(self, v=1):
        self.v = v


# ---- the reduce protocol -----------------------------------------------------------------
CALLS: list = []


def record_call(*args):
    CALLS.append(args)
    return ("recorded", args)


class ReduceTwo:
    def __init__(self, a, b):
        self.a, self.b = a, b

    def __reduce__(self):
        return (ReduceTwo, (self.a, self.b))

    def __eq__(self, other):
        return type(other) is type(self) and vars(other) == vars(self)


class ReduceEx:
    """__reduce_ex__ wins over __reduce__, and is called with protocol 5."""

    seen_protocols: list = []

    def __init__(self, v):
        self.v = v

    def __reduce_ex__(self, proto):
        ReduceEx.seen_protocols.append(proto)
        return (ReduceEx, (self.v,))

    def __reduce__(self):  # pragma: no cover - must not be called
        raise AssertionError("__reduce__ called although __reduce_ex__ is defined")


class ReduceState:
    """3-tuple: state applied to __dict__ (no __setstate__)."""

    def __init__(self):
        self.x = 1

    def __reduce__(self):
        return (ReduceState, (), {"x": self.x, "y": "from state"})


class ReduceSetState:
    def __init__(self, v):
        self.v = v

    def __reduce__(self):
        return (ReduceSetState, (None,), ("packed", self.v))

    def __setstate__(self, state):
        assert state[0] == "packed"
        self.v = state[1]
        self.set_by = "__setstate__"


class ReduceListItems:
    """4-tuple: listitems appended to an object that is not a list (append/extend)."""

    def __init__(self):
        self.items = []

    def append(self, item):
        self.items.append(item)

    def __reduce__(self):
        return (ReduceListItems, (), None, iter(self.items))

    def __eq__(self, other):
        return type(other) is type(self) and other.items == self.items


class ReduceListItemsExtend(ReduceListItems):
    def extend(self, items):
        self.extended = True
        self.items.extend(items)

    def __reduce__(self):
        return (ReduceListItemsExtend, (), None, iter(self.items))


class ReduceDictItems:
    """5-tuple: dictitems set on an object that is not a dict (__setitem__)."""

    def __init__(self):
        self.table = {}

    def __setitem__(self, key, value):
        self.table[key] = value

    def __reduce__(self):
        return (ReduceDictItems, (), None, None, iter(self.table.items()))

    def __eq__(self, other):
        return type(other) is type(self) and other.table == self.table


def set_state_with_setter(obj, state):
    obj.state_from_setter = state


class ReduceSixTuple:
    """6-tuple: state_setter is called with (obj, state) instead of __setstate__."""

    def __init__(self, v=None):
        self.v = v

    def __reduce__(self):
        return (ReduceSixTuple, (), {"v": self.v}, None, None, set_state_with_setter)

    def __setstate__(self, state):  # pragma: no cover - the state setter wins
        raise AssertionError("__setstate__ called although a state_setter was given")


class GlobalSingleton:
    def __reduce__(self):
        return "SINGLETON"


SINGLETON = GlobalSingleton()


class NewObj:
    """A reduce returning copyreg.__newobj__ explicitly: __init__ is not called."""

    def __new__(cls, a, b=0):
        self = super().__new__(cls)
        self.made_by_new = (a, b)
        return self

    def __init__(self, a, b=0):  # pragma: no cover - must not run on load
        raise AssertionError("__init__ called on load")

    def __reduce__(self):
        return (copyreg.__newobj__, (NewObj, *self.made_by_new), {"extra": 1})


class GetNewArgs:
    def __new__(cls, a, b):
        self = super().__new__(cls)
        self.ab = (a, b)
        return self

    def __getnewargs__(self):
        return self.ab

    def __eq__(self, other):
        return type(other) is type(self) and vars(other) == vars(self)


class GetNewArgsEx:
    def __new__(cls, a, *, key):
        self = super().__new__(cls)
        self.a, self.key = a, key
        return self

    def __getnewargs_ex__(self):
        return (self.a,), {"key": self.key}

    def __eq__(self, other):
        return type(other) is type(self) and vars(other) == vars(self)


class GetSetState:
    def __init__(self, v):
        self.v = v
        self.transient = object()

    def __getstate__(self):
        return {"v": self.v}

    def __setstate__(self, state):
        self.v = state["v"]
        self.transient = "rebuilt"


class FalsyState:
    """A falsy state other than None is still applied (pickle: BUILD runs)."""

    def __init__(self):
        self.got = None

    def __getstate__(self):
        return 0

    def __setstate__(self, state):
        self.got = ("setstate", state)


class SlotsWithGetNewArgs:
    """Default __getstate__ of a slotted class with a __dict__: (dict_state, slots_state)."""

    __slots__ = ("s", "__dict__")

    def __new__(cls, tag):
        self = super().__new__(cls)
        self.tag = tag
        return self

    def __getnewargs__(self):
        return (self.tag,)


class ExplicitDictSlotsState:
    __slots__ = ("s",)

    def __init__(self):
        self.s = "slot"

    def __getstate__(self):
        return (None, {"s": self.s})

    def __reduce__(self):
        return (ExplicitDictSlotsState, (), self.__getstate__())


class SelfInState:
    """An object whose reduce state contains itself."""

    def __init__(self):
        self.me = self
        self.others = [self]

    def __reduce__(self):
        return (SelfInState.__new__, (SelfInState,), {"me": self.me, "others": self.others})


class HoldsList:
    """Reduce args reach the object again (through a list): pickle's POP + GET case."""

    def __init__(self, lst):
        self.lst = lst

    def __reduce__(self):
        return (HoldsList, (self.lst,))


class DispatchTarget:
    def __init__(self, v):
        self.v = v

    def __reduce__(self):  # pragma: no cover - copyreg.dispatch_table wins
        raise AssertionError("__reduce__ called although copyreg.dispatch_table has a reducer")


def make_dispatch_target(v):
    obj = DispatchTarget.__new__(DispatchTarget)
    obj.v = ("via dispatch_table", v)
    return obj


def reduce_dispatch_target(obj):
    return (make_dispatch_target, (obj.v,))


class Unpicklable:
    def __reduce__(self):
        raise TypeError("Unpicklable objects refuse to be pickled")


class BadReduceResult:
    def __init__(self, rv):
        self.rv = rv

    def __reduce__(self):
        return self.rv


# =======================================================================================
# dataclasses
# =======================================================================================
DATACLASS_VALUES = [
    pytest.param(Point(1, 2), id="plain"),
    pytest.param(Record(1), id="defaults"),
    pytest.param(Record(2, "bob", ["x", "y"], 0.5), id="all-fields"),
    pytest.param(FrozenPoint(3, 4), id="frozen"),
    pytest.param(Derived(), id="inheritance"),
    pytest.param(Derived(a=5, b="bb", c=-1.0), id="inheritance-values"),
    pytest.param([Point(i, -i) for i in range(50)], id="list-of"),
    pytest.param({"p": Point(0, 0), "r": Record(7, tags=["t"])}, id="dict-of"),
    pytest.param(Record(3, tags=[Point(1, 1), FrozenPoint(2)]), id="nested"),
]


@pytest.mark.parametrize("value", DATACLASS_VALUES)
def test_dataclasses(value, ref):
    out = roundtrip(value, ref=ref)
    assert out == value
    if isinstance(value, list):
        for a, b in zip(value, out):
            assert_copy(a, b)
    elif dataclasses.is_dataclass(value):
        assert_copy(value, out)


def test_dataclass_default_factory_not_shared(ref):
    out = roundtrip([Record(1), Record(2)], ref=ref)
    assert out[0].tags == [] and out[1].tags == []
    assert out[0].tags is not out[1].tags


def test_dataclass_initvar_classvar(ref):
    value = WithInitVar(3, scale=4)
    assert (value.a, value.computed) == (12, 13)
    out = roundtrip(value, ref=ref)
    # __init__ and __post_init__ are not run again (as pickle): nothing is scaled twice
    assert (out.a, out.computed, out.cache) == (12, 13, {"derived": 120})
    assert "scale" not in vars(out) and "unit" not in vars(out)
    assert type(out).unit == "m"
    assert [f.name for f in dataclasses.fields(out)] == ["a", "computed"]


def test_frozen_dataclass_stays_frozen(ref):
    out = roundtrip(FrozenPoint(1, 2), ref=ref)
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.x = 5
    assert hash(out) == hash(FrozenPoint(1, 2))


def test_dataclass_with_deleted_field_attribute(ref):
    value = Record(1, "n")
    del value.score      # the instance lacks a field: it must stay absent, not be defaulted
    out = roundtrip(value, ref=ref)
    assert vars(out) == vars(value)
    assert "score" not in vars(out)


def test_dataclass_cycle_and_sharing():
    root = Node(0)
    kids = [Node(i, parent=root) for i in range(1, 4)]
    root.children = kids + [kids[0]]
    out = roundtrip(root, ref=True)
    assert [c.value for c in out.children] == [1, 2, 3, 1]
    assert all(c.parent is out for c in out.children)
    assert out.children[0] is out.children[3]


def test_dataclass_cycle_without_ref_is_a_clear_error():
    root = Node(0)
    root.parent = root
    with pytest.raises(DepthLimitError):
        pyfory.Fory(ref=False, strict=False).dumps(root)


def test_dataclass_class_info_written_once(ref):
    # class and field names once per payload: each further instance costs only values
    one = pyfory.Fory(ref=ref, strict=False).dumps([Point(1, 2)])
    many = pyfory.Fory(ref=ref, strict=False).dumps([Point(1, 2)] * 1 + [Point(3, 4) for _ in range(100)])
    per_instance = (len(many) - len(one)) / 100
    # T_OBJECT, type back-reference, layout index, then 2 tagged small ints
    assert per_instance <= 7
    assert many.count(b"Point") == 1


@needs_310
@pytest.mark.parametrize("make", [lambda: SlotsPoint(1), lambda: SlotsPoint(2, 3),
                                  lambda: SlotsChild(1, 2, 3), lambda: FrozenSlotsPoint(4)],
                         ids=["slots", "slots-values", "slots-inherited", "slots-frozen"])
def test_dataclass_slots(make, ref):
    value = make()
    out = roundtrip(value, ref=ref)
    assert type(out) is type(value) and out == value
    assert not hasattr(out, "__dict__")
    assert slot_state(out) == slot_state(value)


# =======================================================================================
# plain classes
# =======================================================================================
PLAIN_VALUES = [
    pytest.param(lambda: Plain(1, "two"), id="dict"),
    pytest.param(lambda: Plain([1, 2], {"k": (3, 4)}), id="dict-nested"),
    pytest.param(lambda: NeedsArgs("r"), id="init-not-called"),
    pytest.param(lambda: Slotted(), id="slots"),
    pytest.param(lambda: Slotted("x", None), id="slots-values"),
    pytest.param(lambda: SlottedChild(), id="slots-inherited-weakref-mangled"),
    pytest.param(lambda: SlotsAndDict(), id="slots-and-dict"),
    pytest.param(lambda: CustomNew(5), id="custom-new"),
    pytest.param(lambda: Outer.Inner(7), id="nested-class-instance"),
]


@pytest.mark.parametrize("make", PLAIN_VALUES)
def test_plain_objects(make, ref):
    value = make()
    out = roundtrip(value, ref=ref)
    assert_copy(value, out)


def test_setattr_and_properties_are_bypassed(ref):
    value = GuardedSetattr()
    out = roundtrip(value, ref=ref)
    assert vars(out) == {"value": 1, "prop": "shadowed by the property"}
    assert out.prop == "property"


def test_slots_partially_set(ref):
    value = Slotted.__new__(Slotted)
    value.b = "only b"
    out = roundtrip(value, ref=ref)
    assert not hasattr(out, "a") and out.b == "only b"


def test_slots_mangled_and_weakref(ref):
    import weakref

    out = roundtrip(SlottedChild(), ref=ref)
    assert out.secret() == "mangled"
    assert weakref.ref(out)() is out


def test_plain_object_empty_and_many(ref):
    values = [Plain(i, str(i)) for i in range(200)]
    values.append(Plain.__new__(Plain))
    out = roundtrip(values, ref=ref)
    assert out == values
    assert vars(out[-1]) == {}


def test_plain_object_layouts_vary(ref):
    # instances of one class with different attribute sets (and orders)
    values = []
    for i in range(20):
        p = Plain(i, i)
        if i % 3 == 0:
            p.extra = "x"
        if i % 5 == 0:
            del p.a
        values.append(p)
    out = roundtrip(values, ref=ref)
    assert [vars(v) for v in out] == [vars(v) for v in values]
    assert [list(vars(v)) for v in out] == [list(vars(v)) for v in values]


def test_attribute_names_are_interned():
    out = roundtrip(Plain(1, 2))
    for name in vars(out):
        assert name is sys.intern(name)


def test_plain_object_cycles_and_sharing():
    a = Plain(None, None)
    b = Plain(a, a)
    a.a = b
    a.b = a
    out = roundtrip([a, b], ref=True)
    oa, ob = out
    assert oa.a is ob and oa.b is oa and ob.a is oa and ob.b is oa


def test_shared_object_without_ref_is_copied():
    p = Plain(1, 2)
    out = roundtrip([p, p], ref=False)
    assert out[0] == out[1] and out[0] is not out[1]
    out = roundtrip([p, p], ref=True)
    assert out[0] is out[1]


# =======================================================================================
# subclasses of builtins with extra attributes
# =======================================================================================
BUILTIN_SUBCLASSES = [
    (MyInt, lambda: MyInt(-12345678901234567890)),
    (MyStr, lambda: MyStr("héllo")),
    (MyBytes, lambda: MyBytes(b"\x00bytes")),
    (MyList, lambda: MyList([1, "two", [3]])),
    (MyDict, lambda: MyDict(a=1, b=[2])),
    (MyTuple, lambda: MyTuple((1, 2, (3,)))),
    (MySet, lambda: MySet({1, "a", (2, 3)})),
    (MyFrozenSet, lambda: MyFrozenSet({4, "b"})),
]


@pytest.mark.parametrize("make", [m for _, m in BUILTIN_SUBCLASSES],
                         ids=[c.__name__ for c, _ in BUILTIN_SUBCLASSES])
@pytest.mark.parametrize("with_attrs", [False, True], ids=["bare", "attrs"])
def test_builtin_subclasses(make, with_attrs, ref):
    value = make()
    if with_attrs:
        value.label = "extra"
        value.nested = {"k": [1, 2]}
    out = roundtrip(value, ref=ref)
    assert type(out) is type(value)
    assert out == value
    assert vars(out) == vars(value)


def test_builtin_subclasses_recursive():
    lst = MyList()
    lst.append(lst)
    lst.me = lst
    d = MyDict()
    d["self"] = d
    d.me = d
    out_l, out_d = roundtrip([lst, d], ref=True)
    assert out_l[0] is out_l and out_l.me is out_l
    assert out_d["self"] is out_d and out_d.me is out_d


# =======================================================================================
# namedtuples
# =======================================================================================
NAMEDTUPLES = [
    pytest.param(lambda: PairNT(1, "b"), id="namedtuple"),
    pytest.param(lambda: DefaultsNT(1), id="namedtuple-defaults"),
    pytest.param(lambda: Employee("ann"), id="typing-NamedTuple"),
    pytest.param(lambda: Employee("bo", 7, ("a", PairNT(1, 2))), id="typing-NamedTuple-nested"),
    pytest.param(lambda: PairWithMethods(2, 3), id="subclass"),
    pytest.param(lambda: PairWithNew(4, 5), id="subclass-own-new"),
    pytest.param(lambda: [PairNT(i, str(i)) for i in range(100)], id="list-of"),
]


@pytest.mark.parametrize("make", NAMEDTUPLES)
def test_namedtuples(make, ref):
    value = make()
    out = roundtrip(value, ref=ref)
    assert out == value
    for a, b in zip(value if isinstance(value, list) else [value],
                    out if isinstance(out, list) else [out]):
        assert type(b) is type(a)
        assert b._fields == a._fields


def test_namedtuple_subclass_with_dict(ref):
    value = PairWithDict(1, 2)
    value.note = "attr"
    out = roundtrip(value, ref=ref)
    assert type(out) is PairWithDict and out == value and out.note == "attr"


def test_namedtuple_methods_work():
    out = roundtrip(PairWithMethods(2, 3))
    assert out.total() == 5 and out._asdict() == {"left": 2, "right": 3}


def test_namedtuple_in_a_cycle():
    holder = []
    nt = PairNT(holder, 1)
    holder.append(nt)
    out = roundtrip(nt, ref=True)
    assert type(out) is PairNT and out.left[0] is out


def test_namedtuple_wrong_arity_is_an_error():
    data = bytearray(pyfory.Fory(strict=False).dumps(PairNT(1, 2)))
    # rewrite the value count (2) to 1 and drop one value: a payload for another class version
    idx = data.rindex(b"\x02\xd1\xd2")      # count 2, then 1 and 2 (ints in their tags)
    bad = bytes(data[:idx]) + b"\x01\xd1"
    with pytest.raises(ForyError):
        pyfory.Fory(strict=False).loads(bad)


# =======================================================================================
# standard-library collections and value types
# =======================================================================================
def _ordered_dict():
    od = collections.OrderedDict([("b", 1), ("a", 2), ("c", [3])])
    od.move_to_end("b")
    return od


STDLIB_VALUES = [
    pytest.param(_ordered_dict, id="OrderedDict"),
    pytest.param(lambda: collections.OrderedDict(), id="OrderedDict-empty"),
    pytest.param(lambda: collections.defaultdict(list, {"a": [1]}), id="defaultdict-list"),
    pytest.param(lambda: collections.defaultdict(int), id="defaultdict-int-empty"),
    pytest.param(lambda: collections.defaultdict(None, {1: 2}), id="defaultdict-no-factory"),
    pytest.param(lambda: collections.deque([1, "2", (3,)]), id="deque"),
    pytest.param(lambda: collections.deque(range(10), maxlen=3), id="deque-maxlen"),
    pytest.param(lambda: collections.deque(maxlen=0), id="deque-maxlen-0"),
    pytest.param(lambda: collections.Counter("abracadabra"), id="Counter"),
    pytest.param(lambda: collections.ChainMap({"a": 1}, {"a": 2, "b": 3}), id="ChainMap"),
    pytest.param(lambda: types.SimpleNamespace(a=1, b=[2], c=types.SimpleNamespace()), id="SimpleNamespace"),
    pytest.param(lambda: pathlib.PurePosixPath("/usr/lib/x.so"), id="PurePosixPath"),
    pytest.param(lambda: pathlib.PureWindowsPath(r"C:\Users\me"), id="PureWindowsPath"),
    pytest.param(lambda: pathlib.Path("relative/dir"), id="Path"),
    pytest.param(lambda: pathlib.Path("/"), id="Path-root"),
    pytest.param(lambda: re.compile(r"(?P<word>\w+)\s*"), id="Pattern-str"),
    pytest.param(lambda: re.compile(rb"[\x00-\x7f]+", re.DOTALL), id="Pattern-bytes"),
    pytest.param(lambda: re.compile("abc", re.IGNORECASE | re.MULTILINE | re.VERBOSE), id="Pattern-flags"),
]


@pytest.mark.parametrize("make", STDLIB_VALUES)
@pytest.mark.parametrize("strict", [False, True], ids=["nonstrict", "strict"])
def test_stdlib_values(make, strict, ref):
    value = make()
    out = roundtrip(value, ref=ref, strict=strict)
    assert type(out) is type(value)
    assert out == value
    if isinstance(value, (collections.OrderedDict, dict)):
        assert list(out.items()) == list(value.items())
    if isinstance(value, collections.defaultdict):
        assert out.default_factory is value.default_factory
    if isinstance(value, collections.deque):
        assert out.maxlen == value.maxlen
    if isinstance(value, collections.ChainMap):
        assert out.maps == value.maps and out["a"] == 1
    if isinstance(value, re.Pattern):
        assert out.flags == value.flags and out.pattern == value.pattern


def test_defaultdict_function_factory(ref):
    # a function travels by reference (strict=False; strict mode refuses functions)
    out = roundtrip(collections.defaultdict(module_function, {1: 2}), ref=ref)
    assert out.default_factory is module_function and out == {1: 2}


def test_defaultdict_factory_works_after_load(ref):
    out = roundtrip(collections.defaultdict(list), ref=ref)
    out["new"].append(1)
    assert out == {"new": [1]}


def test_stdlib_collections_recursive():
    od = collections.OrderedDict()
    od["self"] = od
    od.attr = od
    dq = collections.deque()
    dq.append(dq)
    dd = collections.defaultdict(list)
    dd["me"] = dd
    ns = types.SimpleNamespace()
    ns.me = ns
    cm = collections.ChainMap()
    cm.maps[0]["cm"] = cm
    out = roundtrip([od, dq, dd, ns, cm], ref=True)
    o_od, o_dq, o_dd, o_ns, o_cm = out
    assert o_od["self"] is o_od and o_od.attr is o_od
    assert o_dq[0] is o_dq
    assert o_dd["me"] is o_dd
    assert o_ns.me is o_ns
    assert o_cm["cm"] is o_cm


def test_stdlib_collections_with_attributes(ref):
    od = collections.OrderedDict(a=1)
    od.note = "od attr"
    cnt = collections.Counter("aab")
    cnt.note = "counter attr"
    cm = collections.ChainMap({"x": 1})
    cm.note = "chainmap attr"
    out = roundtrip([od, cnt, cm], ref=ref)
    assert [o.note for o in out] == ["od attr", "counter attr", "chainmap attr"]


def test_chainmap_shares_its_maps_with_ref():
    base = {"a": 1}
    cm = collections.ChainMap({}, base)
    out = roundtrip([cm, base], ref=True)
    assert out[0].maps[1] is out[1]


# =======================================================================================
# enums
# =======================================================================================
ENUM_MEMBERS = [
    Color.RED, Color.GREEN, Color.BLUE, Level.LOW, Level.HIGH, Perm.R, Perm.R | Perm.W,
    Perm(0), Perm.R | Perm.W | Perm.X, IPerm.X, IPerm.R | IPerm.X, IPerm(0), Aliased.UNO,
    ReducedEnum.B,
]
if PICKLE_BY_ENUM_NAME is not None:
    ENUM_MEMBERS.append(ByNameEnum.Y)


@pytest.mark.parametrize("member", ENUM_MEMBERS, ids=repr)
def test_enum_members(member, ref):
    out = roundtrip(member, ref=ref)
    assert out is member or (type(out) is type(member) and out == member and out.value == member.value)
    if not isinstance(member, enum.Flag):
        assert out is member


def test_enum_members_in_containers(ref):
    value = {Color.RED: [Level.HIGH, Perm.W], "k": (Color.BLUE, Color.BLUE)}
    out = roundtrip(value, ref=ref)
    assert out == value
    assert next(iter(out)) is Color.RED and out["k"][0] is Color.BLUE


def test_enum_class_by_reference(ref):
    out = roundtrip([Color, Level, Perm, IPerm], ref=ref)
    assert out == [Color, Level, Perm, IPerm]


# =======================================================================================
# exceptions
# =======================================================================================
def _exc_state(e):
    return type(e), e.args, vars(e), str(e)


EXCEPTIONS = [
    pytest.param(lambda: ValueError("bad value", 42), id="ValueError"),
    pytest.param(lambda: KeyError("missing"), id="KeyError"),
    pytest.param(lambda: Exception(), id="Exception-no-args"),
    pytest.param(lambda: OSError(2, "No such file", "/nope"), id="OSError-errno"),
    pytest.param(lambda: FileNotFoundError(2, "No such file", "/nope"), id="FileNotFoundError"),
    pytest.param(lambda: UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), id="UnicodeDecodeError"),
    pytest.param(lambda: StopIteration(5), id="StopIteration"),
    pytest.param(lambda: SystemExit(3), id="SystemExit"),
    pytest.param(lambda: ImportError("no mod", name="mod", path="/p"), id="ImportError-name-path"),
    pytest.param(lambda: SyntaxError("bad syntax", ("f.py", 1, 2, "x = = 1")), id="SyntaxError"),
    pytest.param(lambda: AppError("app failed", 17), id="user-defined"),
    pytest.param(lambda: PlainAppError("subclass of a builtin"), id="user-subclass-of-builtin"),
]


@pytest.mark.parametrize("make", EXCEPTIONS)
def test_exceptions(make, ref):
    exc = make()
    exc.attribute = ["added", "later"]
    out = roundtrip(exc, ref=ref)
    assert _exc_state(out) == _exc_state(exc)
    for name in ("errno", "strerror", "filename", "value", "code", "name", "path", "lineno", "offset",
                 "msg", "text", "encoding", "object", "start", "end", "reason"):
        if hasattr(exc, name):
            assert getattr(out, name) == getattr(exc, name), name


def test_user_exception_attributes():
    exc = AppError("boom", 500)
    exc.details["retry"] = True
    out = roundtrip(exc)
    assert out.code == 500 and out.details == {"retry": True} and out.args == ("boom", 500)
    with pytest.raises(AppError):
        raise out


@pytest.mark.skipif(not PY311, reason="__notes__ and ExceptionGroup are new in Python 3.11")
def test_exception_notes_and_groups(ref):
    exc = ValueError("x")
    exc.add_note("a note")
    out = roundtrip(exc, ref=ref)
    assert out.__notes__ == ["a note"]
    group = ExceptionGroup("many", [ValueError(1), TypeError(2)])  # noqa: F821 - 3.11+
    out = roundtrip(group, ref=ref)
    assert type(out) is type(group) and out.message == "many"
    assert [(type(e), e.args) for e in out.exceptions] == [(ValueError, (1,)), (TypeError, (2,))]


def test_exception_referring_to_itself():
    exc = AppError("loop", 1)
    exc.details = {"self": exc}
    out = roundtrip([exc, exc], ref=True)
    assert out[0] is out[1] and out[0].details["self"] is out[0]


def test_exception_raised_then_sent():
    try:
        module_function(None) + 1
    except TypeError as e:
        exc = e
    out = roundtrip(exc)
    assert type(out) is TypeError and out.args == exc.args


def test_builtin_exceptions_need_no_registration(ref):
    values = [ValueError("v"), KeyError("k"), OSError(2, "x"), ZeroDivisionError("z")]
    out = roundtrip(values, ref=ref, strict=True)
    assert [(type(e), e.args) for e in out] == [(type(e), e.args) for e in values]


def test_exception_classes_by_reference(ref):
    import builtins

    classes = [t for t in vars(builtins).values() if isinstance(t, type) and issubclass(t, BaseException)]
    assert roundtrip(classes, ref=ref) == classes
    assert roundtrip(classes, ref=ref, strict=True) == classes


# =======================================================================================
# things that travel by reference
# =======================================================================================
BY_REFERENCE = [
    Point, Plain, Outer, Outer.Inner, Outer.Inner.Deepest, PairNT, Employee, Color, AppError,
    module_function, Outer.smethod, len, functools.reduce, os.path.join, operator.add, sorted,
    int, dict, object, type, collections.OrderedDict, pathlib.Path, dataclasses.dataclass,
    str.join, dict.fromkeys, list.append, int.__add__, object.__init__, os, os.path, collections,
    typing, sys,
]


@pytest.mark.parametrize("obj", BY_REFERENCE, ids=lambda o: getattr(o, "__qualname__", None) or o.__name__)
def test_by_reference(obj, ref):
    out = roundtrip(obj, ref=ref)
    if isinstance(obj, (types.BuiltinMethodType, types.MethodWrapperType)) and not isinstance(obj, type):
        # e.g. dict.fromkeys is bound to dict: an equal method, bound to the same class
        assert out == obj
    else:
        assert out is obj


def test_by_reference_payload_names_not_code():
    data = pyfory.Fory(strict=False).dumps([Outer.Inner, module_function])
    assert b"Outer.Inner" in data and b"module_function" in data and b"test_objects" in data
    assert len(data) < 100


def test_unhashable_class(ref):
    # pickle saves such a class as a global (its memo is keyed by id, not by the class)
    out = roundtrip([UnhashableClass, UnhashableClass], ref=ref)
    assert out[0] is UnhashableClass and out[1] is UnhashableClass
    out = roundtrip(UnhashableClass(5), ref=ref)
    assert type(out) is UnhashableClass and out.v == 5


def test_methods_of_builtins(ref):
    lst = [1, 2]
    out = roundtrip([lst.append, lst], ref=ref)
    append, loaded = out
    assert append.__name__ == "append" and append.__self__ == [1, 2]
    if ref:
        append(3)
        assert loaded == [1, 2, 3]
    out = roundtrip("-".join, ref=ref)
    assert out(["a", "b"]) == "a-b"
    assert roundtrip({}.get, ref=ref)("k", "dflt") == "dflt"


def test_bound_method_of_instance(ref):
    out = roundtrip(Outer().method, ref=ref)
    assert out() == "method" and type(out.__self__) is Outer


def test_classmethod_by_reference(ref):
    out = roundtrip(Outer.cmethod, ref=ref)
    assert out() is Outer


# =======================================================================================
# the reduce protocol
# =======================================================================================
@pytest.mark.parametrize("make", [
    pytest.param(lambda: ReduceTwo(1, [2]), id="2-tuple"),
    pytest.param(lambda: GetNewArgs("a", 2), id="__getnewargs__"),
    pytest.param(lambda: GetNewArgsEx(1, key="k"), id="__getnewargs_ex__"),
], )
def test_reduce_forms(make, ref):
    value = make()
    out = roundtrip(value, ref=ref)
    assert_copy(value, out)


def test_reduce_ex_preferred_with_protocol_5(ref):
    ReduceEx.seen_protocols.clear()
    out = roundtrip(ReduceEx(3), ref=ref)
    assert type(out) is ReduceEx and out.v == 3
    assert ReduceEx.seen_protocols == [5]


def test_reduce_three_tuple_state(ref):
    out = roundtrip(ReduceState(), ref=ref)
    assert vars(out) == {"x": 1, "y": "from state"}
    out = roundtrip(ReduceSetState("v"), ref=ref)
    assert (out.v, out.set_by) == ("v", "__setstate__")


def test_reduce_listitems_dictitems(ref):
    items = ReduceListItems()
    for i in range(5):
        items.append(i)
    out = roundtrip(items, ref=ref)
    assert out == items and not hasattr(out, "extended")
    items = ReduceListItemsExtend()
    items.extend([1, 2])
    out = roundtrip(items, ref=ref)
    assert out.items == [1, 2] and out.extended
    table = ReduceDictItems()
    table["a"] = 1
    table[2] = "b"
    out = roundtrip(table, ref=ref)
    assert out == table and list(out.table) == ["a", 2]


def test_reduce_state_setter(ref):
    out = roundtrip(ReduceSixTuple("v"), ref=ref)
    assert out.state_from_setter == {"v": "v"} and out.v is None


def test_reduce_string_means_global(ref):
    assert roundtrip(SINGLETON, ref=ref) is SINGLETON
    assert roundtrip([SINGLETON, SINGLETON], ref=ref) == [SINGLETON, SINGLETON]


def test_reduce_copyreg_newobj(ref):
    out = roundtrip(NewObj.__new__(NewObj, 1, 2), ref=ref)
    assert type(out) is NewObj and out.made_by_new == (1, 2) and out.extra == 1


def test_getstate_setstate(ref):
    out = roundtrip(GetSetState(9), ref=ref)
    assert (out.v, out.transient) == (9, "rebuilt")
    out = roundtrip(FalsyState(), ref=ref)
    assert out.got == ("setstate", 0)


def test_dict_and_slots_state(ref):
    value = SlotsWithGetNewArgs("t")
    value.s = "slot value"
    value.d = "dict value"
    out = roundtrip(value, ref=ref)
    assert (out.tag, out.s, out.d) == ("t", "slot value", "dict value")
    out = roundtrip(ExplicitDictSlotsState(), ref=ref)
    assert out.s == "slot"


def test_object_whose_state_contains_itself():
    out = roundtrip(SelfInState(), ref=True)
    assert out.me is out and out.others[0] is out


def test_reduce_args_reach_the_object_again():
    lst = []
    obj = HoldsList(lst)
    lst.append(obj)
    out = roundtrip(obj, ref=True)
    assert type(out) is HoldsList and out.lst[0] is out


def test_recursive_list_subclass_via_reduce():
    value = MyList()
    value.append(value)
    out = roundtrip(value, ref=True)
    assert out[0] is out


@pytest.fixture
def dispatch_entry():
    copyreg.pickle(DispatchTarget, reduce_dispatch_target)
    yield
    del copyreg.dispatch_table[DispatchTarget]


def test_copyreg_dispatch_table(dispatch_entry, ref):
    out = roundtrip(DispatchTarget(4), ref=ref)
    assert type(out) is DispatchTarget and out.v == ("via dispatch_table", 4)


def test_reduce_errors_are_reported():
    f = pyfory.Fory(strict=False)
    with pytest.raises(TypeError, match="refuse to be pickled"):
        f.dumps(Unpicklable())
    for rv in [42, (), (module_function,), (module_function, (), None, None, None, None, None),
               ("not callable", ()), (module_function, "not a tuple")]:
        with pytest.raises(SerializationError):
            f.dumps(BadReduceResult(rv))
    assert f.loads(f.dumps([1, Point(1, 2)])) == [1, Point(1, 2)]   # the instance still works


def test_c_heap_types_with_hidden_state_are_refused():
    # a C type's own fields are invisible to attribute copying: like pickle, refuse
    # instead of sending an empty shell
    import struct
    import zlib

    for obj in (struct.Struct("i"), zlib.compressobj()):
        with pytest.raises(TypeError, match="cannot pickle"):
            pyfory.Fory(strict=False).dumps(obj)


def test_pickle_agrees():
    """The same objects through pickle give the same results (sanity check of the tests)."""
    import pickle

    for value in [ReduceState(), ReduceSixTuple("v"), GetSetState(1), SlotsWithGetNewArgs("t")]:
        a = pickle.loads(pickle.dumps(value, 5))
        b = roundtrip(value, ref=True)
        state = (lambda o: {k: v for k, v in vars(o).items() if k != "transient"})
        assert type(a) is type(b) and state(a) == state(b)


# =======================================================================================
# strict mode
# =======================================================================================
def test_strict_is_the_default():
    assert pyfory.Fory().strict


@pytest.mark.parametrize("value", [Point(1, 2), Plain(1, 2), Slotted(), PairNT(1, 2), Color.RED,
                                   MyList([1]), AppError("x", 1), ReduceTwo(1, 2), Outer.Inner()],
                         ids=lambda v: type(v).__qualname__)
def test_strict_dumps_refuses_unregistered(value):
    with pytest.raises(TypeNotRegisteredError) as info:
        pyfory.Fory().dumps([value])
    message = str(info.value)
    cls = type(value)
    assert f"{cls.__module__}.{cls.__qualname__}" in message
    assert f"register({cls.__qualname__})" in message
    assert isinstance(info.value, ForyError)


@pytest.mark.parametrize("value", [Point(1, 2), Plain(1, 2), Slotted(), PairNT(1, 2), Color.RED,
                                   MyList([1]), AppError("x", 1), Outer.Inner()],
                         ids=lambda v: type(v).__qualname__)
def test_strict_loads_refuses_unregistered(value):
    data = pyfory.Fory(strict=False).dumps(value)
    with pytest.raises(TypeNotRegisteredError) as info:
        pyfory.Fory().loads(data)
    cls = type(value)
    assert f"{cls.__module__}.{cls.__qualname__}" in str(info.value)
    assert "register(" in str(info.value)


@pytest.mark.parametrize("value", [Point(1, 2), FrozenPoint(1), Record(1, tags=["a"]), Plain(1, 2),
                                   Slotted(), SlottedChild(), PairNT(1, 2), Employee("e"), Color.RED,
                                   Perm.R | Perm.X, MyList([1]), MyDict(a=1), AppError("x", 1),
                                   ReduceTwo(1, 2), GetNewArgsEx(1, key=2), Outer.Inner()],
                         ids=lambda v: type(v).__qualname__)
def test_strict_registered_roundtrip(value, ref):
    regs = [type(value)]
    if isinstance(value, Employee):
        regs.append(PairNT)
    out = roundtrip(value, ref=ref, strict=True, register=regs)
    if isinstance(value, BaseException):
        assert _exc_state(out) == _exc_state(value)
    else:
        assert type(out) is type(value) and out == value


def test_strict_register_by_name_and_id(ref):
    writer, reader = pyfory.Fory(ref=ref), pyfory.Fory(ref=ref)
    for f in (writer, reader):
        f.register(Point, name="geo.Point")
        f.register(Plain, type_id=7)
    data = writer.dumps([Point(1, 2), Plain(3, 4)])
    assert b"test_objects" not in data
    assert reader.loads(data) == [Point(1, 2), Plain(3, 4)]


def test_strict_refuses_functions_and_callables():
    strict = pyfory.Fory()
    for value in [module_function, len, functools.partial(max, 1), [].append, os, operator.itemgetter(1),
                  collections.defaultdict(module_function)]:
        data = pyfory.Fory(strict=False).dumps(value)
        with pytest.raises(ForyError):
            strict.loads(data)
        with pytest.raises(ForyError):
            strict.dumps(value)
    assert strict.loads(strict.dumps([1, "ok"])) == [1, "ok"]


class CallsOnLoad:
    def __reduce__(self):
        return (record_call, ("called on load",))


def test_strict_loads_never_calls_an_unregistered_callable():
    data = pyfory.Fory(strict=False).dumps(CallsOnLoad())
    CALLS.clear()
    strict = pyfory.Fory()
    strict.register(CallsOnLoad)      # the class is allowed, the callable it names is not
    with pytest.raises(ForyError):
        strict.loads(data)
    assert CALLS == []
    assert pyfory.Fory(strict=False).loads(data) == ("recorded", ("called on load",))
    assert CALLS == [("called on load",)]


def test_strict_refuses_global_names():
    data = pyfory.Fory(strict=False).dumps(SINGLETON)
    strict = pyfory.Fory()
    strict.register(GlobalSingleton)
    with pytest.raises(ForyError):
        strict.loads(data)


@pytest.fixture
def temp_module(tmp_path, monkeypatch):
    """Writes Python modules into a directory on sys.path; forgets them afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    created = []

    def write(name, source):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        sys.modules.pop(name, None)
        created.append(name)
        return name

    yield write
    for name in created:
        sys.modules.pop(name, None)


def test_strict_loads_never_imports(temp_module):
    name = temp_module("pyfory_strict_probe_mod", """
        import dataclasses

        IMPORTED = []

        @dataclasses.dataclass
        class Secret:
            value: int

        def function():
            return 1
    """)
    mod = importlib.import_module(name)
    payloads = [pyfory.Fory(strict=False).dumps(v) for v in
                (mod.Secret(1), [mod.Secret], mod.function, {"k": [mod.Secret(2)]})]
    del mod
    sys.modules.pop(name)
    for data in payloads:
        with pytest.raises(ForyError) as info:
            pyfory.Fory().loads(data)
        assert name not in sys.modules, "strict loads imported a module"
        assert "register" in str(info.value) or "strict" in str(info.value)
    # the same payloads load with strict=False (which imports the module)
    assert pyfory.Fory(strict=False).loads(payloads[0]).value == 1
    assert name in sys.modules


# =======================================================================================
# schema evolution
# =======================================================================================
@dataclass
class UserV1:
    id: int
    name: str
    email: str
    legacy: str = "old"


@dataclass
class UserV2:                      # legacy removed, fields reordered, two added
    email: str
    id: int
    name: str
    active: bool = True
    roles: list = field(default_factory=lambda: ["user"])


@dataclass
class UserV3:                      # a new field without a default
    id: int
    name: str
    email: str
    legacy: str
    required: int


@dataclass
class UserV1Renamed:               # same fields as UserV1, another class name
    id: int
    name: str
    email: str
    legacy: str = "old"


def _pair(writer_cls, reader_cls, compatible=True, ref=False):
    writer = pyfory.Fory(ref=ref, compatible=compatible)
    reader = pyfory.Fory(ref=ref, compatible=compatible)
    writer.register(writer_cls, name="app.User")
    reader.register(reader_cls, name="app.User")
    return writer, reader


def test_schema_evolution_added_removed_reordered(ref):
    writer, reader = _pair(UserV1, UserV2, ref=ref)
    users = [UserV1(i, f"n{i}", f"u{i}@x", legacy="gone") for i in range(3)]
    out = reader.loads(writer.dumps(users))
    assert [type(u) for u in out] == [UserV2] * 3
    assert out[0] == UserV2(email="u0@x", id=0, name="n0", active=True, roles=["user"])
    assert not hasattr(out[0], "legacy")
    assert out[0].roles is not out[1].roles     # default_factory called per instance
    # and back: the old reader fills its own default for the field it has and v2 has not
    back = pyfory.Fory(ref=ref)
    back.register(UserV1, name="app.User")
    writer2 = pyfory.Fory(ref=ref)
    writer2.register(UserV2, name="app.User")
    old = back.loads(writer2.dumps(out))
    assert old[1] == UserV1(1, "n1", "u1@x", legacy="old")


def test_schema_evolution_keeps_non_field_attributes(ref):
    writer, reader = _pair(UserV1, UserV2, ref=ref)
    user = UserV1(1, "n", "e")
    user.runtime_note = "not a field"
    out = reader.loads(writer.dumps(user))
    assert out.runtime_note == "not a field" and out.active is True


def test_schema_evolution_field_without_default_is_a_clear_error():
    writer, reader = _pair(UserV2, UserV3)
    with pytest.raises(SchemaMismatchError, match="has no default"):
        reader.loads(writer.dumps(UserV2("e", 1, "n")))


def test_schema_evolution_by_module_and_qualname(temp_module):
    name = temp_module("pyfory_evolving_mod", """
        import dataclasses

        @dataclasses.dataclass
        class Item:
            sku: str
            qty: int = 1
            obsolete: str = "x"
    """)
    mod = importlib.import_module(name)
    data = pyfory.Fory(strict=False).dumps([mod.Item("a", 2), mod.Item("b")])
    temp_module(name, """
        import dataclasses

        @dataclasses.dataclass
        class Item:
            price: float = 9.5
            qty: int = 1
            sku: str = ""
    """)
    mod2 = importlib.import_module(name)
    out = pyfory.Fory(strict=False).loads(data)
    assert out == [mod2.Item(sku="a", qty=2), mod2.Item(sku="b", qty=1)]
    assert all(type(o) is mod2.Item and not hasattr(o, "obsolete") for o in out)


def test_schema_evolution_plain_and_slotted_classes(temp_module):
    name = temp_module("pyfory_evolving_plain", """
        class Plain:
            def __init__(self):
                self.a = 1
                self.gone = 2

        class Slots:
            __slots__ = ("a", "gone")

            def __init__(self):
                self.a = 1
                self.gone = 2
    """)
    mod = importlib.import_module(name)
    data = pyfory.Fory(strict=False).dumps([mod.Plain(), mod.Slots()])
    temp_module(name, """
        class Plain:
            added = "class-level default"

            def __init__(self):
                self.a = 1

        class Slots:
            __slots__ = ("a", "added")
    """)
    mod2 = importlib.import_module(name)
    plain, slots = pyfory.Fory(strict=False).loads(data)
    assert type(plain) is mod2.Plain and plain.a == 1 and plain.added == "class-level default"
    assert plain.gone == 2     # a plain class has no declared fields: its attributes are kept
    assert type(slots) is mod2.Slots and slots.a == 1 and not hasattr(slots, "added")


def test_compatible_false_same_class(ref):
    writer, reader = _pair(UserV1, UserV1, compatible=False, ref=ref)
    users = [UserV1(i, "n", "e") for i in range(10)]
    data = writer.dumps(users)
    assert reader.loads(data) == users
    compat_writer, _ = _pair(UserV1, UserV1, compatible=True, ref=ref)
    assert len(data) < len(compat_writer.dumps(users))
    assert b"email" not in data and b"email" in compat_writer.dumps(users)
    # another class name with the same fields matches the schema
    w2, r2 = _pair(UserV1, UserV1Renamed, compatible=False, ref=ref)
    assert r2.loads(w2.dumps(users[:1])) == [UserV1Renamed(0, "n", "e")]


def test_compatible_false_detects_a_mismatch(ref):
    writer, reader = _pair(UserV1, UserV2, compatible=False, ref=ref)
    data = writer.dumps([UserV1(1, "n", "e")])
    with pytest.raises(SchemaMismatchError, match="compatible=True"):
        reader.loads(data)
    # the reader is still usable afterwards
    assert reader.loads(reader.dumps([UserV2("e", 1, "n")])) == [UserV2("e", 1, "n")]


def test_compatible_false_instance_with_extra_attributes_still_loads(ref):
    writer, reader = _pair(UserV1, UserV1, compatible=False, ref=ref)
    user = UserV1(1, "n", "e")
    user.extra = "attr"
    out = reader.loads(writer.dumps([user, UserV1(2, "m", "f")]))
    assert out[0].extra == "attr" and out[1] == UserV1(2, "m", "f")


# =======================================================================================
# misc
# =======================================================================================
def test_mixed_graph(ref):
    value = {
        "points": [Point(i, i * i) for i in range(5)],
        "plain": Plain(PairNT(1, 2), collections.deque([Color.RED], maxlen=4)),
        "slots": SlottedChild(),
        "ns": types.SimpleNamespace(path=pathlib.PurePosixPath("/x"), when=None),
        "err": AppError("e", 1),
        "cls": Outer.Inner,
    }
    out = roundtrip(value, ref=ref)
    assert out["points"] == value["points"]
    assert out["plain"].a == PairNT(1, 2) and out["plain"].b == value["plain"].b
    assert slot_state(out["slots"]) == slot_state(value["slots"])
    assert out["ns"] == value["ns"]
    assert _exc_state(out["err"]) == _exc_state(value["err"])
    assert out["cls"] is Outer.Inner


# ---- objects whose class is defined in C and cannot be imported by name ----------------
def test_c_class_object_reducing_to_a_name_travels_as_that_global():
    np = pytest.importorskip("numpy")
    norm = np.linalg.norm
    cls = type(norm)                     # numpy._ArrayFunctionDispatcher: static, unimportable
    assert pyfory.classes.travels_by_value(cls) and not pyfory.classes.rebuildable_by_value(cls)
    assert isinstance(norm.__reduce__(), str)
    for ref in (False, True):
        data = pyfory.Fory(strict=False, ref=ref).dumps([norm, norm, np.linalg.svd])
        out = pyfory.Fory(strict=False, ref=ref).loads(data)
        assert out[0] is norm and out[1] is norm and out[2] is np.linalg.svd
    data = pyfory.Fory(strict=False).dumps(norm)
    assert len(data) < 100                       # the name only (was 1,305 bytes: the class)
    assert cls.__qualname__.encode() not in data
    # strict mode refuses it both ways, as it refuses any global
    with pytest.raises(pyfory.error.TypeNotRegisteredError):
        pyfory.Fory().dumps(norm)
    with pytest.raises(pyfory.error.TypeNotRegisteredError, match="strict mode refuses"):
        pyfory.Fory().loads(data)


def test_c_class_object_read_without_its_module_names_the_module(tmp_path):
    pytest.importorskip("numpy")
    import subprocess

    import numpy as np

    payload = tmp_path / "norm.fory"
    payload.write_bytes(pyfory.Fory(strict=False).dumps(np.linalg.norm))
    script = ("import sys; sys.modules['numpy'] = None\n"
              "import pyfory\n"
              f"pyfory.Fory(strict=False).loads(open({str(payload)!r}, 'rb').read())\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    assert "numpy" in proc.stderr.splitlines()[-1]
    assert "__get__" not in proc.stderr


def test_c_class_object_without_a_global_name_fails_at_dumps():
    import socket

    capsule = getattr(socket, "CAPI", None)
    if capsule is None:
        pytest.skip("socket.CAPI is not available")
    cls = type(capsule)                          # PyCapsule: static, not importable by name
    assert pyfory.classes.travels_by_value(cls) and not pyfory.classes.rebuildable_by_value(cls)
    with pytest.raises(pyfory.error.SerializationError, match="defined in C"):
        pyfory.Fory(strict=False).dumps({"capsule": capsule})


class _ProxiedFloat(float):
    pass


class _CallableThing:
    def __call__(self):
        return 7


def test_weakref_proxies_travel_as_their_referent_like_pickle(ref):
    # before CPython 3.11 a proxy's class is builtins.weakproxy, which does not import by
    # that name (weakref.ProxyType does); pickle writes what the proxy's reduce gives (the
    # referent's class and state): so does pyfory, on every version
    import weakref

    fory = pyfory.Fory(ref=ref, strict=False)
    x = _ProxiedFloat(1.5)
    x.foo = 42
    y = fory.loads(fory.dumps(weakref.proxy(x)))
    assert type(y) is _ProxiedFloat and y == 1.5 and y.foo == 42
    c = _CallableThing()
    assert type(fory.loads(fory.dumps(weakref.proxy(c)))) is _CallableThing
    with pytest.raises(pyfory.error.ForyError):   # strict: never a class it was not given
        pyfory.Fory().dumps(weakref.proxy(x))
