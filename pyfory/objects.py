"""Choosing a serializer for a class that has no builtin rule, and naming classes.

`serializer_for_class` mirrors what pickle would do with the class's instances:
- classes whose instances reduce to "create empty, then set attributes" (no custom
  __reduce__/__getstate__/__setstate__/__getnewargs__, not a builtin subclass) get the
  fast ObjectSerializer (attribute values only, names once per payload);
- namedtuples, enum members and the standard collections get small dedicated
  serializers;
- everything else goes through the reduce protocol (_reduce.pyx), exactly as pickle.
"""

from __future__ import annotations

import array
import builtins
import collections
import copyreg
import dataclasses
import enum
import functools
import importlib
import operator
import pathlib
import re
import struct
import sys
import types
import weakref

from pyfory import classes
from pyfory import schema as _schema
from pyfory._core import Serializer, TypeInfo
from pyfory._objects import NamedTupleSerializer, ObjectSerializer
from pyfory._reduce import ReduceSerializer, lookup_global, reduce_object
from pyfory.arrays import ArraySerializer
from pyfory.error import (
    LimitExceededError,
    MalformedDataError,
    PolicyViolationError,
    SerializationError,
    TypeNotRegisteredError,
)

D_NAME = 2
D_BY_VALUE = 4

_object_getstate = getattr(object, "__getstate__", None)   # 3.11+
_HEAPTYPE = 1 << 9
_POINTER_SIZE = struct.calcsize("P")


def _only_python_fields(cls) -> bool:
    """True when an instance holds nothing but its __dict__, __weakref__ and __slots__:
    the check object.__getstate__ makes before pickling an object by its attributes
    (a C type, even a heap type, with fields of its own is refused there)."""
    if cls.__itemsize__:
        return False
    size = object.__basicsize__
    if cls.__dictoffset__ > 0:       # a managed dict (3.11+) takes no room in the object
        size += _POINTER_SIZE
    if cls.__weakrefoffset__ > 0:    # nor does a managed weakref list (3.12+)
        size += _POINTER_SIZE
    size += _POINTER_SIZE * len(copyreg._slotnames(cls))
    return cls.__basicsize__ == size


def _in_dispatch_table(cls) -> bool:
    try:
        return cls in copyreg.dispatch_table
    except TypeError:       # a class made unhashable by its metaclass cannot be a key
        return False


def _plain_layout(cls) -> bool:
    """True when pickle would rebuild instances as cls.__new__(cls) + attribute state."""
    if _in_dispatch_table(cls):
        return False
    if cls.__reduce_ex__ is not object.__reduce_ex__ or cls.__reduce__ is not object.__reduce__:
        return False
    if cls.__getattribute__ is not object.__getattribute__:
        return False        # pickle looks __reduce_ex__ up through it: the reduce path does too
    if getattr(cls, "__getstate__", None) is not _object_getstate:
        return False
    for name in ("__setstate__", "__getnewargs__", "__getnewargs_ex__", "__getinitargs__"):
        if hasattr(cls, name):
            return False
    # every base but object must be a Python class (no list/dict/int/... layout)
    for base in cls.__mro__[:-1]:
        if not base.__flags__ & _HEAPTYPE:
            return False
    return cls.__mro__[-1] is object and _only_python_fields(cls)


def _is_namedtuple(cls) -> bool:
    return (issubclass(cls, tuple) and hasattr(cls, "_fields") and hasattr(cls, "_make")
            and cls.__reduce_ex__ is tuple.__reduce_ex__ and cls.__reduce__ is tuple.__reduce__
            and "__dict__" not in dir(cls) and getattr(cls, "__getnewargs__", None) is not None
            and not hasattr(cls, "__setstate__"))


