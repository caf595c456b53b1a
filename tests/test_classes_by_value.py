"""Classes by value (issue 4): local, __main__ and dynamic classes, and their instances.

In one process a class by value comes back as the very class that was sent (the class
tracker knows its id). The `receiver` fixture makes this process forget the tracker ids,
as a process that never saw the classes would, so the class is rebuilt from the payload;
test_cross_process.py does the same in real child processes.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import enum
import functools
import sys
import typing
import weakref

import pytest

import pyfory
from pyfory import classes
from pyfory.error import DeserializationError, ForyError, TypeNotRegisteredError


@pytest.fixture
def receiver():
    """loads(data) as a process that has never seen the classes of the payload: loads
    runs with a class tracker of its own (kept for the test, so a class that arrives
    twice is recognized the second time)."""
    tracker = weakref.WeakValueDictionary()

    def loads(data, ref=True, **kwargs):
        sender_tracker = classes._object_by_id
        classes._object_by_id = tracker
        try:
            return pyfory.Fory(ref=ref, strict=False, **kwargs).loads(data)
        finally:
            classes._object_by_id = sender_tracker

    return loads


def dumps(obj, ref=True):
    return pyfory.Fory(ref=ref, strict=False).dumps(obj)


def test_same_process_gets_the_same_class_back(ref):
    def make():
        class Local:
            def f(self):
                return 1

        return Local

    cls = make()
    assert pyfory.Fory(ref=ref, strict=False).loads(dumps(cls, ref)) is cls
    obj = pyfory.Fory(ref=ref, strict=False).loads(dumps(cls(), ref))
    assert type(obj) is cls
    assert pyfory.loads(pyfory.dumps(cls)) is cls


def test_rebuilt_class_methods_and_attributes(receiver, ref):
    def make():
        class Local:
            """Local doc."""

            kind = "local"
            counts = [1, 2]

            def __init__(self, x):
                self.x = x

            def double(self):
                return 2 * self.x

            @classmethod
            def build(cls, x):
                return cls(x)

            @staticmethod
            def helper(y):
                return y + 1

            @property
            def neg(self):
                return -self.x

            @functools.cached_property
            def expensive(self):
                return self.x ** 2

            def __repr__(self):
                return f"Local({self.x})"

        return Local

    original = make()
    cls = receiver(dumps(original, ref), ref)
    assert cls is not original
    assert cls.__name__ == "Local" and cls.__qualname__ == original.__qualname__
    assert cls.__module__ == original.__module__ and cls.__doc__ == "Local doc."
    obj = cls.build(4)
    assert (obj.double(), cls.helper(1), obj.neg, obj.expensive, repr(obj)) == (8, 2, -4, 16, "Local(4)")
    assert cls.kind == "local" and cls.counts == [1, 2]
    assert "expensive" in vars(obj)
    assert set(vars(cls)) >= {"double", "build", "helper", "neg", "expensive", "__init__", "__repr__"}


def test_instances_travel_with_their_class(receiver, ref):
    def make():
        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y

            def norm2(self):
                return self.x ** 2 + self.y ** 2

        return Point

    point = make()
    items = [point(i, -i) for i in range(50)]
    loaded = receiver(dumps(items, ref), ref)
    assert [p.norm2() for p in loaded] == [p.norm2() for p in items]
    assert len({type(p) for p in loaded}) == 1 and type(loaded[0]) is not point


def test_class_arriving_twice_is_one_class(receiver, ref):
    def make():
        class Msg:
            def __init__(self, v):
                self.v = v

        return Msg

    msg = make()
    first = receiver(dumps(msg(1), ref), ref)
    second = receiver(dumps(msg(2), ref), ref)
    assert type(first) is type(second)
    assert isinstance(second, type(first))
    # redefined on the sender's side: a different class
    third = receiver(dumps(make()(3), ref), ref)
    assert type(third) is not type(first) and type(third).__qualname__ == type(first).__qualname__


def test_super_and_inheritance_between_classes_by_value(receiver, ref):
    def make():
        class Base:
            def __init__(self, x):
                self.x = x

            def describe(self):
                return f"base {self.x}"

        class Child(Base):
            def __init__(self, x, y):
                super().__init__(x)
                self.y = y

            def describe(self):
                return "child/" + super().describe()

        return Base, Child

    base, child = receiver(dumps(make(), ref), ref)
    obj = child(1, 2)
    assert obj.describe() == "child/base 1" and (obj.x, obj.y) == (1, 2)
    assert child.__bases__ == (base,) and isinstance(obj, base)


def test_methods_referring_to_their_class(receiver, ref):
    def make():
        class Node:
            registry = []

            def __init__(self, value):
                self.value = value

            def clone(self):
                return Node(self.value)

            @classmethod
            def create(cls):
                return cls(0)

        return Node

    node = receiver(dumps(make(), ref), ref)
    assert type(node(5).clone()) is node and type(node.create()) is node


def test_class_attribute_that_is_an_instance_of_the_class(receiver, ref):
    def make():
        class Color:
            def __init__(self, rgb):
                self.rgb = rgb

            def hex(self):
                return "#%02x%02x%02x" % self.rgb

        Color.BLACK = Color((0, 0, 0))
        return Color

    color = receiver(dumps(make(), ref), ref)
    assert type(color.BLACK) is color and color.BLACK.hex() == "#000000"


def test_slots(receiver, ref):
    def make():
        class Slotted:
            __slots__ = ("a", "__private", "__weakref__")

            def __init__(self, a):
                self.a = a
                self.__private = a * 2

            def private(self):
                return self.__private

        return Slotted

    slotted = make()
    cls, obj = receiver(dumps([slotted, slotted(3)], ref), ref)
    assert cls.__slots__ == ("a", "__private", "__weakref__")
    assert type(obj) is cls and obj.a == 3 and obj.private() == 6
    assert not hasattr(obj, "__dict__")
    weakref.ref(obj)


def test_nested_and_dynamic_classes(receiver, ref):
    def make():
        class Outer:
            class Inner:
                def who(self):
                    return "inner"

            def make_inner(self):
                return self.Inner()

        return Outer

    outer = receiver(dumps(make(), ref), ref)
    assert outer().make_inner().who() == "inner"
    dynamic = type("Dynamic", (dict,), {"answer": lambda self: 42, "__module__": "nowhere"})
    d = dynamic(a=1)
    loaded = receiver(dumps(d, ref), ref)
    assert loaded.answer() == 42 and loaded == {"a": 1} and type(loaded).__module__ == "nowhere"


def test_local_metaclass_and_init_subclass(receiver, ref):
    def make():
        class Meta(type):
            def describe(cls):
                return "meta:" + cls.__name__

        class Registry:
            names = []

            def __init_subclass__(cls, **kwargs):
                super().__init_subclass__(**kwargs)
                Registry.names.append(cls.__name__)

        class WithMeta(Registry, metaclass=Meta):
            pass

        return WithMeta

    with_meta = receiver(dumps(make(), ref), ref)
    assert type(with_meta).__name__ == "Meta" and with_meta.describe() == "meta:WithMeta"

    class Sub(with_meta):
        pass

    assert "Sub" in with_meta.names


def test_abc_abstract_methods_and_registered_subclasses(receiver, ref):
    def make():
        class Shape(abc.ABC):
            @abc.abstractmethod
            def area(self):
                ...

            def twice(self):
                return 2 * self.area()

        class Square(Shape):
            def __init__(self, s):
                self.s = s

            def area(self):
                return self.s ** 2

        class Virtual:
            pass

        Shape.register(Virtual)
        Shape.register(int)
        return Shape, Square, Virtual

    shape, square, virtual = receiver(dumps(make(), ref), ref)
    assert shape.__abstractmethods__ == frozenset({"area"})
    with pytest.raises(TypeError):
        shape()
    assert square(3).twice() == 18
    assert isinstance(virtual(), shape) and isinstance(5, shape) and not isinstance("s", shape)
    assert issubclass(square, shape)


def test_enum(receiver, ref):
    def make():
        class Color(enum.Enum):
            RED = 1
            GREEN = 2
            CRIMSON = 1  # an alias

            def lower(self):
                return self.name.lower()

        return Color

    original = make()
    color, red, green = receiver(dumps([original, original.RED, original.GREEN], ref), ref)
    assert color is not original and red is color.RED and green is color.GREEN
    assert [m.name for m in color] == ["RED", "GREEN"] and color.CRIMSON is color.RED
    assert color(2) is color.GREEN and red.lower() == "red"
    assert color["GREEN"] is green


def test_enum_kinds(receiver, ref):
    def make():
        class Perm(enum.IntFlag):
            R = 4
            W = 2
            X = 1

        class Planet(enum.Enum):
            MERCURY = (3.303e23, 2.4397e6)
            EARTH = (5.976e24, 6.37814e6)

            def __init__(self, mass, radius):
                self.mass = mass
                self.radius = radius

        class Level(enum.IntEnum):
            LOW = 1
            HIGH = enum.auto()

        class Shade(str, enum.Enum):
            DARK = "dark"

        return Perm, Planet, Level, Shade, Perm.R | Perm.W

    perm, planet, level, shade, rw = receiver(dumps(make(), ref), ref)
    assert rw == perm.R | perm.W and type(rw) is perm and int(rw) == 6
    assert planet.EARTH.mass == 5.976e24 and planet.MERCURY.radius == 2.4397e6
    assert level.HIGH == 2 and level(2) is level.HIGH and level.LOW < level.HIGH
    assert shade.DARK == "dark" and shade("dark") is shade.DARK


def test_enum_whose_new_computes_values_is_refused_not_corrupted(receiver, ref):
    def make():
        class Coord(bytes, enum.Enum):
            def __new__(cls, value, label):
                obj = bytes.__new__(cls, [value])
                obj._value_ = value
                obj.label = label
                return obj

            PX = (0, "P.X")
            PY = (1, "P.Y")

        return Coord

    with pytest.raises(DeserializationError, match="cannot be rebuilt by value"):
        receiver(dumps(make(), ref), ref)


def test_property_with_setter_and_deleter(receiver, ref):
    def make():
        class Temperature:
            def __init__(self):
                self._c = 0

            def _get(self):
                return self._c

            def _set(self, value):
                self._c = value

            def _del(self):
                self._c = None

            celsius = property(_get, _set, _del, "degrees Celsius")

        return Temperature

    cls = receiver(dumps(make(), ref), ref)
    t = cls()
    t.celsius = 21
    assert t.celsius == 21 and cls.celsius.__doc__ == "degrees Celsius"
    del t.celsius
    assert t.celsius is None


@pytest.mark.skipif(sys.version_info < (3, 12), reason="PEP 695 syntax is 3.12+")
def test_pep695_generic_class_and_function(receiver, ref):
    namespace = {"__name__": "pep695_module"}
    exec(compile("class Stack[T]:\n"
                 "    def __init__(self):\n"
                 "        self.items: list[T] = []\n"
                 "    def push(self, item: T) -> None:\n"
                 "        self.items.append(item)\n"
                 "def first[U](xs: list[U]) -> U:\n"
                 "    return xs[0]\n", "<pep695>", "exec"), namespace)
    stack, first = receiver(dumps([namespace["Stack"], namespace["first"]], ref), ref)
    assert [p.__name__ for p in stack.__type_params__] == ["T"]
    assert [p.__name__ for p in first.__type_params__] == ["U"]
    s = stack[int]()
    s.push(3)
    assert s.items == [3] and first([7, 8]) == 7


def test_dataclass(receiver, ref):
    def make():
        @dataclasses.dataclass(order=True)
        class Item:
            name: str
            qty: int = 1
            tags: list = dataclasses.field(default_factory=list, metadata={"doc": "tags"})

            def total(self, price):
                return self.qty * price

        @dataclasses.dataclass(frozen=True)
        class Frozen:
            key: str

        return Item, Frozen

    item_cls, frozen_cls = receiver(dumps(make(), ref), ref)
    item = item_cls("a")
    assert item.tags == [] and item.tags is not item_cls("b").tags
    assert item == item_cls("a", 1, []) and item < item_cls("b")
    assert repr(item).endswith("Item(name='a', qty=1, tags=[])")
    assert [f.name for f in dataclasses.fields(item_cls)] == ["name", "qty", "tags"]
    assert dataclasses.fields(item_cls)[2].metadata["doc"] == "tags"
    assert dataclasses.asdict(item_cls("z", 2)) == {"name": "z", "qty": 2, "tags": []}
    assert item_cls("x", 3).total(2.0) == 6.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        frozen_cls("k").key = "other"
    assert hash(frozen_cls("k")) == hash(frozen_cls("k"))


@pytest.mark.skipif(sys.version_info < (3, 10), reason="slots= and kw_only= are 3.10+")
def test_dataclass_slots_and_kw_only(receiver, ref):
    def make():
        @dataclasses.dataclass(slots=True, kw_only=True)
        class Compact:
            a: int
            b: int = 2

        return Compact, Compact(a=1)

    compact, obj = receiver(dumps(make(), ref), ref)
    assert type(obj) is compact and (obj.a, obj.b) == (1, 2)
    assert compact(a=5) == compact(a=5, b=2)
    with pytest.raises(TypeError):
        compact(1)


def test_typing_generic_and_typevars(receiver, ref):
    def make():
        T = typing.TypeVar("T", bound=int)
        K = typing.TypeVar("K", str, bytes, covariant=True)

        class Box(typing.Generic[T]):
            def __init__(self, item: T):
                self.item = item

            def get(self) -> T:
                return self.item

        class Pair(typing.Generic[T, K]):
            pass

        return Box, Pair, T

    sent = make()
    box, pair, tvar = receiver(dumps(sent, ref), ref)
    assert tvar is not sent[2]
    assert box.__parameters__ == (tvar,) and tvar.__name__ == "T" and tvar.__bound__ is int
    assert box[int](3).get() == 3
    k = pair.__parameters__[1]
    assert k.__constraints__ == (str, bytes) and k.__covariant__
    assert typing.get_origin(box[int]) is box
    # the same TypeVar sent again, in another payload, is the same object
    assert receiver(dumps(sent[2], ref), ref) is tvar
    # another TypeVar of the same name is another object
    assert receiver(dumps(make()[2], ref), ref) is not tvar


def test_importable_typevar_by_reference(ref):
    assert pyfory.loads(pyfory.dumps(typing.AnyStr)) is typing.AnyStr
    assert pyfory.Fory(ref=ref, strict=False).loads(dumps(typing.AnyStr, ref)) is typing.AnyStr


def test_protocol_and_typeddict(receiver, ref):
    def make():
        @typing.runtime_checkable
        class Proto(typing.Protocol):
            def meth(self) -> int:
                ...

        class Impl:
            def meth(self):
                return 1

        class Movie(typing.TypedDict, total=False):
            title: str
            year: int

        return Proto, Impl, Movie

    proto, impl, movie = receiver(dumps(make(), ref), ref)
    assert isinstance(impl(), proto) and not isinstance(object(), proto)
    assert movie(title="x") == {"title": "x"} and movie.__total__ is False
    assert movie.__optional_keys__ == frozenset({"title", "year"})


def test_exception_classes(receiver, ref):
    def make():
        class AppError(Exception):
            def __init__(self, code, message):
                super().__init__(code, message)
                self.code = code

        return AppError

    err = make()(404, "missing")
    loaded = receiver(dumps(err, ref), ref)
    assert loaded.args == (404, "missing") and loaded.code == 404
    with pytest.raises(type(loaded)):
        raise loaded


def test_namedtuples(receiver, ref):
    def make():
        class Typed(typing.NamedTuple):
            a: int
            b: str = "b"

            def both(self):
                return f"{self.a}{self.b}"

        Plain = collections.namedtuple("Plain", "x y")
        return Typed(1), Plain(1, 2)

    typed, plain = receiver(dumps(make(), ref), ref)
    assert typed.both() == "1b" and typed._fields == ("a", "b") and typed == (1, "b")
    assert plain.x == 1 and type(plain)._fields == ("x", "y")


def test_custom_reduce_in_class_by_value(receiver, ref):
    def make():
        class Celsius:
            def __init__(self, degrees):
                self.degrees = degrees

            def __reduce__(self):
                return (Celsius, (self.degrees + 0.5,))

        return Celsius(20)

    loaded = receiver(dumps(make(), ref), ref)
    assert loaded.degrees == 20.5


def test_bound_method_of_local_instance(receiver, ref):
    def make():
        class Counter:
            def __init__(self):
                self.n = 0

            def bump(self, k=1):
                self.n += k
                return self.n

        return Counter()

    counter = make()
    bump = receiver(dumps(counter.bump, ref), ref)
    assert bump(2) == 2 and bump() == 3 and bump.__self__.n == 3


def test_strict_mode_refuses_classes_by_value():
    def make():
        class Local:
            pass

        return Local

    with pytest.raises(TypeNotRegisteredError):
        pyfory.Fory().dumps(make())
    data = dumps(make())
    with pytest.raises(TypeNotRegisteredError, match="strict"):
        pyfory.Fory().loads(data)


def test_policy_validates_classes_by_value(receiver):
    seen = []

    class Policy(pyfory.DeserializationPolicy):
        def validate_class(self, cls, is_local):
            seen.append((cls.__name__, is_local))

    def make():
        class Local:
            pass

        return Local()

    receiver(dumps(make()), policy=Policy())
    assert ("Local", True) in seen


def test_truncated_class_payloads_fail_cleanly(receiver, ref):
    def make():
        class Local:
            value = 1

            def method(self):
                return self.value

        return [Local(), Local]

    data = dumps(make(), ref)
    for cut in range(0, len(data), 3):
        with pytest.raises(ForyError):
            receiver(data[:cut], ref)
    obj, cls = receiver(data, ref)
    assert type(obj) is cls and obj.method() == 1
