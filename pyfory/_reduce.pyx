# cython: language_level=3
"""The pickle reduce protocol, as pickle implements it.

An object is reduced with ``copyreg.dispatch_table``, then ``__reduce_ex__(5)``, then
``__reduce__``. The result is a global name (a string) or a tuple
``(callable, args[, state[, listitems[, dictitems[, state_setter]]]])``.

On the wire the object is two-phase (see Serializer): ``write`` carries how to create
it, ``write_state`` what to apply after it was registered for back-references, so an
object whose state contains itself loads as pickle loads it.

Construction forms (first byte):
  0 GLOBAL  module, qualified name: the object is looked up, not created
  1 NEWOBJ  class, args tuple: ``cls.__new__(cls, *args)`` (copyreg.__newobj__)
  2 NEWOBJ_EX class, args tuple, kwargs dict (copyreg.__newobj_ex__)
  3 CALL    callable, args tuple
State flags (one byte): 1 state, 2 listitems, 4 dictitems, 8 state_setter,
followed by those values in that order: listitems as a list, dictitems as a list of
(key, value) tuples, then state_setter and state.
"""

from pyfory._core cimport Serializer, WriteContext, ReadContext, KeyGuard

import copyreg
import functools
import operator
import pickle
import sys

from pyfory import _extras
from pyfory.error import MalformedDataError, PolicyViolationError, SerializationError

cdef enum:
    F_GLOBAL = 0
    F_NEWOBJ = 1
    F_NEWOBJ_EX = 2
    F_CALL = 3
    S_STATE = 1
    S_LIST = 2
    S_DICT = 4
    S_SETTER = 8

cdef object _newobj = copyreg.__newobj__
cdef object _newobj_ex = copyreg.__newobj_ex__

_dispatch_table = copyreg.dispatch_table
_MISSING = object()


def reduce_object(obj, int proto=5):
    """What pickle would write for obj: a string or a 2..6-tuple."""
    cls = type(obj)
    try:
        reducer = _dispatch_table.get(cls)
    except TypeError:       # a class made unhashable by its metaclass cannot be a key
        reducer = None
    if reducer is not None:
        rv = reducer(obj)
    else:
        reduce_ex = getattr(obj, "__reduce_ex__", None)
        if reduce_ex is not None:
            rv = reduce_ex(proto)
        else:
            reduce = getattr(obj, "__reduce__", None)
            if reduce is None:
                raise SerializationError(f"cannot serialize {cls.__qualname__} object")
            rv = reduce()
    if isinstance(rv, str):
        return rv
    if not isinstance(rv, tuple):
        raise SerializationError(f"{cls.__qualname__}.__reduce__ must return a string or tuple, got {rv!r}")
    if not 2 <= len(rv) <= 6:
        raise SerializationError(f"tuple returned by {cls.__qualname__}.__reduce__ must have 2 to 6 elements")
    return rv


def lookup_global(str module, str qualname):
    """Import module and walk the dotted qualified name (no '<locals>')."""
    try:
        __import__(module)
    except ModuleNotFoundError as e:
        better = _extras.hinted(e, "this payload")
        if better is e:
            raise
        raise better from e
    obj = sys.modules[module]
    for part in qualname.split("."):
        if part == "<locals>":
            raise AttributeError(f"cannot look up local object {module}.{qualname}")
        obj = getattr(obj, part)
    return obj


cdef bint _names(obj, module, name):
    # whether module.name, imported, is obj (any failure to import: no)
    try:
        return lookup_global(module, name) is obj
    except Exception:
        return False


