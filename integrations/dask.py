"""pyfory for Dask distributed: a serialization family, and an opt-in for task graphs.

    # every worker loads this module (the scheduler relays data unread and needs nothing,
    # except this package installed for the task-graph opt-in):
    #   dask worker tcp://... --preload pyfory.integrations.dask
    #   LocalCluster(..., preload=["pyfory.integrations.dask"])
    #   or the config key distributed.worker.preload
    import pyfory.integrations.dask as fory_dask
    client = Client(cluster, serializers=["pyfory", "dask", "pickle"],
                    deserializers=["pyfory", "dask", "pickle", "error"])
    # or, the same with a check that every worker has the family:
    client = fory_dask.connect(cluster)

The family ``"pyfory"``
-----------------------
Importing this module registers the family ``"pyfory"`` with
``distributed.protocol.serialize.register_serialization_family``. Dask serializes the data
a client moves (``scatter``, ``gather``, results) with the client's families, in order
(transfers between workers use the workers' own lists, Dask's defaults): ``pyfory`` writes the object with
``Fory(ref=True, strict=False)`` (lambdas, closures and local classes by value), the payload
in the first frame and each large binary buffer (numpy arrays, big bytes) as a frame of
its own, taken from the object's memory without a copy; the header records whether each
buffer was writeable, so that an array arrives writeable and built on the received frame.
When pyfory cannot write an object the family raises ``NotImplementedError``, which makes
Dask try the next family in the list.

A worker that lacks the family
------------------------------
Dask looks a family up by name, outside its own error handling, when it reads or writes a
message; a worker that never imported this module fails that lookup with a ``KeyError`` in
its comm. A scatter to it fails with that ``KeyError``; a result fetched from it is worse:
the comm is dropped, Dask retries the transfer forever and the log fills. Nothing of
pyfory runs on such a worker, so the check is made from the client:

- ``connect(address, **client_kwargs)`` makes the ``Client`` with the serializer lists
  above and then calls ``check_workers``;
- ``check_workers(client)`` runs a probe on every worker (``client.run``; the probe travels
  by value, so it does not import this module there) and raises ``MissingPreloadError``
  naming the workers that lack the family. Workers that join later are not checked;
- ``install(client)`` (or ``connect(..., install_on_workers=True)``) registers a worker
  plugin that imports this module on every worker, present and future (the plugin travels
  by Dask's own pickle and needs this package installed on the workers).

Task graphs (opt-in)
--------------------
Dask writes task graphs (functions, their arguments, the results of ``client.run``) itself
with ``distributed.protocol.pickle.dumps``: pickle, then cloudpickle. There is no hook for
that, so ``enable_task_graphs()`` patches exactly one attribute in the calling process:
``distributed.protocol.pickle.dumps`` (the function ``distributed.protocol.core`` calls for
every ``ToPickle`` part of a message, which is how graphs go to the scheduler and on to
workers, and which the stock ``"pickle"`` family and ``Worker`` call too). The replacement
writes a plain pickle of a small envelope whose ``__reduce__`` names
``pyfory.integrations.dask._load_graph`` with the pyfory payload (and its large buffers as
``PickleBuffer`` objects, out of band when the caller passes a ``buffer_callback``), so a
scheduler or worker reads it with its stock ``pickle.loads``; it needs only this package
installed, not the preload. An object pyfory cannot write goes to the original function.
Names imported from that module earlier (``distributed.client`` imports ``dumps`` for
``client.run`` and plugins) keep the original. ``disable_task_graphs()`` puts it back.

Trust model: pickle's. ``Fory(ref=True, strict=False)`` runs what a payload names, exactly
as Dask's default pickle families do; use it between processes that trust each other.
"""

from __future__ import annotations

import pickle
import threading
from typing import Any, Dict, List, Tuple

try:
    import distributed
    from distributed.protocol import pickle as _dask_pickle
    from distributed.protocol.serialize import register_serialization_family
except ImportError as _e:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "pyfory.integrations.dask needs Dask distributed: pip install \"pyfory[dask]\" "
        "(or pip install \"dask[distributed]\")") from _e

import pyfory

__all__ = ["FAMILY", "MissingPreloadError", "dumps", "loads", "check_workers", "install",
           "enable_task_graphs", "disable_task_graphs", "task_graphs_enabled", "PyforyPlugin"]

FAMILY = "pyfory"
# buffers at least this large become frames of their own (smaller ones stay in the payload)
OOB_MIN = 1 << 16
_MODULE = __name__


class MissingPreloadError(RuntimeError):
    """A Dask process that should read or write the "pyfory" family does not have it."""


# one Fory(ref=True, strict=False) per thread: Dask serializes in several threads
_fory = pyfory.ThreadSafeFory(ref=True, strict=False, max_depth=1000)


# ---- the serialization family ---------------------------------------------------------
def dumps(x: Any) -> Tuple[Dict[str, Any], List[Any]]:
    """The family's writer: ``(header, [payload, buffer, ...])``. Raises
    ``NotImplementedError`` when pyfory cannot write ``x``, so Dask tries the next family."""
    try:
        frames = _fory.dumps_with_buffers(x, OOB_MIN)
    except Exception as e:
        raise NotImplementedError(f"pyfory cannot serialize {type(x).__name__}: {e}") from e
    header = {"writeable": tuple(not mv.readonly for mv in frames[1:])}
    return header, frames


