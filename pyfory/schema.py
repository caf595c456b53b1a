"""Schema metadata for dataclasses, as pyfory's guide writes it.

``pyfory.field(id=..., nullable=..., ref=..., ignore=..., dynamic=..., default=...,
default_factory=...)`` on dataclass fields, ``pyfory.dataclass``, and the annotations
``pyfory.Int8 ... Int64``, ``UInt8 ... UInt64``, ``Float32``, ``Float64``,
``FixedInt32/64``, ``FixedUInt32/64``, ``TaggedInt64``, ``TaggedUInt64``, the
``*Array`` annotations and ``pyfory.Ref[T]``.

A dataclass that uses any of them is written by ``SchemaSerializer`` instead of the
attribute-layout serializer of plain dataclasses (whose hot path is untouched): once per
payload its schema (each field's id, or its name when it has none, and the encoding of
its value), then per instance the field values in that encoding:

=====================  ========================================================
annotation             encoding
=====================  ========================================================
Int8, UInt8            1 byte (range-checked)
Int16, UInt16          2 bytes
Int32, Int64           zigzag varint (Int32 range-checked)
UInt32, UInt64         varint
FixedInt32/64          4 / 8 bytes; FixedUInt32/64 the same, unsigned
TaggedInt64/UInt64     4 bytes (value << 1) when it fits in 31 bits, else 0x01 + 8 bytes
Float32 / Float64      4 / 8 bytes IEEE 754 (Float32 rounds to binary32)
Int32Array, ...        varuint count + packed fixed-width items (list, array.array or
                       1-d numpy array; read back as the same kind)
List/Set/Dict/Tuple    of the above: the items in that encoding
anything else          as any value (type information included)
=====================  ========================================================

A nullable field (``nullable=True``, ``Optional[...]`` or ``Fory(field_nullable=True)``)
with a fixed encoding gets a presence byte; None in a non-nullable one is a
SerializationError. ``ignore=True`` fields are not written (the reader gives them their
default). The reader matches fields by id, else by name, and reads each value in the
*writer's* encoding, so a renamed field with the same id, added fields (their default)
and removed ones (skipped) all load. ``ref`` and ``dynamic`` are accepted: references
follow ``Fory(ref=...)`` and type information is always written for other values, as
the guide's native-mode defaults have it.
"""

from __future__ import annotations

import array
import ast
import builtins
import dataclasses
import re
import sys
import types
import typing
from typing import Any, Dict, List, Optional, Tuple

from pyfory._buffer import Buffer
from pyfory._core import Serializer
from pyfory.error import MalformedDataError, SchemaMismatchError, SerializationError

FIELD_KEY = "pyfory"


class FieldMeta:
    """What ``pyfory.field()`` records in ``dataclasses.Field.metadata[FIELD_KEY]``."""

    __slots__ = ("id", "nullable", "ref", "ignore", "dynamic")

    def __init__(self, id, nullable, ref, ignore, dynamic):
        self.id, self.nullable, self.ref, self.ignore, self.dynamic = id, nullable, ref, ignore, dynamic

    def __repr__(self):
        return (f"FieldMeta(id={self.id}, nullable={self.nullable}, ref={self.ref}, "
                f"ignore={self.ignore}, dynamic={self.dynamic})")


def field(*, id: Optional[int] = None, nullable: bool = False, ref: bool = False,
          ignore: bool = False, dynamic: Optional[bool] = None, default=dataclasses.MISSING,
          default_factory=dataclasses.MISSING, **kwargs) -> Any:
    """A dataclass field with pyfory's metadata (see the module docstring); the other
    keyword arguments go to ``dataclasses.field``."""
    if id is not None and (isinstance(id, bool) or not isinstance(id, int) or id < 0):
        raise ValueError(f"field id must be an int >= 0, not {id!r}")
    metadata = dict(kwargs.pop("metadata", None) or {})
    metadata[FIELD_KEY] = FieldMeta(id, bool(nullable), bool(ref), bool(ignore), dynamic)
    if id is not None:
        metadata.setdefault("id", id)
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata=metadata, **kwargs)


