"""Code written from pyfory's public Python guide (native mode, xlang=False) runs here
unchanged: each guide example, in our own words, plus one test per option, hook
signature and alias. What still differs is listed in the README ("Coming from pyfory")."""

import dataclasses
import pickle
import statistics
import sys
import threading
import types
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List

import pytest

import pyfory
from pyfory import Buffer, DeserializationPolicy, Fory, ThreadSafeFory
from pyfory.error import (
    ForyInvalidDataError,
    TypeNotCompatibleError,
    TypeUnregisteredError,
)
from pyfory.serializer import Serializer


# ---- basic serialization ----------------------------------------------------------
@dataclass
class Member:
    name: str
    age: int
    scores: List[int]
    labels: Dict[str, str]


class TreeNode:
    def __init__(self, value):
        self.value = value
        self.children = []
        self.parent = None


def test_guide_dataclass_round_trip_with_serialize_and_dumps():
    fory = Fory(xlang=False, ref=True)
    fory.register(Member)
    bob = Member("Bob", 25, [88, 92, 85], {"team": "engineering"})
    assert fory.deserialize(fory.serialize(bob)) == bob
    assert fory.loads(fory.dumps(bob)) == bob


def test_guide_circular_reference_kept():
    fory = Fory(xlang=False, ref=True)
    fory.register_type(TreeNode)
    root, leaf = TreeNode("root"), TreeNode("leaf")
    leaf.parent = root
    root.children.append(leaf)
    back = fory.deserialize(fory.serialize(root))
    assert back.children[0].parent is back
    assert back.children[0].value == "leaf"


def test_guide_out_of_band_buffers():
    fory = Fory(xlang=False, ref=True, strict=False)
    payload = [pickle.PickleBuffer(bytearray(b"x" * 100_000)), "tail"]
    kept = []
    data = fory.serialize(payload, buffer_callback=kept.append)
    assert len(kept) == 1 and len(data) < 1000
    back = fory.deserialize(data, buffers=[o.getbuffer() for o in kept])
    assert bytes(back[0]) == b"x" * 100_000 and back[1] == "tail"


def test_guide_flag_for_the_compiled_serializer():
    assert pyfory.ENABLE_FORY_CYTHON_SERIALIZATION is True


# ---- registration --------------------------------------------------------------
@dataclass
class Point:
    x: int
    y: int


def test_register_type_by_id_and_by_name():
    by_id, by_name = Fory(xlang=False), Fory(xlang=False)
    by_id.register_type(Point, type_id=123)
    by_name.register_type(Point, name="my.package.Point")
    for fory in (by_id, by_name):
        assert fory.loads(fory.dumps(Point(1, 2))) == Point(1, 2)
    # the two namings are different wire names
    with pytest.raises(pyfory.ForyError):
        by_name.loads(by_id.dumps(Point(1, 2)))


def test_register_type_options_are_keyword_only_and_register_is_its_alias():
    fory = Fory(xlang=False)
    with pytest.raises(TypeError):
        fory.register_type(Point, 5)
    fory.register(Point, 5)          # register also takes them by position
    other = Fory(xlang=False)
    other.register_type(Point, type_id=5)
    assert other.loads(fory.dumps(Point(3, 4))) == Point(3, 4)


def test_register_type_namespace_and_typename_join_into_one_name():
    writer, reader = Fory(xlang=False), Fory(xlang=False)
    writer.register_type(Point, namespace="geo", typename="Pt")
    reader.register_type(Point, name="geo.Pt")
    assert reader.loads(writer.dumps(Point(5, 6))) == Point(5, 6)


def test_registering_a_carrier_the_core_handles_changes_nothing():
    fory = Fory(xlang=False, ref=True, strict=False)
    for carrier in (type, types.FunctionType, types.MethodType, staticmethod, classmethod):
        fory.register_type(carrier)
    assert fory.loads(fory.dumps(len)) is len
    assert fory.loads(fory.dumps(lambda v: v * 3))(2) == 6
    strict = Fory(xlang=False)
    strict.register_type(types.FunctionType)
    with pytest.raises(pyfory.ForyError):
        strict.dumps(lambda v: v)       # strict stays strict about code


# ---- custom serializers, as the guide writes them --------------------------------
class Money:
    def __init__(self, currency, cents):
        self.currency, self.cents = currency, cents


class MoneySerializer(Serializer):
    def __init__(self, type_resolver, cls):
        super().__init__(type_resolver, cls)
        self.need_to_write_ref = False

    def write(self, write_context, obj):
        write_context.write_string(obj.currency)
        write_context.write_varint32(obj.cents)

    def read(self, read_context):
        return Money(read_context.read_string(), read_context.read_varint32())


def check_money(fory):
    back = fory.loads(fory.dumps([Money("EUR", 1250), Money("USD", -3)]))
    assert [(m.currency, m.cents) for m in back] == [("EUR", 1250), ("USD", -3)]


def test_guide_custom_serializer_instance_built_with_the_type_resolver():
    f = Fory(xlang=False)
    f.register(Money, type_id=100, serializer=MoneySerializer(f.type_resolver, Money))
    check_money(f)
    ser = MoneySerializer(f.type_resolver, Money)
    assert ser.type_resolver is f.type_resolver and ser.type_ is Money and ser.fory is f


