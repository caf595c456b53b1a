"""pyfory for everything ``multiprocessing`` serializes: the reducer swap.

    from pyfory.integrations import multiprocessing as fory_mp

    fory_mp.install()                 # or: with fory_mp.installed(): ...
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(lambda x: x * k, range(10))   # lambdas, closures, local classes work
    fory_mp.uninstall()               # plain pickle again, exactly as before

How it works
------------
``multiprocessing`` pickles every object it sends with ``reduction.ForkingPickler``
(``Connection.send``, the ``Queue``/``SimpleQueue`` feeder, ``reduction.dump`` for the
``Process`` object under spawn and forkserver). ``install()`` replaces that class, in
every module that holds it (``multiprocessing.connection`` and ``multiprocessing.queues``
keep their own reference from import time), by a subclass whose ``dump`` writes an
*envelope*: a tiny pickle of ``_load(payload, side, buffers, opts)`` where

- ``payload`` is the object serialized by pyfory (``Fory(ref=True, strict=False)`` by
  default), so lambdas, closures and local classes travel by value;
- ``side`` holds the objects multiprocessing itself knows how to send (connections,
  queues, locks, ``Value``/``Array``, manager proxies, shared memory, sockets, every type
  registered with ``multiprocessing.reduction.register``...). pyfory writes only an index
  for them; the stock ``ForkingPickler`` pickles them, with its reducers, inside the same
  ``dump`` call (so ``assert_spawning`` and file-descriptor passing work as before);
- ``buffers`` are large binary buffers (numpy arrays, big bytes) taken out of band from
  the pyfory payload and pickled as ``PickleBuffer`` objects: one copy less each way.

``_load`` is found by reference, so the receiving process needs no set-up: it need not
call ``install()`` nor import pyfory first (pyfory must only be installed there). A child
process (spawn, forkserver or fork) that receives an envelope and never called
``install()``/``uninstall()`` itself installs the swap with the sender's options, so what it
sends back (``Pool`` results, queue items) goes through pyfory too; ``install(propagate=
False)`` turns that off. ``uninstall()`` puts back the exact objects it replaced.

The preparation data that spawn and forkserver send before the ``Process`` object stays
a plain pickle: the child reads it before its ``sys.path`` is set up.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import threading
from multiprocessing import context as _mp_context
from multiprocessing import reduction as _reduction
from typing import Any, Dict, Iterator, Optional

from pyfory.integrations import DEFAULT_MAX_DEPTH

import pyfory
from pyfory import Serializer, TypeInfo
from pyfory.resolver import D_USER_NAME

__all__ = ["install", "uninstall", "installed", "is_installed", "options", "dumps", "loads",
           "is_multiprocessing_type"]

# buffers at least this large leave the pyfory payload and ride as PickleBuffers
_OOB_MIN = 1 << 16
# type descriptors of objects handed to the stock pickler: "<prefix><module>:<qualname>"
_HANDOFF_PREFIX = "pyfory.mp:"

_DEFAULT_OPTIONS: Dict[str, Any] = {"ref": True, "strict": False, "max_depth": DEFAULT_MAX_DEPTH}

_lock = threading.RLock()


class _ThreadState(threading.local):
    """Per thread: the writer and reader Fory instances and the side lists in use."""

    def __init__(self):
        self.writer = None
        self.writer_key = None
        self.readers: Dict[Any, Any] = {}
        self.default_reader = None
        self.side: Optional[list] = None     # objects handed to the stock pickler (writing)
        self.rside: Optional[tuple] = None   # and taken back from the envelope (reading)


_tls = _ThreadState()


class _State:
    installed = False
    touched = False            # install()/uninstall() was called in this process
    unsettled = True           # not touched, not installed, maybe a child: _load may install
    options: Dict[str, Any] = dict(_DEFAULT_OPTIONS)
    propagate = True
    wire_opts: Optional[tuple] = None   # what envelopes carry for the reader (None: defaults)
    saved: list = []           # (module, attribute name, original value)
    generation = 0             # bumped when writer Fory instances must be rebuilt
    options_checked = False    # `options` were validated by making a Fory with them
    pickler_class = None


_state = _State()


# ---- which objects the stock ForkingPickler keeps ----------------------------------------
_handoff_cache: Dict[type, bool] = {}
_handoff_bases: Optional[tuple] = None
_extra_seen = -1


def _generic_reducers() -> tuple:
    """Reducers multiprocessing.reduction registers for ordinary Python objects (bound
    methods, method descriptors, functools.partial): pyfory handles those itself."""
    from multiprocessing import reduction

    return tuple(getattr(reduction, name) for name in
                 ("_reduce_method", "_reduce_method_descriptor", "_reduce_partial")
                 if hasattr(reduction, name))


def _bases() -> tuple:
    global _handoff_bases
    if _handoff_bases is None:
        import socket
        from multiprocessing import connection, heap, managers, pool, process, queues, sharedctypes

        bases = [connection._ConnectionBase, queues.Queue, queues.SimpleQueue,
                 managers.BaseProxy, managers.BaseManager, sharedctypes.SynchronizedBase,
                 heap.BufferWrapper, heap.Arena, process.AuthenticationString, pool.Pool,
                 socket.socket]
        try:   # missing where the platform has no working sem_open
            from multiprocessing import synchronize

            bases += [synchronize.SemLock, synchronize.Condition, synchronize.Event,
                      synchronize.Barrier]
        except ImportError:  # pragma: no cover
            pass
        try:
            import _multiprocessing

            bases.append(_multiprocessing.SemLock)
        except (ImportError, AttributeError):  # pragma: no cover
            pass
        try:
            from multiprocessing import shared_memory

            bases += [shared_memory.SharedMemory, shared_memory.ShareableList]
        except ImportError:  # pragma: no cover
            pass
        _handoff_bases = tuple(bases)
    return _handoff_bases


def is_multiprocessing_type(cls: type) -> bool:
    """True when instances of cls are left to multiprocessing's own pickler: its
    connections, queues, synchronization primitives, shared ctypes, manager proxies,
    shared memory, sockets, and every type registered with
    ``multiprocessing.reduction.register`` (except its generic reducers for methods and
    ``functools.partial``)."""
    global _extra_seen
    extra = _reduction.ForkingPickler._extra_reducers
    if len(extra) != _extra_seen:
        _handoff_cache.clear()
        _extra_seen = len(extra)
    hit = _handoff_cache.get(cls)
    if hit is None:
        reducer = extra.get(cls)
        if reducer is not None:
            hit = reducer not in _generic_reducers()
        else:
            try:
                hit = issubclass(cls, _bases())
            except TypeError:
                hit = False
        _handoff_cache[cls] = hit
    return hit


class _HandoffSerializer(Serializer):
    """Writes an index into the envelope's side list; the stock pickler sends the object."""

    def __init__(self, fory, cls):
        super().__init__(fory, cls)
        self.track_identity = True

    def write(self, ctx, obj):
        side = _tls.side
        ctx.write_varuint32(len(side))
        side.append(obj)

    def read(self, ctx):
        index = ctx.read_varuint32()
        side = _tls.rside
        if side is None or index >= len(side):
            raise pyfory.error.MalformedDataError(
                "payload refers to a multiprocessing object that its envelope does not carry")
        return side[index]


