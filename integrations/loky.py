"""pyfory for joblib and loky: a pickler module for ``LOKY_PICKLER``.

    LOKY_PICKLER=pyfory.integrations.loky python script.py
    # or, in the parent process before the first Parallel call:
    from joblib.externals.loky import set_loky_pickler
    set_loky_pickler("pyfory.integrations.loky")

    Parallel(n_jobs=2, backend="loky")(delayed(lambda x: x * k)(i) for i in range(10))

What goes through pyfory
------------------------
loky builds its pickler class on ``<module>.Pickler`` of the module named by
``LOKY_PICKLER`` (or ``set_loky_pickler``): it calls ``Pickler(file, protocol=...)``,
replaces ``dispatch_table`` with its own copy (its reducers and the ones joblib adds for
automatic memmapping of large numpy arrays) and calls ``dump(obj)``. It sends every task,
batch of tasks and result that way, and the worker processes switch to the same module
when the first task arrives, so what they send back goes through pyfory too.

``Pickler.dump`` writes a plain pickle of a small envelope, ``_load(payload, side,
buffers)``, which workers and the parent read with their stock ``pickle.loads``:

- ``payload``: the object written by ``Fory(ref=True, strict=False)``: lambdas, closures and
  local classes travel by value;
- ``side``: the objects whose type has a reducer of its own in ``dispatch_table`` (joblib's
  memmapping reducers for numpy arrays and memmaps, loky's for sockets and connections, any
  reducer a user registers). pyfory writes an index for them, and the envelope's stock
  pickler writes them with that ``dispatch_table``: a large array is still dumped to a
  memory-mapped file and arrives as a ``numpy.memmap``. Reducers that only stand in for
  pickle's missing support (methods, method descriptors, ``functools.partial``) and the
  entries of ``copyreg.dispatch_table`` are left to pyfory;
- ``buffers``: large binary buffers taken out of band from the payload, as
  ``PickleBuffer`` objects (in the same stream: loky writes to a ``BytesIO``).

What stays with the stock pickler
---------------------------------
What loky writes while it spawns a worker (the preparation data, read by the child before
its ``sys.path`` is set up, and the process object) is written by cloudpickle (plain pickle
when cloudpickle is not installed), as loky does by default.

Trust model: pickle's. loky's workers and parent load what the other side sends, code
included; this module changes how it is written, not who is trusted.
"""

from __future__ import annotations

import copyreg
import functools
import pickle
import threading
import types
from multiprocessing import context as _mp_context
from typing import Any, Dict, FrozenSet

try:
    import joblib  # noqa: F401  (the engine this module is for)
except ImportError as _e:  # pragma: no cover - checked in the tests by blocking the import
    try:
        import loky  # noqa: F401  (standalone loky works as well)
    except ImportError:
        raise ImportError(
            "pyfory.integrations.loky needs joblib (or loky): pip install \"pyfory[joblib]\"") from _e

from pyfory.integrations import multiprocessing as _mp

__all__ = ["Pickler", "dumps", "loads", "NAME"]

NAME = __name__
_OPTIONS: Dict[str, Any] = {"ref": True, "strict": False, "max_depth": 1000}

# reducers loky and multiprocessing register only because pickle cannot write these;
# pyfory can, so their instances stay in the payload
_PYFORY_HANDLES = frozenset([types.MethodType, types.BuiltinMethodType, types.MethodWrapperType,
                             types.MethodDescriptorType, types.WrapperDescriptorType,
                             types.ClassMethodDescriptorType, functools.partial])


def _handoff_types(dispatch_table) -> FrozenSet[type]:
    if not dispatch_table:
        return frozenset()
    defaults = copyreg.dispatch_table
    return frozenset(t for t, reducer in dispatch_table.items()
                     if t not in _PYFORY_HANDLES and defaults.get(t) is not reducer)


class _State(threading.local):
    def __init__(self):
        self.writers: Dict[FrozenSet[type], Any] = {}
        self.reader = None


_tls = _State()


def _writer(handoff: FrozenSet[type]):
    fory = _tls.writers.get(handoff)
    if fory is None:
        if len(_tls.writers) > 16:
            _tls.writers.clear()
        fory = _tls.writers[handoff] = _mp._new_fory(_OPTIONS, handoff.__contains__)
    return fory


_C_DISPATCH_TABLE = pickle.Pickler.__dict__["dispatch_table"]


def _stock_pickler_class():
    try:
        from joblib.externals.cloudpickle import CloudPickler
    except ImportError:
        try:
            from cloudpickle import CloudPickler
        except ImportError:
            return pickle.Pickler
    return CloudPickler


class Pickler:
    """What ``LOKY_PICKLER=pyfory.integrations.loky`` makes loky use: ``Pickler(file,
    protocol=None)``, a settable ``dispatch_table`` (honoured: see the module documentation)
    and ``dump(obj)``, which writes one plain-pickle envelope to ``file``."""

    def __init__(self, file, protocol=None):
        self._file = file
        self.protocol = protocol
        self.dispatch_table = dict(copyreg.dispatch_table)

    def dump(self, obj) -> None:
        if _mp_context.get_spawning_popen() is not None:
            # a worker being started: preparation data and the process object
            stock = _stock_pickler_class()(self._file, protocol=self.protocol)
            # through the C member: cloudpickle's class-level table would hide an attribute
            _C_DISPATCH_TABLE.__set__(stock, self.dispatch_table)
            stock.dump(obj)
            return
        stock = pickle.Pickler(self._file, protocol=5)
        stock.dispatch_table = self.dispatch_table
        stock.dump(_envelope(obj, self.dispatch_table))


def _envelope(obj, dispatch_table):
    handoff = _handoff_types(dispatch_table)
    fory = _writer(handoff)
    side: list = []
    buffers = _mp._Buffers()
    outer = _mp._tls.side
    _mp._tls.side = side
    try:
        payload = fory.dumps(obj, buffer_callback=buffers)
    finally:
        _mp._tls.side = outer
    return _mp._Envelope((_load, (payload, tuple(side), tuple(buffers))))


# envelopes read by this process (a diagnostic: shows that tasks did go through pyfory)
envelopes_loaded = 0


def _load(payload, side=(), buffers=()):
    """The envelope's body: called by the receiver's stock ``pickle.loads``."""
    global envelopes_loaded
    envelopes_loaded += 1
    fory = _tls.reader
    if fory is None:
        fory = _tls.reader = _mp._new_fory(_OPTIONS)
    outer = _mp._tls.rside
    _mp._tls.rside = side
    try:
        return fory.loads(payload, buffers=list(buffers) if buffers else None)
    finally:
        _mp._tls.rside = outer


def dumps(obj, dispatch_table=None) -> bytes:
    """The bytes ``Pickler.dump`` writes for obj (with ``dispatch_table``'s reducers)."""
    import io

    f = io.BytesIO()
    p = Pickler(f)
    if dispatch_table is not None:
        p.dispatch_table = dict(dispatch_table)
    p.dump(obj)
    return f.getvalue()


loads = pickle.loads
