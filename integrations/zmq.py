"""ZeroMQ integration: pyfory messages on ZeroMQ sockets, and a task executor over ZeroMQ.

Transport
---------
One multipart message per object: the pyfory payload in the first frame, then one frame
per out-of-band buffer (numpy arrays, large bytes/bytearray/memoryview, PickleBuffer),
sent with ``copy=False`` so large buffers are handed to ZeroMQ without a copy, and on the
receiving side rebuilt directly on the received frames (a received numpy array shares
memory with its frame)::

    from pyfory.integrations import zmq as fzmq

    fzmq.send(sock, {"x": big_array})          # like sock.send_pyobj(...)
    obj = fzmq.recv(sock)                      # like sock.recv_pyobj()
    await fzmq.send_async(async_sock, obj)     # zmq.asyncio sockets
    obj = await fzmq.recv_async(async_sock)

    ctx = fzmq.Context()                       # sockets with send_obj/recv_obj methods
    s = ctx.socket(zmq.PAIR); s.send_obj(obj); s.recv_obj()

``encode(obj) -> frames`` and ``decode(frames) -> obj`` are the building blocks, for
sockets that add their own envelope frames (ROUTER identities, topics).

A malformed or truncated message raises a ``pyfory.error.ForyError`` subclass; the whole
message has been consumed, so the socket stays usable for the next one. The default
serializer is ``Fory(ref=True, strict=False)`` (pickle's and ``recv_pyobj``'s trust model:
only talk to peers you trust); pass ``fory=pyfory.Fory()`` (strict) or a policy for
anything else.

Task execution
--------------
``Executor(address, local_workers=0, **fory_options)`` is a ``concurrent.futures.Executor``
that binds a ROUTER socket at ``address``; workers connect to it::

    with Executor("tcp://127.0.0.1:5555", local_workers=2) as ex:
        print(ex.submit(lambda x: x * 2, 21).result())

    # on any machine (see "Security" below before leaving loopback)
    python -m pyfory.integrations.zmq worker tcp://127.0.0.1:5555 --concurrency 4

Every worker process advertises a number of slots (1 running + ``prefetch`` queued batches);
the executor never sends it more than that (backpressure: the rest wait in the executor,
and go to whichever worker frees a slot first). A batch is a single task until the
executor has measured how long tasks take; tiny tasks then travel many to a message (one
payload, so a closure used by all of them is written once), long ones stay one per batch.
Workers ping the executor every ``heartbeat_interval`` seconds from a separate thread, so
a long task is not mistaken for a dead worker; a worker that stops answering for
``heartbeat_timeout`` seconds (dead, stopped, stuck in C code holding the GIL, or
unreachable), or a local worker process that exits, has its tasks retried on other
workers up to ``max_retries`` times; after that their futures fail with
``WorkerLostError``. Local workers that die are replaced. Delivery is at least once: a
task whose worker died after running it, before its result arrived, runs again.

Security
--------
A worker runs the code it receives. Executors and workers therefore only use loopback
TCP, ``ipc://`` and ``inproc://`` addresses unless ZeroMQ CURVE is configured (or
``insecure=True`` / ``--insecure`` is given explicitly). With CURVE the *worker* is the
CURVE server: it holds the server secret key and only accepts executors whose client
public key is in its ``authorized_clients`` directory; the executor checks the workers'
server public key. ``python -m pyfory.integrations.zmq keys DIR`` writes such a set of
keys. Workers accept ``--strict`` (payloads may contain only builtins and ``--register``ed
classes, and only functions named with ``--allow`` run), ``--allow`` and ``--policy``.

Workers prove who they are, on loopback too: without ``curve_keys`` an executor on a
loopback or ``ipc://`` address makes a random secret of its own and hands it to the local
workers it starts (on their stdin, never on a command line); its ROUTER socket is a ZeroMQ
PLAIN server (a ZAP handler in the executor's process) that lets in only peers presenting
that secret, so any other local process completes no handshake: it gets no task and the
executor reads none of its frames. Hand-started workers therefore need CURVE keys
(``curve_keys=DIR`` / ``--curve-keys DIR``), or the executor is made open explicitly with
``insecure=True``. Results from authenticated workers are read with ``strict=False``: they
run the executor's code anyway. ``inproc://`` (reachable only from this process) stays open.
"""

from __future__ import annotations

import argparse
import atexit
import concurrent.futures as _cf
import fnmatch
import importlib
import inspect
import ipaddress
import itertools
import json
import logging
import os
import secrets
import shutil
import signal
import socket as _socketlib
import struct
import subprocess
import sys
import threading
import time
import traceback
import types
import uuid
import weakref
from collections import deque
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

try:
    import zmq
    import zmq.asyncio
except ModuleNotFoundError as _e:  # an optional dependency: name the extra that brings it
    raise ModuleNotFoundError(
        'pyfory.integrations.zmq needs pyzmq: pip install "pyfory[zmq]" '
        "(or pip install pyzmq)", name=_e.name) from _e

from pyfory.integrations import DEFAULT_MAX_DEPTH
from pyfory.integrations._tasks import payload_error

import pyfory
from pyfory.buffers import BufferObject
from pyfory.error import (
    ForyError,
    MalformedDataError,
    OutOfBandBufferError,
    PolicyViolationError,
    SerializationError,
)
from pyfory.threadsafe import ThreadSafeFory

__all__ = [
    "send",
    "recv",
    "send_async",
    "recv_async",
    "encode",
    "decode",
    "Socket",
    "Context",
    "AsyncSocket",
    "AsyncContext",
    "Executor",
    "Worker",
    "WorkerLostError",
    "RemoteError",
    "RemoteTraceback",
    "generate_keys",
    "is_local_address",
    "OOB_THRESHOLD",
]

log = logging.getLogger("pyfory.integrations.zmq")

# Buffers smaller than this stay inside the payload: a frame of its own costs more than a
# copy (pyzmq copies frames below its own copy threshold anyway).
OOB_THRESHOLD = zmq.COPY_THRESHOLD

_default_fory_lock = threading.Lock()
_default_fory: Optional[ThreadSafeFory] = None


def default_fory() -> ThreadSafeFory:
    """The serializer used when none is given: ``ThreadSafeFory(ref=True, strict=False,
    max_depth=DEFAULT_MAX_DEPTH)`` (nesting as deep as ``send_pyobj``'s pickle allows)."""
    global _default_fory
    if _default_fory is None:
        with _default_fory_lock:
            if _default_fory is None:
                _default_fory = ThreadSafeFory(ref=True, strict=False, max_depth=DEFAULT_MAX_DEPTH)
    return _default_fory


# ---------------------------------------------------------------------------------------
# transport
# ---------------------------------------------------------------------------------------


class _FrameBuffer(BufferObject):
    """An out-of-band buffer handed to ``loads`` that remembers whether it was used, so
    frames the payload does not account for are reported instead of silently ignored."""

    __slots__ = ("used",)

    def __init__(self, view: memoryview):
        super().__init__(view)
        self.used = False

    def getbuffer(self) -> memoryview:
        self.used = True
        return self._view

    def raw(self) -> memoryview:
        self.used = True
        return super().raw()


def encode(obj: Any, fory: Any = None, oob_threshold: int = OOB_THRESHOLD) -> list:
    """Serialize obj into the frames of one multipart message: ``[payload, *buffers]``.

    Buffers of at least ``oob_threshold`` bytes become frames of their own (memoryviews of
    the original memory, not copies); smaller ones stay in the payload."""
    if fory is None:
        fory = _default_fory or default_fory()
    return fory.dumps_with_buffers(obj, oob_threshold)


def _view(frame: Any) -> memoryview:
    # zmq.Frame, bytes, bytearray, memoryview: anything with the buffer protocol, no copy
    return memoryview(frame)


def decode(frames: Sequence[Any], fory: Any = None) -> Any:
    """Rebuild the object from the frames of one message (``[payload, *buffers]``).

    Frames may be ``zmq.Frame`` objects (``recv_multipart(copy=False)``), bytes or
    memoryviews; out-of-band values (numpy arrays, ...) are built on the frames' memory.
    Raises a ``pyfory.error.ForyError`` subclass for malformed, truncated or extra frames.
    """
    if fory is None:
        fory = default_fory()
    n = len(frames)
    if n == 0:
        raise MalformedDataError("empty multipart message: no pyfory payload frame")
    payload = frames[0]
    if n == 1:
        return fory.loads(payload)
    buffers = [_FrameBuffer(_view(f)) for f in frames[1:]]
    obj = fory.loads(payload, buffers=buffers)
    unused = [i + 1 for i, b in enumerate(buffers) if not b.used]
    if unused:
        raise OutOfBandBufferError(
            f"multipart message has {n} frames but its payload uses {n - 1 - len(unused)} "
            f"out-of-band buffer(s): frame(s) {unused} are not part of this object")
    return obj


