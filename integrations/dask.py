"""pyfory for Dask distributed: a serialization family, and an opt-in for task graphs.

    # every worker loads this module (the scheduler relays data unread and needs nothing,
    # except this package installed for the task-graph opt-in):
    #   dask worker tcp://... --preload pyfory.integrations.dask
    #   LocalCluster(..., preload=["pyfory.integrations.dask"])
    #   or the config key distributed.worker.preload
    import pyfory.integrations.dask as fory_dask
    client = Client(cluster, serializers=["pyfory", "dask", "pickle"],
                    deserializers=["pyfory", "dask", "pickle", "error"])
    # a worker without the preload then fails such a transfer with an error naming it;
    # or, the same with a check up front that every worker has the family:
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
its comm. A result fetched from it is the worst case: the comm is dropped, Dask retries
the transfer forever and the log fills (millions of lines in 20 s). Nothing of pyfory
runs on such a worker unless the client sends it, so:

- importing this module adds it to Dask's client preloads (the config key
  ``distributed.client.preload``), so that every ``Client`` made afterwards in this
  process runs ``dask_setup``; when the client's serializer lists name ``"pyfory"``, it
  registers a worker plugin (present and future workers) that, on a worker without the
  family, registers a stand-in of that name (see ``_stand_in_plugin``). A result, gather
  or compute from that worker then fails at once with a ``TypeError`` (from Dask's
  ``"error"`` deserializer) whose message names ``--preload pyfory.integrations.dask``,
  a scatter to it fails with that message, and nothing retries. A ``Client`` given its
  own ``preload=`` list, or made before this import, does not get the stand-in;
- ``connect(address, **client_kwargs)`` makes the ``Client`` with the serializer lists
  above and then calls ``check_workers``;
- ``check_workers(client)`` runs a probe on every worker (``client.run``; the probe travels
  by value, so it does not import this module there) and raises ``MissingPreloadError``
  naming the workers that lack the family (the stand-in is not the family). Workers that
  join later are not checked (they get the stand-in);
- ``install(client)`` (or ``connect(..., install_on_workers=True)``) registers a worker
  plugin that imports this module on every worker, present and future (the plugin travels
  by Dask's own pickle and needs this package installed on the workers); the real family
  replaces the stand-in.

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
    import dask
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
# how the stand-in's error starts (see _stand_in_plugin), and the way out
_STAND_IN_MARK = f"pyfory: this Dask worker has no serialization family {FAMILY!r}"
_FIX = (f"--preload {_MODULE} (or the config key distributed.worker.preload, or "
        f"LocalCluster(preload=[{_MODULE!r}])), or call {_MODULE}.install(client)")


def _run_probe(client, workers=None):
    def family_registered():
        # a local function travels by value (cloudpickle), so running it on a worker does
        # not import this module there, which would register the family and hide the lack
        import sys

        serialize = sys.modules.get("distributed.protocol.serialize")
        family = None if serialize is None else serialize.families.get("pyfory")
        # the client preload's stand-in (see _stand_in_plugin) is no family
        return family is not None and not getattr(family[0], "pyfory_stand_in", False)

    try:
        return client.run(family_registered, workers=workers, on_error="return")
    except TypeError as e:
        # a worker with the stand-in could not write its reply with the client's lists
        if _STAND_IN_MARK not in str(e):
            raise
        return None


def _probe_workers(client) -> Dict[str, Any]:
    results = _run_probe(client)
    if results is None:        # one at a time, to name every worker without the family
        results = {}
        for addr in client.ncores():
            one = _run_probe(client, [addr])
            results[addr] = False if one is None else one.get(addr)
    return results


def _missing(results) -> List[str]:
    return sorted(addr for addr, ok in results.items() if ok is not True)


def _missing_error(missing) -> MissingPreloadError:
    return MissingPreloadError(
        f"the Dask worker(s) {', '.join(missing)} do not have the serialization family "
        f"{FAMILY!r}, so Dask would retry every transfer to and from them forever: start "
        f"them with {_FIX}")


def check_workers(client) -> None:
    """Raise ``MissingPreloadError`` naming the workers where the family is not registered
    (started without ``--preload pyfory.integrations.dask`` and without ``install``)."""
    missing = _missing(_probe_workers(client))
    if missing:
        raise _missing_error(missing)


def _uses_family(client) -> bool:
    # the client's connection pool holds its lists; the deserializers go to the workers
    # with each request, as the families they must write the reply with
    pool = client.rpc
    return any(names is not None and FAMILY in names
               for names in (pool.serializers, pool.deserializers))


def _stand_in_plugin(client_id: str) -> distributed.WorkerPlugin:
    """A worker plugin that gives a worker without the family a stand-in of that name.

    Dask looks the family up by name on the worker; when it is missing, the lookup fails
    in the comm and Dask retries forever. The stand-in is found instead: its writer and
    reader raise an error naming the preload, which Dask turns into an ``"error"`` frame
    for the client (a ``TypeError`` carrying the message, from the ``"error"``
    deserializer) or a failed scatter. The plugin and its functions are local, so Dask's
    cloudpickle sends them by value: the worker imports nothing of pyfory (importing this
    module there would register the real family, hiding the lack until the next worker).
    """
    hint = f"{_STAND_IN_MARK} (asked for by the client {client_id}): start it with {_FIX}"
    family = FAMILY

    class MissingFamily(distributed.WorkerPlugin):
        name = "pyfory-missing-family"

        def setup(self, worker) -> None:
            import importlib

            serialize = importlib.import_module("distributed.protocol.serialize")
            if family in serialize.families:
                return

            def refuse(*args, **kwargs):
                raise RuntimeError(hint + f" (worker {worker.address})")

            refuse.pyfory_stand_in = True
            serialize.register_serialization_family(family, refuse, refuse)

    return MissingFamily()


async def dask_setup(dask_object) -> None:
    """Dask's preload hook. As a worker preload (``--preload``) importing this module was
    the whole point. As a client preload (importing this module adds it to
    ``distributed.client.preload``), a ``Client`` whose serializer lists name the family
    registers ``_stand_in_plugin`` while it starts, for present and future workers."""
    if isinstance(dask_object, distributed.Client) and _uses_family(dask_object):
        client = dask_object
        plugin = _stand_in_plugin(str(client.id))
        # Client.register_plugin, from inside the client's event loop (it has no
        # asynchronous form); Dask's own pickle (not the task-graph envelope, which would
        # import this module on the workers)
        pickle_dumps = _original_dumps or _dask_pickle.dumps
        await client.scheduler.register_worker_plugin(
            plugin=pickle_dumps(plugin), name=plugin.name, idempotent=False)


def _add_client_preload() -> None:
    preloads = dask.config.get("distributed.client.preload", None) or []
    if isinstance(preloads, str):
        preloads = [preloads]
    if _MODULE not in preloads:
        dask.config.set({"distributed.client.preload": [*preloads, _MODULE]})


_add_client_preload()


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