def _handoff_name(cls) -> str:
    return f"{_HANDOFF_PREFIX}{cls.__module__}:{cls.__qualname__}"


def _class_from_name(name: str):
    from pyfory._reduce import lookup_global

    module, _, qualname = name[len(_HANDOFF_PREFIX):].partition(":")
    try:
        return lookup_global(module, qualname)
    except Exception:
        # a dynamically made class (a manager's AutoProxy[...]): only its instances
        # matter here, and they come from the side list
        return type(qualname, (), {"__module__": module})


def _new_fory(options: Dict[str, Any], handoff=is_multiprocessing_type):
    """A Fory whose resolver sends multiprocessing's own objects (the classes for which
    ``handoff(cls)`` is true) to the side list (when writing) and takes them back from it
    (when reading). ``pyfory.integrations.loky`` passes its own ``handoff``.

    This wraps two resolver methods of this one instance; a public pyfory hook (a
    ``persistent_id``/``persistent_load`` pair, as pickle has) would replace it."""
    fory = pyfory.Fory(**options)
    resolver = fory.resolver
    get_typeinfo = resolver.get_typeinfo
    by_registered_name = resolver.typeinfo_by_registered_name
    named: Dict[str, TypeInfo] = {}

    def handoff_typeinfo(cls):
        info = TypeInfo(cls, _HandoffSerializer(fory, cls), D_USER_NAME, name=_handoff_name(cls))
        resolver._type_cache[cls] = info
        return info

    def get_typeinfo_hook(cls):
        info = resolver._type_cache.get(cls)
        if info is not None:
            return info
        if handoff(cls):
            return handoff_typeinfo(cls)
        return get_typeinfo(cls)

    def by_registered_name_hook(name):
        if type(name) is str and name.startswith(_HANDOFF_PREFIX):
            info = named.get(name)
            if info is None:
                cls = _class_from_name(name)
                info = TypeInfo(cls, _HandoffSerializer(fory, cls), D_USER_NAME, name=name)
                named[name] = info
            return info
        return by_registered_name(name)

    resolver.get_typeinfo = get_typeinfo_hook
    resolver.typeinfo_by_registered_name = by_registered_name_hook
    return fory