def send(socket: zmq.Socket, obj: Any, flags: int = 0, copy: bool = False, track: bool = False,
         *, fory: Any = None, oob_threshold: int = OOB_THRESHOLD):
    """Send obj as one multipart message (payload frame + one frame per large buffer).

    With ``copy=False`` (the default) large buffers are not copied: do not modify them
    until ZeroMQ is done with them (``track=True`` returns a ``MessageTracker``)."""
    if fory is None:
        fory = _default_fory or default_fory()
    frames = fory.dumps_with_buffers(obj, oob_threshold)
    if len(frames) == 1 and not track:
        # one frame: the payload, which has nothing large in it (large buffers are frames
        # of their own). A copy is cheaper than zero-copy's bookkeeping for it.
        return socket.send(frames[0], flags, copy=True)
    return socket.send_multipart(frames, flags, copy=copy, track=track)


def recv(socket: zmq.Socket, flags: int = 0, copy: bool = False, *, fory: Any = None) -> Any:
    """Receive one object sent with :func:`send`. With ``copy=False`` (the default) numpy
    arrays and other out-of-band values share memory with the received frames."""
    # The first frame is the payload, small whatever the object (large buffers travel
    # as frames of their own), read in place from the zmq.Frame: whether more frames
    # follow is on the Frame, which costs far less than asking the socket (RCVMORE:
    # about 1 us of pyzmq per call).
    first = socket.recv(flags, copy=False)
    if not first.more:
        if fory is None:
            fory = _default_fory or default_fory()
        return fory.loads(first)
    frames = [first if not copy else first.bytes]
    while True:
        frame = socket.recv(flags, copy=False)
        frames.append(frame if not copy else frame.bytes)
        if not frame.more:
            break
    return decode(frames, fory)


async def send_async(socket: Any, obj: Any, flags: int = 0, copy: bool = False, track: bool = False,
                     *, fory: Any = None, oob_threshold: int = OOB_THRESHOLD):
    """:func:`send` for ``zmq.asyncio`` sockets (plain sockets work too)."""
    frames = encode(obj, fory, oob_threshold)
    result = socket.send_multipart(frames, flags, copy=copy, track=track)
    if inspect.isawaitable(result):
        result = await result
    return result


async def recv_async(socket: Any, flags: int = 0, copy: bool = False, *, fory: Any = None) -> Any:
    """:func:`recv` for ``zmq.asyncio`` sockets (plain sockets work too)."""
    frames = socket.recv_multipart(flags, copy=copy)
    if inspect.isawaitable(frames):
        frames = await frames
    return decode(frames, fory)