def dataclass(cls=None, **kwargs):
    """``dataclasses.dataclass`` (as ``@pyfory.dataclass`` or ``@pyfory.dataclass(...)``)."""
    if cls is None:
        return lambda c: dataclasses.dataclass(c, **kwargs)
    return dataclasses.dataclass(cls, **kwargs)


# ---- annotations ----------------------------------------------------------------------
class Encoding:
    """A marker inside ``typing.Annotated``: the wire encoding of a field's value."""

    __slots__ = ("code",)

    def __init__(self, code: str):
        self.code = code

    def __repr__(self):
        return f"pyfory.Encoding({self.code!r})"


_REF = Encoding("ref")


class Ref:
    """``pyfory.Ref[T]``: a field of type T whose value may be shared (references
    follow ``Fory(ref=True)``)."""

    def __class_getitem__(cls, item):
        return typing.Annotated[item, _REF]


_SCALAR_TYPES = {
    "i8": int, "i16": int, "i32": int, "i64": int, "u8": int, "u16": int, "u32": int,
    "u64": int, "fi32": int, "fi64": int, "fu32": int, "fu64": int, "ti64": int,
    "tu64": int, "f32": float, "f64": float,
}
# packed arrays: item code -> (array.array typecode, numpy dtype, item size)
_ARRAY_ITEMS = {
    "i8": ("b", "<i1"), "u8": ("B", "<u1"), "i16": ("h", "<i2"), "u16": ("H", "<u2"),
    "i32": ("i", "<i4"), "u32": ("I", "<u4"), "i64": ("q", "<i8"), "u64": ("Q", "<u8"),
    "f32": ("f", "<f4"), "f64": ("d", "<f8"),
}

_NAMES = {
    "Int8": "i8", "Int16": "i16", "Int32": "i32", "Int64": "i64",
    "UInt8": "u8", "UInt16": "u16", "UInt32": "u32", "UInt64": "u64",
    "FixedInt32": "fi32", "FixedInt64": "fi64", "FixedUInt32": "fu32", "FixedUInt64": "fu64",
    "TaggedInt64": "ti64", "TaggedUInt64": "tu64", "Float32": "f32", "Float64": "f64",
}
ANNOTATIONS: Dict[str, Any] = {}
for _name, _code in _NAMES.items():
    ANNOTATIONS[_name] = typing.Annotated[_SCALAR_TYPES[_code], Encoding(_code)]
    if _code in _ARRAY_ITEMS:
        ANNOTATIONS[_name + "Array"] = typing.Annotated[list, Encoding("a" + _code)]
# the lower-case names of pyfory's older releases (int32, fixed_uint64, int32_array, ...)
for _name, _value in list(ANNOTATIONS.items()):
    ANNOTATIONS[re.sub(r"(?<!^)(?=[A-Z])", "_", _name).lower().replace("u_int", "uint")] = _value


# ---- descriptors: the encoding of one value, as written in the schema ---------------------
# desc := ["?"] body;  body := scalar | "a" scalar | ("L" | "S" | "F" | "T") "(" desc ")"
#                                     | "D(" desc "," desc ")" | "any"
_CONTAINERS = {list: "L", set: "S", frozenset: "F", tuple: "T", dict: "D"}
_UNIONS = {typing.Union, getattr(types, "UnionType", typing.Union)}   # Optional[X], X | None
_MAX_DESC_DEPTH = 8


def describe(hint, nullable: bool) -> str:
    """The descriptor of a field annotation (``any`` when nothing is declared)."""
    body, optional = _describe(hint, 0)
    return ("?" if (nullable or optional) and body != "any" else "") + body


def _describe(hint, depth) -> Tuple[str, bool]:
    if depth > _MAX_DESC_DEPTH:
        return "any", False
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        for extra in hint.__metadata__:
            if isinstance(extra, Encoding) and extra is not _REF:
                return extra.code, False
        return _describe(hint.__origin__, depth + 1)
    if origin in _UNIONS:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return _describe(args[0], depth + 1)[0], True
        return "any", False
    kind = _CONTAINERS.get(origin)
    args = typing.get_args(hint)
    if kind is None or not args:
        return "any", False
    if kind == "D":
        if len(args) != 2:
            return "any", False
        key, value = describe(args[0], False), describe(args[1], False)
        return ("any", False) if key == value == "any" else (f"D({key},{value})", False)
    if kind == "T" and not (len(args) == 2 and args[1] is Ellipsis):
        return "any", False
    item = describe(args[0], False)
    return ("any", False) if item == "any" else (f"{kind}({item})", False)


