"""The example policies of docs/security.md, importable so that the tests check the
exact code the document shows."""

from __future__ import annotations

import builtins
import importlib
import types

import pyfory
from pyfory.error import PolicyViolationError


class NoGadgets(pyfory.DeserializationPolicy):
    """strict=False, with the classic pickle gadgets refused: calls into os, subprocess
    and friends, eval/exec/getattr-style builtins, and imports of those modules,
    however the payload names them (by module and name or by internal id)."""

    BLOCKED_MODULES = {"os", "posix", "nt", "subprocess", "sys", "shutil", "importlib",
                       "runpy", "pty", "socket", "ctypes", "pickle", "marshal"}
    BLOCKED_CALLABLES = (builtins.eval, builtins.exec, builtins.compile, builtins.__import__,
                         builtins.open, builtins.getattr, builtins.setattr, builtins.delattr,
                         builtins.globals, builtins.vars, builtins.breakpoint,
                         importlib.import_module)

    def _module_of(self, obj) -> str:
        if isinstance(obj, types.ModuleType):
            return obj.__name__
        return getattr(obj, "__module__", None) or ""

    def _refuse_if_blocked(self, obj, what: str) -> None:
        if any(obj is f for f in self.BLOCKED_CALLABLES):
            raise PolicyViolationError(f"refused to call {what}")
        if self._module_of(obj).split(".")[0] in self.BLOCKED_MODULES:
            raise PolicyViolationError(f"refused to call {what} (module {self._module_of(obj)})")

    def intercept_reduce_call(self, callable_obj, args, **kwargs):
        # the callable itself, and for a bound method what it is bound to (os.system is
        # a builtin bound to the posix module)
        self._refuse_if_blocked(callable_obj, repr(callable_obj))
        bound_to = getattr(callable_obj, "__self__", None)
        if bound_to is not None:
            self._refuse_if_blocked(bound_to, repr(callable_obj))
        return None

    def validate_module(self, module_name, is_local=False, **kwargs):
        if module_name.split(".")[0] in self.BLOCKED_MODULES:
            raise PolicyViolationError(f"refused module {module_name}")


class OnlyModules(pyfory.DeserializationPolicy):
    """Allow classes, functions and modules from the listed top-level modules only."""

    def __init__(self, modules):
        self.modules = set(modules)

    def _check(self, module_name: str) -> None:
        if (module_name or "").split(".")[0] not in self.modules:
            raise PolicyViolationError(f"module {module_name} is not allowed")

    def validate_module(self, module_name, is_local=False, **kwargs):
        self._check(module_name)

    def validate_class(self, cls, is_local=False, **kwargs):
        self._check(getattr(cls, "__module__", ""))

    def validate_function(self, func, is_local=False, **kwargs):
        self._check(getattr(func, "__module__", ""))
