"""pyfory messages on ZeroMQ sockets: one payload frame plus one frame per out-of-band
buffer, sent and received without copies (see the package doc)."""

from __future__ import annotations

import inspect
import logging
import sys
import threading
from typing import Any, Optional, Sequence

try:
    import zmq
    import zmq.asyncio
except ModuleNotFoundError as _e:  # an optional dependency: name the extra that brings it
    raise ModuleNotFoundError(
        'pyfory.integrations.zmq needs pyzmq: pip install "pyfory[zmq]" '
        "(or pip install pyzmq)", name=_e.name) from _e

from pyfory.integrations import DEFAULT_MAX_DEPTH

from pyfory.buffers import BufferObject
from pyfory.error import (
    MalformedDataError,
    OutOfBandBufferError,
)
from pyfory.threadsafe import ThreadSafeFory

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


_thread = threading.local()

# pyzmq's Python-level Socket.send only adds routing_id / group handling (unused here) to
# its Cython backend's send, and costs ~0.27 us a call: a one-frame message goes to the
# backend directly when the socket's class does not override send (zmq.asyncio does).
_SUGAR_SEND = zmq.Socket.send
_BACKEND_SEND = (zmq.backend.Socket.send
                 if isinstance(getattr(zmq.backend, "Socket", None), type)
                 and issubclass(zmq.Socket, zmq.backend.Socket) else None)
# and a socket whose class keeps pyzmq's recv (zmq.asyncio and zmq.green override it)
_BACKEND_RECV = zmq.Socket.recv if _BACKEND_SEND is not None else None


def _raise_zmq_error(errno: int) -> None:
    """Raise what pyzmq raises when a libzmq call fails with errno."""
    if errno == zmq.EAGAIN:
        raise zmq.Again(errno)
    if errno == zmq.ETERM:
        raise zmq.ContextTerminated(errno)
    raise zmq.ZMQError(errno)


def _bind_libzmq() -> Any:
    """The module that sends and receives one-frame messages with direct libzmq calls
    (``_libzmq``), bound to the libzmq that pyzmq's Cython backend loaded, or None where
    that is not possible: another backend (PyPy's CFFI), symbols that are not exported, a
    libzmq older than 4.1 (another zmq_msg_t), or the extension not built."""
    if _BACKEND_SEND is None or zmq.zmq_version_info() < (4, 1):
        return None
    # the extension module that defines pyzmq's Socket (zmq.backend.cython._zmq since
    # pyzmq 26, zmq.backend.cython.socket before)
    backend = sys.modules.get(zmq.backend.Socket.__module__)
    if not zmq.backend.Socket.__module__.startswith("zmq.backend.cython.") or backend is None:
        return None
    try:
        import ctypes

        from pyfory.integrations.zmq import _libzmq

        # dlopen of a loaded library gives its handle; dlsym on it also searches the
        # libraries it depends on, the libzmq its sockets live in
        lib = ctypes.CDLL(backend.__file__)
        addresses = {name: ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
                     for name in _libzmq.FUNCTIONS}
        _libzmq.bind(addresses, _raise_zmq_error, zmq.COPY_THRESHOLD)
    except (ImportError, OSError, AttributeError, TypeError, ValueError) as e:
        log.debug("pyfory.integrations.zmq: pyzmq's Frame path only (%s)", e)
        return None
    return _libzmq


_libzmq = _bind_libzmq()


def _thread_fory() -> Any:
    """This thread's Fory of :func:`default_fory` (the same instance, so registrations on
    the ThreadSafeFory reach it), without ThreadSafeFory's per-call layers: a small
    message's send or recv costs about 0.2 us less, a tenth of its pyfory work."""
    try:
        return _thread.fory
    except AttributeError:
        fory = _thread.fory = default_fory()._fory()
        return fory


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
        fory = _thread_fory()
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
        fory = _thread_fory()
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
        fory = _thread_fory()
    frames = fory.dumps_with_buffers(obj, oob_threshold)
    if len(frames) == 1 and not track:
        # one frame: the payload, which has nothing large in it (large buffers are frames
        # of their own). A copy is cheaper than zero-copy's bookkeeping for it.
        if _BACKEND_SEND is not None and getattr(type(socket), "send", None) is _SUGAR_SEND:
            if _libzmq is not None and not socket._closed:
                return _libzmq.send_bytes(socket.underlying, frames[0], flags)
            return _BACKEND_SEND(socket, frames[0], flags, True, False)
        return socket.send(frames[0], flags, copy=True)
    return socket.send_multipart(frames, flags, copy=copy, track=track)


def recv(socket: zmq.Socket, flags: int = 0, copy: bool = False, *, fory: Any = None) -> Any:
    """Receive one object sent with :func:`send`. With ``copy=False`` (the default) numpy
    arrays and other out-of-band values share memory with the received frames."""
    # The first frame is the payload, small whatever the object (large buffers travel
    # as frames of their own). Received by libzmq directly where possible: a zmq.Frame
    # costs ~0.7 us, several times a 3-key dict's loads, and asking the socket whether
    # more frames follow (RCVMORE) about 1 us of pyzmq.
    if _libzmq is not None and type(socket).recv is _BACKEND_RECV and not socket._closed:
        first = _libzmq.recv_frame(socket.underlying, flags)    # a list when more follow
        more = type(first) is list
        if more:
            first = first[0]
    else:
        first = socket.recv(flags, copy=False)
        more = first.more
    if not more:
        if fory is None:
            fory = _thread_fory()
        return fory.loads(first)
    frames = [first if not copy or type(first) is bytes else first.bytes]
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