class _Parser:
    """Reads a descriptor that came in a payload (bounded, strict grammar)."""

    def __init__(self, text: str):
        self.text, self.pos = text, 0

    def parse(self) -> str:
        out = self.desc(0)
        if self.pos != len(self.text):
            raise MalformedDataError(f"bad field encoding {self.text!r}")
        return out

    def desc(self, depth) -> str:
        if depth > _MAX_DESC_DEPTH:
            raise MalformedDataError(f"field encoding {self.text!r} nests too deeply")
        start = self.pos
        if self.text.startswith("?", self.pos):
            self.pos += 1
        if self.text.startswith("any", self.pos):
            self.pos += 3
        elif self.text[self.pos:self.pos + 2] == "D(":
            self.pos += 2
            self.desc(depth + 1)
            self.expect(",")
            self.desc(depth + 1)
            self.expect(")")
        elif self.text[self.pos:self.pos + 1] in ("L", "S", "F", "T"):
            self.pos += 1
            self.expect("(")
            self.desc(depth + 1)
            self.expect(")")
        else:
            if self.text.startswith("a", self.pos):
                self.pos += 1
                table = _ARRAY_ITEMS
            else:
                table = _SCALAR_TYPES
            for code in sorted(table, key=len, reverse=True):
                if self.text.startswith(code, self.pos):
                    self.pos += len(code)
                    break
            else:
                raise MalformedDataError(f"unknown field encoding {self.text!r}")
        return self.text[start:self.pos]

    def expect(self, char):
        if not self.text.startswith(char, self.pos):
            raise MalformedDataError(f"bad field encoding {self.text!r}")
        self.pos += 1


# ---- codecs: (write(ctx, value), read(ctx)) for a descriptor ----------------------------------
def _fits(lo, hi, write):
    def checked(ctx, v):
        if not lo <= v <= hi:
            raise OverflowError(f"{v} is outside {lo}..{hi}")
        write(ctx, v)
    return checked


def _write_tagged_signed(ctx, v):
    if -(1 << 30) <= v < (1 << 30):
        ctx.write_int32(v << 1)
    else:
        ctx.write_uint8(1)
        ctx.write_int64(v)


def _write_tagged_unsigned(ctx, v):
    if 0 <= v < (1 << 31):
        ctx.write_uint32(v << 1)
    else:
        ctx.write_uint8(1)
        ctx.write_uint64(v)


def _read_tagged(signed):
    def read(ctx):
        first = ctx.read_uint8()
        if first & 1:
            return ctx.read_int64() if signed else ctx.read_uint64()
        small = first | (ctx.read_uint8() << 8) | (ctx.read_uint16() << 16)
        if signed and small >= 1 << 31:
            small -= 1 << 32
        return small >> 1
    return read


_I64 = (-(1 << 63), (1 << 63) - 1)
# the Buffer methods of each fixed encoding (unbound: called as method(ctx, value))
_BUFFER_METHODS = {
    "i8": "int8", "i16": "int16", "i32": "varint32", "i64": "varint64", "u8": "uint8",
    "u16": "uint16", "u32": "varuint32", "u64": "varuint64", "fi32": "int32", "fi64": "int64",
    "fu32": "uint32", "fu64": "uint64", "f32": "float32", "f64": "float64",
}
_SCALAR_CODECS = {code: (getattr(Buffer, "write_" + m), getattr(Buffer, "read_" + m))
                  for code, m in _BUFFER_METHODS.items()}
_SCALAR_CODECS["ti64"] = (_fits(*_I64, _write_tagged_signed), _read_tagged(True))
_SCALAR_CODECS["tu64"] = (_fits(0, (1 << 64) - 1, _write_tagged_unsigned), _read_tagged(False))
_ANY = (lambda c, v: c.write_value(v), lambda c: c.read_value())
_A_LIST, _A_ARRAY, _A_NUMPY = 0, 1, 2


