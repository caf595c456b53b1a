"""Type resolution: everything that happens once per type, not once per value.

The core asks the resolver only when a type is not yet in the Fory's type cache
(writing) or when a payload names a type for the first time (reading). The resolver
decides how a class is named on the wire (internal id, registered id or name,
module + qualified name, or by value) and which serializer handles its instances,
and it enforces strict mode.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import uuid
from typing import Any, Optional

from pyfory import arrays, stdlib
from pyfory._core import Serializer, TypeInfo
from pyfory.error import MalformedDataError, TypeNotRegisteredError

# Kinds of type descriptors on the wire (mirror the D_* constants in _core.pyx).
D_INTERNAL = 0
D_USER_ID = 1
D_NAME = 2
D_USER_NAME = 3
D_BY_VALUE = 4

# Internal type ids: part of the wire format, append only.
_INTERNAL_TYPES: list = [
    type(None), bool, int, float, str, bytes, list, tuple, dict, set, frozenset,
    bytearray, complex, type, object, range, slice, type(Ellipsis), type(NotImplemented),
    datetime.date, datetime.time, datetime.datetime, datetime.timedelta, datetime.timezone,
    decimal.Decimal, fractions.Fraction, uuid.UUID, datetime.tzinfo,
]

try:  # zoneinfo is 3.9+ but may lack tz data; the class itself always imports
    import zoneinfo

    _INTERNAL_TYPES.append(zoneinfo.ZoneInfo)
except ImportError:  # pragma: no cover
    zoneinfo = None


def _stdlib_serializers(fory) -> dict:
    s = stdlib
    table = {
        object: s.EmptyInstanceSerializer(fory, object),
        datetime.tzinfo: s.EmptyInstanceSerializer(fory, datetime.tzinfo),
        range: s.RangeSerializer(fory, range),
        slice: s.SliceSerializer(fory, slice),
        type(Ellipsis): s.SingletonSerializer(fory, type(Ellipsis), Ellipsis),
        type(NotImplemented): s.SingletonSerializer(fory, type(NotImplemented), NotImplemented),
        datetime.date: s.DateSerializer(fory, datetime.date),
        datetime.time: s.TimeSerializer(fory, datetime.time),
        datetime.datetime: s.DateTimeSerializer(fory, datetime.datetime),
        datetime.timedelta: s.TimeDeltaSerializer(fory, datetime.timedelta),
        datetime.timezone: s.TimeZoneSerializer(fory, datetime.timezone),
        decimal.Decimal: s.DecimalSerializer(fory, decimal.Decimal),
        fractions.Fraction: s.FractionSerializer(fory, fractions.Fraction),
        uuid.UUID: s.UUIDSerializer(fory, uuid.UUID),
    }
    if zoneinfo is not None:
        table[zoneinfo.ZoneInfo] = s.ZoneInfoSerializer(fory, zoneinfo.ZoneInfo)
    return table


# Types of optional packages (numpy, ...) have internal ids from here on, reserved
# whether or not the package is installed: OPTIONAL_ID_BASE + their position in
# pyfory.arrays.OPTIONAL_TYPES. The core looks them up by class on a cache miss, and the
# reader imports the package only when a payload names one of these ids.
OPTIONAL_ID_BASE = 256


# Internal ids a strict reader refuses, as a type object and for instances: classes
# whose instances are code or call arbitrary code (functions, methods, code objects,
# cells, descriptors, partial and the operator callables, modules). Everything else
# with an internal id is a value type (the builtins, `type` and `object` included: a
# strict reader never calls a class it reads, it only hands it back).
def _strict_refused_types() -> set:
    import array  # noqa: F401  (array.array stays allowed)
    import functools
    import operator
    import types
    import typing

    from pyfory import _compat, runtime

    return runtime.strict_refused() | {
        types.ModuleType, types.BuiltinFunctionType, type(list.append),
        type(object.__init__), type([].__len__), type(dict.__dict__["fromkeys"]),
        functools.partial, operator.itemgetter, operator.attrgetter, operator.methodcaller,
        types.FunctionType, types.MethodType, types.CodeType, _compat.CellType,
        classmethod, staticmethod, property, functools.cached_property, typing.TypeVar,
    }


def _more_internal_types() -> list:
    from pyfory.functions import function_types
    from pyfory.objects import stdlib_types
    from pyfory.runtime import runtime_types

    return stdlib_types() + function_types() + runtime_types()


def _register_hint(cls) -> str:
    name = getattr(cls, "__qualname__", getattr(cls, "__name__", repr(cls)))
    return (f"fory.register({name}) on both sides (or Fory(strict=False) for trusted data)")


class TypeResolver:
    """Per-Fory registry: classes <-> wire descriptors <-> serializers."""

    def __init__(self, fory):
        self.fory = fory
        self.strict: bool = fory.strict
        self._type_cache: dict = fory._type_cache      # shared with the core (writer side)
        self._by_internal_id: list = []
        self._by_user_id: dict = {}
        self._by_user_name: dict = {}
        self._by_qualified_name: dict = {}             # (module, qualname) -> TypeInfo
        self._registered: dict = {}                    # cls -> TypeInfo (user registrations)
        self._unhashable: dict = {}                    # id(cls) -> (cls, TypeInfo)
        # serializers the user registered for exact builtin types the core writes inline
        self.builtin_overrides: Optional[dict] = None
        stdlib_sers = _stdlib_serializers(fory)
        for type_id, cls in enumerate(_INTERNAL_TYPES):
            ser = stdlib_sers.get(cls)
            info = TypeInfo(cls, ser, D_INTERNAL, type_id=type_id)
            self._by_internal_id.append(info)
            self._type_cache[cls] = info
        for cls, make in _more_internal_types():
            info = TypeInfo(cls, make(fory, cls), D_INTERNAL, type_id=len(self._by_internal_id))
            self._by_internal_id.append(info)
            self._type_cache.setdefault(cls, info)
        if len(self._by_internal_id) > OPTIONAL_ID_BASE:  # pragma: no cover
            raise AssertionError("internal type ids run into the optional types' range")
        self._optional: dict = {}                      # internal id -> TypeInfo (loaded)
        refused = _strict_refused_types()
        for info in self._by_internal_id:
            info.strict_refused = info.cls in refused
        self._strict_refused_ids = frozenset(
            info.type_id for info in self._by_internal_id if info.strict_refused)

    def is_registered(self, cls) -> bool:
        """Whether cls was registered on this Fory (strict mode trusts its constructor)."""
        try:
            return cls in self._registered
        except TypeError:       # unhashable metaclass instance
            return False

    # ---- registration -----------------------------------------------------------------
    def register(self, cls, type_id=None, name=None, serializer=None) -> TypeInfo:
        if not isinstance(cls, type):
            raise TypeError(f"register() takes a class, not {cls!r}")
        if type_id is not None and name is not None:
            raise ValueError("give type_id or name, not both")
        if serializer is None:
            serializer = self.default_serializer(cls)
        elif isinstance(serializer, type):
            serializer = serializer(self.fory, cls)
        if not isinstance(serializer, Serializer):
            raise TypeError("serializer must be a pyfory.Serializer subclass or instance")
        if serializer.cls is None:
            serializer.cls = cls
        if serializer.fory is None:
            serializer.fory = self.fory
        if type_id is not None:
            if not isinstance(type_id, int) or type_id < 0:
                raise ValueError("type_id must be a non-negative int")
            old = self._by_user_id.get(type_id)
            if old is not None and old.cls is not cls:
                raise ValueError(f"type_id {type_id} is already registered for {old.cls!r}")
            info = TypeInfo(cls, serializer, D_USER_ID, type_id=type_id)
            self._by_user_id[type_id] = info
        elif name is not None:
            old = self._by_user_name.get(name)
            if old is not None and old.cls is not cls:
                raise ValueError(f"name {name!r} is already registered for {old.cls!r}")
            info = TypeInfo(cls, serializer, D_USER_NAME, name=str(name))
            self._by_user_name[str(name)] = info
        else:
            module, qualname = cls.__module__, cls.__qualname__
            info = TypeInfo(cls, serializer, D_NAME, module=module, qualname=qualname)
            self._by_qualified_name[(module, qualname)] = info
        self._registered[cls] = info
        self._type_cache[cls] = info
        if cls in _INTERNAL_TYPES and cls not in (type(None),):
            if self.builtin_overrides is None:
                self.builtin_overrides = {}
            self.builtin_overrides[cls] = info
            self.fory._builtin_overrides = self.builtin_overrides
        return info

    def default_serializer(self, cls) -> Serializer:
        from pyfory.objects import serializer_for_class

        return serializer_for_class(self.fory, cls)

    # ---- writing ----------------------------------------------------------------------
    def get_typeinfo(self, cls) -> TypeInfo:
        """TypeInfo for writing instances of cls (or cls itself as a value)."""
        try:
            info = self._type_cache.get(cls)
        except TypeError:
            # a class made unhashable by its metaclass: remember it by identity
            entry = self._unhashable.get(id(cls))
            if entry is None or entry[0] is not cls:
                entry = (cls, self._new_typeinfo(cls))
                self._unhashable[id(cls)] = entry
            return entry[1]
        if info is not None:
            return info
        info = self._new_typeinfo(cls)
        self._type_cache[cls] = info
        return info

    def _new_typeinfo(self, cls) -> TypeInfo:
        position = arrays.class_to_optional_position(cls)
        if position is not None:
            return self._optional_typeinfo(OPTIONAL_ID_BASE + position)
        if self.strict:
            from pyfory.objects import serializer_for_class, strict_allowed_builtin

            if strict_allowed_builtin(cls.__module__, cls.__qualname__) is cls:
                return TypeInfo(cls, serializer_for_class(self.fory, cls), D_NAME,
                                module=cls.__module__, qualname=cls.__qualname__)
            raise TypeNotRegisteredError(
                f"class {_qualified(cls)} is not registered: call {_register_hint(cls)}")
        from pyfory.objects import typeinfo_for_unregistered

        return typeinfo_for_unregistered(self, cls)

    # ---- reading ----------------------------------------------------------------------
    def _optional_typeinfo(self, type_id: int) -> TypeInfo:
        """A type of an optional package (numpy, ...): data, allowed in strict mode."""
        info = self._optional.get(type_id)
        if info is None:
            cls, make = arrays.load_optional(type_id - OPTIONAL_ID_BASE)
            info = TypeInfo(cls, make(self.fory, cls), D_INTERNAL, type_id=type_id)
            self._optional[type_id] = info
            self._type_cache.setdefault(cls, info)
        return info

    def internal_typeinfo(self, type_id: int) -> TypeInfo:
        if type_id >= OPTIONAL_ID_BASE:
            info = self._optional.get(type_id)
            return info if info is not None else self._optional_typeinfo(type_id)
        if type_id >= len(self._by_internal_id):
            raise MalformedDataError(f"unknown internal type id {type_id}")
        if self.strict and type_id in self._strict_refused_ids:
            cls = self._by_internal_id[type_id].cls
            raise TypeNotRegisteredError(
                f"strict mode refuses {_qualified(cls)} (internal type id {type_id}): it is "
                "code or calls code, not a value type; use Fory(strict=False) for trusted data")
        return self._by_internal_id[type_id]

    def typeinfo_by_id(self, type_id: int) -> TypeInfo:
        info = self._by_user_id.get(type_id)
        if info is None:
            raise TypeNotRegisteredError(
                f"payload uses type_id {type_id}, which is not registered here: "
                f"call fory.register(<the class>, type_id={type_id})")
        return info

    def typeinfo_by_registered_name(self, name: str) -> TypeInfo:
        info = self._by_user_name.get(name)
        if info is None:
            raise TypeNotRegisteredError(
                f"payload uses type name {name!r}, which is not registered here: "
                f"call fory.register(<the class>, name={name!r})")
        return info

    def typeinfo_by_name(self, module: str, qualname: str) -> TypeInfo:
        info = self._by_qualified_name.get((module, qualname))
        if info is not None:
            return info
        if self.strict:
            from pyfory.objects import strict_allowed_builtin

            cls = strict_allowed_builtin(module, qualname)
            if cls is not None:
                return self.get_typeinfo(cls)
            raise TypeNotRegisteredError(
                f"payload names class {module}.{qualname}, which is not registered: call "
                f"fory.register({qualname}) on both sides (or Fory(strict=False) for trusted data)")
        from pyfory.objects import import_class

        cls = import_class(self, module, qualname)
        info = self.get_typeinfo(cls)
        self._by_qualified_name[(module, qualname)] = info
        return info

    def read_class_skeleton(self, ctx) -> TypeInfo:
        if self.strict:
            raise TypeNotRegisteredError(
                "payload carries a class by value; strict mode refuses code: "
                "use Fory(strict=False) for trusted data")
        from pyfory.classes import read_class_skeleton

        return read_class_skeleton(self, ctx)


def _qualified(cls: Any) -> str:
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', repr(cls))}"