def test_custom_serializer_as_class_or_factory_and_register_serializer():
    by_class = Fory(xlang=False)
    by_class.register_type(Money, type_id=100, serializer=MoneySerializer)
    check_money(by_class)
    made = []

    def factory(type_resolver, cls):
        made.append(cls)
        return MoneySerializer(type_resolver, cls)

    by_factory = Fory(xlang=False)
    by_factory.register_type(Money, serializer=factory)
    check_money(by_factory)
    assert made == [Money]
    # register_serializer keeps the id the class was registered under
    fory = Fory(xlang=False)
    fory.register_type(Money, type_id=100)
    fory.register_serializer(Money, MoneySerializer(fory.type_resolver, Money))
    check_money(fory)
    assert by_class.loads(fory.dumps(Money("GBP", 7))).cents == 7


def test_old_style_serializer_taking_the_fory_still_works():
    class OldStyle(pyfory.Serializer):
        def write(self, ctx, obj):
            ctx.write_value((obj.currency, obj.cents))

        def read(self, ctx):
            return Money(*ctx.read_value())

    fory = Fory(xlang=False)
    fory.register(Money, serializer=OldStyle(fory, Money))
    check_money(fory)


def test_buffer_methods_under_pyfory_names():
    buf = Buffer.allocate(64)
    buf.write_var_uint32(300)
    buf.write_var_int32(-5)
    buf.write_var_uint64(1 << 40)
    buf.write_var_int64(-(1 << 40))
    buf.write_uint16(65535)
    buf.write_uint32(1 << 31)
    buf.write_uint64(1 << 63)
    buf.write_float(0.5)
    buf.write_double(0.1)
    buf.write(b"raw")
    assert buf.get_writer_index() == len(buf.to_bytes())
    read = Buffer(buf.to_bytes())
    assert read.read_var_uint32() == 300
    assert read.read_var_int32() == -5
    assert read.read_var_uint64() == 1 << 40
    assert read.read_var_int64() == -(1 << 40)
    assert (read.read_uint16(), read.read_uint32(), read.read_uint64()) == (65535, 1 << 31, 1 << 63)
    assert read.read_float() == 0.5 and read.read_double() == 0.1
    start = read.get_reader_index()
    read.skip(1)
    assert read.read_bytes(2) == b"aw"
    read.set_reader_index(start)
    assert read.read_bytes(3) == b"raw"
    assert buf.to_bytes(0, 2) == buf.to_bytes()[:2]
    buf.set_writer_index(2)
    assert buf.to_bytes() == read.to_bytes(0, 2)


# ---- ThreadSafeFory ---------------------------------------------------------------
def test_thread_safe_fory_with_fory_factory_and_registrations_in_every_thread():
    tsf = ThreadSafeFory(fory_factory=lambda: Fory(xlang=False, ref=True))
    tsf.register_type(Point, type_id=7)
    tsf.register_serializer(Money, MoneySerializer)
    results, errors = [], []

    def work(i):
        try:
            results.append(tsf.loads(tsf.dumps([Point(i, i), Money("EUR", i)]))[0])
        except Exception as e:   # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors and sorted(p.x for p in results) == [0, 1, 2, 3]


def test_thread_safe_fory_keyword_forms():
    assert ThreadSafeFory(xlang=False, ref=True).loads(ThreadSafeFory().dumps([1])) == [1]
    assert ThreadSafeFory(factory=lambda: Fory(ref=True)).deserialize(Fory().serialize(2)) == 2
    with pytest.raises(TypeError):
        ThreadSafeFory(fory_factory=Fory, ref=True)
    with pytest.raises(TypeError):
        ThreadSafeFory(fory_factory=Fory, factory=Fory)
    bad = ThreadSafeFory()
    with pytest.raises(ValueError):
        bad.register_type(Point, type_id=-1)     # checked when registered, not later
    bad.register_type(Point, type_id=1)
    assert bad.loads(bad.dumps(Point(0, 1))) == Point(0, 1)


# ---- entry points ---------------------------------------------------------------------
def test_serialize_into_a_buffer_and_deserialize_from_it():
    fory = Fory(xlang=False)
    buf = Buffer()
    assert fory.serialize({"k": [1, 2]}, buffer=buf) is buf
    assert fory.deserialize(buf) == {"k": [1, 2]}
    reading = Buffer(fory.dumps("hello"))
    assert fory.loads(reading) == "hello"
    assert reading.get_reader_index() == len(fory.dumps("hello"))


def test_buffer_callback_still_accepted_by_position():
    fory = Fory(xlang=False, strict=False)
    kept = []
    data = fory.dumps(pickle.PickleBuffer(b"abc"), kept.append)
    assert bytes(fory.loads(data, [k.getbuffer() for k in kept])) == b"abc"


class Unregistered:
    def __init__(self, tag):
        self.tag = tag