def _array_codec(code):
    typecode, dtype = _ARRAY_ITEMS[code]
    itemsize = array.array(typecode).itemsize

    def write(ctx, v):
        kind = _A_LIST
        if isinstance(v, array.array):
            kind, packed = _A_ARRAY, array.array(typecode, v)
        elif type(v).__module__ == "numpy" and type(v).__name__ == "ndarray":
            kind, packed = _A_NUMPY, array.array(typecode, v.astype(dtype, casting="same_kind").tolist())
        else:
            packed = array.array(typecode, v)
        if sys.byteorder != "little":   # pragma: no cover - the wire is little-endian
            packed.byteswap()
        ctx.write_uint8(kind)
        ctx.write_varuint64(len(packed))
        ctx.write_bytes(packed.tobytes())

    def read(ctx):
        kind = ctx.read_uint8()
        n = ctx.read_varuint64()
        if kind > _A_NUMPY or n * itemsize > len(ctx) - ctx.reader_index:
            raise MalformedDataError(f"bad packed array (kind {kind}, {n} items)")
        packed = array.array(typecode)
        packed.frombytes(ctx.read_bytes(n * itemsize))
        if sys.byteorder != "little":   # pragma: no cover
            packed.byteswap()
        if kind == _A_ARRAY:
            return packed
        if kind == _A_NUMPY:
            import numpy
            return numpy.array(packed, dtype=dtype)
        return packed.tolist()

    return write, read


def _container_codec(kind, item):
    iw, ir = item
    make = {"L": list, "S": set, "F": frozenset, "T": tuple}[kind]

    def write(ctx, v):
        ctx.write_varuint64(len(v))
        for x in v:
            iw(ctx, x)

    def read(ctx):
        n = ctx.read_varuint64()
        if n > len(ctx) - ctx.reader_index:      # each item takes a byte at least
            raise MalformedDataError(f"collection of {n} items in {len(ctx) - ctx.reader_index} bytes")
        ctx.count_container(n, False)
        items = [ir(ctx) for _ in range(n)]
        if kind in ("S", "F"):
            guard = ctx.key_guard()
            for x in items:
                guard.check(x)
        return items if make is list else make(items)

    return write, read


def _dict_codec(key, value):
    kw, kr = key
    vw, vr = value

    def write(ctx, v):
        ctx.write_varuint64(len(v))
        for k, x in v.items():
            kw(ctx, k)
            vw(ctx, x)

    def read(ctx):
        n = ctx.read_varuint64()
        if n > len(ctx) - ctx.reader_index:
            raise MalformedDataError(f"dict of {n} items in {len(ctx) - ctx.reader_index} bytes")
        ctx.count_container(n, True)
        out = {}
        guard = ctx.key_guard()
        for _ in range(n):
            k = kr(ctx)
            guard.check(k)
            out[k] = vr(ctx)
        return out

    return write, read


def _nullable(codec):
    w, r = codec

    def write(ctx, v):
        if v is None:
            ctx.write_uint8(0)
        else:
            ctx.write_uint8(1)
            w(ctx, v)

    def read(ctx):
        flag = ctx.read_uint8()
        if flag > 1:
            raise MalformedDataError(f"bad presence flag {flag}")
        return r(ctx) if flag else None

    return write, read


def _split_dict_args(inner: str) -> Tuple[str, str]:
    depth = 0
    for i, ch in enumerate(inner):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            return inner[:i], inner[i + 1:]
    raise MalformedDataError(f"bad dict encoding {inner!r}")


def codec_for(desc: str):
    """(write, read) for a descriptor that is already well formed."""
    if desc.startswith("?"):
        return _nullable(codec_for(desc[1:]))
    if desc == "any":
        return _ANY
    if desc in _SCALAR_CODECS:
        return _SCALAR_CODECS[desc]
    if desc.startswith("D("):
        key, value = _split_dict_args(desc[2:-1])
        return _dict_codec(codec_for(key), codec_for(value))
    if desc[0] in "LSFT" and desc[1:2] == "(":
        return _container_codec(desc[0], codec_for(desc[2:-1]))
    return _array_codec(desc[1:])


