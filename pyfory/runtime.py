"""Serializers for objects of the running program that cloudpickle also carries: dict
views, weak collections, open files, descriptors by reference and abc's abstract
method wrappers. Every type here is refused in strict mode (resolver
`_strict_refused_types`): they are views of other objects, file handles or code.
"""

from __future__ import annotations

import abc
import collections
import io
import sys
import types
import weakref

from pyfory._core import Serializer
from pyfory.error import MalformedDataError, SerializationError


def _items_list(ctx, what: str, mapping: bool = True) -> list:
    """The list of items of a container to make: the budgets count the container and
    (a KeyGuard) the hashing and comparing of its keys."""
    items = ctx.read_value()
    if type(items) is not list:
        raise MalformedDataError(f"bad {what} items")
    ctx.count_container(len(items), mapping)
    return items


def _keys(ctx, what: str, mapping: bool = True) -> list:
    keys = _items_list(ctx, what, mapping)
    guard = ctx.key_guard()
    for key in keys:
        guard.check(key)
    return keys


def _pairs(ctx, what: str) -> list:
    pairs = _items_list(ctx, what)
    guard = ctx.key_guard()
    for pair in pairs:
        if type(pair) is not tuple or len(pair) != 2:
            raise MalformedDataError(f"bad {what} item")
        guard.check(pair[0])
    return pairs


# ---- dict views: a view of a new dict with the items the view showed ----------------
class DictViewSerializer(Serializer):
    """keys(), values() or items() of a dict or an OrderedDict: value list of what the
    view shows (keys, values, or (key, value) tuples)."""

    def __init__(self, fory, cls, mapping=dict, part="keys"):
        super().__init__(fory, cls)
        self.mapping = mapping
        self.part = part

    def write(self, ctx, view):
        ctx.write_value(list(view))

    def read(self, ctx):
        if self.part == "keys":
            return self.mapping.fromkeys(_keys(ctx, "dict view")).keys()
        if self.part == "values":
            return self.mapping(enumerate(_items_list(ctx, "dict view"))).values()
        return self.mapping(_pairs(ctx, "dict view")).items()


def _view_types() -> list:
    out = []
    for mapping in (dict, collections.OrderedDict):
        sample = mapping()
        for part in ("keys", "values", "items"):
            cls = type(getattr(sample, part)())
            out.append((cls, lambda f, c, m=mapping, p=part: DictViewSerializer(f, c, m, p)))
    return out


# ---- weak collections: rebuilt with the members that the same payload holds --------
class WeakCollectionSerializer(Serializer):
    """WeakSet / WeakKeyDictionary / WeakValueDictionary: nothing / state: value list
    of the live members (or (key, value) tuples). A member that nothing else in the
    loaded value refers to is gone once loads returns, as with pickle."""

    def __init__(self, fory, cls):
        super().__init__(fory, cls)
        self.has_state = True

    def write(self, ctx, obj):
        pass

    def read(self, ctx):
        return self.cls()

    def write_state(self, ctx, obj):
        ctx.write_value(list(obj) if isinstance(obj, weakref.WeakSet) else list(obj.items()))

    def read_state(self, ctx, obj):
        if isinstance(obj, weakref.WeakSet):
            obj.update(_keys(ctx, "WeakSet", mapping=False))
        else:
            obj.update(_pairs(ctx, self.cls.__name__))


# ---- open files ---------------------------------------------------------------------
_STD_STREAMS = ("stdin", "stdout", "stderr")
FILE_STD_STREAM = 0
FILE_TEXT = 1
FILE_BINARY = 2


class FileSerializer(Serializer):
    """An open file: sys.stdin/stdout/stderr by name (u8 0, str-ref name); any other
    readable file as its content and position (u8 1 text or 2 binary, value content,
    varint position in characters or bytes), read back as an io.StringIO / io.BytesIO,
    as cloudpickle does for text files."""

    def write(self, ctx, f):
        for name in _STD_STREAMS:
            if f is getattr(sys, name) or f is getattr(sys, f"__{name}__"):
                ctx.write_uint8(FILE_STD_STREAM)
                ctx.write_str_ref(name)
                return
        label = getattr(f, "name", "?")
        if f.closed:
            raise SerializationError(f"cannot serialize the closed file {label!r}")
        if not f.readable():
            raise SerializationError(
                f"cannot serialize the file {label!r}: it is not open for reading (mode "
                f"{getattr(f, 'mode', '?')!r}); a file travels as its content")
        here = f.tell()
        try:
            rest = f.read()                 # from the position: its offset in the content
            f.seek(0)
            content = f.read()
        except (OSError, ValueError) as e:
            raise SerializationError(f"cannot read the file {label!r} to serialize it: {e}") from e
        finally:
            f.seek(here)
        ctx.write_uint8(FILE_TEXT if isinstance(content, str) else FILE_BINARY)
        ctx.write_value(content)
        ctx.write_varuint64(len(content) - len(rest))

    def read(self, ctx):
        kind = ctx.read_uint8()
        if kind == FILE_STD_STREAM:
            name = ctx.read_str_ref()
            if name not in _STD_STREAMS:
                raise MalformedDataError(f"unknown standard stream {name!r}")
            return getattr(sys, name)
        content = ctx.read_value()
        position = ctx.read_varuint64()
        if kind == FILE_TEXT and type(content) is str:
            f = io.StringIO(content, newline="\n")
        elif kind == FILE_BINARY and type(content) is bytes:
            f = io.BytesIO(content)
        else:
            raise MalformedDataError(f"bad file kind {kind}")
        if position > len(content):
            raise MalformedDataError("file position past its content")
        f.seek(position)
        return f


def _file_types() -> list:
    return [(cls, FileSerializer) for cls in (io.TextIOWrapper, io.BufferedReader,
                                              io.BufferedRandom, io.FileIO)]


# ---- descriptors by reference ---------------------------------------------------------
class DescriptorSerializer(Serializer):
    """getset_descriptor / member_descriptor (`type.__dict__['__doc__']`): by reference,
    the class that owns it (a type) and its name; the reader takes it from that class's
    own __dict__."""

    def write(self, ctx, desc):
        ctx.write_type(desc.__objclass__)
        ctx.write_str_ref(desc.__name__)

    def read(self, ctx):
        owner = ctx.read_type()
        name = ctx.read_str_ref()
        desc = owner.__dict__.get(name)
        if type(desc) is not self.cls:
            raise MalformedDataError(f"{owner.__qualname__}.{name} is not a {self.cls.__name__}")
        return desc


def runtime_types() -> list:
    """(class, serializer factory) pairs; positions become internal type ids (append
    only), after functions.function_types()."""
    from pyfory.functions import ClassMethodSerializer, PropertySerializer, StaticMethodSerializer

    return [
        *_view_types(),
        (weakref.WeakSet, WeakCollectionSerializer),
        (weakref.WeakKeyDictionary, WeakCollectionSerializer),
        (weakref.WeakValueDictionary, WeakCollectionSerializer),
        *_file_types(),
        (types.GetSetDescriptorType, DescriptorSerializer),
        (types.MemberDescriptorType, DescriptorSerializer),
        (abc.abstractclassmethod, ClassMethodSerializer),
        (abc.abstractstaticmethod, StaticMethodSerializer),
        (abc.abstractproperty, PropertySerializer),
    ]


def strict_refused() -> set:
    return {cls for cls, _ in runtime_types()}