def global_name(obj, name=None):
    """(module, qualname) under which obj can be imported, or raise."""
    if name is None:
        name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if name is None:
        raise SerializationError(f"cannot name {obj!r}")
    module = getattr(obj, "__module__", None)
    if module is None:
        module = pickle.whichmodule(obj, name)
    if not _names(obj, module, name):
        module2 = pickle.whichmodule(obj, name)
        if not _names(obj, module2, name):
            # pyfory's guide writes a __reduce__ string as "module.name": taken when that
            # names obj itself (pickle's reading, a name in obj's module, comes first)
            parts = name.split(".")
            for i in range(len(parts) - 1, 0, -1):
                module2, name2 = ".".join(parts[:i]), ".".join(parts[i:])
                if _names(obj, module2, name2):
                    return module2, name2
            raise SerializationError(f"cannot serialize {obj!r}: it is not found as {module}.{name}")
        module = module2
    return module, name


cdef object _exception_setstate = BaseException.__setstate__


cdef int check_strict_names(obj, state, what) except -1:
    # strict mode: attribute state that is applied with setattr must name plain
    # attributes; a dunder (__class__, __dict__, ...) would let the payload reshape
    # the object beyond its class's data
    if state is None:
        return 0
    if type(state) is not dict:
        raise MalformedDataError(f"{what} of a {type(obj).__qualname__} is not a dict")
    for k in state:
        if type(k) is not str or (k.startswith("__") and k.endswith("__")):
            raise PolicyViolationError(
                f"strict mode refuses to set attribute {k!r} on a {type(obj).__qualname__}")
    return 0


def apply_state(obj, state, policy=None, bint strict=False):
    """pickle's BUILD: __setstate__, or (dict_state, slots_state) into the instance."""
    if policy is not None:
        policy.intercept_setstate(obj, state)
    setstate = getattr(obj, "__setstate__", _MISSING)
    if setstate is not _MISSING:
        if strict and getattr(type(obj), "__setstate__", None) is _exception_setstate:
            # BaseException.__setstate__ setattr()s every key (a registered class's
            # own __setstate__ is trusted with its state, as registration says)
            check_strict_names(obj, state, "state")
        setstate(state)         # __setstate__ = None fails here, as in pickle
        return
    slotstate = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slotstate = state
    if strict:
        check_strict_names(obj, slotstate, "slot state")
    if state:
        inst_dict = obj.__dict__
        intern = sys.intern
        for k, v in state.items():
            if type(k) is str:
                inst_dict[intern(k)] = v
            else:
                inst_dict[k] = v
    if slotstate:
        for k, v in slotstate.items():
            setattr(obj, k, v)