def serializer_for_class(fory, cls) -> Serializer:
    if isinstance(cls, type) and issubclass(cls, type):
        # instances are classes, written as type descriptors (by reference or by value),
        # unless copyreg.dispatch_table has a reducer for the metaclass: pickle asks the
        # dispatch table before it saves a class as a global
        if _in_dispatch_table(cls):
            return ReduceSerializer(fory, cls)
        return None
    if issubclass(cls, enum.Enum):
        mode = _enum_mode(cls)
        if mode == "value":
            return EnumSerializer(fory, cls)
        if mode == "name":
            return EnumByNameSerializer(fory, cls)
        return ReduceSerializer(fory, cls)
    if _is_namedtuple(cls):
        return NamedTupleSerializer(fory, cls)
    if dataclasses.is_dataclass(cls) and _schema.declares_schema(cls):
        # pyfory.field() / encoding annotations: pyfory/schema.py
        return _schema.SchemaSerializer(fory, cls)
    if _plain_layout(cls):
        return ObjectSerializer(fory, cls)
    return ReduceSerializer(fory, cls)


# ---- naming classes ----------------------------------------------------------------------
# C classes whose own module:qualname does not import, but which a module exports under
# another name: weakref proxies are builtins.weakproxy / weakcallableproxy before 3.11
# (weakref.ProxyType / CallableProxyType from 3.11 on). A proxy is written as its reduce
# gives it (the referent's class, NEWOBJ), as pickle does.
# (compared by identity: a class may be unhashable)
_C_CLASS_NAMES = ((weakref.ProxyType, "weakref", "ProxyType"),
                  (weakref.CallableProxyType, "weakref", "CallableProxyType"))


def typeinfo_for_unregistered(resolver, cls) -> TypeInfo:
    """Non-strict mode: how to name cls (by reference or by value) and its serializer."""
    for c_class, module, qualname in _C_CLASS_NAMES:
        if cls is c_class:
            return TypeInfo(cls, serializer_for_class(resolver.fory, cls), D_NAME, module=module, qualname=qualname)
    if (classes.travels_by_value(cls) and not classes.rebuildable_by_value(cls)
            and not issubclass(cls, type)):
        return _global_only_typeinfo(resolver, cls)
    ser = serializer_for_class(resolver.fory, cls)
    if classes.travels_by_value(cls):
        return classes.by_value_typeinfo(resolver, cls, ser)
    if not classes.is_importable(cls):
        raise SerializationError(f"cannot serialize class {cls.__module__}.{cls.__qualname__}: "
                                 "it cannot be imported by name")
    return TypeInfo(cls, ser, D_NAME, module=cls.__module__, qualname=cls.__qualname__)


class GlobalOnlySerializer(ReduceSerializer):
    """Instances of a class defined in C that neither imports by name nor travels by value
    (``numpy._ArrayFunctionDispatcher``, the class of ``np.linalg.norm``). Pickle writes
    such an object only when its reduce gives a global name, and then only that name;
    so does this serializer, under the type id of ``builtin_function_or_method``, whose
    reader looks the name up the same way (docs/format.md §9.2). Any other reduce is a
    SerializationError at dumps."""

    def write(self, ctx, obj):
        try:
            rv = reduce_object(obj)
        except Exception as e:
            rv = e
        if not isinstance(rv, str):
            cls = type(obj)
            raise SerializationError(
                f"cannot serialize {cls.__module__}.{cls.__qualname__} object {obj!r}: its "
                "class is defined in C and cannot be imported by name (nor rebuilt by value), "
                f"and its reduce does not name a global ({rv!r})") from (
                    rv if isinstance(rv, Exception) else None)
        ReduceSerializer.write(self, ctx, obj)


def _global_only_typeinfo(resolver, cls) -> TypeInfo:
    carrier = resolver.get_typeinfo(types.BuiltinFunctionType)
    info = TypeInfo(cls, GlobalOnlySerializer(resolver.fory, cls, strict_ok=False), carrier.kind,
                    type_id=carrier.type_id)
    info.strict_refused = True
    return info


def import_class(resolver, module: str, qualname: str):
    policy = resolver.fory.policy
    if policy is not None:
        policy.validate_module(module, is_local=False)
    try:
        cls = lookup_global(module, qualname)
    except (ImportError, AttributeError) as e:
        raise MalformedDataError(f"cannot find class {module}.{qualname}: {e}") from e
    if not isinstance(cls, type):
        raise MalformedDataError(f"{module}.{qualname} is not a class")
    if policy is not None:
        policy.validate_class(cls, is_local=False)
    return cls


def strict_allowed_builtin(module: str, qualname: str):
    """Builtin exception classes need no registration in strict mode."""
    if module != "builtins" or "." in qualname:
        return None
    import builtins

    cls = getattr(builtins, qualname, None)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        return cls
    return None


