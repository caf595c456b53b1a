"""Classes the receiver cannot import travel by value (local, __main__, dynamic, or
from a module registered with register_pickle_by_value)."""

from __future__ import annotations

import sys
import types

from pyfory.error import SerializationError

_by_value_modules: set = set()


def register_pickle_by_value(module: types.ModuleType) -> None:
    """Send functions and classes of `module` by value (the receiver need not have it)."""
    if not isinstance(module, types.ModuleType):
        raise ValueError(f"{module!r} is not a module")
    if module.__name__ not in sys.modules:
        raise ValueError(f"{module!r} was not imported correctly, have you used an `import` statement?")
    _by_value_modules.add(module.__name__)


def unregister_pickle_by_value(module: types.ModuleType) -> None:
    if not isinstance(module, types.ModuleType):
        raise ValueError(f"{module!r} is not a module")
    if module.__name__ not in _by_value_modules:
        raise ValueError(f"{module!r} is not registered for pickle by value")
    _by_value_modules.discard(module.__name__)


def list_registry_pickle_by_value() -> set:
    return set(_by_value_modules)


def module_is_by_value(module_name: str) -> bool:
    if not _by_value_modules:
        return False
    if module_name in _by_value_modules:
        return True
    parts = module_name.split(".")
    return any(".".join(parts[:i]) in _by_value_modules for i in range(1, len(parts)))


def travels_by_value(cls) -> bool:
    from pyfory.objects import is_importable

    module = getattr(cls, "__module__", None) or ""
    if module_is_by_value(module):
        return True
    return not is_importable(cls)


def by_value_typeinfo(resolver, cls, serializer):
    raise SerializationError(
        f"cannot serialize class {cls.__module__}.{cls.__qualname__} by value: not implemented yet")


def read_class_skeleton(resolver, ctx):
    raise SerializationError("classes by value are not implemented yet")
