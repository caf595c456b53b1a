"""Classes the receiver cannot import travel by value (local, __main__, dynamic, or
from a module registered with register_pickle_by_value).

A class by value is named once per payload by its type descriptor (kind D_BY_VALUE in
the core), in two phases:

Skeleton (written before the class is registered in the payload's type table; it must
not refer to the class itself):
  tracker id   16 bytes: a uuid the sender assigns to the class once (see `tracker_id`);
               a receiver that already has a class with this id uses it instead of
               building a new one, so a class sent in two payloads is the same class
               object both times (isinstance holds across messages)
  wire kind    uint8: the kind of serializer that writes the instances (the core checks
               the kind it reads before the class state is read, when the receiver cannot
               know yet which serializer the filled class will get; this copy lets the
               skeleton's TypeInfo pass that check, and is verified once the class is
               filled)
  flags        uint8, SK_* below
  name         str_ref; then the qualified name [SK_QUALNAME] when it differs, the module
               (str_ref if SK_MODULE, else a value: None for dynamic classes)
  metaclass    [SK_META] a class, when it is not `type`
  bases        [SK_BASES] varint n, n classes; without the flag the bases are (object,)
  namespace    [SK_SLOTS] __slots__, [SK_ORIG_BASES] __orig_bases__ (typing generics),
               [SK_META_KWARGS] keyword arguments of the metaclass (a Flag's boundary)
  members      [SK_ENUM] the members of an Enum: a list of (name, value)

State (after registration: methods may refer to the class, a class attribute may be an
instance of the class):
  items        varint n, n x (name str_ref, value): the class dict without what the
               metaclass rebuilds itself (__dict__/__weakref__/slot descriptors, ABC caches,
               enum internals and members) and without entries identical to the bases' ones
  flags        uint8: ST_ABC_REGISTRY the virtual subclasses registered with the ABC follow
               (a list), ST_MEMBER_ATTRS the attributes that enum members carry beyond
               their value follow (a list of (member name, dict))
"""

from __future__ import annotations

import abc
import enum
import sys
import threading
import types
import uuid
import weakref

from pyfory import _compat
from pyfory._core import Serializer, TypeInfo
from pyfory._reduce import lookup_global
from pyfory.error import DeserializationError, MalformedDataError, SchemaMismatchError

try:
    from pyfory._core import wire_kind_of
except ImportError:  # pragma: no cover - a core without serializer kinds in descriptors
    def wire_kind_of(serializer):
        return 0

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