# ---- small dedicated serializers ---------------------------------------------------------
_ENUM_BY_NAME = tuple(f for f in (getattr(enum, "pickle_by_global_name", None),
                                  getattr(enum, "pickle_by_enum_name", None),
                                  getattr(enum, "_reduce_ex_by_name", None)) if f is not None)


def _enum_mode(cls):
    """How pickle reduces members of enum class cls: "value" (Enum.__reduce_ex__:
    cls(value)), "name" (the stdlib's pickle-by-name helpers: the member of that name),
    or None (a __reduce_ex__ of its own: the reduce protocol decides)."""
    reduce_ex = cls.__reduce_ex__
    if reduce_ex is enum.Enum.__reduce_ex__:
        return "value"
    if reduce_ex in _ENUM_BY_NAME:
        return "name"
    return None


class EnumSerializer(Serializer):
    """An enum member by value, as pickle writes it: cls(value) (also for Flag
    combinations). Wire kind 3: one value, ``member._value_``."""

    def write(self, ctx, obj):
        ctx.write_value(obj._value_)

    _flag_bits = None       # for a Flag class: the bits its members define

    def read(self, ctx):
        value = ctx.read_value()
        ctx.check_hash_key(value)       # the enum looks the value up in a dict
        if self.fory.strict and issubclass(self.cls, enum.Flag) and type(value) is int:
            self.check_flag_value(value)
        return self.cls(value)

    def check_flag_value(self, value: int) -> None:
        # an IntFlag keeps every combination it was called with in its members map, for
        # the life of the process: values with bits no member defines would grow it without
        # bound, one entry per distinct value any payload sends
        if value in self.cls._value2member_map_:
            return
        if self._flag_bits is None:
            bits = 0
            for member in self.cls.__members__.values():
                if type(member._value_) is int:
                    bits |= member._value_
            self._flag_bits = bits
        if value < 0 or value & ~self._flag_bits:
            raise MalformedDataError(
                f"{value} has bits that no member of {self.cls.__qualname__} defines "
                "(a strict reader takes only combinations of its members)")


class EnumByNameSerializer(Serializer):
    """Members of an enum whose __reduce_ex__ is one of enum's pickle-by-name helpers:
    the member of that name, as pickle finds it. Wire kind 5: str-ref member name."""

    wire_kind = 5

    def write(self, ctx, obj):
        ctx.write_str_ref(obj._name_)

    def read(self, ctx):
        name = ctx.read_str_ref()
        member = self.cls.__members__.get(name)
        if member is None:
            raise MalformedDataError(f"{self.cls.__qualname__} has no member {name!r}")
        return member


class _TwoPhase(Serializer):
    """Container-like objects: created empty, registered, then filled (cycles work)."""

    def __init__(self, fory, cls):
        super().__init__(fory, cls)
        self.has_state = True


class OrderedDictSerializer(_TwoPhase):
    """OrderedDict and Counter: items, then the instance __dict__ (attributes), both in
    the state phase so that they may refer to the object itself."""

    def write(self, ctx, obj):
        pass

    def read(self, ctx):
        return self.cls()

    def write_state(self, ctx, obj):
        ctx.write_value(list(obj.items()))
        ctx.write_value(obj.__dict__ or None)

    def read_state(self, ctx, obj):
        items = ctx.read_value()
        if type(items) is not list:
            raise MalformedDataError(f"bad {self.cls.__qualname__} items")
        guard = ctx.key_guard()
        for k, v in items:
            guard.check(k)
            obj[k] = v
        extra = ctx.read_value()
        if extra:
            _update_dict(obj, extra)


def _update_dict(obj, attrs):
    if type(attrs) is not dict:
        raise MalformedDataError(f"bad attributes for a {type(obj).__qualname__}")
    obj.__dict__.update(attrs)


class CounterSerializer(OrderedDictSerializer):
    pass