# ---- which dataclasses have a schema -------------------------------------------------------
def _hints(cls) -> dict:
    """The field annotations of cls, without evaluating code: a string annotation (``from
    __future__ import annotations``) is read by _safe_hint, never eval'd, because a class
    rebuilt by value on the reading side brings its annotations from the payload."""
    hints = {}
    for klass in reversed(cls.__mro__):
        module = sys.modules.get(getattr(klass, "__module__", None) or "")
        namespace = getattr(module, "__dict__", {})
        for name, hint in (klass.__dict__.get("__annotations__") or {}).items():
            if isinstance(hint, str):
                try:
                    hint = _safe_hint(ast.parse(hint, mode="eval").body, namespace)
                except (SyntaxError, ValueError, RecursionError):
                    hint = None
            hints[name] = hint
    return hints


_GENERICS = (list, dict, set, frozenset, tuple, typing.List, typing.Dict, typing.Set,
             typing.FrozenSet, typing.Tuple, typing.Optional, typing.Union, Ref)
_SAFE_MODULES = ("pyfory", "typing")


def _safe_hint(node, namespace, depth=0):
    # names, module.attribute of pyfory/typing, subscripts of the known generics, None,
    # Ellipsis; anything else (a call, an attribute of another object) is no annotation
    if depth > _MAX_DESC_DEPTH:
        return None
    if isinstance(node, ast.Name):
        if node.id in namespace:
            return namespace[node.id]
        return getattr(builtins, node.id, None)
    if isinstance(node, ast.Attribute):
        base = _safe_hint(node.value, namespace, depth + 1)
        if isinstance(base, types.ModuleType) and base.__name__ in _SAFE_MODULES:
            return getattr(base, node.attr, None)
        return None
    if isinstance(node, ast.Constant) and (node.value is None or node.value is Ellipsis):
        return node.value
    if isinstance(node, ast.Subscript):
        base = _safe_hint(node.value, namespace, depth + 1)
        if not any(base is g for g in _GENERICS):
            return None
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        args = tuple(_safe_hint(item, namespace, depth + 1) for item in items)
        if any(a is None and not (isinstance(i, ast.Constant) and i.value is None)
               for a, i in zip(args, items)):
            args = tuple(typing.Any if a is None else a for a in args)
        return base[args if len(args) > 1 else args[0]]
    return None


def declares_schema(cls) -> bool:
    """Whether the dataclass cls uses pyfory.field() or one of the encoding annotations."""
    fields = dataclasses.fields(cls)
    if any(FIELD_KEY in f.metadata for f in fields):
        return True
    hints = _hints(cls)
    return any(describe(hints.get(f.name), False) != "any" for f in fields)


class _LocalField:
    __slots__ = ("name", "key", "desc", "write", "read", "default", "has_default", "factory")


class _ReadPlan:
    __slots__ = ("steps", "missing")