def _writer(tls):
    # rebuilt when the options change or multiprocessing.reduction.register() added a
    # type (so a type cached as ordinary is looked at again)
    key = (_state.generation, len(_reduction.ForkingPickler._extra_reducers))
    if tls.writer_key != key:
        tls.writer = _new_fory(_state.options)
        tls.writer_key = key
    return tls.writer


def _reader(tls, max_depth):
    readers = tls.readers
    fory = readers.get(max_depth)
    if fory is None:
        options = dict(_DEFAULT_OPTIONS)
        if max_depth is not None:
            options["max_depth"] = max_depth
        fory = readers[max_depth] = _new_fory(options)
    return fory


# ---- envelopes ----------------------------------------------------------------------------
class _Envelope:
    __slots__ = ("reduced",)

    def __init__(self, reduced):
        self.reduced = reduced

    def __reduce__(self):
        return self.reduced


class _Buffers(list):
    """buffer_callback: large buffers leave the payload as PickleBuffers."""

    __slots__ = ()

    def __call__(self, buf):
        if buf.total_bytes() < _OOB_MIN:
            return True
        self.append(pickle.PickleBuffer(buf.raw()))
        return False


def _encode(obj, options_tuple):
    """obj's envelope: the pickle bytes when it is just ``_load(payload)`` (written here,
    without a pickler), else an _Envelope for the stock pickler."""
    tls = _tls
    fory = _writer(tls)
    side: list = []
    buffers = _Buffers()
    outer_side = tls.side
    tls.side = side
    try:
        payload = fory.dumps(obj, buffer_callback=buffers)
    finally:
        tls.side = outer_side
    if not side and not buffers:
        return _envelope_bytes(payload, options_tuple)
    return _Envelope((_load, (payload, tuple(side), tuple(buffers), options_tuple)))


# the pickle of _load(payload), as pickle.dumps(..., protocol=5) writes it (no memo, no
# frame): PROTO 5, module and name, STACK_GLOBAL, the payload bytes, TUPLE1, REDUCE, STOP
def _pickle_prefix() -> bytes:
    module = __name__.encode()
    name = b"_load"
    return (b"\x80\x05\x8c" + bytes((len(module),)) + module + b"\x8c" + bytes((len(name),))
            + name + b"\x93")


_PREFIX = _pickle_prefix()
_SUFFIX = b"\x85R."


_opts_pickles: Dict[tuple, bytes] = {}


def _options_pickle(options_tuple: tuple) -> bytes:
    """The opcodes that push (payload's tuple continues) (), (), options_tuple, TUPLE."""
    body = _opts_pickles.get(options_tuple)
    if body is None:
        # protocol 2 opcodes are valid in a protocol 5 stream and come without frames
        body = b"))" + pickle.dumps(options_tuple, protocol=2)[2:-1] + b"t"
        _opts_pickles[options_tuple] = body
    return body


