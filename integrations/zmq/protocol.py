"""The task wire protocol between executors and workers (internal): message kinds and
binary headers. What the payloads hold (task items, outcome records, buffer frames) and
what they mean (remote tracebacks, exceptions that cannot travel, batching, retrying a
batch the worker could not load) are the task core's (``pyfory.integrations._tasks``),
shared with the futures executor."""

from __future__ import annotations

import struct
import sys
import types
from typing import Any, Dict, Optional

from pyfory.integrations._tasks import outcomes as _outcomes

from pyfory.error import (
    MalformedDataError,
)

# Routing ids: b"t" + worker id for a worker's task socket, b"h" + worker id for its
# heartbeat socket. Control messages carry JSON (never pyfory: they are read before a
# peer is known); tasks and results carry pyfory payloads plus out-of-band frames.
# Tasks travel in batches (one task each until the executor has measured how long the
# tasks take; several when they are short), one pyfory payload per batch:
#   worker -> executor  [READY, json]                                  (task socket)
#                       [RESULT + batch + seconds + n + tids, records, *buffers]
#                         records: [outcome record, ...] for the n tasks, in order, written
#                         by a strict Fory; each record (status, body, frames, tb) has its own
#                         payload and names how many of the buffer frames are its own
#                       [FAILED + batch + n + tids, records, *buffers]  one record: the batch
#                                                                       could not be loaded
#                       [PING]                                         (heartbeat socket)
#   executor -> worker  [WELCOME, json] [PONG] [RESET, reason] [REFUSE, reason] [BYE]
#                       [TASK + batch + n + n * (tid + name length + name), payload, *buffers]
#                         payload: [task item, ...]: (args, kwargs) for a task with a function
#                                  name, (callable, args, kwargs) for one without

READY = b"R"
RESULT = b"D"
FAILED = b"F"
PING = b"P"
PONG = b"P"
WELCOME = b"W"
TASK = b"T"
RESET = b"X"
REFUSE = b"N"
BYE = b"Q"

# outcome statuses, and the errors zmq exports (pyfory.integrations.zmq.RemoteError, ...)
ST_OK, ST_ERROR, ST_ERROR_TEXT = _outcomes.OK, _outcomes.ERROR, _outcomes.ERROR_TEXT
RemoteError = _outcomes.RemoteError
RemoteTraceback = _outcomes.RemoteTraceback

_ID = struct.Struct("<Q")
_COUNT = struct.Struct("<I")
_SECONDS = struct.Struct("<d")
_NAME_LEN = struct.Struct("<H")

# the worker sends the results it has whenever this much time passed since it last did
RESULT_FLUSH_SECONDS = 0.002
# a batch holds about this much work (by the measured task time), at most max_batch tasks
BATCH_SECONDS = 0.005


def _task_header(batch: bytes, entries: list) -> bytes:
    parts = [TASK, batch, _COUNT.pack(len(entries))]
    for tid, name in entries:
        parts.append(tid)
        parts.append(_NAME_LEN.pack(len(name)))
        parts.append(name)
    return b"".join(parts)


def _parse_task_header(head: bytes):
    try:
        batch = head[1:9]
        (n,) = _COUNT.unpack_from(head, 9)
        pos = 13
        entries = []
        for _ in range(n):
            tid = head[pos:pos + 8]
            (length,) = _NAME_LEN.unpack_from(head, pos + 8)
            name = head[pos + 10:pos + 10 + length]
            if len(tid) != 8 or len(name) != length:
                raise MalformedDataError("truncated task header")
            entries.append((tid, name))
            pos += 10 + length
    except struct.error as e:
        raise MalformedDataError(f"malformed task header: {e}") from e
    if len(batch) != 8 or pos != len(head):
        raise MalformedDataError("malformed task header")
    return batch, entries


def _parse_tids(head: bytes, pos: int):
    (n,) = _COUNT.unpack_from(head, pos)
    pos += 4
    if len(head) != pos + 8 * n:
        raise MalformedDataError("malformed task id list")
    return [head[pos + 8 * i:pos + 8 * i + 8] for i in range(n)]


class WorkerLostError(RuntimeError):
    """A task's worker died or stopped answering heartbeats more times than ``max_retries``
    allows (or no worker was left to run it at shutdown)."""


_name_cache: Dict[int, tuple] = {}


def _callable_name(fn: Any) -> Optional[str]:
    """``module:qualname`` when fn is an importable function, builtin or class that the
    worker can import by name (so it does not travel in the payload), else None."""
    cached = _name_cache.get(id(fn))
    if cached is not None and cached[0] is fn:
        return cached[1]
    if not isinstance(fn, (types.FunctionType, types.BuiltinFunctionType, type)):
        return None
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    mod = sys.modules.get(module)
    if mod is None:
        return None
    obj: Any = mod
    try:
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        return None
    if obj is not fn:
        return None
    name = f"{module}:{qualname}"
    if len(_name_cache) > 4096:
        _name_cache.clear()
    _name_cache[id(fn)] = (fn, name)
    return name


def _describe_callable(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__