@pytest.mark.parametrize("ref", [False, True])
def test_unsupported_objects_stay_out_of_the_payload_and_come_back(ref):
    fory = Fory(xlang=False, ref=ref)
    lock, other = threading.Lock(), Unregistered("x")
    kept = []
    data = fory.serialize({"a": lock, "b": [other, lock, 3]}, unsupported_callback=lambda o: kept.append(o))
    assert kept[:2] == [lock, other]
    assert len(kept) == (2 if ref else 3)   # with ref=True the second lock is a back-reference
    back = fory.deserialize(data, unsupported_objects=kept)
    assert back["a"] is lock and back["b"][0] is other and back["b"][1] is lock and back["b"][2] == 3
    with pytest.raises(pyfory.error.OutOfBandBufferError):
        fory.deserialize(data)
    with pytest.raises(pyfory.error.OutOfBandBufferError):
        fory.deserialize(data, unsupported_objects=kept[:1])


def test_unsupported_callback_returning_true_raises_as_without_it():
    fory = Fory(xlang=False)
    with pytest.raises(TypeUnregisteredError):
        fory.dumps([Unregistered(1)], unsupported_callback=lambda o: True)
    with pytest.raises(TypeUnregisteredError):
        fory.dumps([Unregistered(1)])
    assert fory.loads(fory.dumps([1])) == [1]


def test_dumps_loads_take_the_same_arguments_as_serialize_deserialize():
    fory = Fory(xlang=False)
    kept = []
    data = fory.dumps([Unregistered(2)], None, None, kept.append)
    assert fory.loads(data, None, kept)[0] is kept[0]
    assert Fory.serialize is Fory.dumps and Fory.deserialize is Fory.loads


def test_reset_methods_leave_the_instance_usable():
    fory = Fory(xlang=False, ref=True)
    fory.reset()
    fory.reset_write()
    fory.reset_read()
    assert fory.loads(fory.dumps([1, "a"])) == [1, "a"]


# ---- policy hooks with the guide's signatures -------------------------------------------
class Secret:
    def __init__(self, user, password):
        self.user, self.password = user, password


class RedactingPolicy(DeserializationPolicy):
    """The guide's example policy: blocks classes of dangerous modules, a Popen call,
    and redacts a password before state is applied."""
    dangerous_modules = {"subprocess", "os", "__builtin__"}

    def validate_class(self, cls, is_local, **kwargs):
        if cls.__module__ in self.dangerous_modules:
            raise ValueError(f"Blocked dangerous class: {cls.__module__}.{cls.__name__}")

    def intercept_reduce_call(self, callable_obj, args, **kwargs):
        if getattr(callable_obj, "__name__", "") == "Popen":
            raise ValueError("Blocked attempt to invoke subprocess.Popen")
        return None

    def intercept_setstate(self, obj, state, **kwargs):
        if isinstance(state, dict) and "password" in state:
            state["password"] = "***REDACTED***"
        return None


def test_guide_policy_redacts_state():
    fory = Fory(xlang=False, ref=True, strict=False, policy=RedactingPolicy())
    back = fory.loads(fory.dumps(Secret("ann", "hunter2")))
    assert (back.user, back.password) == ("ann", "***REDACTED***")


class PopenLike:
    def __reduce__(self):
        import subprocess
        return (subprocess.Popen, (["true"],))


def test_guide_policy_exceptions_reach_the_caller_as_themselves():
    fory = Fory(xlang=False, ref=True, strict=False, policy=RedactingPolicy())
    payload = Fory(xlang=False, ref=True, strict=False).dumps(PopenLike())
    with pytest.raises(ValueError, match="Popen") as info:
        fory.loads(payload)
    assert type(info.value) is ValueError
    import subprocess
    with pytest.raises(ValueError, match="Blocked dangerous class") as info:
        fory.loads(Fory(strict=False).dumps(subprocess.CompletedProcess))
    assert type(info.value) is ValueError
    assert fory.loads(fory.dumps([1, 2])) == [1, 2]


def test_an_exception_not_from_a_hook_is_still_wrapped():
    class Exploding:
        def __init__(self):
            self.armed = True

        def __setstate__(self, state):
            raise KeyError("from __setstate__")

    fory = Fory(xlang=False, ref=True, strict=False, policy=RedactingPolicy())
    with pytest.raises(pyfory.error.DeserializationError) as info:
        fory.loads(fory.dumps(Exploding()))
    assert isinstance(info.value.__cause__, KeyError)


class Rebuilt:
    def __init__(self, v):
        self.v = v

    def __reduce__(self):
        return (Rebuilt, (self.v,))


def test_every_hook_accepts_keyword_only_is_local_and_extra_kwargs():
    seen = []

    class KeywordPolicy(DeserializationPolicy):
        def validate_class(self, cls, *, is_local, **kwargs):
            seen.append(("class", is_local))

        def validate_module(self, module_name, *, is_local, **kwargs):
            seen.append(("module", module_name))

        def validate_function(self, func, *, is_local, **kwargs):
            seen.append(("function", is_local))

        def validate_method(self, method, *, is_local, **kwargs):
            seen.append(("method", method.__name__))

        def intercept_reduce_call(self, callable_obj, args, **kwargs):
            seen.append(("reduce", callable_obj))

        def inspect_reduced_object(self, obj, **kwargs):
            seen.append(("reduced", type(obj)))

        def intercept_setstate(self, obj, state, **kwargs):
            seen.append(("setstate", type(obj)))

        def authorize_instantiation(self, cls, **kwargs):
            seen.append(("instantiate", cls, kwargs.get("args", ())))

    fory = Fory(xlang=False, ref=True, strict=False, policy=KeywordPolicy())
    sample = [statistics.mean, Counter("aab"), Secret("a", "b"), TreeNode(1).__init__,
              lambda: 1, Rebuilt(4)]
    back = fory.loads(fory.dumps(sample))
    assert back[0] is statistics.mean and back[1] == Counter("aab") and back[5].v == 4
    kinds = {entry[0] for entry in seen}
    assert kinds == {"class", "module", "function", "method", "reduce", "reduced",
                     "setstate", "instantiate"}
    assert ("function", True) in seen and ("function", False) in seen
    assert ("module", "statistics") in seen