class DefaultDictSerializer(_TwoPhase):
    def write(self, ctx, obj):
        ctx.write_value(obj.default_factory)

    def read(self, ctx):
        factory = ctx.read_value()
        if factory is not None and not callable(factory):
            raise MalformedDataError("defaultdict factory is not callable")
        if factory is not None and self.fory.strict and not isinstance(factory, type):
            # strict: the factory is called later, on a missing key; only a class that
            # strict mode let through, never a callable object from the payload
            raise PolicyViolationError("strict mode takes only a class as a defaultdict factory")
        return self.cls(factory)

    def write_state(self, ctx, obj):
        ctx.write_value(list(obj.items()))

    def read_state(self, ctx, obj):
        items = ctx.read_value()
        if type(items) is not list:
            raise MalformedDataError("bad defaultdict items")
        guard = ctx.key_guard()
        for k, v in items:
            guard.check(k)
            obj[k] = v


class DequeSerializer(_TwoPhase):
    def write(self, ctx, obj):
        ctx.write_value(obj.maxlen)

    def read(self, ctx):
        maxlen = ctx.read_value()
        if maxlen is not None and (type(maxlen) is not int or maxlen < 0):
            raise MalformedDataError("bad deque maxlen")
        return self.cls((), maxlen)

    def write_state(self, ctx, obj):
        ctx.write_value(list(obj))

    def read_state(self, ctx, obj):
        obj.extend(ctx.read_value())


class ChainMapSerializer(_TwoPhase):
    """ChainMap: its instance __dict__ (``maps`` and any other attribute)."""

    def write(self, ctx, obj):
        pass

    def read(self, ctx):
        return self.cls()

    def write_state(self, ctx, obj):
        ctx.write_value(dict(obj.__dict__))

    def read_state(self, ctx, obj):
        attrs = ctx.read_value()
        if type(attrs) is not dict or type(attrs.get("maps")) is not list or not attrs["maps"]:
            raise MalformedDataError("bad ChainMap maps")
        obj.__dict__.update(attrs)


class NamespaceSerializer(_TwoPhase):
    def write(self, ctx, obj):
        pass

    def read(self, ctx):
        return self.cls()

    def write_state(self, ctx, obj):
        ctx.write_value(dict(obj.__dict__))

    def read_state(self, ctx, obj):
        _update_dict(obj, ctx.read_value())


class PathSerializer(Serializer):
    def write(self, ctx, obj):
        ctx.write_string(str(obj))

    def read(self, ctx):
        return self.cls(ctx.read_string())


# Compiling a pattern costs 2-5 microseconds per character (a 1 MB one took 1.8 s), a
# hundred times what reading its bytes costs; a strict reader compiles this many pattern
# characters per loads at most
STRICT_PATTERN_CHARS = 1 << 16
_PATTERN_CHARS_KEY = "pyfory.re"       # ctx.scratch entry: pattern characters compiled
# the flags a compiled pattern keeps; re.DEBUG would make the reader print to stdout
_PATTERN_FLAGS = re.IGNORECASE | re.LOCALE | re.MULTILINE | re.DOTALL | re.UNICODE | re.VERBOSE | re.ASCII


class PatternSerializer(Serializer):
    def write(self, ctx, obj):
        ctx.write_value(obj.pattern)
        ctx.write_varint64(obj.flags)

    def read(self, ctx):
        pattern = ctx.read_value()
        flags = ctx.read_varint64()
        if type(pattern) is not str and type(pattern) is not bytes or flags & ~_PATTERN_FLAGS:
            raise MalformedDataError("bad re.Pattern")
        if self.fory.strict:
            if ctx.scratch is None:
                ctx.scratch = {}
            total = ctx.scratch.get(_PATTERN_CHARS_KEY, 0) + len(pattern)
            if total > STRICT_PATTERN_CHARS:
                raise LimitExceededError(
                    f"a strict reader compiles at most {STRICT_PATTERN_CHARS} regular-expression "
                    "characters per payload; read trusted patterns with strict=False")
            ctx.scratch[_PATTERN_CHARS_KEY] = total
        return re.compile(pattern, flags)


MODULE_BY_NAME = 0
MODULE_BY_VALUE = 1
_MODULES_KEY = "pyfory.modules"        # ctx.scratch: ids of the modules read by value


def module_by_value(module) -> bool:
    """A module the receiver cannot import: built at run time (types.ModuleType(...),
    not the module sys.modules has under its name), or registered with
    register_pickle_by_value (the package or a parent of it)."""
    name = module.__name__
    return sys.modules.get(name) is not module or classes.module_is_by_value(name)