class Socket(zmq.Socket):
    """A ``zmq.Socket`` with ``send_obj``/``recv_obj`` (pyfory's ``send_pyobj``/``recv_pyobj``).

    Create it with ``Context().socket(type)``, ``Socket(ctx, type, fory=...)`` or wrap an
    existing socket with ``Socket.shadow(sock)``. ``fory`` (attribute or keyword) chooses
    the serializer; None means :func:`default_fory`."""

    fory: Any = None
    oob_threshold: int = OOB_THRESHOLD

    def __init__(self, *args: Any, fory: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fory = fory

    def send_obj(self, obj: Any, flags: int = 0, copy: bool = False, track: bool = False):
        return send(self, obj, flags, copy, track, fory=self.fory, oob_threshold=self.oob_threshold)

    def recv_obj(self, flags: int = 0, copy: bool = False) -> Any:
        return recv(self, flags, copy, fory=self.fory)


class Context(zmq.Context):
    """A ``zmq.Context`` whose sockets are :class:`Socket` (with send_obj/recv_obj)."""

    _socket_class = Socket


class AsyncSocket(zmq.asyncio.Socket):
    """A ``zmq.asyncio.Socket`` with awaitable ``send_obj``/``recv_obj``."""

    fory: Any = None
    oob_threshold: int = OOB_THRESHOLD

    def __init__(self, *args: Any, fory: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fory = fory

    async def send_obj(self, obj: Any, flags: int = 0, copy: bool = False, track: bool = False):
        return await send_async(self, obj, flags, copy, track, fory=self.fory,
                                oob_threshold=self.oob_threshold)

    async def recv_obj(self, flags: int = 0, copy: bool = False) -> Any:
        return await recv_async(self, flags, copy, fory=self.fory)


class AsyncContext(zmq.asyncio.Context):
    """A ``zmq.asyncio.Context`` whose sockets are :class:`AsyncSocket`."""

    _socket_class = AsyncSocket


# ---------------------------------------------------------------------------------------
# security
# ---------------------------------------------------------------------------------------

SERVER_KEY = "server.key"
SERVER_SECRET = "server.key_secret"
CLIENT_KEY = "client.key"
CLIENT_SECRET = "client.key_secret"
AUTHORIZED_DIR = "authorized_clients"


def _split_tcp(address: str):
    rest = address[len("tcp://"):]
    if ";" in rest:  # "source;destination" form of connect: the destination matters
        rest = rest.split(";", 1)[1]
    if rest.startswith("["):
        host = rest[1:rest.index("]")]
        port = rest[rest.index("]") + 2:]
    else:
        host, _, port = rest.rpartition(":")
    return host, port


def is_local_address(address: str) -> bool:
    """True for ``inproc://``, ``ipc://`` and TCP on a loopback address (127.0.0.0/8, ::1,
    localhost). Anything else is reachable from other machines."""
    if address.startswith(("inproc://", "ipc://")):
        return True
    if not address.startswith("tcp://"):
        return False
    try:
        host, _ = _split_tcp(address)
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host or interface name, "*"
        return False


# the PLAIN user name local workers present with their executor's secret
LOCAL_WORKER_USER = "pyfory-local-worker"
_ZAP_DOMAIN = "pyfory-executor"


def _check_address(address: str, curve: bool, insecure: bool, who: str) -> None:
    if is_local_address(address) or curve:
        return
    if insecure:
        log.warning("%s on %s without CURVE authentication (--insecure): anyone who can reach "
                    "this address can run code on the workers", who, address)
        return
    raise ValueError(
        f"refusing to use {address!r} without authentication: a worker runs the code it "
        f"receives, so an open {who} on a network address is remote code execution for anyone "
        f"who can reach it. Use a loopback address (tcp://127.0.0.1:PORT), ipc:// or inproc://, "
        f"or configure ZeroMQ CURVE keys (python -m pyfory.integrations.zmq keys DIR, then "
        f"curve_keys=DIR / --curve-keys DIR), or pass insecure=True / --insecure explicitly.")


def generate_keys(directory: str) -> Dict[str, str]:
    """Write a CURVE key set: the workers' server key pair, the executor's client key pair,
    and ``authorized_clients/`` holding the client's public key. Returns the paths."""
    import zmq.auth

    os.makedirs(directory, exist_ok=True)
    auth_dir = os.path.join(directory, AUTHORIZED_DIR)
    os.makedirs(auth_dir, exist_ok=True)
    server_pub, server_sec = zmq.auth.create_certificates(directory, "server")
    client_pub, client_sec = zmq.auth.create_certificates(directory, "client")
    for secret in (server_sec, client_sec):
        os.chmod(secret, 0o600)
    authorized = os.path.join(auth_dir, CLIENT_KEY)
    shutil.copyfile(client_pub, authorized)
    return {"server_public": server_pub, "server_secret": server_sec, "client_public": client_pub,
            "client_secret": client_sec, "authorized_clients": auth_dir}


def _load_cert(path: str):
    import zmq.auth

    public, secret = zmq.auth.load_certificate(path)
    return public, secret


def _client_curve(sock: zmq.Socket, keys_dir: str) -> None:
    """Executor side: CURVE client with the client key pair, trusting the server key."""
    public, secret = _load_cert(os.path.join(keys_dir, CLIENT_SECRET))
    if not secret:
        raise ValueError(f"{keys_dir}/{CLIENT_SECRET} has no secret key")
    server_public, _ = _load_cert(os.path.join(keys_dir, SERVER_KEY))
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = server_public


# ---------------------------------------------------------------------------------------
# task protocol (internal)
# ---------------------------------------------------------------------------------------
# Routing ids: b"t" + worker id for a worker's task socket, b"h" + worker id for its
# heartbeat socket. Control messages carry JSON (never pyfory: they are read before a
# peer is known); tasks and results carry pyfory payloads plus out-of-band frames.
# Tasks travel in batches (one task each until the executor has measured how long the
# tasks take; several when they are short), one pyfory payload per batch:
#   worker -> executor  [READY, json]                                  (task socket)
#                       [RESULT + batch + seconds + n + tids, payload, *buffers]
#                         payload: [(status, value), ...] for the n tasks, in order
#                       [FAILED + batch + n + tids, payload]   the batch could not be loaded
#                       [PING]                                         (heartbeat socket)
#   executor -> worker  [WELCOME, json] [PONG] [RESET, reason] [REFUSE, reason] [BYE]
#                       [TASK + batch + n + n * (tid + name length + name), payload, *buffers]
#                         payload: [(args, kwargs) for a task with a function name,
#                                   (callable, args, kwargs) for one without, ...]

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

ST_OK = 0  # value: the result
ST_ERROR = 1  # value: {"exc": exception, "tb": traceback text}
ST_ERROR_TEXT = 2  # value: text (the exception itself could not be serialized)

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


class RemoteError(Exception):
    """A task raised an exception that could not be sent back as itself; the message holds
    its type and text, and ``__cause__`` the remote traceback."""


class RemoteTraceback(Exception):
    """Set as ``__cause__`` of an exception raised by a task: the worker's traceback text."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


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


# ---------------------------------------------------------------------------------------
# worker
# ---------------------------------------------------------------------------------------


def _resolve_spec(spec: str) -> Any:
    """Import ``module:attr`` (attr may be dotted)."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected MODULE:NAME, got {spec!r}")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Worker:
    """One worker: connects a DEALER socket to an executor's address and runs its tasks,
    one at a time, in the calling thread (``run()``). A separate thread sends heartbeats.

    Usually started with ``python -m pyfory.integrations.zmq worker ADDRESS``; this class is
    the same thing for code that wants to run a worker itself.

    fory_options: for the worker's Fory (default ``ref=True, strict=False, max_depth=1024``). With
    ``strict=True`` payloads may hold only builtins and ``register``ed classes, functions
    cannot travel by value, and only functions matching ``allow`` run.
    allow: ``fnmatch`` patterns on ``module:qualname`` of the functions that may run (by
    default any function when not strict, none when strict).
    policy: a DeserializationPolicy for loads; also asked about functions named by tasks.
    curve_keys: a directory written by ``generate_keys`` (server secret key and
    ``authorized_clients/``); curve_secret / curve_clients override its two parts.
    local: started by an Executor on this machine: exit when the executor says goodbye or
    its process (``parent_pid``) goes away, instead of waiting for another executor.
    secret: the per-executor secret a local worker presents (ZeroMQ PLAIN) to an executor
    that runs without CURVE keys; handed over by the executor, not chosen by users.
    """

    def __init__(self, address: str, *, prefetch: int = 1, fory_options: Optional[dict] = None,
                 allow: Optional[Iterable[str]] = None, register: Iterable[Any] = (),
                 policy: Any = None, curve_keys: Optional[str] = None,
                 curve_secret: Optional[str] = None, curve_clients: Optional[str] = None,
                 insecure: bool = False, context: Optional[zmq.Context] = None,
                 parent_pid: Optional[int] = None, local: bool = False,
                 secret: Optional[str] = None):
        self.address = address
        self.secret = secret
        if curve_keys:
            curve_secret = curve_secret or os.path.join(curve_keys, SERVER_SECRET)
            curve_clients = curve_clients or os.path.join(curve_keys, AUTHORIZED_DIR)
        if bool(curve_secret) != bool(curve_clients):
            raise ValueError("CURVE needs both the server secret key and the authorized clients directory")
        self.curve_secret = curve_secret
        self.curve_clients = curve_clients
        _check_address(address, bool(curve_secret), insecure, "worker")
        if curve_secret:
            public, secret = _load_cert(curve_secret)
            if not secret:
                raise ValueError(f"{curve_secret} holds no secret key")
            if not os.path.isdir(curve_clients):
                raise ValueError(f"authorized clients directory {curve_clients} does not exist")
            self._curve_pair = (public, secret)
        options = {"ref": True, "strict": False, "max_depth": DEFAULT_MAX_DEPTH}
        options.update(fory_options or {})
        if policy is not None:
            options["policy"] = policy
        # --strict and the policy are about what this worker loads; what it sends back (results,
        # exceptions) is written by a Fory without them, as the executor would
        self.fory = pyfory.Fory(**options)
        out_options = {k: v for k, v in options.items() if k not in ("strict", "policy")}
        self.out_fory = pyfory.Fory(strict=False, **out_options)
        for cls in register:
            self.fory.register(cls)
            self.out_fory.register(cls)
        self.strict = bool(options.get("strict"))
        self.policy = options.get("policy")
        self.allow = list(allow) if allow is not None else None
        if self.strict and not self.allow:
            log.warning("strict worker without --allow patterns: every task will be refused")
        self.prefetch = max(0, int(prefetch))
        self.parent_pid = parent_pid
        self.local = local
        self._ctx = context
        self._stop = False
        self._hb_session: Optional[tuple] = None
        self._hb_signal: Optional[tuple] = None
        self._hb_cond = threading.Condition()
        self._wake_r = self._wake_w = -1
        self._functions: Dict[str, Any] = {}
        self._resolved: Dict[bytes, Any] = {}
        self.tasks_done = 0

    # -- control ----------------------------------------------------------------------
    def stop(self) -> None:
        """Ask run() to return (from another thread or a signal handler)."""
        self._stop = True
        self._wake()

    def _wake(self) -> None:
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"\0")
            except (BlockingIOError, OSError):
                pass

    def _secure(self, sock: zmq.Socket) -> None:
        if self.curve_secret:
            sock.curve_publickey, sock.curve_secretkey = self._curve_pair
            sock.curve_server = True
        elif self.secret:
            sock.plain_username = LOCAL_WORKER_USER.encode()
            sock.plain_password = self.secret.encode()

    def run(self) -> int:
        """Serve executors until stopped; returns a process exit code."""
        ctx = self._ctx or zmq.Context()
        auth = None
        if self.curve_secret:
            from zmq.auth.thread import ThreadAuthenticator

            auth = ThreadAuthenticator(ctx, log=logging.getLogger("pyfory.integrations.zmq.auth"))
            auth.start()
            auth.configure_curve(domain="*", location=self.curve_clients)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        hb = threading.Thread(target=self._heartbeat_loop, args=(ctx,), name="pyfory-zmq-heartbeat",
                              daemon=True)
        hb.start()
        code = 0
        try:
            while not self._stop:
                outcome = self._session(ctx)
                if outcome == "refused":
                    code = 3
                    break
                if outcome in ("bye", "lost") and self.local:
                    break
                if outcome != "stop":
                    log.info("worker session ended (%s); registering again", outcome)
        finally:
            self._stop = True
            with self._hb_cond:
                self._hb_cond.notify_all()
            hb.join(5)
            wake_r, wake_w = self._wake_r, self._wake_w
            self._wake_r = self._wake_w = -1
            os.close(wake_r)
            os.close(wake_w)
            if auth is not None:
                auth.stop()
            if self._ctx is None:
                ctx.term()
        return code

    # -- the task socket ----------------------------------------------------------------
    def _session(self, ctx: zmq.Context) -> str:
        wid = uuid.uuid4().hex[:16].encode()
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 1000
        sock.routing_id = b"t" + wid
        sock.immediate = True
        sock.reconnect_ivl = 100
        sock.reconnect_ivl_max = 2000
        self._secure(sock)
        sock.connect(self.address)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        ready = json.dumps({
            "id": wid.decode(), "pid": os.getpid(), "host": _socketlib.gethostname(),
            "slots": 1 + self.prefetch, "python": list(sys.version_info[:2]),
            "pyfory": pyfory.__version__, "strict": self.strict,
        }).encode()
        welcomed = False
        next_ready = 0.0
        started = time.monotonic()
        warned = started
        try:
            while not self._stop:
                now = time.monotonic()
                if not welcomed and now >= next_ready:
                    try:
                        sock.send_multipart([READY, ready], zmq.NOBLOCK)
                    except zmq.Again:
                        pass
                    next_ready = now + 0.5
                    if now - warned > 30:
                        warned = now
                        log.warning("still waiting for an executor at %s (%.0f s); an executor "
                                    "without insecure=True lets in only workers with its CURVE "
                                    "keys (--curve-keys DIR)", self.address, now - started)
                events = dict(poller.poll(500 if not welcomed else 1000))
                if self._wake_r in events:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                signal_ = self._hb_signal
                if signal_ is not None and signal_[1] == wid:
                    return signal_[0]
                if sock not in events:
                    continue
                for _ in range(64):
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    head = frames[0].bytes
                    kind = head[:1]
                    if kind == TASK:
                        self._run_batch(sock, head, frames[1:])
                    elif kind == WELCOME:
                        if not welcomed:
                            welcomed = True
                            try:
                                config = json.loads(frames[1].bytes)
                            except (IndexError, ValueError):
                                config = {}
                            self._start_heartbeats(wid, config)
                            log.info("registered with the executor at %s as %s", self.address,
                                     wid.decode())
                    elif kind == RESET:
                        return "reset"
                    elif kind == BYE:
                        return "bye"
                    elif kind == REFUSE:
                        reason = frames[1].bytes.decode("utf-8", "replace") if len(frames) > 1 else ""
                        log.error("the executor refused this worker: %s", reason)
                        return "refused"
                    else:
                        log.warning("ignoring an unknown message from the executor")
                    if self._stop:
                        break
            return "stop"
        finally:
            with self._hb_cond:
                self._hb_session = None
                self._hb_signal = None
                self._hb_cond.notify_all()
            sock.close()

    def _resolve_function(self, name: str) -> Any:
        if self.allow is not None or self.strict:
            if not any(fnmatch.fnmatchcase(name, pattern) for pattern in (self.allow or ())):
                raise PolicyViolationError(
                    f"this worker does not run {name}: it is not matched by the worker's --allow "
                    f"patterns {self.allow or []}")
        module = name.partition(":")[0]
        policy = self.policy
        if policy is not None:
            policy.validate_module(module, False)
        fn = self._functions.get(name)
        if fn is None:
            fn = _resolve_spec(name)
            self._functions[name] = fn
        if policy is not None:
            policy.validate_function(fn, False)
        return fn

    def _run_batch(self, sock: zmq.Socket, head: bytes, frames: list) -> None:
        try:
            batch, entries = _parse_task_header(head)
        except MalformedDataError:
            log.warning("ignoring a malformed task message")
            return
        tids = [tid for tid, _ in entries]
        try:
            if (self.strict or self.allow is not None) and not all(name for _, name in entries):
                raise PolicyViolationError(
                    "this worker runs only functions named by reference and matched by its --allow "
                    "patterns; a task carries its callable by value (a lambda, closure, partial, "
                    "method, callable object or a function defined in __main__)")
            items = decode(frames, self.fory)
            if type(items) is not list or len(items) != len(entries):
                raise MalformedDataError("a task batch must be a list with one item per task")
        except BaseException as e:  # noqa: B036 - the executor retries the tasks one by one
            if isinstance(e, KeyboardInterrupt) and not self.local:
                raise
            value = self._error_value(payload_error(e, "loading the task in the worker"))
            head = FAILED + batch + _COUNT.pack(len(tids)) + b"".join(tids)
            try:
                out = encode(value, self.out_fory)
            except Exception:
                out = encode(self._error_text(e, value[1]["tb"]), self.out_fory)
            self._send(sock, [head, *out])
            return
        results: list = []
        done: list = []
        start = time.perf_counter()
        last = len(entries) - 1
        for i, ((tid, name), item) in enumerate(zip(entries, items)):
            results.append(self._call(name, item))
            done.append(tid)
            now = time.perf_counter()
            if i == last or now - start >= RESULT_FLUSH_SECONDS:
                self._send_results(sock, batch, done, results, now - start)
                results, done, start = [], [], now
        self.tasks_done += len(entries)

    def _call(self, name: bytes, item: Any) -> tuple:
        try:
            if name:
                fn = self._resolved.get(name)  # allowed and imported before (no policy to ask)
                if fn is None:
                    fn = self._resolve_function(name.decode("utf-8"))
                    if self.policy is None:
                        self._resolved[name] = fn
                args, kwargs = item
            else:
                fn, args, kwargs = item
            if not callable(fn) or type(args) is not tuple or type(kwargs) is not dict:
                raise MalformedDataError("a task must hold a callable, an argument tuple and a dict")
            return (ST_OK, fn(*args, **kwargs))
        except BaseException as e:  # noqa: B036 - every failure goes back to the future
            if isinstance(e, KeyboardInterrupt) and not self.local:
                raise
            return self._error_value(e)

    def _send_results(self, sock: zmq.Socket, batch: bytes, tids: list, results: list, seconds: float):
        try:
            out = encode(results, self.out_fory)
        except Exception:
            if len(results) > 1:  # find the value that cannot be sent; send the others
                for tid, result in zip(tids, results):
                    self._send_results(sock, batch, [tid], [result], seconds / len(results))
                return
            out = encode([self._sendable(results[0])], self.out_fory)
        head = b"".join([RESULT, batch, _SECONDS.pack(seconds), _COUNT.pack(len(tids)), *tids])
        self._send(sock, [head, *out])

    def _sendable(self, result: tuple) -> tuple:
        """What to send instead of a result (or exception) that cannot be serialized."""
        status, value = result
        if status != ST_OK:
            return self._error_text(value["exc"], value["tb"])
        try:
            encode(value, self.out_fory)
            reason = "unknown error"
        except Exception as e:
            reason = f"{type(e).__name__}: {e}"
        error = SerializationError(
            f"the task's result (a {type(value).__qualname__}) could not be serialized: {reason}")
        replacement = self._error_value(error)
        try:
            encode([replacement], self.out_fory)
            return replacement
        except Exception:
            return self._error_text(error, "")

    def _send(self, sock: zmq.Socket, frames: list) -> None:
        try:
            sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            log.warning("could not send results: the executor is not connected (it will retry the tasks)")

    @staticmethod
    def _error_value(exc: BaseException) -> tuple:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        exc.__traceback__ = None
        return (ST_ERROR, {"exc": exc, "tb": tb})

    @staticmethod
    def _error_text(exc: BaseException, tb: str) -> tuple:
        text = f"{type(exc).__module__}.{type(exc).__qualname__}: {_safe_str(exc)}"
        return (ST_ERROR_TEXT, f"{text}\n\n{tb}" if tb else text)

    # -- the heartbeat socket -----------------------------------------------------------
    def _start_heartbeats(self, wid: bytes, config: dict) -> None:
        interval = float(config.get("heartbeat_interval", 1.0))
        timeout = float(config.get("heartbeat_timeout", 10.0))
        with self._hb_cond:
            self._hb_signal = None
            self._hb_session = (wid, max(0.01, interval), max(interval, timeout))
            self._hb_cond.notify_all()

    def _signal(self, what: str, wid: bytes) -> None:
        self._hb_signal = (what, wid)
        self._wake()

    def _parent_gone(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def _heartbeat_loop(self, ctx: zmq.Context) -> None:
        sock = None
        current = None
        last_pong = time.monotonic()
        try:
            while not self._stop:
                if self._parent_gone():
                    log.warning("the process that started this worker is gone: exiting")
                    os._exit(1)
                session = self._hb_session
                if session is not current:
                    if sock is not None:
                        sock.close(0)
                        sock = None
                    current = session
                    if session is not None:
                        sock = ctx.socket(zmq.DEALER)
                        sock.linger = 0
                        sock.routing_id = b"h" + session[0]
                        sock.reconnect_ivl = 100
                        sock.reconnect_ivl_max = 2000
                        self._secure(sock)
                        sock.connect(self.address)
                        last_pong = time.monotonic()
                if sock is None:
                    with self._hb_cond:
                        if self._hb_session is None and not self._stop:
                            self._hb_cond.wait(0.5)
                    continue
                wid, interval, timeout = session
                try:
                    sock.send(PING, zmq.NOBLOCK)
                except zmq.Again:
                    pass
                deadline = time.monotonic() + interval
                while not self._stop and self._hb_session is session:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    if sock.poll(min(remaining, 0.5) * 1000):
                        msg = sock.recv_multipart(zmq.NOBLOCK)[0]
                        if msg[:1] == PONG:
                            last_pong = time.monotonic()
                        elif msg[:1] == RESET:
                            self._signal("reset", wid)
                    if self._parent_gone():
                        break
                if (not self.local and self._hb_session is session
                        and time.monotonic() - last_pong > timeout):
                    log.warning("no answer from the executor for %.1f s: registering again",
                                time.monotonic() - last_pong)
                    self._signal("lost", wid)
                    with self._hb_cond:
                        while self._hb_session is session and not self._stop:
                            self._hb_cond.wait(0.5)
        finally:
            if sock is not None:
                sock.close(0)


def _safe_str(obj: Any) -> str:
    try:
        return str(obj)
    except Exception:
        return f"<{type(obj).__qualname__} (str() failed)>"


# ---------------------------------------------------------------------------------------
# executor
# ---------------------------------------------------------------------------------------


class _Task:
    __slots__ = ("tid", "future", "fn", "args", "kwargs", "name", "label", "attempts", "started",
                 "solo", "failures")

    def __init__(self, tid: bytes, future: _cf.Future, fn: Any, args: tuple, kwargs: dict,
                 name: Optional[str]):
        self.tid = tid
        self.future: Optional[_cf.Future] = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.name = name.encode("utf-8") if name else b""  # import name, or b"" (by value)
        self.label = name or _describe_callable(fn)
        self.attempts = 0
        self.started = False
        self.solo = False  # send alone (its batch could not be loaded by the worker)
        self.failures: List[str] = []

    def item(self) -> tuple:
        return (self.args, self.kwargs) if self.name else (self.fn, self.args, self.kwargs)

    def release(self) -> None:
        self.fn = self.args = self.kwargs = self.future = None


class _WorkerRecord:
    __slots__ = ("wid", "rid", "hid", "slots", "inflight", "batches", "task_seconds", "last_seen",
                 "pid", "host", "proc")

    def __init__(self, wid: bytes, slots: int, pid: int, host: str, now: float):
        self.wid = wid
        self.rid = b"t" + wid
        self.hid = b"h" + wid
        self.slots = slots  # batches it may hold
        self.inflight: Dict[bytes, _Task] = {}
        self.batches: Dict[bytes, int] = {}  # batch id -> tasks without a result yet
        self.task_seconds: Optional[float] = None  # measured time per task (moving average)
        self.last_seen = now
        self.pid = pid
        self.host = host
        self.proc: Optional[subprocess.Popen] = None

    def describe(self) -> str:
        return f"{self.host}:{self.pid}" + (" (local)" if self.proc is not None else "")


_live_executors: "weakref.WeakSet[Executor]" = weakref.WeakSet()


def _shutdown_at_exit() -> None:
    for executor in list(_live_executors):
        try:
            executor.shutdown(wait=True)
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass


atexit.register(_shutdown_at_exit)


_WORKER_BOOT = ("import runpy, sys; del sys.path[0]; "
                "runpy.run_module('pyfory.integrations.zmq', run_name='__main__', alter_sys=True)")


def _worker_pythonpath() -> str:
    paths = []
    for p in sys.path:
        p = p or os.getcwd()
        if os.path.exists(p) and p not in paths:
            paths.append(p)
    return os.pathsep.join(paths)


def _local_connect_address(endpoint: str) -> str:
    if endpoint.startswith("tcp://"):
        host, port = _split_tcp(endpoint)
        if host in ("0.0.0.0", "*", ""):
            return f"tcp://127.0.0.1:{port}"
        if host in ("::", "[::]"):
            return f"tcp://[::1]:{port}"
    return endpoint


class Executor(_cf.Executor):
    """A ``concurrent.futures.Executor`` running tasks on ZeroMQ workers.

    address: where the executor binds its ROUTER socket and workers connect
    (``tcp://127.0.0.1:*`` — a free port — when None; read the bound one from
    ``.address``). Non-loopback addresses need ``curve_keys`` or ``insecure=True``.
    local_workers: worker processes to start on this machine (kept at that number: one
    that dies is replaced); more can join from anywhere with
    ``python -m pyfory.integrations.zmq worker ADDRESS``.
    max_retries: how many times a task whose worker died or hung is sent to another worker
    before its future fails with WorkerLostError.
    heartbeat_interval / heartbeat_timeout (seconds): workers ping this often; one silent
    for the timeout is declared lost (a local one is killed and replaced).
    prefetch: batches a local worker holds besides the one it runs (its slots are 1 + prefetch).
    max_batch: the most tasks one batch carries. A batch is one task until the executor has
    measured the tasks' duration, then as many as fit in about 5 ms of work (so long tasks
    go one by one and tiny ones share a message and a payload).
    curve_keys: directory written by ``generate_keys`` (client key pair + server public key).
    insecure: let in workers without credentials. Without it and without ``curve_keys``, a
    loopback or ``ipc://`` executor admits only the local workers it starts (they present
    a secret it made; see the module doc, "Security"), and non-loopback addresses are refused.
    context: a zmq.Context to use (for inproc:// with Worker threads in this process).
    fory_options: for the Fory that serializes tasks and results here and in local workers
    (default ``ref=True, strict=False, max_depth=1024``; ``policy=`` reaches local workers as well).
    """

    def __init__(self, address: Optional[str] = None, local_workers: int = 0, *, max_retries: int = 2,
                 heartbeat_interval: float = 1.0, heartbeat_timeout: float = 10.0, prefetch: int = 1,
                 max_batch: int = 64, curve_keys: Optional[str] = None, insecure: bool = False,
                 worker_log_level: str = "WARNING", context: Optional[zmq.Context] = None,
                 **fory_options: Any):
        if address is None:
            address = "tcp://127.0.0.1:*"
        if local_workers < 0 or max_retries < 0 or prefetch < 0 or max_batch < 1:
            raise ValueError("local_workers, max_retries and prefetch must be >= 0, max_batch >= 1")
        if heartbeat_interval <= 0 or heartbeat_timeout < heartbeat_interval:
            raise ValueError("need 0 < heartbeat_interval <= heartbeat_timeout")
        if local_workers and address.startswith("inproc://"):
            raise ValueError("worker processes cannot reach an inproc:// address: use tcp://127.0.0.1 "
                             "or ipc://, or run Worker(address, context=...) threads in this process")
        _check_address(address, bool(curve_keys), insecure, "executor")
        # workers prove who they are: CURVE keys, or this executor's own secret (local workers)
        self._secret: Optional[str] = None
        if not curve_keys and not insecure and not address.startswith("inproc://"):
            self._secret = secrets.token_urlsafe(32)
        elif insecure and is_local_address(address) and not address.startswith("inproc://"):
            log.warning("executor on %s with insecure=True: any local process can register as a "
                        "worker, receive tasks and send results that this process loads", address)
        options = {"ref": True, "strict": False, "max_depth": DEFAULT_MAX_DEPTH}
        options.update(fory_options)
        self._fory_options = options
        self._io_fory = pyfory.Fory(**options)  # the I/O thread writes tasks, reads results
        self.max_retries = max_retries
        self.heartbeat_interval = float(heartbeat_interval)
        self.heartbeat_timeout = float(heartbeat_timeout)
        self._prefetch = prefetch
        self._curve_keys = curve_keys
        self._worker_log_level = worker_log_level
        self._tids = itertools.count(1)
        self._batch_ids = itertools.count(1)
        self.max_batch = max_batch
        self._local_config = self._make_local_config()

        self._own_ctx = context is None
        self._ctx = zmq.Context() if context is None else context
        self._auth = None
        self._router = self._ctx.socket(zmq.ROUTER)
        try:
            if self._secret is not None:
                self._auth = _plain_authenticator(self._ctx, self._secret)
                self._router.plain_server = True
                self._router.zap_domain = _ZAP_DOMAIN.encode()
            self._router.linger = 0
            self._router.router_mandatory = True
            self._router.router_handover = True
            self._router.sndhwm = 0
            self._router.rcvhwm = 0
            if curve_keys:
                _client_curve(self._router, curve_keys)
            self._router.bind(address)
            self.address: str = self._router.last_endpoint.decode()
        except BaseException:
            self._router.close(0)
            self._stop_auth()
            if self._own_ctx:
                self._ctx.term()
            raise
        self._worker_address = _local_connect_address(self.address)

        self._submitted: deque = deque()
        self._pending: deque = deque()
        self._tasks: Dict[bytes, _Task] = {}
        self._workers: Dict[bytes, _WorkerRecord] = {}
        self._procs: List[subprocess.Popen] = []
        self._local_count = local_workers
        self._startup_failures = 0
        self._registered_pids: set = set()
        self._no_worker_since: Optional[float] = None
        self._broken: Optional[str] = None
        self._shutdown = False
        self._cancel_pending = False
        self._lock = threading.Lock()
        self._workers_changed = threading.Condition()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_pending = False
        self._closed = threading.Event()
        try:
            for _ in range(local_workers):
                self._procs.append(self._spawn_local())
        except BaseException:
            for proc in self._procs:
                proc.kill()
                proc.wait()
            self._router.close(0)
            self._stop_auth()
            if self._own_ctx:
                self._ctx.term()
            os.close(self._wake_r)
            os.close(self._wake_w)
            raise
        self._thread = threading.Thread(target=self._run, name="pyfory-zmq-executor", daemon=True)
        self._thread.start()
        _live_executors.add(self)

    # -- public API ---------------------------------------------------------------------
    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> _cf.Future:
        """Schedule fn(*args, **kwargs) on a worker. Importable functions and classes travel
        by name; anything else (lambdas, closures, partials, callable objects) by value."""
        future: _cf.Future = _cf.Future()
        task = _Task(_ID.pack(next(self._tids)), future, fn, args, kwargs, _callable_name(fn))
        with self._lock:
            if self._broken is not None:
                raise _cf.BrokenExecutor(self._broken)
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._submitted.append(task)
        self._wake()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting tasks; with cancel_futures, cancel those not started yet. The
        others run to completion, then local workers are stopped (wait=True waits for all
        of it, wait=False returns at once and it happens in the background)."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                self._cancel_pending = True
        self._wake()
        if wait and threading.current_thread() is not self._thread:
            self._closed.wait()
            self._thread.join()

    def wait_for_workers(self, n: int = 1, timeout: Optional[float] = None) -> bool:
        """Block until at least n workers are registered; False on timeout."""
        with self._workers_changed:
            return self._workers_changed.wait_for(
                lambda: len(self._workers) >= n or self._closed.is_set() or self._broken is not None,
                timeout) and len(self._workers) >= n

    def status(self) -> dict:
        """A snapshot: registered workers (tasks and batches in flight, measured time per
        task), queued tasks, pids of the local worker processes."""
        workers = list(self._workers.values())
        return {
            "address": self.address,
            "workers": [{"id": w.wid.decode(), "pid": w.pid, "host": w.host, "slots": w.slots,
                         "batches": len(w.batches), "in_flight": len(w.inflight),
                         "task_seconds": w.task_seconds, "local": w.proc is not None}
                        for w in workers],
            "pending": len(self._pending) + len(self._submitted),
            "unfinished": len(self._tasks) + len(self._submitted),
            "local_pids": [p.pid for p in list(self._procs) if p.poll() is None],
        }

    def _stop_auth(self) -> None:
        auth, self._auth = self._auth, None
        if auth is not None:
            auth.stop()

    # -- local workers ------------------------------------------------------------------
    def _make_local_config(self) -> bytes:
        config = {
            "fory_options": self._fory_options,
            "prefetch": self._prefetch,
            "curve_keys": self._curve_keys,
            "secret": self._secret,
            "log_level": self._worker_log_level,
        }
        try:
            return pyfory.Fory(ref=True, strict=False).dumps(config)
        except ForyError as e:
            raise ValueError(f"the fory options cannot be sent to local workers: {e}") from e

    def _spawn_local(self) -> subprocess.Popen:
        env = dict(os.environ)
        env["PYTHONPATH"] = _worker_pythonpath()
        # not `python -m`: that puts the working directory first on sys.path, and a source
        # checkout there would shadow the installed pyfory; the worker gets this process's
        # sys.path (PYTHONPATH above) and keeps its working directory
        cmd = [sys.executable, "-c", _WORKER_BOOT, "worker", self._worker_address,
               "--local-config", "--parent-pid", str(os.getpid())]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, env=env, close_fds=True)
        try:
            proc.stdin.write(self._local_config)
            proc.stdin.close()
        except OSError:  # it died already: noticed by the monitor
            pass
        return proc

    # -- the I/O thread -----------------------------------------------------------------
    def _wake(self) -> None:
        if not self._wake_pending and self._wake_w >= 0:
            self._wake_pending = True
            try:
                os.write(self._wake_w, b"\0")
            except (BlockingIOError, OSError):
                pass

    def _run(self) -> None:
        router = self._router
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        tick = min(0.1, self.heartbeat_interval / 2)
        next_tick = time.monotonic() + tick
        try:
            while True:
                timeout = max(0.0, next_tick - time.monotonic())
                events = dict(poller.poll(timeout * 1000))
                if self._wake_r in events:
                    self._wake_pending = False
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                if router in events:
                    self._drain_router()
                self._take_submitted()
                if self._cancel_pending:
                    self._cancel_queued()
                self._dispatch()
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + tick
                    self._check_workers(now)
                    self._dispatch()
                if self._shutdown and self._shutdown_step(now):
                    break
        except BaseException:  # pragma: no cover - a bug here must not hang the futures
            log.exception("the executor's I/O thread failed")
            with self._lock:
                self._broken = "the executor's I/O thread failed; see the log"
            self._fail_all(_cf.BrokenExecutor(self._broken))
        finally:
            self._close()

    def _take_submitted(self) -> None:
        submitted = self._submitted
        while submitted:
            task = submitted.popleft()
            self._tasks[task.tid] = task
            self._pending.append(task)

    def _drain_router(self) -> None:
        router = self._router
        for _ in range(1000):
            try:
                frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) < 2:
                continue
            try:
                self._handle(frames)
            except Exception:  # a bad message must not stop the executor
                log.exception("ignoring a message the executor could not handle")

    def _send(self, frames: list) -> bool:
        try:
            self._router.send_multipart(frames, zmq.NOBLOCK, copy=False)
            return True
        except zmq.ZMQError:  # unreachable peer (router_mandatory) or full
            return False

    def _handle(self, frames: list) -> None:
        rid = frames[0].bytes
        head = frames[1].bytes
        kind, wid = rid[:1], rid[1:]
        now = time.monotonic()
        worker = self._workers.get(wid)
        if kind == b"h":
            if worker is None:
                self._send([rid, RESET, b"unknown worker"])
            else:
                worker.last_seen = now
                self._send([rid, PONG])
            return
        if kind != b"t":
            return
        cmd = head[:1]
        if cmd == RESULT or cmd == FAILED:
            if worker is None:
                self._send([rid, RESET, b"unknown worker"])
                return
            worker.last_seen = now
            batch = head[1:9]
            remaining = worker.batches.get(batch)
            if remaining is None:  # a stale batch (its tasks were retried elsewhere): ignore
                return
            if cmd == RESULT:
                (seconds,) = _SECONDS.unpack_from(head, 9)
                tids = _parse_tids(head, 17)
            else:
                seconds = None
                tids = _parse_tids(head, 9)
            tasks = [worker.inflight.pop(tid, None) for tid in tids]
            remaining -= len(tids)
            if remaining > 0:
                worker.batches[batch] = remaining
            else:
                del worker.batches[batch]
            if cmd == RESULT:
                if tids and seconds is not None and seconds >= 0:
                    per_task = seconds / len(tids)
                    old = worker.task_seconds
                    worker.task_seconds = per_task if old is None else 0.7 * old + 0.3 * per_task
                self._results(tasks, frames[2:], worker)
            else:
                self._batch_failed(tasks, frames[2:], worker)
        elif cmd == READY:
            self._register(rid, wid, frames, now)

    def _register(self, rid: bytes, wid: bytes, frames: list, now: float) -> None:
        welcome = [rid, WELCOME, json.dumps({"heartbeat_interval": self.heartbeat_interval,
                                             "heartbeat_timeout": self.heartbeat_timeout}).encode()]
        if wid in self._workers:
            self._send(welcome)
            return
        try:
            info = json.loads(frames[2].bytes)
            slots = max(1, int(info.get("slots", 1)))
            pid = int(info.get("pid", 0))
            host = str(info.get("host", "?"))
            python = tuple(info.get("python", ()))
        except (IndexError, ValueError, TypeError, AttributeError):
            log.warning("ignoring a malformed READY message")
            return
        if python != tuple(sys.version_info[:2]):
            reason = (f"the worker runs Python {'.'.join(map(str, python))}, the executor "
                      f"{sys.version_info[0]}.{sys.version_info[1]}: functions travel as bytecode, "
                      f"both sides need the same minor version")
            log.error("refusing worker %s:%s: %s", host, pid, reason)
            self._send([rid, REFUSE, reason.encode()])
            return
        worker = _WorkerRecord(wid, slots, pid, host, now)
        if host == _socketlib.gethostname():
            for proc in self._procs:
                if proc.pid == pid:
                    worker.proc = proc
                    self._registered_pids.add(pid)
                    self._startup_failures = 0
        if not self._send(welcome):
            return
        self._workers[wid] = worker
        log.info("worker %s registered with %d slot(s)", worker.describe(), slots)
        with self._workers_changed:
            self._workers_changed.notify_all()

    def _results(self, tasks: list, frames: list, worker: _WorkerRecord) -> None:
        try:
            values = decode(frames, self._io_fory)
            if type(values) is not list or len(values) != len(tasks):
                raise MalformedDataError("a result message must hold one result per task")
        except BaseException as e:  # noqa: B036 - whatever loading raised, the futures get it
            error = payload_error(e, "loading the results")
            log.debug("results from %s could not be loaded: %r", worker.describe(), error)
            for task in tasks:
                if task is not None:
                    self._finish(task, exc=error)
            return
        for task, value in zip(tasks, values):
            if task is not None:
                self._finish_with(task, value, worker)

    def _batch_failed(self, tasks: list, frames: list, worker: _WorkerRecord) -> None:
        live = [t for t in tasks if t is not None]
        if len(live) > 1:  # retry each task alone: the error may belong to one of them
            for task in live:
                task.solo = True
            self._pending.extendleft(reversed(live))
            return
        try:
            value = decode(frames, self._io_fory)
        except BaseException as e:  # noqa: B036 - whatever loading raised, the future gets it
            value = (ST_ERROR_TEXT, f"the worker could not load the task, and its error could not "
                                    f"be loaded here: {payload_error(e, 'loading the error')!r}")
        for task in live:
            self._finish_with(task, value, worker)

    def _finish_with(self, task: _Task, value: Any, worker: _WorkerRecord) -> None:
        status, payload = value if type(value) is tuple and len(value) == 2 else (None, None)
        if status == ST_OK:
            self._finish(task, result=payload)
        elif status == ST_ERROR and type(payload) is dict and isinstance(payload.get("exc"), BaseException):
            self._finish(task, exc=_with_remote_tb(payload["exc"], str(payload.get("tb", ""))))
        elif status == ST_ERROR_TEXT and isinstance(payload, str):
            self._finish(task, exc=_with_remote_tb(RemoteError(payload.split("\n", 1)[0]), payload))
        else:
            self._finish(task, exc=MalformedDataError(
                f"worker {worker.describe()} sent a malformed result for task {task.label}"))

    def _finish(self, task: _Task, result: Any = None, exc: Optional[BaseException] = None) -> None:
        self._tasks.pop(task.tid, None)
        future = task.future
        task.release()
        _set(future, result, exc)

    def _batch_size(self, worker: _WorkerRecord, free_workers: int) -> int:
        seconds = worker.task_seconds
        if seconds is None:
            return 1
        size = int(BATCH_SECONDS / max(seconds, 1e-7))
        share = -(-len(self._pending) // max(1, free_workers))  # spread what is waiting
        return max(1, min(size, share, self.max_batch))

    def _encode_batch(self, tasks: list) -> Optional[list]:
        """The payload frames of a batch; tasks that cannot be serialized fail and leave it."""
        try:
            return encode([t.item() for t in tasks], self._io_fory)
        except Exception as e:
            if len(tasks) == 1:
                self._finish(tasks[0], exc=e)
                tasks.clear()
                return None
        good = []
        for task in tasks:
            try:
                encode([task.item()], self._io_fory)
                good.append(task)
            except Exception as e:
                self._finish(task, exc=e)
        tasks[:] = good
        if not good:
            return None
        return self._encode_batch(tasks)

    def _dispatch(self) -> None:
        pending = self._pending
        if not pending or not self._workers:
            return
        while pending:
            free = [w for w in self._workers.values() if len(w.batches) < w.slots]
            if not free:
                return
            worker = min(free, key=lambda w: (len(w.batches), len(w.inflight)))
            size = self._batch_size(worker, len(free))
            tasks: list = []
            while pending and len(tasks) < size:
                task = pending.popleft()
                if not task.started:
                    if not task.future.set_running_or_notify_cancel():
                        self._tasks.pop(task.tid, None)
                        task.release()
                        continue
                    task.started = True
                if task.solo and tasks:
                    pending.appendleft(task)
                    break
                tasks.append(task)
                if task.solo:
                    break
            if not tasks:
                continue
            frames = self._encode_batch(tasks)
            if frames is None:
                continue
            batch = _ID.pack(next(self._batch_ids))
            head = _task_header(batch, [(t.tid, t.name) for t in tasks])
            if not self._send([worker.rid, head, *frames]):
                pending.extendleft(reversed(tasks))
                self._lose(worker, "is unreachable")
                continue
            worker.batches[batch] = len(tasks)
            for task in tasks:
                worker.inflight[task.tid] = task

    def _check_workers(self, now: float) -> None:
        for worker in list(self._workers.values()):
            proc = worker.proc
            if proc is not None and proc.poll() is not None:
                self._lose(worker, f"exited with code {proc.returncode}")
            elif now - worker.last_seen > self.heartbeat_timeout:
                self._lose(worker, f"sent no heartbeat for {now - worker.last_seen:.1f} s")
        for i, proc in enumerate(self._procs):
            if self._broken is not None:
                break
            if proc.poll() is None:
                continue
            if self._shutdown and not self._tasks:
                continue
            if proc.pid not in self._registered_pids:
                self._startup_failures += 1
                if self._startup_failures >= 3 and not self._workers:
                    self._break(f"local worker processes exit before they register with the "
                                f"executor (last exit code {proc.returncode}); see their output")
                    return
            log.warning("local worker process %d exited (code %s): starting another", proc.pid,
                        proc.returncode)
            self._registered_pids.discard(proc.pid)
            self._procs[i] = self._spawn_local()
        if self._workers:
            self._no_worker_since = None
        elif self._no_worker_since is None:
            self._no_worker_since = now

    def _lose(self, worker: _WorkerRecord, reason: str) -> None:
        """Forget a worker; retry its tasks elsewhere or fail them."""
        if self._workers.pop(worker.wid, None) is None:
            return
        what = f"worker {worker.describe()} {reason}"
        log.warning("%s; %d task(s) in flight", what, len(worker.inflight))
        if worker.proc is not None:
            if worker.proc.poll() is None:  # hung: it is ours, end it
                worker.proc.kill()
        else:
            self._send([worker.rid, RESET, b"declared lost"])
        retry = []
        for task in worker.inflight.values():
            task.attempts += 1
            task.failures.append(what)
            if task.attempts > self.max_retries:
                self._finish(task, exc=WorkerLostError(
                    f"task {task.label} was lost {task.attempts} time(s) (max_retries="
                    f"{self.max_retries}): " + "; ".join(task.failures)))
            else:
                retry.append(task)
        worker.inflight.clear()
        worker.batches.clear()
        self._pending.extendleft(reversed(retry))
        with self._workers_changed:
            self._workers_changed.notify_all()

    def _break(self, reason: str) -> None:
        with self._lock:
            self._broken = reason
        log.error("executor broken: %s", reason)
        self._fail_all(_cf.BrokenExecutor(reason))

    def _fail_all(self, exc: BaseException) -> None:
        self._take_submitted()
        for task in list(self._tasks.values()):
            if task.future is not None and not task.started:
                task.future.set_running_or_notify_cancel()
            self._finish(task, exc=exc)
        self._tasks.clear()
        self._pending.clear()
        for worker in self._workers.values():
            worker.inflight.clear()
            worker.batches.clear()

    def _cancel_queued(self) -> None:
        """shutdown(cancel_futures=True): cancel every task that has not started."""
        self._take_submitted()
        keep: deque = deque()
        for task in self._pending:
            if not task.started:
                task.future.cancel()
                self._tasks.pop(task.tid, None)
                task.release()
            else:
                keep.append(task)
        self._pending = keep

    def _shutdown_step(self, now: float) -> bool:
        """Called while shutting down; True when the I/O thread may stop."""
        if not self._tasks and not self._submitted:
            return True
        if self._broken is not None:
            return True
        if (not self._workers and self._no_worker_since is not None
                and now - self._no_worker_since > self.heartbeat_timeout
                and not any(p.poll() is None for p in self._procs)):
            self._fail_all(WorkerLostError(
                f"shutdown: no worker connected for {self.heartbeat_timeout:.1f} s to run the "
                f"remaining tasks"))
            return True
        return False

    def _close(self) -> None:
        with self._lock:
            self._shutdown = True
        for worker in list(self._workers.values()):
            self._send([worker.rid, BYE])
        for proc in self._procs:  # not registered (yet): nobody to say goodbye to
            if proc.pid not in self._registered_pids and proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5.0
        for proc in self._procs:
            try:
                proc.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._fail_all(RuntimeError("the executor was shut down before this task ran"))
        self._router.close(linger=200)
        self._stop_auth()
        if self._own_ctx:
            self._ctx.term()
        wake_w, self._wake_w = self._wake_w, -1
        os.close(wake_w)
        os.close(self._wake_r)
        _live_executors.discard(self)
        self._closed.set()
        with self._workers_changed:
            self._workers_changed.notify_all()


def _plain_authenticator(ctx: zmq.Context, secret: str):
    """A ZAP handler on ctx that admits PLAIN peers presenting secret (and nobody else)."""
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(ctx, log=logging.getLogger("pyfory.integrations.zmq.auth"))
    try:
        auth.start()
    except zmq.ZMQError as e:
        raise ValueError(
            f"cannot start the executor's authenticator on this zmq.Context ({e}): it already "
            f"has a ZAP handler. Use curve_keys=..., or a context of its own") from e
    auth.configure_plain(domain=_ZAP_DOMAIN, passwords={LOCAL_WORKER_USER: secret})
    return auth


def _set(future: Optional[_cf.Future], result: Any = None, exc: Optional[BaseException] = None) -> None:
    if future is None or future.done():
        return
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
    except _cf.InvalidStateError:  # pragma: no cover - cancelled meanwhile
        pass


def _with_remote_tb(exc: BaseException, tb: str) -> BaseException:
    if tb:
        exc.__cause__ = RemoteTraceback(f'\n"""\n{tb}"""')
        try:
            exc.remote_traceback = tb
        except Exception:
            pass
    return exc


# ---------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pyfory.integrations.zmq",
        description="pyfory ZeroMQ workers and CURVE keys.")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run tasks for the Executor bound at ADDRESS")
    w.add_argument("address", help="the executor's address, e.g. tcp://127.0.0.1:5555")
    w.add_argument("--concurrency", type=int, default=1,
                   help="worker processes to run (each runs one task at a time; default 1)")
    w.add_argument("--prefetch", type=int, default=1,
                   help="task batches a worker process holds besides the one it runs (default 1)")
    w.add_argument("--strict", action="store_true",
                   help="payloads may hold only builtins and --register'ed classes; only functions "
                        "matched by --allow run, and none travel by value")
    w.add_argument("--allow", action="append", metavar="PATTERN",
                   help="fnmatch pattern on MODULE:QUALNAME of functions that may run (repeatable)")
    w.add_argument("--register", action="append", default=[], metavar="MODULE:CLASS",
                   help="register a class with the worker's Fory (for --strict; repeatable)")
    w.add_argument("--policy", metavar="MODULE:NAME",
                   help="a DeserializationPolicy class, factory or instance for loads")
    w.add_argument("--no-ref", action="store_true", help="Fory(ref=False)")
    w.add_argument("--max-depth", type=int, default=None, help="Fory(max_depth=...)")
    w.add_argument("--curve-keys", metavar="DIR",
                   help="CURVE keys written by the 'keys' command (server.key_secret, authorized_clients/)")
    w.add_argument("--curve-secret", metavar="FILE", help="the workers' server secret key file")
    w.add_argument("--curve-clients", metavar="DIR", help="directory of authorized client public keys")
    w.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback address without CURVE (anyone reaching it can run code)")
    w.add_argument("--log-level", default="INFO")
    w.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    w.add_argument("--local-config", action="store_true", help=argparse.SUPPRESS)
    k = sub.add_parser("keys", help="generate CURVE keys for executors and workers")
    k.add_argument("directory")
    return parser