def test_the_default_hooks_take_the_guide_signatures():
    base = DeserializationPolicy()
    assert base.validate_class(int, is_local=False, extra=1) is None
    assert base.validate_class(int, False) is None
    assert base.validate_module("m", is_local=True) is None
    assert base.validate_function(len, is_local=False) is None
    assert base.validate_method(base.validate_method, is_local=False) is None
    assert base.intercept_reduce_call(len, ((),), kwargs=None) is None
    assert base.inspect_reduced_object(1, extra=2) is None
    assert base.intercept_setstate(base, {}, extra=3) is None
    assert base.authorize_instantiation(int) is None
    assert base.authorize_instantiation(int, (), None) is None
    assert base.authorize_instantiation(int, args=(), kwargs=None) is None


def test_positional_three_argument_authorize_instantiation_still_works():
    calls = []

    class Old(DeserializationPolicy):
        def authorize_instantiation(self, cls, args, kwargs):
            calls.append(cls)

    fory = Fory(xlang=False, ref=True, strict=False, policy=Old())
    fory.loads(fory.dumps(Secret("u", "p")))
    assert Secret in calls


# ---- the guide's functions / classes pages -----------------------------------------
class StatisticsOnly(DeserializationPolicy):
    def validate_module(self, module_name, is_local, **kwargs):
        if module_name != "statistics":
            raise ValueError(f"Blocked module: {module_name}")

    def validate_function(self, func, is_local, **kwargs):
        if func is not statistics.mean or is_local:
            raise ValueError(f"Blocked function: {func!r}")


def test_guide_global_function_with_a_module_policy():
    fory = Fory(xlang=False, ref=True, strict=False, policy=StatisticsOnly())
    fory.register_type(types.FunctionType)
    restored = fory.loads(fory.dumps(statistics.mean))
    assert restored is statistics.mean and restored([10, 20, 30]) == 20
    with pytest.raises(ValueError, match="Blocked"):
        fory.loads(fory.dumps(statistics.median))


class LocalCodeOnly(DeserializationPolicy):
    def authorize_instantiation(self, cls, **kwargs):
        if cls is not types.FunctionType:
            raise ValueError(f"Blocked materialization: {cls!r}")

    def validate_function(self, func, is_local, **kwargs):
        if not is_local or func.__name__ not in {"multiply", "<lambda>"}:
            raise ValueError(f"Blocked function: {func!r}")


def make_multiplier(factor):
    def multiply(value):
        return factor * value

    return multiply


def test_guide_local_functions_and_lambdas_with_a_materialization_policy():
    fory = Fory(xlang=False, ref=True, strict=False, policy=LocalCodeOnly())
    fory.register_type(types.FunctionType)
    assert fory.loads(fory.dumps(make_multiplier(10)))(10) == 100
    assert fory.loads(fory.dumps(lambda x: 10 * x))(10) == 100
    with pytest.raises(ValueError, match="Blocked materialization"):
        fory.loads(fory.dumps(Secret("u", "p")))


class CounterOnly(DeserializationPolicy):
    def validate_module(self, module_name, is_local, **kwargs):
        if module_name != "collections":
            raise ValueError(f"Blocked module: {module_name}")

    def validate_class(self, cls, is_local, **kwargs):
        if cls is not Counter or is_local:
            raise ValueError(f"Blocked class: {cls!r}")


def test_guide_class_object_with_a_class_policy():
    fory = Fory(xlang=False, ref=True, strict=False, policy=CounterOnly())
    fory.register_type(type)
    assert fory.loads(fory.dumps(Counter)) is Counter
    with pytest.raises(ValueError, match="Blocked"):
        fory.loads(fory.dumps(dataclasses.Field))


class LocalMessageOnly(DeserializationPolicy):
    allowed_materialization = {type, types.FunctionType, types.MethodType}

    def authorize_instantiation(self, cls, **kwargs):
        if cls not in self.allowed_materialization:
            raise ValueError(f"Blocked materialization: {cls!r}")

    def validate_class(self, cls, is_local, **kwargs):
        if cls is object and not is_local:
            return
        if not is_local or cls.__name__ != "LocalMessage":
            raise ValueError(f"Blocked class: {cls!r}")

    def validate_function(self, func, is_local, **kwargs):
        if not is_local or func.__name__ != "label":
            raise ValueError(f"Blocked function: {func!r}")

    def validate_method(self, method, is_local, **kwargs):
        if not is_local or method.__name__ != "label":
            raise ValueError(f"Blocked method: {method!r}")


def make_local_class():
    class LocalMessage:
        kind = "local"

        @classmethod
        def label(cls, value):
            return f"{cls.kind}: {value}"

    return LocalMessage


