"""What differs between the Python versions pyfory supports (3.9 to 3.13), in one place.

Functions and classes by value (code.py, classes.py) depend on interpreter details:
code objects (sent with `marshal`, so sender and receiver must run the same Python
minor version, as with cloudpickle), the opcodes that name globals, function and
class attributes added in later versions, enum and TypeVar internals. A new Python
should be one change here.
"""

from __future__ import annotations

import abc
import base64
import dataclasses
import dis
import enum
import importlib.util
import sys
import types
import typing

PY_VERSION = sys.version_info[:2]

# The first two bytes of the bytecode magic number: they change whenever the code
# object format (and hence marshal's output for code) changes between versions.
CODE_MAGIC: bytes = importlib.util.MAGIC_NUMBER[:2]

CellType = types.CellType


# ---- code objects on the wire -------------------------------------------------------------
# Code objects travel as marshal bytes (without co_filename, which goes through the
# payload's string table) compressed with raw deflate and this fixed preset dictionary,
# then a CRC-32 of the marshal bytes: CPython's marshal does not check what it loads, and
# a corrupted code object can crash the interpreter. The dictionary is data, the same on
# every Python version: it was made once (with Python 3.11) as the identifiers in
# _ZDICT_WORDS followed by marshal.dumps of the code objects of _ZDICT_SOURCE (compiled
# with filename ""): C.__init__, C.__repr__, the lambda, g. Changing it needs a new
# CODE_ENCODING, which the reader checks once per payload.
CODE_ENCODING = 1
_ZDICT_WORDS = (b"<locals><lambda>__init__self__class__superkwargsargsvalueisinstancelenrangeNonereturnresult"
                b"itemsappendnamekeydataobjclsformat")
_ZDICT_SOURCE = '''
def outer():
    def g(self, x, y=None, *args, **kwargs):
        "doc"
        if isinstance(x, int):
            return len(args)
        for item in self.items:
            result = item.value
        return super().g(x, y)
    class C:
        def __init__(self, name, value):
            self.name = name
            self.value = value
        def __repr__(self):
            return f"{type(self).__name__}({self.name!r})"
    return g, C, lambda x: x + 1
'''
CODE_ZDICT = base64.b64decode(
    "PGxvY2Fscz48bGFtYmRhPl9faW5pdF9fc2VsZl9fY2xhc3NfX3N1cGVya3dhcmdzYXJnc3ZhbHVlaXNpbnN0YW5jZWxlbnJh"
    "bmdlTm9uZXJldHVybnJlc3VsdGl0ZW1zYXBwZW5kbmFtZWtleWRhdGFvYmpjbHNmb3JtYXTjAwAAAAAAAAAAAAAAAgAAABMA"
    "AADzIgAAAJcAfAF8AF8AAAAAAAAAAAB8AnwAXwEAAAAAAAAAAGQAUwCpAU4pAtoEbmFtZdoFdmFsdWUpA9oEc2VsZnIDAAAA"
    "cgQAAABzAwAAACAgINoA2ghfX2luaXRfX/oZb3V0ZXIuPGxvY2Fscz4uQy5fX2luaXRfXwsAAABzFAAAAIAA2BgciESMSdgZ"
    "HohEjEqISohK8wAAAADjAQAAAAAAAAAAAAAABAAAABMAAADzQAAAAJcAdAEAAAAAAAAAAAAAfACmAQAAqwEAAAAAAAAAAGoB"
    "AAAAAAAAAACbAGQBfABqAgAAAAAAAAAAmwJkAp0EUwApA076ASj6ASkpA9oEdHlwZdoIX19uYW1lX1/aBG5hbWUpAdoEc2Vs"
    "ZnMBAAAAINoA2ghfX3JlcHJfX/oZb3V0ZXIuPGxvY2Fscz4uQy5fX3JlcHJfXw4AAABzJAAAAIAA3RYamDSRapRq1BYp0BM6"
    "0BM6qESsSdATOtATOtATOtAMOvMAAAAA4wEAAAAAAAAAAAAAAAIAAAATAAAA8wwAAACXAHwAZAF6AAAAUwApAk7pAQAAAKkA"
    "KQHaAXhzAQAAACDaAPoIPGxhbWJkYT76F291dGVyLjxsb2NhbHM+LjxsYW1iZGE+EAAAAHMKAAAAgACYMZhxmTWAAPMAAAAA"
    "4wMAAAAAAAAAAAAAAAQAAAAfAAAA87AAAACXAHQBAAAAAAAAAAAAAHwBdAIAAAAAAAAAAAAApgIAAKsCAAAAAAAAAAByD3QF"
    "AAAAAAAAAAAAAHwDpgEAAKsBAAAAAAAAAABTAHwAagMAAAAAAAAAAEQAXQl9BXwFagQAAAAAAAAAAH0GjAp0CwAAAAAAAAAA"
    "AACmAAAAqwAAAAAAAAAAAKAGAAAAAAAAAAAAAAAAAAAAAAAAAAB8AXwCpgIAAKsCAAAAAAAAAABTACkB2gNkb2MpB9oKaXNp"
    "bnN0YW5jZdoDaW502gNsZW7aBWl0ZW1z2gV2YWx1ZdoFc3VwZXLaAWcpB9oEc2VsZtoBeNoBedoEYXJnc9oGa3dhcmdz2gRp"
    "dGVt2gZyZXN1bHRzBwAAACAgICAgICDaAHIJAAAA+hBvdXRlci48bG9jYWxzPi5nAwAAAHNQAAAAgADlCxWQYZ0T0Qsd1Asd"
    "8AABCR3dExaQdJE5lDnQDBzYFBiUSvAAAQkg8AABCSCIRNgVGZRaiEaIRt0PFIl3jHePeYp5mBGYQYl/jH/QCB7zAAAAAA=="
)