def _worker_main(args: argparse.Namespace) -> int:
    options: Dict[str, Any] = {}
    prefetch = args.prefetch
    curve_keys = args.curve_keys
    log_level = args.log_level
    local = False
    secret = None
    if args.local_config:  # started by an Executor: the rest of the options come on stdin
        config = pyfory.Fory(ref=True, strict=False).loads(sys.stdin.buffer.read())
        options.update(config.get("fory_options") or {})
        prefetch = config.get("prefetch", prefetch)
        curve_keys = config.get("curve_keys") or curve_keys
        secret = config.get("secret")
        log_level = config.get("log_level", log_level)
        local = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the executor decides when we stop
    logging.basicConfig(level=getattr(logging, str(log_level).upper(), logging.INFO),
                        format="%(asctime)s pyfory-zmq-worker[%(process)d] %(levelname)s %(message)s")
    if args.strict:
        options["strict"] = True
    if args.no_ref:
        options["ref"] = False
    if args.max_depth is not None:
        options["max_depth"] = args.max_depth
    if args.policy:
        policy = _resolve_spec(args.policy)
        if isinstance(policy, type) or (callable(policy) and not hasattr(policy, "validate_class")):
            policy = policy()
        options["policy"] = policy
    register = [_resolve_spec(spec) for spec in args.register]

    if args.concurrency > 1 and not local:
        return _supervise(args)
    try:
        worker = Worker(args.address, prefetch=prefetch, fory_options=options, allow=args.allow,
                        register=register, curve_keys=curve_keys, curve_secret=args.curve_secret,
                        curve_clients=args.curve_clients, insecure=args.insecure,
                        parent_pid=args.parent_pid, local=local, secret=secret)
    except ValueError as e:
        print(f"pyfory zmq worker: {e}", file=sys.stderr)
        return 2

    def on_term(signum, frame):
        worker.stop()

    signal.signal(signal.SIGTERM, on_term)
    if not local:
        signal.signal(signal.SIGINT, on_term)
    log.info("worker %d serving %s", os.getpid(), args.address)
    return worker.run()