def is_importable(cls) -> bool:
    """True when cls is what its module and qualified name name."""
    module = getattr(cls, "__module__", None)
    qualname = getattr(cls, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or module == "__main__":
        return False
    try:
        return lookup_global(module, qualname) is cls
    except Exception:
        return False


def travels_by_value(cls) -> bool:
    """True when the receiver could not import cls by its module and qualified name.
    A module that is not imported is dynamic (or gone): it is not imported to find out."""
    module = getattr(cls, "__module__", None)
    if type(module) is not str or module_is_by_value(module) or sys.modules.get(module) is None:
        return True
    return not is_importable(cls)


_HEAPTYPE = 1 << 9      # Py_TPFLAGS_HEAPTYPE


def rebuildable_by_value(cls) -> bool:
    """Whether ``by_value_typeinfo`` can rebuild cls on the reader: a heap type (a class
    statement, a metaclass call). A static type is defined in C (for instance
    ``numpy._ArrayFunctionDispatcher``): its slots are C functions that no class body
    recreates, so written by value it would load as a broken class."""
    return bool(getattr(cls, "__flags__", 0) & _HEAPTYPE)



# ---- class tracker ----------------------------------------------------------------------
# Keyed by id (with a weak reference to check it): a class whose metaclass defines __eq__
# without __hash__ is unhashable, yet travels by value like any other.
TRACKER_ID_SIZE = 16
_tracker_lock = threading.Lock()
_id_by_object: dict = {}            # id(obj) -> (weakref to obj, uid)
_object_by_id: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()


def _forget(key, ref):
    entry = _id_by_object.get(key)
    if entry is not None and entry[0] is ref:
        _id_by_object.pop(key, None)


def _remember(obj, uid) -> None:
    key = id(obj)
    _id_by_object[key] = (weakref.ref(obj, lambda ref, key=key: _forget(key, ref)), uid)


def _uid_of(obj):
    entry = _id_by_object.get(id(obj))
    if entry is not None and entry[0]() is obj:
        return entry[1]
    return None


def tracker_id(obj) -> bytes:
    """The id under which `obj` (a class or TypeVar sent by value) is known, assigned
    on first use; also makes a payload read in this process return `obj` itself."""
    uid = _uid_of(obj)
    if uid is None:
        with _tracker_lock:
            uid = _uid_of(obj)
            if uid is None:
                uid = uuid.uuid4().bytes
                _remember(obj, uid)
                _object_by_id[uid] = obj
    return uid


def tracked(uid: bytes):
    """The object known under `uid` in this process, or None."""
    return _object_by_id.get(uid)


def track(uid: bytes, obj):
    """Remember obj under uid (from a payload); returns the object that is kept."""
    with _tracker_lock:
        kept = _object_by_id.get(uid)
        if kept is None:
            _object_by_id[uid] = obj
            _remember(obj, uid)
            kept = obj
    return kept


def _cached_typeinfo(resolver, cls):
    try:
        return resolver._type_cache.get(cls)
    except TypeError:          # an unhashable class
        return None


def _cache_typeinfo(resolver, cls, info) -> None:
    try:
        resolver._type_cache.setdefault(cls, info)
    except TypeError:
        pass


# ---- writing ----------------------------------------------------------------------------
SK_META = 1
SK_BASES = 2
SK_QUALNAME = 4
SK_MODULE = 8
SK_SLOTS = 16
SK_ORIG_BASES = 32
SK_ENUM = 64
SK_META_KWARGS = 128

ST_ABC_REGISTRY = 1
ST_MEMBER_ATTRS = 2

_OBJECT_BASES = (object,)
# in the skeleton, or a cache the receiver rebuilds (copyreg's __slotnames__)
_NOT_IN_STATE = frozenset(("__module__", "__qualname__", "__slots__", "__orig_bases__", "__slotnames__"))
_MISSING = object()
_GetSetDescriptorType = types.GetSetDescriptorType
_MemberDescriptorType = types.MemberDescriptorType


def class_items(cls) -> list:
    """(name, value) of the class dict that the receiver must set on the skeleton."""
    d = cls.__dict__
    bases = cls.__bases__
    if len(bases) == 1:
        inherited = bases[0].__dict__
    else:
        inherited = {}
        for base in reversed(bases):
            inherited.update(base.__dict__)
    is_enum = isinstance(cls, enum.EnumMeta)
    is_abc = isinstance(cls, abc.ABCMeta)
    members = cls.__members__ if is_enum else None
    out = []
    for name, value in d.items():
        if name in _NOT_IN_STATE:
            continue
        t = type(value)
        if (t is _GetSetDescriptorType or t is _MemberDescriptorType) and (
                value.__objclass__ is cls or name == "__dict__" or name == "__weakref__"):
            # __dict__, __weakref__ and __slots__ members: made by type() (3.10's
            # dataclass(slots=True) leaves a stale __weakref__ of the original class)
            continue
        if value is None and name == "__doc__":
            continue            # type() sets it
        if is_abc and name in _compat.ABC_INTERNAL_NAMES:
            continue
        if is_enum:
            if name in members or name in _compat.ENUM_CLASS_INTERNALS:
                continue
            if _compat.FLAG_OPERATORS.get(name, _MISSING) is value:
                continue
        if inherited.get(name, _MISSING) is value:
            continue
        out.append((name, value))
    return out


def _member_attrs(cls) -> list:
    out = []
    internal = _compat.ENUM_MEMBER_INTERNALS
    for name, member in cls.__members__.items():
        if member._name_ != name:
            continue            # an alias
        extra = {k: v for k, v in getattr(member, "__dict__", {}).items() if k not in internal}
        if extra:
            out.append((name, extra))
    return out


class ClassByValue:
    """Writes and reads one class by value (the `by_value` handler of its TypeInfo)."""

    __slots__ = ("uid", "wire_kind")

    def __init__(self, uid: bytes, wire_kind: int = 0):
        self.uid = uid
        self.wire_kind = wire_kind

    def write_skeleton(self, ctx, cls) -> None:
        d = cls.__dict__
        meta = type(cls)
        bases = cls.__bases__
        name = cls.__name__
        qualname = cls.__qualname__
        module = cls.__module__
        is_enum = isinstance(cls, enum.EnumMeta)
        meta_kwargs = _compat.enum_metaclass_kwargs(cls) if is_enum else None
        flags = ((SK_META if meta is not type else 0) | (SK_BASES if bases != _OBJECT_BASES else 0)
                 | (SK_QUALNAME if qualname != name else 0) | (SK_MODULE if type(module) is str else 0)
                 | (SK_SLOTS if "__slots__" in d else 0) | (SK_ORIG_BASES if "__orig_bases__" in d else 0)
                 | (SK_ENUM if is_enum else 0) | (SK_META_KWARGS if meta_kwargs else 0))
        ctx.write_bytes(self.uid)
        ctx.write_uint8(self.wire_kind)
        ctx.write_uint8(flags)
        ctx.write_str_ref(name)
        if flags & SK_QUALNAME:
            ctx.write_str_ref(qualname)
        if flags & SK_MODULE:
            ctx.write_str_ref(module)
        else:
            ctx.write_value(module)
        if flags & SK_META:
            ctx.write_type(meta)
        if flags & SK_BASES:
            ctx.write_varuint64(len(bases))
            for base in bases:
                ctx.write_type(base)
        if flags & SK_SLOTS:
            ctx.write_value(d["__slots__"])
        if flags & SK_ORIG_BASES:
            ctx.write_value(d["__orig_bases__"])
        if flags & SK_META_KWARGS:
            ctx.write_value(meta_kwargs)
        if is_enum:
            ctx.write_value([(k, m._value_) for k, m in cls.__members__.items()])

    def write_state(self, ctx, cls) -> None:
        items = class_items(cls)
        ctx.write_varuint64(len(items))
        for name, value in items:
            ctx.write_str_ref(name)
            ctx.write_value(value)
        registry = _compat.abc_registry(cls) if isinstance(cls, abc.ABCMeta) else None
        attrs = _member_attrs(cls) if isinstance(cls, enum.EnumMeta) else None
        ctx.write_uint8((ST_ABC_REGISTRY if registry else 0) | (ST_MEMBER_ATTRS if attrs else 0))
        if registry:
            ctx.write_value(registry)
        if attrs:
            ctx.write_value(attrs)

    # -- reading: the skeleton is read by read_class_skeleton --
    def read_state(self, ctx, cls) -> None:
        scratch = ctx.scratch
        pending = scratch.pop(_PENDING_KEY, None) if scratch is not None else None
        if pending is None or pending[0] is not cls:
            raise MalformedDataError("class state without its skeleton")
        _, apply, info, resolver, sent_kind = pending
        n = ctx.read_varuint64()
        for _ in range(n):
            name = ctx.read_str_ref()
            value = ctx.read_value()
            if apply:
                setattr(cls, name, value)
        flags = ctx.read_uint8()
        if flags & ~(ST_ABC_REGISTRY | ST_MEMBER_ATTRS):
            raise MalformedDataError(f"bad class state flags {flags}")
        registry = ctx.read_value() if flags & ST_ABC_REGISTRY else None
        attrs = ctx.read_value() if flags & ST_MEMBER_ATTRS else None
        if apply:
            if registry:
                if not isinstance(cls, abc.ABCMeta):
                    raise MalformedDataError(f"{cls!r} is not an ABC but has registered subclasses")
                for sub in registry:
                    cls.register(sub)
            if attrs:
                for name, extra in attrs:
                    vars(cls.__members__[name]).update(extra)
        ser = info.serializer
        if type(ser) is _PendingSerializer:
            info.serializer = ser = ser.resolve()
            kind = wire_kind_of(ser)
            if kind != sent_kind:
                raise SchemaMismatchError(
                    f"class {cls.__qualname__} by value: the sender wrote its instances with "
                    f"serializer kind {sent_kind}, the rebuilt class gets kind {kind}")
            info.wire_kind = kind
            self.wire_kind = kind
        if apply:
            kept = track(self.uid, cls)
            if kept is not cls:
                raise MalformedDataError("class tracker id reused for another class")
        _cache_typeinfo(resolver, cls, info)
        # (the core calls policy.validate_class(cls, is_local=True) for every class by value)


def by_value_typeinfo(resolver, cls, serializer):
    """TypeInfo of a class written by value (see the module docstring)."""
    handler = ClassByValue(tracker_id(cls))
    info = TypeInfo(cls, serializer, D_BY_VALUE, module=cls.__module__, qualname=cls.__qualname__,
                    by_value=handler)
    handler.wire_kind = getattr(info, "wire_kind", 0)
    return info


# ---- reading ----------------------------------------------------------------------------
D_BY_VALUE = 4
# ctx.scratch: (cls, apply, info, resolver, wire kind) between the two phases
_PENDING_KEY = "pyfory.classes"


class _PendingSerializer(Serializer):
    """Serializer of a class by value while its state is read: an instance of the class
    met inside its own class dict (a singleton attribute) gets the serializer chosen from
    the class as filled so far."""

    def __init__(self, fory, cls):
        super().__init__(fory, cls)
        self.has_state = True
        self.real = None

    def resolve(self):
        if self.real is None:
            self.real = self.fory.resolver.default_serializer(self.cls)
        return self.real

    def read(self, ctx):
        real = self.resolve()
        if real is None:
            raise MalformedDataError(f"{self.cls!r} has no serializer for instances")
        return real.read(ctx)

    def read_state(self, ctx, obj):
        real = self.resolve()
        if real.has_state:
            real.read_state(ctx, obj)


def _make_class(meta, name, bases, namespace, meta_kwargs):
    if meta is type and not meta_kwargs:
        return type(name, bases, namespace)
    if _compat.is_typeddict_metaclass(meta):
        # a TypedDict's metaclass adds `dict` to the bases itself and refuses it given
        bases = tuple(b for b in bases if b is not dict)
        return meta(name, bases, namespace, **(meta_kwargs or {}))
    kwds = dict(meta_kwargs or ())
    kwds["metaclass"] = meta
    return types.new_class(name, bases, kwds, lambda ns: ns.update(namespace))


def _make_enum(meta, name, bases, namespace, members, meta_kwargs):
    kwds = dict(meta_kwargs or ())
    classdict = meta.__prepare__(name, bases, **kwds)
    for key, value in namespace.items():
        classdict[key] = value
    for key, value in members:
        classdict[key] = value
    return meta(name, bases, classdict, **kwds)


def _check_enum_members(cls, members) -> None:
    """Members are rebuilt from their values, without the class's own __new__ (which
    may refer to the class, and whose arguments are gone): refuse an enum whose members
    come out different, rather than returning wrong members."""
    for key, value in members:
        member = cls.__members__.get(key)
        if member is None or (member._value_ is not value and member._value_ != value):
            got = None if member is None else member._value_
            raise DeserializationError(
                f"enum {cls.__qualname__} cannot be rebuilt by value: member {key} has value "
                f"{got!r}, not {value!r} (an enum whose __new__ computes member values from "
                "other arguments must be importable on the receiver's side)")


def read_class_skeleton(resolver, ctx):
    """Read a class skeleton; returns the TypeInfo of a new class, or of the class this
    process already has under the same tracker id (then the state is read, not applied)."""
    uid = ctx.read_bytes(TRACKER_ID_SIZE)
    sent_kind = ctx.read_uint8()
    flags = ctx.read_uint8()
    name = ctx.read_str_ref()
    qualname = ctx.read_str_ref() if flags & SK_QUALNAME else name
    module = ctx.read_str_ref() if flags & SK_MODULE else ctx.read_value()
    meta = ctx.read_type() if flags & SK_META else type
    if flags & SK_BASES:
        n = ctx.read_varuint64()
        bases = tuple([ctx.read_type() for _ in range(n)])
    else:
        bases = _OBJECT_BASES
    slots = ctx.read_value() if flags & SK_SLOTS else None
    orig_bases = ctx.read_value() if flags & SK_ORIG_BASES else None
    meta_kwargs = ctx.read_value() if flags & SK_META_KWARGS else None
    members = ctx.read_value() if flags & SK_ENUM else None
    if not issubclass(meta, type):
        raise MalformedDataError(f"metaclass {meta!r} of class {name} is not a subclass of type")
    if meta_kwargs is not None and type(meta_kwargs) is not dict:
        raise MalformedDataError("bad metaclass keyword arguments")
    fory = resolver.fory
    cls = tracked(uid)
    if cls is not None and isinstance(cls, type):
        apply = False
        info = _cached_typeinfo(resolver, cls)
        if info is None or info.by_value is None:
            info = TypeInfo(cls, resolver.default_serializer(cls), D_BY_VALUE, module=cls.__module__,
                            qualname=cls.__qualname__, by_value=ClassByValue(uid))
            info.by_value.wire_kind = getattr(info, "wire_kind", 0)
    else:
        apply = True
        namespace = {"__module__": module, "__qualname__": qualname}
        if slots is not None:
            namespace["__slots__"] = slots
        if orig_bases is not None:
            namespace["__orig_bases__"] = orig_bases
        if members is not None:
            if not issubclass(meta, enum.EnumMeta):
                raise MalformedDataError(f"class {name} has enum members but no enum metaclass")
            cls = _make_enum(meta, name, bases, namespace, members, meta_kwargs)
            _check_enum_members(cls, members)
        else:
            cls = _make_class(meta, name, bases, namespace, meta_kwargs)
        info = TypeInfo(cls, _PendingSerializer(fory, cls), D_BY_VALUE, module=module, qualname=qualname,
                        by_value=ClassByValue(uid, sent_kind))
        if hasattr(info, "wire_kind"):
            info.wire_kind = sent_kind      # checked by the core before the state is read
    scratch = ctx.scratch
    if scratch is None:
        scratch = ctx.scratch = {}
    scratch[_PENDING_KEY] = (cls, apply, info, resolver, sent_kind)
    return info


__all__ = [
    "register_pickle_by_value",
    "unregister_pickle_by_value",
    "list_registry_pickle_by_value",
    "travels_by_value",
    "rebuildable_by_value",
    "by_value_typeinfo",
    "read_class_skeleton",
    "tracker_id",
]