# Opcodes whose argument is a global name. LOAD_NAME (and 3.12's
# LOAD_FROM_DICT_OR_GLOBALS) appear in class bodies, where a name that is not a local
# of the body falls back to the globals.
_GLOBAL_OPNAMES = ("LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_NAME",
                   "LOAD_FROM_DICT_OR_GLOBALS")
GLOBAL_OPS = frozenset(dis.opmap[name] for name in _GLOBAL_OPNAMES if name in dis.opmap)


def code_global_names(code: types.CodeType) -> tuple:
    """Names of the globals that `code` and the code objects nested in it refer to,
    in first-use order."""
    out: dict = {}
    stack = [code]
    while stack:
        co = stack.pop()
        names = co.co_names
        if names:
            for instr in dis.get_instructions(co):
                if instr.opcode in GLOBAL_OPS:
                    out[instr.argval] = None
        for const in co.co_consts:
            if isinstance(const, types.CodeType):
                stack.append(const)
    return tuple(out)


def code_all_names(code: types.CodeType) -> frozenset:
    """Every name (globals and attributes) the code and its nested code use."""
    out = set()
    stack = [code]
    while stack:
        co = stack.pop()
        out.update(co.co_names)
        for const in co.co_consts:
            if isinstance(const, types.CodeType):
                stack.append(const)
    return frozenset(out)


if PY_VERSION >= (3, 11):
    def default_qualname(code: types.CodeType) -> str:
        """__qualname__ of `types.FunctionType(code, globals)`."""
        return code.co_qualname
else:
    def default_qualname(code: types.CodeType) -> str:
        return code.co_name


def default_doc(code: types.CodeType):
    """__doc__ of `types.FunctionType(code, globals)` (3.9 to 3.13: the first constant
    when it is a string)."""
    consts = code.co_consts
    if consts and type(consts[0]) is str:
        return consts[0]
    return None


def _check_default_doc() -> bool:
    def documented():
        "doc"

    fresh = types.FunctionType(documented.__code__, {})
    fresh_lambda = types.FunctionType((lambda: "s").__code__, {})
    return (fresh.__doc__ == default_doc(documented.__code__)
            and fresh_lambda.__doc__ == default_doc(fresh_lambda.__code__))


# if a future Python derives __doc__ differently, always send it
DEFAULT_DOC_RULE_HOLDS = _check_default_doc()

# PEP 695 (3.12): generic functions and classes carry __type_params__
HAS_TYPE_PARAMS = PY_VERSION >= (3, 12)


def function_type_params(func) -> tuple:
    return getattr(func, "__type_params__", ()) if HAS_TYPE_PARAMS else ()


