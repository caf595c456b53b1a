"""Functions, methods and closure cells.

Importable functions travel by reference (module + qualified name). Functions the
receiver cannot import travel by value (see `travels_by_value` and the by-value part
of FunctionSerializer).

FunctionSerializer payload: one byte, 0 = by reference (module, qualname follow), 1 = by
value (skeleton follows; the state phase carries the rest, see code.py). A function by
reference has no state phase.

Also here: the serializers of the objects a class body is made of (classmethod,
staticmethod, property, functools.cached_property, mappingproxy), of typing.TypeVar,
and of the dataclasses sentinels that generated methods compare by identity.
"""

from __future__ import annotations

import functools
import sys
import types
import typing

from pyfory import _compat, classes, code
from pyfory._core import Serializer
from pyfory._reduce import lookup_global
from pyfory.error import MalformedDataError, SerializationError, TypeNotRegisteredError

BY_REFERENCE = 0
BY_VALUE = 1


def _refuse_strict(fory, what: str):
    if fory.strict:
        raise TypeNotRegisteredError(
            f"strict mode refuses {what}; use Fory(strict=False) for trusted data")


def travels_by_value(func) -> bool:
    """True when the receiver cannot import func by its module and qualified name."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        return True
    if module == "__main__" or classes.module_is_by_value(module) or sys.modules.get(module) is None:
        # a module that is not imported is dynamic (or gone): never import it to find
        # out (as cloudpickle does), the function travels by value
        return True
    try:
        return lookup_global(module, qualname) is not func
    except Exception:
        return True


def read_function(ctx):
    """FunctionSerializer.read: a function by reference or the skeleton of one by value."""
    if ctx.fory.strict:
        _refuse_strict(ctx.fory, "functions")
    kind = ctx.read_uint8()
    if kind == BY_VALUE:
        return code.read_function_skeleton(ctx)
    if kind == BY_REFERENCE:
        module = ctx.read_str_ref()
        qualname = ctx.read_str_ref()
        policy = ctx.policy
        if policy is not None:
            policy.validate_module(module, is_local=False)
        func = lookup_global(module, qualname)
        if policy is not None:
            policy.validate_function(func, is_local=False)
        return func
    raise MalformedDataError(f"bad function kind {kind}")


class FunctionSerializer(Serializer):
    # read, read_state and write_state are plain functions of (ctx, obj): the core's
    # call of an overridden method then runs them directly, one Python frame less per
    # function on the hot path. A function by reference has no state: the state
    # functions do nothing unless a skeleton by value was just written or read.
    read = staticmethod(read_function)
    read_state = staticmethod(code.read_function_state)
    write_state = staticmethod(code.write_function_state)

    def __init__(self, fory, cls):
        super().__init__(fory, cls)
        self.track_identity = True
        self.has_state = True

    def write(self, ctx, func):
        if self.fory.strict:
            _refuse_strict(self.fory, f"functions ({func.__qualname__})")
        if travels_by_value(func):
            ctx.write_uint8(BY_VALUE)
            code.write_function_skeleton(ctx, func)
            return
        ctx.write_uint8(BY_REFERENCE)
        ctx.write_str_ref(func.__module__)
        ctx.write_str_ref(func.__qualname__)


class MethodSerializer(Serializer):
    """A bound method: its function and the object it is bound to."""

    def write(self, ctx, method):
        _refuse_strict(self.fory, "methods")
        ctx.write_value(method.__func__)
        ctx.write_value(method.__self__)

    def read(self, ctx):
        _refuse_strict(self.fory, "methods")
        func = ctx.read_value()
        obj = ctx.read_value()
        if not callable(func):
            raise MalformedDataError("bound method of a non-callable")
        method = types.MethodType(func, obj)
        policy = ctx.policy
        if policy is not None:
            policy.validate_method(method, is_local=code.rebuilt_by_value(ctx, func))
        return method


class _CodeCarrier(Serializer):
    """Objects that only make sense around functions: refused in strict mode."""

    what = "descriptors"

    def _refuse(self):
        _refuse_strict(self.fory, self.what)


class ClassMethodSerializer(_CodeCarrier):
    what = "classmethod objects"

    def write(self, ctx, obj):
        self._refuse()
        ctx.write_value(obj.__func__)

    def read(self, ctx):
        self._refuse()
        return self.cls(ctx.read_value())


class StaticMethodSerializer(ClassMethodSerializer):
    what = "staticmethod objects"


class PropertySerializer(_CodeCarrier):
    """fget, fset, fdel, then the docstring when it is not fget's."""

    what = "property objects"

    def write(self, ctx, prop):
        self._refuse()
        fget = prop.fget
        ctx.write_value(fget)
        ctx.write_value(prop.fset)
        ctx.write_value(prop.fdel)
        doc = prop.__doc__
        if fget is not None and doc is getattr(fget, "__doc__", None):
            ctx.write_uint8(0)
        else:
            ctx.write_uint8(1)
            ctx.write_value(doc)

    def read(self, ctx):
        self._refuse()
        fget = ctx.read_value()
        fset = ctx.read_value()
        fdel = ctx.read_value()
        if ctx.read_uint8():
            return self.cls(fget, fset, fdel, ctx.read_value())
        return self.cls(fget, fset, fdel)


