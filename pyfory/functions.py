"""Functions, methods and closure cells.

Importable functions travel by reference (module + qualified name). Functions the
receiver cannot import travel by value (see `travels_by_value` and the by-value part
of FunctionSerializer).

FunctionSerializer payload: one byte, 0 = by reference (module, qualname follow), 1 = by
value (skeleton follows; the state phase carries the rest).
"""

from __future__ import annotations

import types

from pyfory._core import Serializer
from pyfory.error import MalformedDataError, TypeNotRegisteredError
from pyfory.reduce import lookup_global

BY_REFERENCE = 0
BY_VALUE = 1


def _refuse_strict(fory, what: str):
    if fory.strict:
        raise TypeNotRegisteredError(
            f"strict mode refuses {what}; use Fory(strict=False) for trusted data")


def travels_by_value(func) -> bool:
    """True when the receiver cannot import func by its module and qualified name."""
    from pyfory import classes

    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        return True
    if module == "__main__" or classes.module_is_by_value(module):
        return True
    try:
        return lookup_global(module, qualname) is not func
    except Exception:
        return True


class FunctionSerializer(Serializer):
    def __init__(self, fory, cls):
        super().__init__(fory, cls)
        self.track_identity = True
        self.has_state = True

    def write(self, ctx, func):
        _refuse_strict(self.fory, f"functions ({func.__qualname__})")
        if travels_by_value(func):
            from pyfory import code

            ctx.write_uint8(BY_VALUE)
            code.write_function_skeleton(ctx, func)
            return
        ctx.write_uint8(BY_REFERENCE)
        ctx.write_str_ref(func.__module__)
        ctx.write_str_ref(func.__qualname__)

    def write_state(self, ctx, func):
        if travels_by_value(func):
            from pyfory import code

            ctx.write_uint8(1)
            code.write_function_state(ctx, func)
        else:
            ctx.write_uint8(0)

    def read(self, ctx):
        _refuse_strict(self.fory, "functions")
        kind = ctx.read_uint8()
        if kind == BY_REFERENCE:
            module = ctx.read_str_ref()
            qualname = ctx.read_str_ref()
            policy = ctx.policy
            if policy is not None:
                policy.validate_module(module, False)
            func = lookup_global(module, qualname)
            if policy is not None:
                policy.validate_function(func, False)
            return func
        if kind == BY_VALUE:
            from pyfory import code

            return code.read_function_skeleton(ctx)
        raise MalformedDataError(f"bad function kind {kind}")

    def read_state(self, ctx, func):
        flag = ctx.read_uint8()
        if flag == 1:
            from pyfory import code

            code.read_function_state(ctx, func)
        elif flag != 0:
            raise MalformedDataError(f"bad function state flag {flag}")


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
            policy.validate_method(method, False)
        return method


def function_types() -> list:
    """(class, serializer factory) pairs; positions become internal type ids (append only)."""
    return [
        (types.FunctionType, FunctionSerializer),
        (types.MethodType, MethodSerializer),
    ]