cdef class ReduceSerializer(Serializer):
    """Any object through its reduce protocol (see module docstring)."""

    # False for kinds of objects that name arbitrary callables (strict mode refuses them)
    cdef public bint strict_ok

    def __init__(self, fory, cls, strict_ok: bool = True):
        super().__init__(fory, cls)
        self.has_state = True
        self.strict_ok = strict_ok

    cdef int check_strict(self) except -1:
        if not self.strict_ok and self.fory.strict:
            raise PolicyViolationError(
                f"strict mode refuses {self.cls.__qualname__} objects (they name arbitrary "
                "callables); use Fory(strict=False) for trusted data")
        return 0

    cdef int check_strict_constructor(self, func) except -1:
        # A strict reader rebuilds an instance of this (allowed) class with the class
        # itself, or with another class registered on this side; never with a callable
        # the payload chose (a type object handed out by id, an operator.methodcaller,
        # a bound method, ...)
        if func is self.cls:
            return 0
        if isinstance(func, type) and self.fory.resolver.is_registered(func):
            return 0
        raise PolicyViolationError(
            f"strict mode rebuilds a {self.cls.__qualname__} only with its own class or a "
            f"registered one, not with {type(func).__qualname__} {func!r}")

    cpdef write(self, WriteContext ctx, obj):
        self.check_strict()
        rv = reduce_object(obj)
        if isinstance(rv, str):
            module, qualname = global_name(obj, rv)
            ctx.put_u8(F_GLOBAL)
            ctx.write_name(module)
            ctx.write_name(qualname)
            if ctx.scratch is not None:
                ctx.scratch.pop(self, None)
            return
        func, args = rv[0], rv[1]
        if not isinstance(args, tuple):
            raise SerializationError(f"args from {type(obj).__qualname__} reduce() must be a tuple")
        if not callable(func):
            raise SerializationError(f"first item of {type(obj).__qualname__} reduce() must be callable")
        if func is _newobj:
            if not args or not isinstance(args[0], type):
                raise SerializationError("__newobj__ arguments must start with a class")
            ctx.put_u8(F_NEWOBJ)
            ctx.write_class(args[0])
            ctx.write_any(args[1:])
        elif func is _newobj_ex:
            cls, nargs, kwargs = args
            ctx.put_u8(F_NEWOBJ_EX)
            ctx.write_class(cls)
            ctx.write_any(tuple(nargs))
            ctx.write_any(dict(kwargs))
        else:
            ctx.put_u8(F_CALL)
            ctx.write_any(func)
            ctx.write_any(args)
        # the rest is kept until write_state, which the core calls right after write
        # (once obj is registered), with nothing written in between; when obj was written
        # in full while its own arguments were (pickle's POP + GET case), write_state is
        # not called and the entry is simply replaced by the next object's
        rest = rv[2:]
        scratch = ctx.scratch
        if scratch is None:
            scratch = ctx.scratch = {}
        entry = None
        for x in rest:
            if x is not None:
                entry = (obj, rest)
                break
        scratch[self] = entry

    cpdef write_state(self, WriteContext ctx, obj):
        entry = ctx.scratch.pop(self, None) if ctx.scratch is not None else None
        if entry is None or entry[0] is not obj:
            ctx.put_u8(0)
            return
        state, listitems, dictitems, setter = (tuple(entry[1]) + (None, None, None, None))[:4]
        cdef int flags = ((S_STATE if state is not None else 0)
                          | (S_LIST if listitems is not None else 0)
                          | (S_DICT if dictitems is not None else 0)
                          | (S_SETTER if setter is not None else 0))
        ctx.put_u8(flags)
        if listitems is not None:
            ctx.write_any(list(listitems))
        if dictitems is not None:
            ctx.write_any([tuple(kv) for kv in dictitems])
        if setter is not None:
            ctx.write_any(setter)
        if state is not None:
            ctx.write_any(state)

    cpdef read(self, ReadContext ctx):
        self.check_strict()
        cdef int form = ctx.get_u8()
        policy = ctx.policy
        if form == F_GLOBAL:
            module = ctx.read_str_any()
            qualname = ctx.read_str_any()
            if self.fory.strict:
                raise PolicyViolationError(
                    f"strict mode refuses to import {module}.{qualname}")
            if policy is not None:
                policy.validate_module(module, is_local=False)
            return lookup_global(module, qualname)
        kwargs = None
        if form == F_NEWOBJ:
            cls = ctx.read_class()
            args = ctx.read_any()
        elif form == F_NEWOBJ_EX:
            cls = ctx.read_class()
            args = ctx.read_any()
            kwargs = ctx.read_any()
        elif form == F_CALL:
            func = ctx.read_any()
            args = ctx.read_any()
            if not isinstance(args, tuple):
                raise MalformedDataError("reduce arguments are not a tuple")
            if self.fory.strict:
                self.check_strict_constructor(func)
            elif not callable(func):
                raise MalformedDataError(f"reduce callable {func!r} is not callable")
            if policy is not None:
                return inspect_reduced(policy, policed_call(policy, func, args, None))
            return func(*args)
        else:
            raise MalformedDataError(f"unknown reduce form {form}")
        if not isinstance(cls, type) or not isinstance(args, tuple):
            raise MalformedDataError("bad __newobj__ arguments")
        if self.fory.strict:
            self.check_strict_constructor(cls)
        if policy is not None:
            policy.authorize_instantiation(cls, args=args, kwargs=kwargs)
        obj = cls.__new__(cls, *args, **kwargs) if kwargs else cls.__new__(cls, *args)
        return inspect_reduced(policy, obj)

    cpdef read_state(self, ReadContext ctx, obj):
        cdef int flags = ctx.get_u8()
        if flags & ~15:
            raise MalformedDataError(f"bad reduce state flags {flags}")
        if flags & S_LIST:
            items = ctx.read_any()
            extend = getattr(obj, "extend", None)
            if extend is not None:
                extend(items)
            else:
                for item in items:
                    obj.append(item)
        if flags & S_DICT:
            guard = KeyGuard(ctx)
            for k, v in ctx.read_any():
                guard.check(k)
                obj[k] = v
        if flags & S_SETTER and self.fory.strict:
            raise PolicyViolationError(
                f"strict mode refuses a state_setter for a {self.cls.__qualname__}: it is a "
                "callable chosen by the payload")
        setter = ctx.read_any() if flags & S_SETTER else None
        if flags & S_STATE:
            state = ctx.read_any()
            if setter is not None:
                if ctx.policy is not None:
                    policed_call(ctx.policy, setter, (obj, state), None)
                else:
                    setter(obj, state)
            else:
                apply_state(obj, state, ctx.policy, self.fory.strict)