class ModuleSerializer(Serializer):
    """A module (strict=False only): u8 0 + str-ref name, imported on the reading side;
    or, for a module the receiver cannot import, u8 1 + str-ref name / state: value dict
    of its attributes without __builtins__ (the reader's own builtins are put back). A
    module read by value is not put in sys.modules, so it travels by value again from
    the receiving process (to a grandchild)."""

    def __init__(self, fory, cls):
        super().__init__(fory, cls)
        self.has_state = True
        self.track_identity = True

    def write(self, ctx, obj):
        if self.fory.strict:
            raise TypeNotRegisteredError(
                f"strict mode refuses modules ({obj.__name__}); use Fory(strict=False)")
        ctx.write_uint8(MODULE_BY_VALUE if module_by_value(obj) else MODULE_BY_NAME)
        ctx.write_str_ref(obj.__name__)

    def write_state(self, ctx, obj):
        if module_by_value(obj):
            attrs = dict(obj.__dict__)
            attrs.pop("__builtins__", None)
            ctx.write_value(attrs)

    def read(self, ctx):
        if self.fory.strict:
            raise TypeNotRegisteredError("strict mode refuses modules")
        kind = ctx.read_uint8()
        name = ctx.read_str_ref()
        policy = ctx.policy
        if kind == MODULE_BY_VALUE:
            if policy is not None:
                policy.validate_module(name, is_local=True)
            module = types.ModuleType(name)
            if ctx.scratch is None:
                ctx.scratch = {}
            ctx.scratch.setdefault(_MODULES_KEY, set()).add(id(module))
            return module
        if kind != MODULE_BY_NAME:
            raise MalformedDataError(f"bad module kind {kind}")
        if policy is not None:
            policy.validate_module(name, is_local=False)
        return importlib.import_module(name)

    def read_state(self, ctx, module):
        scratch = ctx.scratch
        by_value = scratch.get(_MODULES_KEY) if scratch is not None else None
        if not by_value or id(module) not in by_value:
            return
        by_value.discard(id(module))
        attrs = ctx.read_value()
        if type(attrs) is not dict or not all(type(k) is str for k in attrs):
            raise MalformedDataError(f"bad attributes of module {module.__name__}")
        module.__dict__.update(attrs)
        module.__dict__["__builtins__"] = builtins.__dict__


def stdlib_types() -> list:
    """(class, serializer factory) for standard-library types with their own rule.
    Their positions become internal type ids: append only."""
    path_types = [pathlib.PurePosixPath, pathlib.PureWindowsPath, pathlib.PosixPath,
                  pathlib.WindowsPath]
    return [
        (collections.OrderedDict, OrderedDictSerializer),
        (collections.defaultdict, DefaultDictSerializer),
        (collections.deque, DequeSerializer),
        (collections.Counter, CounterSerializer),
        (collections.ChainMap, ChainMapSerializer),
        (types.SimpleNamespace, NamespaceSerializer),
        (re.Pattern, PatternSerializer),
        *[(t, PathSerializer) for t in path_types],
        (types.ModuleType, ModuleSerializer),
        # callables that name arbitrary code: refused in strict mode
        (types.BuiltinFunctionType, lambda f, c: ReduceSerializer(f, c, strict_ok=False)),
        (type(list.append), lambda f, c: ReduceSerializer(f, c, strict_ok=False)),
        (type(object.__init__), lambda f, c: ReduceSerializer(f, c, strict_ok=False)),
        (type([].__len__), lambda f, c: ReduceSerializer(f, c, strict_ok=False)),
        (type(dict.__dict__["fromkeys"]), lambda f, c: ReduceSerializer(f, c, strict_ok=False)),
        (functools.partial, lambda f, c: ReduceSerializer(f, c, strict_ok=False)),
        (operator.itemgetter, lambda f, c: ReduceSerializer(f, c, strict_ok=False)),
        (operator.attrgetter, lambda f, c: ReduceSerializer(f, c, strict_ok=False)),
        (operator.methodcaller, lambda f, c: ReduceSerializer(f, c, strict_ok=False)),
        (array.array, ArraySerializer),
    ]


__all__ = ["serializer_for_class", "typeinfo_for_unregistered", "import_class", "sys"]