def _supervise(args: argparse.Namespace) -> int:
    """--concurrency N: run N single worker processes, restart those that die."""
    try:  # fail early (bad address, keys) instead of N times
        _check_address(args.address, bool(args.curve_keys or args.curve_secret), args.insecure, "worker")
    except ValueError as e:
        print(f"pyfory zmq worker: {e}", file=sys.stderr)
        return 2
    argv = [sys.executable, "-m", "pyfory.integrations.zmq", "worker", args.address,
            "--concurrency", "1", "--parent-pid", str(os.getpid()), "--prefetch", str(args.prefetch),
            "--log-level", args.log_level]
    for flag in ("strict", "insecure", "no_ref"):
        if getattr(args, flag):
            argv.append("--" + flag.replace("_", "-"))
    for flag in ("max_depth", "policy", "curve_keys", "curve_secret", "curve_clients"):
        value = getattr(args, flag)
        if value is not None:
            argv += ["--" + flag.replace("_", "-"), str(value)]
    for pattern in args.allow or ():
        argv += ["--allow", pattern]
    for spec in args.register:
        argv += ["--register", spec]
    stopping = threading.Event()

    def on_term(signum, frame):
        stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    children = [subprocess.Popen(argv) for _ in range(args.concurrency)]
    failures = 0
    try:
        while not stopping.wait(0.2):
            for i, child in enumerate(children):
                code = child.poll()
                if code is None:
                    continue
                if code in (2, 3):  # configuration refused: restarting will not help
                    stopping.set()
                    return code
                failures += 1
                log.warning("worker process %d exited with code %s: restarting it", child.pid, code)
                children[i] = subprocess.Popen(argv)
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return 0


def _keys_main(args: argparse.Namespace) -> int:
    paths = generate_keys(args.directory)
    print(f"CURVE keys written to {args.directory}:")
    for what, path in paths.items():
        print(f"  {what:20} {path}")
    print("Workers need server.key_secret and authorized_clients/ "
          f"(--curve-keys {args.directory}); executors need client.key_secret and server.key "
          f"(Executor(..., curve_keys={args.directory!r})). Keep the *.key_secret files private.")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "worker":
        return _worker_main(args)
    return _keys_main(args)


if __name__ == "__main__":
    # run the importable copy of this module, so that classes and functions sent over the
    # wire are named pyfory.integrations.zmq.X, not __main__.X
    from pyfory.integrations.zmq import main as _main

    sys.exit(_main())