def test_guide_local_class_with_a_class_method():
    fory = Fory(xlang=False, ref=True, strict=False, policy=LocalMessageOnly())
    for carrier in (type, types.FunctionType, types.MethodType, staticmethod, classmethod):
        fory.register_type(carrier)
    restored = fory.loads(fory.dumps(make_local_class()))
    assert restored.label("hello") == "local: hello"


# ---- names ---------------------------------------------------------------------------
def test_guide_error_names_are_our_classes():
    assert TypeUnregisteredError is pyfory.error.TypeNotRegisteredError
    assert TypeNotCompatibleError is pyfory.error.SchemaMismatchError
    assert ForyInvalidDataError is pyfory.error.MalformedDataError
    for name in pyfory.error.__all__:
        assert issubclass(getattr(pyfory.error, name), pyfory.ForyError), name
    with pytest.raises(TypeUnregisteredError):
        Fory(xlang=False).dumps(Unregistered(0))
    with pytest.raises(ForyInvalidDataError):
        Fory(xlang=False).loads(Fory(xlang=False).dumps([1, 2, 3])[:-1])
    writer, reader = Fory(compatible=False), Fory(compatible=False)

    @dataclass
    class V1:
        a: int

    writer.register(V1, type_id=1)

    @dataclass
    class V1:      # noqa: F811 - the same class, another version
        b: int

    reader.register(V1, type_id=1)
    with pytest.raises(TypeNotCompatibleError):
        reader.loads(writer.dumps(writer.resolver._by_user_id[1].cls(1)))


# ---- __reduce__ returning a string ---------------------------------------------------
class Singleton:
    def __reduce__(self):
        return "SINGLETON"


class DottedSingleton:
    def __reduce__(self):
        return f"{__name__}.DOTTED"


SINGLETON = Singleton()
DOTTED = DottedSingleton()


def test_reduce_string_is_a_name_in_the_module_or_a_dotted_module_name():
    fory = Fory(xlang=False, strict=False)
    assert fory.loads(fory.dumps(SINGLETON)) is SINGLETON
    assert __name__ in sys.modules
    assert fory.loads(fory.dumps(DOTTED)) is DOTTED


# ---- options on Fory(...) ------------------------------------------------------------
class Bag:
    """A plain class: each attribute set is one layout (type metadata) on the wire."""


def bag(**attrs):
    b = Bag()
    b.__dict__.update(attrs)
    return b


def bags_with_distinct_layouts(n):
    return [bag(**{f"a{i}": i}) for i in range(n)]


def test_type_metadata_limits_have_the_guide_defaults_when_strict():
    strict, trusting = Fory(xlang=False), Fory(xlang=False, strict=False)
    assert (strict.max_type_fields, strict.max_type_meta_bytes, strict.max_schema_versions_per_type,
            strict.max_average_schema_versions_per_type) == (512, 4096, 10, 3)
    assert (trusting.max_type_fields, trusting.max_type_meta_bytes,
            trusting.max_schema_versions_per_type, trusting.max_average_schema_versions_per_type) == (
        None, None, None, None)
    assert strict.field_nullable is False and Fory(field_nullable=True).field_nullable is True
    Fory(xlang=False, meta_compressor=None)
    with pytest.raises(NotImplementedError):
        Fory(xlang=False, meta_compressor=object())


@pytest.mark.parametrize("option", ["max_type_fields", "max_type_meta_bytes",
                                    "max_schema_versions_per_type",
                                    "max_average_schema_versions_per_type"])
def test_type_metadata_limits_reject_non_positive_values(option):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            Fory(xlang=False, **{option: bad})
    assert getattr(Fory(xlang=False, **{option: None}), option) is None


@pytest.mark.parametrize("option,room,too_big,just_fits", [
    # 513 attributes / ~4.2 KB of attribute names in one layout
    ("max_type_fields", 513, {f"f{i}": i for i in range(513)}, {f"f{i}": i for i in range(512)}),
    ("max_type_meta_bytes", 8192, {"n" * 300 + str(i): i for i in range(14)},
     {"n" * 300 + str(i): i for i in range(12)}),
])
def test_max_type_fields_and_meta_bytes(option, room, too_big, just_fits):
    fory, roomy = Fory(xlang=False), Fory(xlang=False, **{option: room})
    fory.register(Bag)
    roomy.register(Bag)
    with pytest.raises(pyfory.error.LimitExceededError, match=option):
        fory.loads(fory.dumps(bag(**too_big)))
    assert roomy.loads(roomy.dumps(bag(**too_big))).__dict__ == too_big
    assert fory.loads(fory.dumps(bag(**just_fits))).__dict__ == just_fits


def test_max_schema_versions_per_type():
    fory = Fory(xlang=False)
    fory.register(Bag)
    assert len(fory.loads(fory.dumps(bags_with_distinct_layouts(10)))) == 10
    with pytest.raises(pyfory.error.LimitExceededError, match="max_schema_versions_per_type"):
        fory.loads(fory.dumps(bags_with_distinct_layouts(11)))
    assert fory.loads(fory.dumps([bag(a=1)] * 50))[0].a == 1     # one layout, many objects