# ---- calls under a policy --------------------------------------------------------------
# With a DeserializationPolicy, a reduce call is made so that the policy sees the callable
# that really runs: a functools.partial is opened to its function and arguments, and the
# operator objects (methodcaller, attrgetter, itemgetter) are carried out step by step,
# each attribute lookup shown to the policy as getattr(obj, name), each item lookup as
# operator.getitem(obj, key), and a method call as the bound method it calls.
cdef object _partial = functools.partial
cdef object _methodcaller = operator.methodcaller
cdef object _attrgetter = operator.attrgetter
cdef object _itemgetter = operator.itemgetter
cdef object _getitem = operator.getitem
cdef object _getattr = getattr
cdef int _MAX_UNWRAP = 32


cdef object policed_call(policy, func, tuple args, dict kwargs, int level=0):
    cdef type t = type(func)
    if level > _MAX_UNWRAP:
        raise MalformedDataError("reduce callable nests partial/operator objects too deeply")
    if t is _partial:
        merged = dict(func.keywords)
        if kwargs:
            merged.update(kwargs)
        return policed_call(policy, func.func, tuple(func.args) + args, merged or None, level + 1)
    if t is _methodcaller or t is _attrgetter or t is _itemgetter:
        return policed_operator(policy, func, t, args, kwargs, level)
    if kwargs:
        replaced = policy.intercept_reduce_call(func, args, kwargs=kwargs)
    else:
        replaced = policy.intercept_reduce_call(func, args)
    if replaced is not None:
        return replaced
    if isinstance(func, type):
        policy.authorize_instantiation(func, args=args, kwargs=kwargs)
    return func(*args, **kwargs) if kwargs else func(*args)


cdef object policed_operator(policy, func, type t, tuple args, dict kwargs, int level):
    if len(args) != 1 or kwargs:
        raise MalformedDataError(f"{t.__name__} object called with {len(args)} arguments")
    target = args[0]
    spec = func.__reduce__()        # (cls, args) or (partial(cls, name, **kw), margs)
    if t is _methodcaller:
        ctor, cargs = spec[0], tuple(spec[1])
        if type(ctor) is _partial:          # methodcaller with keyword arguments
            name, margs, mkw = ctor.args[0], cargs, dict(ctor.keywords)
        else:
            name, margs, mkw = cargs[0], cargs[1:], None
        method = policed_call(policy, _getattr, (target, name), None, level + 1)
        return policed_call(policy, method, margs, mkw, level + 1)
    if t is _attrgetter:
        results = []
        for dotted in spec[1]:
            value = target
            for name in dotted.split("."):
                value = policed_call(policy, _getattr, (value, name), None, level + 1)
            results.append(value)
        return results[0] if len(results) == 1 else tuple(results)
    results = [policed_call(policy, _getitem, (target, key), None, level + 1) for key in spec[1]]
    return results[0] if len(results) == 1 else tuple(results)


cdef object inspect_reduced(policy, obj):
    if policy is not None:
        replaced = policy.inspect_reduced_object(obj)
        if replaced is not None:
            return replaced
    return obj