def _envelope_bytes(payload: bytes, options_tuple: Optional[tuple] = None) -> bytes:
    n = len(payload)
    if n < 256:
        head = b"C" + bytes((n,))                      # SHORT_BINBYTES
    elif n <= 0xFFFFFFFF:
        head = b"B" + n.to_bytes(4, "little")          # BINBYTES
    else:
        head = b"\x8e" + n.to_bytes(8, "little")       # BINBYTES8
    if options_tuple is None:
        return b"".join((_PREFIX, head, payload, _SUFFIX))
    # _load(payload, (), (), options): MARK ... TUPLE, REDUCE, STOP
    return b"".join((_PREFIX, b"(", head, payload, _options_pickle(options_tuple), b"R."))


def _load(payload, side=(), buffers=(), opts=None):
    """Rebuild an object sent by an installed process (found by pickle, by reference)."""
    tls = _tls
    if opts is None:
        if _state.unsettled:
            _propagate(None)
        fory = tls.default_reader
        if fory is None:
            fory = tls.default_reader = _reader(tls, None)
    else:
        max_depth, propagate, install_options = opts
        if propagate and _state.unsettled:
            _propagate(install_options)
        fory = _reader(tls, max_depth)
    if not side:
        return fory.loads(payload, buffers=buffers if buffers else None)
    outer = tls.rside
    tls.rside = side
    try:
        return fory.loads(payload, buffers=buffers if buffers else None)
    finally:
        tls.rside = outer


def _propagate(install_options):
    """Install the swap in a child process that got an envelope from its parent."""
    from multiprocessing import process

    # a child: started by fork (it has a parent), or being unpickled by spawn/forkserver
    # (the parent is set only after the Process object is loaded)
    if (process.parent_process() is None
            and not getattr(process.current_process(), "_inheriting", False)):
        _state.unsettled = False    # only children install on their own
        return
    with _lock:
        if _state.touched or _state.installed:
            return
        options = dict(install_options) if install_options else {}
        _do_install(options, propagate=True)


def _is_preparation_data(obj) -> bool:
    return ("sys_path" in obj and "authkey" in obj
            and _mp_context.get_spawning_popen() is not None)


_ATOMIC = frozenset([tuple, list, dict, str, bytes, int, float, bool, type(None)])


def _wrap(obj):
    """What the installed pickler writes for obj: obj itself (multiprocessing's own objects
    and spawn's preparation data), the envelope's bytes, or an _Envelope."""
    cls = type(obj)
    if cls is _Envelope:
        return obj
    if cls is dict:
        if _is_preparation_data(obj):
            return obj
    elif cls not in _ATOMIC and is_multiprocessing_type(cls):
        return obj
    return _encode(obj, _state.wire_opts)


# the installed pickler class for each original ForkingPickler class (one per base, so
# installing again does not make a new class)
_pickler_classes: Dict[type, type] = {}


def _make_pickler_class(base):
    base_dump = base.dump

    class ForyForkingPickler(base):
        """multiprocessing's ForkingPickler, writing pyfory envelopes (see module doc)."""

        def __init__(self, file, protocol=None, *args, **kwargs):
            if protocol is None or 0 <= protocol < 5:
                protocol = 5     # out-of-band buffers ride as PickleBuffers
            super().__init__(file, protocol, *args, **kwargs)
            self._fory_file = file

        def dump(self, obj):
            wrapped = _wrap(obj)
            if type(wrapped) is bytes:
                self._fory_file.write(wrapped)
            else:
                base_dump(self, wrapped)

        @classmethod
        def dumps(cls, obj, protocol=None):
            wrapped = _wrap(obj)
            if type(wrapped) is bytes:
                return memoryview(wrapped)
            buf = io.BytesIO()
            base_dump(cls(buf, protocol), wrapped)
            return buf.getbuffer()

    ForyForkingPickler.__qualname__ = ForyForkingPickler.__name__
    return ForyForkingPickler


# ---- install / uninstall ------------------------------------------------------------------
def _targets():
    """(module, attribute) pairs that hold multiprocessing's pickler class."""
    from multiprocessing import connection, queues, reduction

    return [(reduction, "ForkingPickler"), (connection, "_ForkingPickler"),
            (queues, "_ForkingPickler")]