def test_max_average_schema_versions_per_type_has_a_floor_of_8192():
    fory = Fory(xlang=False, max_schema_versions_per_type=None, max_average_schema_versions_per_type=1,
                max_graph_memory_bytes=None)
    fory.register(Bag)
    data = fory.dumps(bags_with_distinct_layouts(8192))
    assert len(fory.loads(data)) == 8192
    with pytest.raises(pyfory.error.LimitExceededError, match="max_average_schema_versions_per_type"):
        fory.loads(fory.dumps(bags_with_distinct_layouts(8193)))


# ---- schema metadata: pyfory.field, pyfory.dataclass, encoding annotations -------------------
from typing import Optional, Set  # noqa: E402  (the schema section's own imports)


@dataclass
class Document:
    title: str = pyfory.field(id=0, default="")
    version: pyfory.Int32 = pyfory.field(id=1, default=0)
    description: Optional[str] = pyfory.field(id=2, nullable=True, default=None)
    tags: List[str] = pyfory.field(id=3, default_factory=list)
    metadata: Dict[str, str] = pyfory.field(id=4, default_factory=dict)
    categories: Set[str] = pyfory.field(id=5, default_factory=set)
    view_count: pyfory.UInt64 = pyfory.field(id=6, default=0)
    file_size: pyfory.FixedUInt64 = pyfory.field(id=7, default=0)
    checksum: pyfory.TaggedUInt64 = pyfory.field(id=8, default=0)
    parent: Optional["Document"] = pyfory.field(id=9, ref=True, nullable=True, default=None)
    _cache: dict = pyfory.field(ignore=True, default_factory=dict)


def test_guide_document_with_field_ids_and_encodings():
    fory = Fory(xlang=False, ref=True)
    fory.register_type(Document, type_id=100)
    doc = Document(title="My Document", version=1, description="A sample document",
                   tags=["tag1", "tag2"], metadata={"key": "value"}, categories={"cat1"},
                   view_count=42, file_size=1024, checksum=123456789)
    doc._cache["warm"] = True
    back = fory.deserialize(fory.serialize(doc))
    assert back == dataclasses.replace(doc, _cache={})      # the ignored field is not written
    child = Document(title="child", parent=doc)
    pair = fory.loads(fory.dumps([child, doc]))
    assert pair[0].parent is pair[1]


def test_field_ids_replace_names_in_the_metadata():
    @dataclass
    class Named:
        a_rather_long_field_name: int = 0

    @dataclass
    class Numbered:
        a_rather_long_field_name: int = pyfory.field(id=1, default=0)

    fory = Fory(xlang=False)
    fory.register(Named, type_id=1)
    fory.register(Numbered, type_id=2)
    named, numbered = fory.dumps(Named(5)), fory.dumps(Numbered(5))
    assert b"a_rather_long_field_name" in named and b"a_rather_long_field_name" not in numbered
    assert fory.loads(numbered) == Numbered(5)


def test_renamed_field_with_the_same_id_loads_and_schema_evolves():
    @dataclass
    class V1:
        id: pyfory.Int64 = pyfory.field(id=0, default=0)
        name: str = pyfory.field(id=1, default="")
        dropped: str = pyfory.field(id=5, default="")

    @dataclass
    class V2:
        id: pyfory.Int64 = pyfory.field(id=0, default=0)
        full_name: str = pyfory.field(id=1, default="")             # renamed
        email: Optional[str] = pyfory.field(id=2, nullable=True, default=None)   # added

    writer, reader = Fory(xlang=False), Fory(xlang=False)
    writer.register_type(V1, type_id=10)
    reader.register_type(V2, type_id=10)
    back = reader.loads(writer.dumps([V1(7, "Ann", "x"), V1(8, "Bo")]))
    assert back == [V2(7, "Ann", None), V2(8, "Bo", None)]


def test_a_field_without_default_missing_from_the_payload_is_an_error():
    @dataclass
    class Old:
        a: pyfory.Int32 = 0

    @dataclass
    class New:
        a: pyfory.Int32
        b: pyfory.Int32

    writer, reader = Fory(xlang=False), Fory(xlang=False)
    writer.register(Old, type_id=1)
    reader.register(New, type_id=1)
    with pytest.raises(pyfory.error.SchemaMismatchError):
        reader.loads(writer.dumps(Old(1)))


ENCODED_SIZES = [
    # annotation, value, bytes the value takes
    (pyfory.Int8, -5, 1), (pyfory.UInt8, 250, 1), (pyfory.Int16, -300, 2), (pyfory.UInt16, 60000, 2),
    (pyfory.Int32, 1, 1), (pyfory.Int32, -(1 << 31), 5), (pyfory.Int64, 1, 1), (pyfory.Int64, 1 << 61, 9),
    (pyfory.UInt32, 127, 1), (pyfory.UInt64, 1 << 63, 10),
    (pyfory.FixedInt32, 1, 4), (pyfory.FixedInt64, 1, 8), (pyfory.FixedUInt32, 1, 4), (pyfory.FixedUInt64, 1, 8),
    (pyfory.TaggedInt64, -7, 4), (pyfory.TaggedInt64, 1 << 40, 9),
    (pyfory.TaggedUInt64, 7, 4), (pyfory.TaggedUInt64, (1 << 64) - 1, 9),
    (pyfory.Float32, 0.5, 4), (pyfory.Float64, 0.1, 8),
]