class SchemaSerializer(Serializer):
    """Dataclasses with pyfory schema metadata (see the module docstring)."""

    def __init__(self, fory, cls):
        super().__init__(fory, cls)
        self.has_state = True
        nullable_default = bool(getattr(fory, "field_nullable", False))
        hints = _hints(cls)
        self.fields: List[_LocalField] = []
        self.ignored: List[_LocalField] = []
        by_key: Dict[Any, _LocalField] = {}
        for f in dataclasses.fields(cls):
            meta = f.metadata.get(FIELD_KEY) or FieldMeta(None, False, False, False, None)
            lf = _LocalField()
            lf.name = f.name
            lf.key = meta.id if meta.id is not None else f.name
            lf.desc = describe(hints.get(f.name), meta.nullable or nullable_default)
            lf.write, lf.read = codec_for(lf.desc)
            lf.has_default = f.default is not dataclasses.MISSING
            lf.default = f.default if lf.has_default else None
            lf.factory = None if f.default_factory is dataclasses.MISSING else f.default_factory
            if meta.ignore:
                self.ignored.append(lf)
                continue
            if lf.key in by_key:
                raise ValueError(f"{cls.__qualname__}: field id {lf.key!r} is used twice")
            by_key[lf.key] = lf
            self.fields.append(lf)
        self.by_key = by_key
        self.by_name = {lf.name: lf for lf in self.fields}
        self.writers = tuple((lf.name, lf.write) for lf in self.fields)
        self.plans: Dict[tuple, _ReadPlan] = {}

    # -- writing: the schema once per payload, then the values --
    def write(self, ctx, obj):
        pass

    def write_state(self, ctx, obj):
        if ctx.scratch is None:
            ctx.scratch = {}
        if self in ctx.scratch:
            ctx.write_varuint64(0)
        else:
            ctx.scratch[self] = True
            ctx.write_varuint64(1)
            ctx.write_varuint64(len(self.fields))
            for lf in self.fields:
                if isinstance(lf.key, int):
                    ctx.write_varuint64((lf.key << 1) | 1)
                else:
                    ctx.write_varuint64(0)
                    ctx.write_str_ref(lf.key)
                ctx.write_str_ref(lf.desc)
        for name, write in self.writers:
            try:
                write(ctx, getattr(obj, name))
            except (OverflowError, TypeError, ValueError, AttributeError) as e:
                raise SerializationError(
                    f"field {name!r} of a {type(obj).__qualname__} cannot be written as declared: {e}") from e

    # -- reading --
    def read(self, ctx):
        if ctx.policy is not None:
            ctx.policy.authorize_instantiation(self.cls, args=(), kwargs=None)
        return self.cls.__new__(self.cls)

    def read_schema(self, ctx) -> _ReadPlan:
        start = ctx.reader_index
        n = ctx.read_varuint64()
        if n > len(ctx) - ctx.reader_index:
            raise MalformedDataError(f"schema of {n} fields in {len(ctx) - ctx.reader_index} bytes")
        keys = []
        for _ in range(n):
            head = ctx.read_varuint64()
            if head & 1:
                key = head >> 1
            elif head == 0:
                key = ctx.read_str_ref()
            else:
                raise MalformedDataError(f"bad schema field header {head}")
            keys.append((key, ctx.read_str_ref()))
        ctx.check_type_meta(self, n, ctx.reader_index - start)
        schema = tuple(keys)
        plan = self.plans.get(schema)
        if plan is None:
            plan = self.make_plan(schema)
            if len(self.plans) < 64:     # a few versions of the class, not one per payload
                self.plans[schema] = plan
        return plan

    def make_plan(self, schema) -> _ReadPlan:
        plan = _ReadPlan()
        steps, seen = [], set()
        for key, desc in schema:
            local = self.by_key.get(key)
            if local is None and isinstance(key, str):
                local = self.by_name.get(key)
            if local is not None and local.name in seen:
                raise MalformedDataError(f"the schema names field {local.name!r} twice")
            reader = local.read if local is not None and local.desc == desc else codec_for(_Parser(desc).parse())[1]
            steps.append((None if local is None else local.name, reader))
            if local is not None:
                seen.add(local.name)
        plan.steps = tuple(steps)
        plan.missing = tuple(lf for lf in self.fields + self.ignored if lf.name not in seen)
        return plan

    def read_state(self, ctx, obj):
        flag = ctx.read_varuint64()
        if ctx.scratch is None:
            ctx.scratch = {}
        if flag == 1:
            plan = ctx.scratch[self] = self.read_schema(ctx)
        elif flag == 0 and self in ctx.scratch:
            plan = ctx.scratch[self]
        else:
            raise MalformedDataError(f"bad schema flag {flag} for {self.cls.__qualname__}")
        state = {}
        for name, read in plan.steps:
            value = read(ctx)
            if name is not None:
                state[name] = value
        for lf in plan.missing:
            if lf.has_default:
                state[lf.name] = lf.default
            elif lf.factory is not None:
                state[lf.name] = lf.factory()
            elif lf in self.ignored:
                continue
            else:
                raise SchemaMismatchError(
                    f"payload has no value for field {lf.name!r} of {self.cls.__qualname__}, "
                    "and the field has no default")
        if ctx.policy is not None:
            ctx.policy.intercept_setstate(obj, state)
        setattr_ = object.__setattr__
        for name, value in state.items():
            setattr_(obj, name, value)


__all__ = ["field", "dataclass", "Ref", "Encoding", "FieldMeta", "SchemaSerializer",
           "declares_schema", *ANNOTATIONS]