class CachedPropertySerializer(_CodeCarrier):
    what = "functools.cached_property objects"

    def write(self, ctx, prop):
        self._refuse()
        ctx.write_value(prop.func)
        ctx.write_value(prop.attrname)
        ctx.write_value(prop.__doc__)

    def read(self, ctx):
        self._refuse()
        prop = functools.cached_property(ctx.read_value())
        prop.attrname = ctx.read_value()
        prop.__doc__ = ctx.read_value()
        return prop


class MappingProxySerializer(Serializer):
    """types.MappingProxyType: a read-only view of a dict (dataclass field metadata)."""

    def write(self, ctx, obj):
        ctx.write_value(dict(obj))

    def read(self, ctx):
        d = ctx.read_value()
        if type(d) is not dict:
            raise MalformedDataError("mappingproxy of a non-dict")
        return types.MappingProxyType(d)


class SentinelSerializer(Serializer):
    """Module-level singletons compared by identity (dataclasses.MISSING and friends):
    written by name, read back as the receiver's object."""

    def __init__(self, fory, cls, table=None):
        super().__init__(fory, cls)
        self.by_name = dict(table or {})
        self.by_id = {id(v): k for k, v in self.by_name.items()}

    def write(self, ctx, obj):
        name = self.by_id.get(id(obj))
        if name is None:
            raise SerializationError(f"cannot serialize {obj!r}: not a known sentinel")
        ctx.write_str_ref(name)

    def read(self, ctx):
        name = ctx.read_str_ref()
        try:
            return self.by_name[name]
        except KeyError:
            raise MalformedDataError(f"unknown sentinel {name!r}") from None


class TypeVarSerializer(_CodeCarrier):
    """typing.TypeVar: by reference when importable, else by value (name, constraints,
    bound, variance, default) with a tracker id, so that the same TypeVar sent in two
    payloads is one object on the receiver's side, as classes by value are."""

    what = "TypeVars"

    def write(self, ctx, tv):
        self._refuse()
        module = getattr(tv, "__module__", None)
        name = tv.__name__
        if (type(module) is str and module != "__main__" and not classes.module_is_by_value(module)
                and sys.modules.get(module) is not None and _lookup_or_none(module, name) is tv):
            ctx.write_uint8(0)
            ctx.write_str_ref(module)
            ctx.write_str_ref(name)
            return
        name, constraints, bound, flags, default, has_default = _compat.typevar_state(tv)
        ctx.write_uint8(1 | (flags << 1) | (16 if has_default else 0))
        ctx.write_bytes(classes.tracker_id(tv))
        ctx.write_str_ref(name)
        ctx.write_value(module)
        ctx.write_value(constraints)
        ctx.write_value(bound)
        if has_default:
            ctx.write_value(default)

    def read(self, ctx):
        self._refuse()
        head = ctx.read_uint8()
        if head == 0:
            module = ctx.read_str_ref()
            name = ctx.read_str_ref()
            policy = ctx.policy
            if policy is not None:
                policy.validate_module(module, is_local=False)
            tv = lookup_global(module, name)
            if type(tv) is not typing.TypeVar:
                raise MalformedDataError(f"{module}.{name} is not a TypeVar")
            return tv
        if not head & 1 or head >> 5:
            raise MalformedDataError(f"bad TypeVar header {head}")
        uid = ctx.read_bytes(classes.TRACKER_ID_SIZE)
        name = ctx.read_str_ref()
        module = ctx.read_value()
        constraints = ctx.read_value()
        bound = ctx.read_value()
        has_default = bool(head & 16)
        default = ctx.read_value() if has_default else None
        tv = classes.tracked(uid)
        if type(tv) is typing.TypeVar:
            return tv
        if type(constraints) is not tuple:
            raise MalformedDataError("TypeVar constraints are not a tuple")
        tv = _compat.make_typevar(name, constraints, bound, (head >> 1) & 7, default, has_default)
        if module is not None:
            tv.__module__ = module
        return classes.track(uid, tv)


def _lookup_or_none(module, name):
    try:
        return lookup_global(module, name)
    except Exception:
        return None


def function_types() -> list:
    """(class, serializer factory) pairs; positions become internal type ids (append only)."""
    return [
        (types.FunctionType, FunctionSerializer),
        (types.MethodType, MethodSerializer),
        (types.CodeType, code.CodeSerializer),
        (_compat.CellType, code.CellSerializer),
        (classmethod, ClassMethodSerializer),
        (staticmethod, StaticMethodSerializer),
        (property, PropertySerializer),
        (functools.cached_property, CachedPropertySerializer),
        (types.MappingProxyType, MappingProxySerializer),
        (typing.TypeVar, TypeVarSerializer),
        *[(t, lambda f, c: SentinelSerializer(f, c, _compat.DATACLASS_SENTINELS))
          for t in _compat.DATACLASS_SENTINEL_TYPES],
    ]