def one_field_class(annotation, default):
    return dataclasses.make_dataclass("One", [("v", annotation, dataclasses.field(default=default))])


@pytest.mark.parametrize("annotation,value,size", ENCODED_SIZES,
                         ids=[f"{i}" for i in range(len(ENCODED_SIZES))])
def test_each_annotation_encodes_its_value_in_its_size(annotation, value, size):
    cls = one_field_class(annotation, 0)
    fory = Fory(xlang=False)
    fory.register(cls, type_id=1)
    two, three = fory.dumps([cls(value), cls(value)]), fory.dumps([cls(value)] * 3)
    assert len(three) - len(two) == size + 1    # per instance: the value and the schema flag
    assert fory.loads(two) == [cls(value), cls(value)]


@pytest.mark.parametrize("annotation,bad", [
    (pyfory.Int8, 128), (pyfory.UInt8, -1), (pyfory.Int16, 1 << 15), (pyfory.Int32, 1 << 31),
    (pyfory.UInt32, 1 << 32), (pyfory.FixedInt32, -(1 << 31) - 1), (pyfory.UInt64, -1),
    (pyfory.TaggedUInt64, 1 << 64), (pyfory.Int32, None), (pyfory.Int32, "1")])
def test_values_outside_the_declared_range_are_refused(annotation, bad):
    cls = one_field_class(annotation, 0)
    fory = Fory(xlang=False)
    fory.register(cls)
    with pytest.raises(pyfory.error.SerializationError):
        fory.dumps(cls(bad))
    assert fory.loads(fory.dumps(cls(1))) == cls(1)


def test_float32_rounds_to_binary32():
    cls = one_field_class(pyfory.Float32, 0.0)
    fory = Fory(xlang=False)
    fory.register(cls)
    v = fory.loads(fory.dumps(cls(0.1))).v
    assert v != 0.1 and abs(v - 0.1) < 1e-8


def test_nullable_fields_and_field_nullable():
    cls = dataclasses.make_dataclass("Opt", [
        ("a", Optional[pyfory.Int32], dataclasses.field(default=None)),
        ("b", pyfory.Int32, pyfory.field(nullable=True, default=None)),
        ("c", pyfory.Int32, dataclasses.field(default=0))])
    fory = Fory(xlang=False)
    fory.register(cls)
    assert fory.loads(fory.dumps(cls(None, None, 3))) == cls(None, None, 3)
    assert fory.loads(fory.dumps(cls(1, 2, 3))) == cls(1, 2, 3)
    with pytest.raises(pyfory.error.SerializationError):
        fory.dumps(cls(1, 2, None))
    lenient = Fory(xlang=False, field_nullable=True)
    lenient.register(cls)
    assert lenient.loads(lenient.dumps(cls(1, 2, None))) == cls(1, 2, None)


def test_nested_container_annotations_and_arrays():
    import array as array_module

    @pyfory.dataclass
    class Counters:
        values: Dict[pyfory.FixedInt32, List[pyfory.TaggedInt64]] = pyfory.field(default_factory=dict)
        samples: pyfory.Float32Array = pyfory.field(default_factory=list)
        raw: pyfory.Int16Array = pyfory.field(default_factory=list)
        ref_list: pyfory.Ref[List[int]] = pyfory.field(default_factory=list)

    fory = Fory(xlang=False, ref=True)
    fory.register_type(Counters, type_id=3)
    shared = [1, 2]
    value = Counters({1: [2, 1 << 40], -1: []}, [0.5, 1.25], array_module.array("h", [-2, 3]), shared)
    back = fory.loads(fory.dumps([value, shared]))
    assert back[0].values == {1: [2, 1 << 40], -1: []} and back[0].samples == [0.5, 1.25]
    assert back[0].raw == array_module.array("h", [-2, 3]) and back[0].ref_list is back[1]
    np = pytest.importorskip("numpy")
    as_numpy = fory.loads(fory.dumps(Counters(samples=np.array([1.5, 2.5], dtype=np.float32))))
    assert as_numpy.samples.dtype == np.float32 and as_numpy.samples.tolist() == [1.5, 2.5]


def test_schema_annotations_as_strings_are_read_without_eval(monkeypatch):
    module = types.ModuleType("guide_lazy_module")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    ns = module.__dict__
    exec(
        "from __future__ import annotations\n"
        "import dataclasses, pyfory\n"
        "from typing import List\n"
        "@dataclasses.dataclass\n"
        "class Lazy:\n"
        "    a: pyfory.Int8 = 0\n"
        "    b: List[pyfory.FixedInt64] = dataclasses.field(default_factory=list)\n"
        "    c: \"__import__('sys').exit(3)\" = 0\n", ns)
    from pyfory.schema import SchemaSerializer
    fory = Fory(xlang=False)
    ser = SchemaSerializer(fory, ns["Lazy"])
    assert [(f.name, f.desc) for f in ser.fields] == [("a", "i8"), ("b", "L(fi64)"), ("c", "any")]


def test_plain_dataclasses_keep_the_attribute_layout_serializer():
    from pyfory._objects import ObjectSerializer

    from pyfory.schema import SchemaSerializer
    fory = Fory(xlang=False)
    assert type(fory.register(Member).serializer) is ObjectSerializer
    assert type(fory.register(Document).serializer) is SchemaSerializer