# ---- abc --------------------------------------------------------------------------------
def abc_registry(cls) -> list:
    """Classes registered as virtual subclasses of the ABC `cls` (cls.register(...))."""
    get_dump = getattr(abc, "_get_dump", None)
    if get_dump is not None:
        try:
            registry = get_dump(cls)[0]
        except TypeError:
            registry = ()
        out = []
        for ref in registry:
            sub = ref()
            if sub is not None:
                out.append(sub)
        return out
    registry = getattr(cls, "_abc_registry", None)   # the pure-Python _py_abc
    return list(registry) if registry is not None else []


# names an ABC keeps its caches and registry under (rebuilt by ABCMeta on the receiver)
ABC_INTERNAL_NAMES = frozenset(("_abc_impl", "_abc_registry", "_abc_cache", "_abc_negative_cache",
                                "_abc_negative_cache_version"))


# ---- enum -------------------------------------------------------------------------------
def _enum_internals():
    class _ProbeEnum(enum.Enum):
        A = 1

    class _ProbeFlag(enum.Flag):
        A = 1

    names = set(_ProbeEnum.__dict__) | set(_ProbeFlag.__dict__)
    # what the metaclass creates itself; __doc__, __module__ and the 3.13 bookkeeping
    # (__firstlineno__, __static_attributes__) are ordinary class attributes
    keep = {"A", "__doc__", "__module__", "__qualname__", "__firstlineno__", "__static_attributes__",
            "_generate_next_value_", "_missing_"}
    member_names = set(_ProbeEnum.A.__dict__)
    return frozenset(names - keep), frozenset(member_names)


# class-dict names an enum metaclass creates; per-member attributes it sets on members
ENUM_CLASS_INTERNALS, ENUM_MEMBER_INTERNALS = _enum_internals()
# Flag operators the metaclass copies into every Flag subclass (3.11+)
FLAG_OPERATORS = {name: getattr(enum.Flag, name) for name in
                  ("__or__", "__and__", "__xor__", "__ror__", "__rand__", "__rxor__", "__invert__")
                  if hasattr(enum.Flag, name)}


def enum_metaclass_kwargs(cls) -> dict:
    """Keyword arguments of the enum metaclass that the class was created with (3.11+:
    a Flag's boundary)."""
    if PY_VERSION >= (3, 11) and issubclass(cls, enum.Flag):
        boundary = getattr(cls, "_boundary_", None)
        if boundary is not None:
            return {"boundary": boundary}
    return {}


# ---- dataclasses ------------------------------------------------------------------------
# module-level sentinels that generated methods and Field objects compare by identity
DATACLASS_SENTINELS = {name: getattr(dataclasses, name) for name in
                       ("MISSING", "_HAS_DEFAULT_FACTORY", "_FIELD", "_FIELD_CLASSVAR", "_FIELD_INITVAR",
                        "KW_ONLY")
                       if hasattr(dataclasses, name)}


class _NoKwOnlyType:
    """Stands for dataclasses' KW_ONLY type on 3.9, so the types' ids stay aligned."""


# their classes, in a fixed order (they become internal type ids)
DATACLASS_SENTINEL_TYPES = (
    type(dataclasses.MISSING),
    type(dataclasses._HAS_DEFAULT_FACTORY),
    type(dataclasses._FIELD),
    type(dataclasses.KW_ONLY) if hasattr(dataclasses, "KW_ONLY") else _NoKwOnlyType,
)


# ---- typing.TypedDict ----------------------------------------------------------------------
def is_typeddict_metaclass(meta) -> bool:
    return meta is getattr(typing, "_TypedDictMeta", None)


# ---- typing.TypeVar ---------------------------------------------------------------------
def typevar_state(tv) -> tuple:
    """(name, constraints, bound, flags, default_or_None, has_default) of a TypeVar."""
    flags = (1 if tv.__covariant__ else 0) | (2 if tv.__contravariant__ else 0)
    if getattr(tv, "__infer_variance__", False):
        flags |= 4
    has_default = PY_VERSION >= (3, 13) and tv.has_default()
    default = tv.__default__ if has_default else None
    return tv.__name__, tuple(tv.__constraints__), tv.__bound__, flags, default, has_default


def make_typevar(name, constraints, bound, flags, default, has_default):
    kwargs = {"bound": bound, "covariant": bool(flags & 1), "contravariant": bool(flags & 2)}
    if flags & 4:
        kwargs["infer_variance"] = True
    if has_default:
        kwargs["default"] = default
    return typing.TypeVar(name, *constraints, **kwargs)