def _do_install(options: Dict[str, Any], propagate: bool):
    reduction = _reduction
    merged = dict(_DEFAULT_OPTIONS)
    merged.update(options)
    same_options = merged == _state.options and _state.options_checked
    if not same_options:
        pyfory.Fory(**merged)   # fail early on bad options
    if _state.installed:
        _do_uninstall()
    if not same_options:
        # writers built for other options must not be used: rebuild them (lazily). With
        # the same options the writers, and their caches of types met so far, are kept,
        # so install()/uninstall() around each batch of work costs next to nothing.
        _state.generation += 1
    _state.options = merged
    _state.options_checked = True
    _state.propagate = propagate
    # what a reader needs: its max_depth; whether (and how) a child installs in turn
    child_options = {k: v for k, v in merged.items()
                     if k != "policy" and (k not in _DEFAULT_OPTIONS or _DEFAULT_OPTIONS[k] != v)}
    if merged.get("max_depth") == DEFAULT_MAX_DEPTH and not child_options and propagate:
        _state.wire_opts = None
    else:
        _state.wire_opts = (merged.get("max_depth"), propagate,
                            tuple(sorted(child_options.items())) or None)
    cls = _pickler_classes.get(reduction.ForkingPickler)
    if cls is None:
        cls = _pickler_classes[reduction.ForkingPickler] = _make_pickler_class(reduction.ForkingPickler)
    _state.pickler_class = cls
    _state.unsettled = False
    saved = []
    for module, name in _targets():
        saved.append((module, name, module.__dict__[name]))
        setattr(module, name, cls)
    _state.saved = saved
    _state.installed = True


def _do_uninstall():
    for module, name, original in reversed(_state.saved):
        if module.__dict__.get(name) is _state.pickler_class:
            setattr(module, name, original)
    _state.saved = []
    _state.pickler_class = None
    _state.installed = False


def install(*, propagate: bool = True, **fory_options) -> None:
    """Make multiprocessing serialize through pyfory in this process.

    fory_options are the ``pyfory.Fory`` options (ref, strict, compatible, max_depth,
    policy); the defaults are ``ref=True, strict=False, max_depth=1024``, as pickle and
    cloudpickle behave (``pyfory.integrations.DEFAULT_MAX_DEPTH``: as deep as pickle
    goes). Calling it again replaces the options. ``propagate``: child processes that
    receive pyfory data install the swap too (with the same options, without ``policy``),
    so what they send back goes through pyfory as well.
    """
    with _lock:
        _do_install(fory_options, propagate)
        _state.touched = True
        _state.unsettled = False


def uninstall() -> None:
    """Put back exactly what install() replaced; a no-op when not installed."""
    with _lock:
        if _state.installed:
            _do_uninstall()
        _state.touched = True
        _state.unsettled = False


def is_installed() -> bool:
    return _state.installed


def options() -> Dict[str, Any]:
    """The Fory options in use (a copy)."""
    return dict(_state.options)


@contextlib.contextmanager
def installed(*, propagate: bool = True, **fory_options) -> Iterator[None]:
    """``with installed(): ...``: install() for the block, then restore the previous state
    (the previous options when it was already installed)."""
    with _lock:
        was = _state.installed
        previous = (dict(_state.options), _state.propagate)
        install(propagate=propagate, **fory_options)
    try:
        yield
    finally:
        with _lock:
            if was:
                _do_install(previous[0], previous[1])
            else:
                _do_uninstall()
            _state.touched = True
            _state.unsettled = False


# ---- helpers for other code ---------------------------------------------------------------
def dumps(obj, protocol=None) -> memoryview:
    """What multiprocessing would send for obj with the swap installed (a pickle that
    plain ``pickle.loads`` reads in any process)."""
    cls = _state.pickler_class or _make_pickler_class(_original_pickler())
    return cls.dumps(obj, protocol)


def loads(data):
    """Read what dumps (or an installed process) wrote: ``pickle.loads``."""
    return pickle.loads(data)


def _original_pickler():
    for module, name, original in _state.saved:
        if module is _reduction and name == "ForkingPickler":
            return original
    return _reduction.ForkingPickler