def _as_flagged(frame: Any, writeable: bool) -> memoryview:
    mv = frame if isinstance(frame, memoryview) else memoryview(frame)
    if mv.ndim != 1 or mv.format not in ("B", "b", "c"):
        mv = mv.cast("B")
    if writeable and mv.readonly:
        return memoryview(bytearray(mv))     # the only copy, as Dask's pickle family does
    if not writeable and not mv.readonly:
        return mv.toreadonly()
    return mv


def loads(header: Dict[str, Any], frames: List[Any]) -> Any:
    """The family's reader: large buffers are rebuilt on the received frames."""
    flags = header.get("writeable", ())
    if len(flags) != len(frames) - 1:
        raise pyfory.error.MalformedDataError(
            f"pyfory family: {len(frames) - 1} buffer frame(s) but {len(flags)} writeable flag(s)")
    buffers = [_as_flagged(f, w) for f, w in zip(frames[1:], flags)]
    return _fory.loads(frames[0], buffers=buffers)


register_serialization_family(FAMILY, dumps, loads)


# ---- workers without the family --------------------------------------------------------
def _probe_workers(client) -> Dict[str, Any]:
    def family_registered():
        # a local function travels by value (cloudpickle), so running it on a worker does
        # not import this module there, which would register the family and hide the lack
        import sys

        serialize = sys.modules.get("distributed.protocol.serialize")
        return serialize is not None and "pyfory" in serialize.families

    return client.run(family_registered, on_error="return")


def check_workers(client) -> None:
    """Raise ``MissingPreloadError`` naming the workers where the family is not registered
    (started without ``--preload pyfory.integrations.dask`` and without ``install``)."""
    missing = sorted(addr for addr, ok in _probe_workers(client).items() if ok is not True)
    if missing:
        raise MissingPreloadError(
            f"the Dask worker(s) {', '.join(missing)} do not have the serialization family "
            f"{FAMILY!r}, so Dask would retry every transfer to and from them forever: start "
            f"them with --preload {_MODULE} (or the config key distributed.worker.preload, "
            f"or LocalCluster(preload=[{_MODULE!r}])), or call {_MODULE}.install(client)")


SERIALIZERS = (FAMILY, "dask", "pickle")
DESERIALIZERS = (FAMILY, "dask", "pickle", "error")


def connect(address=None, *, install_on_workers: bool = False, **client_kwargs):
    """``distributed.Client(address, serializers=SERIALIZERS, deserializers=DESERIALIZERS,
    **client_kwargs)``, then ``install(client)`` when ``install_on_workers`` is true, else
    ``check_workers(client)``: a worker without the family is a ``MissingPreloadError`` now
    (the client is closed), not a gather that retries forever later."""
    client_kwargs.setdefault("serializers", list(SERIALIZERS))
    client_kwargs.setdefault("deserializers", list(DESERIALIZERS))
    client = distributed.Client(address, **client_kwargs)
    try:
        if install_on_workers:
            install(client)
        else:
            check_workers(client)
    except BaseException:
        client.close()
        raise
    return client


class PyforyPlugin(distributed.WorkerPlugin):
    """A worker plugin that imports this module on each worker, registering the family."""

    name = "pyfory-serialization-family"

    def setup(self, worker) -> None:
        import importlib

        importlib.import_module(_MODULE)


def install(client) -> None:
    """Register the family on every worker of ``client``'s cluster, now and when workers
    join later (a worker plugin; the plugin object travels by Dask's own pickle)."""
    client.register_plugin(PyforyPlugin())


# ---- task graphs (opt-in) ---------------------------------------------------------------
_graph_lock = threading.Lock()
_original_dumps = None
# envelopes read by this process (a diagnostic: shows that graphs did go through pyfory)
graphs_loaded = 0


def _load_graph(payload, *buffers):
    """Called by a stock ``pickle.loads`` on the scheduler or a worker: the envelope's body."""
    global graphs_loaded
    graphs_loaded += 1
    return _fory.loads(payload, buffers=[memoryview(b) for b in buffers] if buffers else None)


class _GraphEnvelope:
    __slots__ = ("payload", "buffers")

    def __init__(self, payload, buffers):
        self.payload = payload
        self.buffers = buffers

    def __reduce__(self):
        return _load_graph, (self.payload, *self.buffers)


def _graph_dumps(x, *, buffer_callback=None, protocol=None, **kwargs):
    original = _original_dumps
    try:
        frames = _fory.dumps_with_buffers(x, OOB_MIN)
    except Exception:
        return original(x, buffer_callback=buffer_callback, protocol=protocol, **kwargs)
    envelope = _GraphEnvelope(frames[0], [pickle.PickleBuffer(mv) for mv in frames[1:]])
    if buffer_callback is None:
        return pickle.dumps(envelope, protocol=5)
    return pickle.dumps(envelope, protocol=5, buffer_callback=buffer_callback)


def enable_task_graphs() -> None:
    """Send what Dask pickles itself (task graphs) through pyfory, in this process: patches
    ``distributed.protocol.pickle.dumps`` (see the module documentation)."""
    global _original_dumps
    with _graph_lock:
        if _original_dumps is None:
            _original_dumps = _dask_pickle.dumps
            _dask_pickle.dumps = _graph_dumps


def disable_task_graphs() -> None:
    """Put the original ``distributed.protocol.pickle.dumps`` back."""
    global _original_dumps
    with _graph_lock:
        if _original_dumps is not None:
            _dask_pickle.dumps = _original_dumps
            _original_dumps = None


def task_graphs_enabled() -> bool:
    return _original_dumps is not None