def test_pyfory_dataclass_decorator_and_field_checks():
    @pyfory.dataclass(frozen=True)
    class Frozen:
        x: pyfory.Int32 = pyfory.field(id=3, default=1)

    assert dataclasses.is_dataclass(Frozen) and Frozen().x == 1
    assert dataclasses.fields(Frozen)[0].metadata["id"] == 3
    fory = Fory(xlang=False)
    fory.register(Frozen)
    assert fory.loads(fory.dumps(Frozen(9))) == Frozen(9)
    with pytest.raises(ValueError):
        pyfory.field(id=-1)
    with pytest.raises(ValueError):
        @dataclass
        class Twice:
            a: int = pyfory.field(id=1, default=0)
            b: int = pyfory.field(id=1, default=0)

        Fory(xlang=False).register(Twice)


def test_schema_metadata_counts_against_the_type_metadata_limits():
    cls = dataclasses.make_dataclass("Wide", [(f"f{i}", pyfory.Int32, pyfory.field(id=i, default=0))
                                              for i in range(20)])
    small = Fory(xlang=False, max_type_fields=10)
    small.register(cls)
    with pytest.raises(pyfory.error.LimitExceededError):
        small.loads(small.dumps(cls()))


def test_truncated_or_altered_schema_payloads_raise_fory_errors_only():
    fory = Fory(xlang=False, ref=True)
    fory.register_type(Document, type_id=100)
    data = fory.dumps([Document(title="t", version=3, tags=["a"], checksum=1 << 40),
                       Document(title="u", parent=None)])
    for cut in range(len(data)):
        with pytest.raises(pyfory.ForyError):
            fory.loads(data[:cut])
    for i in range(4, len(data)):
        for delta in (1, 0x40, 0x80):
            altered = bytearray(data)
            altered[i] = (altered[i] + delta) & 0xFF
            try:
                fory.loads(bytes(altered))
            except pyfory.ForyError:
                pass
    assert fory.loads(data)[0].checksum == 1 << 40


class Calculator:
    def scale(self, x):
        return 3 * x

    @staticmethod
    def double(x):
        return 2 * x


class CalculatorPolicy(DeserializationPolicy):
    """The guide's method policy, with the one change README's "Coming from pyfory" names:
    a bound method's function reaches validate_function too, so scale is allowed there."""

    def authorize_instantiation(self, cls, **kwargs):
        if cls not in (Calculator, types.FunctionType, types.MethodType):
            raise ValueError(f"Blocked materialization: {cls!r}")

    def validate_function(self, func, is_local, **kwargs):
        if func in (Calculator.double, Calculator.scale) and not is_local:
            return
        raise ValueError(f"Blocked function: {func!r}")

    def validate_method(self, method, is_local, **kwargs):
        if type(method.__self__) is not Calculator or method.__name__ != "scale":
            raise ValueError(f"Blocked method: {method!r}")


def test_guide_methods_with_the_function_allowed_too():
    fory = Fory(xlang=False, ref=True, strict=False, policy=CalculatorPolicy())
    for carrier in (types.FunctionType, types.MethodType, Calculator):
        fory.register_type(carrier)
    assert fory.loads(fory.dumps(Calculator().scale))(10) == 30
    assert fory.loads(fory.dumps(Calculator.double))(10) == 20
    with pytest.raises(ValueError, match="Blocked"):
        fory.loads(fory.dumps(TreeNode(1).__init__))


def test_guide_numpy_out_of_band():
    np = pytest.importorskip("numpy")
    fory = Fory(xlang=False, ref=False, strict=False)
    arrays = [np.arange(100_000, dtype=np.float64), np.ones((10, 10), dtype=np.int32)]
    kept = []
    data = fory.serialize(arrays, buffer_callback=kept.append)
    assert len(kept) == 2 and len(data) < 1000
    back = fory.deserialize(data, buffers=[o.getbuffer() for o in kept])
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(arrays, back))


def test_a_duck_typed_policy_exception_also_reaches_the_caller_as_itself():
    class Refuser:      # not a DeserializationPolicy subclass: only the hooks it uses
        def validate_module(self, module_name, is_local, **kwargs):
            pass

        def validate_class(self, cls, is_local, **kwargs):
            if cls is Counter:
                raise LookupError("no Counter")

    fory = Fory(xlang=False, strict=False, policy=Refuser())
    with pytest.raises(LookupError, match="no Counter"):
        fory.loads(Fory(strict=False).dumps(Counter))
    assert fory.loads(fory.dumps({"a": 1})) == {"a": 1}


def test_plain_and_schema_versions_of_a_dataclass_do_not_read_each_other():
    Plain = dataclasses.make_dataclass("Plain", [("a", int, dataclasses.field(default=0))])
    WithIds = dataclasses.make_dataclass("WithIds", [("a", int, pyfory.field(id=0, default=0))])
    plain, schema = Fory(xlang=False), Fory(xlang=False)
    plain.register(Plain, type_id=1)
    schema.register(WithIds, type_id=1)
    with pytest.raises(pyfory.error.SchemaMismatchError):
        schema.loads(plain.dumps(Plain(1)))
    with pytest.raises(pyfory.error.SchemaMismatchError):
        plain.loads(schema.dumps(WithIds(1)))
