"""pyfory over ZeroMQ sockets: one multipart message per object, zero copy, asyncio,
socket classes, malformed messages. Real sockets on inproc://, ipc:// and 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import threading

import pytest

zmq = pytest.importorskip("zmq")
pytest.importorskip("zmq.asyncio")

from pyfory.integrations import zmq as fzmq  # noqa: E402
from pyfory.integrations.zmq import transport  # noqa: E402

import pyfory  # noqa: E402
from pyfory.error import (  # noqa: E402
    FormatError,
    ForyError,
    MalformedDataError,
    OutOfBandBufferError,
    TypeNotRegisteredError,
)

try:
    import numpy as np
except ImportError:  # pragma: no cover
    np = None

needs_numpy = pytest.mark.skipif(np is None, reason="numpy not installed")
pytestmark = pytest.mark.timeout(60)

RECV_TIMEOUT_MS = 20_000


@dataclasses.dataclass
class Point:
    x: int
    y: float
    tags: list


def _exporter(array):
    """The object whose memory a numpy array finally lives in."""
    base = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    if isinstance(base, memoryview):
        return base.obj
    return base


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def _configure(sock):
    sock.linger = 0
    sock.rcvtimeo = RECV_TIMEOUT_MS
    sock.sndtimeo = RECV_TIMEOUT_MS
    return sock


@pytest.fixture(params=["libzmq", "pyzmq"])
def io_path(request, monkeypatch):
    """Each test of sockets runs on both ways the transport sends and receives one-frame
    messages: libzmq's functions called directly (where pyzmq's Cython backend gives
    them) and pyzmq's own send/recv (zmq.Frame), the fallback everywhere else."""
    if request.param == "pyzmq":
        monkeypatch.setattr(transport, "_libzmq", None)
    elif transport._libzmq is None:
        pytest.skip("the direct libzmq path is not available with this pyzmq")
    return request.param


@pytest.fixture(params=["inproc", "ipc", "tcp"])
def pair(request, ctx, tmp_path, io_path):
    """Two connected PAIR sockets over each transport."""
    a = _configure(ctx.socket(zmq.PAIR))
    b = _configure(ctx.socket(zmq.PAIR))
    if request.param == "inproc":
        address = f"inproc://pair-{id(a)}"
        a.bind(address)
    elif request.param == "ipc":
        address = f"ipc://{tmp_path}/pair.sock"
        a.bind(address)
    else:
        port = a.bind_to_random_port("tcp://127.0.0.1")
        address = f"tcp://127.0.0.1:{port}"
    b.connect(address)
    yield a, b
    a.close(0)
    b.close(0)


VALUES = [
    None,
    42,
    "héllo",
    [1, 2.5, "three", None, (4, 5)],
    {"name": "Alice", "scores": [95, 87, 92], "nested": {"a": {1, 2}, "b": frozenset({3})}},
    Point(1, 2.5, ["x", "y"]),
    b"\x00" * 10 + b"end",
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_roundtrip_values(pair, value):
    a, b = pair
    fzmq.send(a, value)
    assert fzmq.recv(b) == value


def test_shared_references_and_cycles(pair):
    a, b = pair
    shared = [1, 2]
    value = {"x": shared, "y": shared}
    value["self"] = value
    fzmq.send(a, value)
    out = fzmq.recv(b)
    assert out["x"] is out["y"] and out["self"] is out


def test_one_message_per_object_with_one_frame_per_large_buffer(pair):
    a, b = pair
    big = b"x" * 200_000
    big2 = bytearray(b"y" * 300_000)
    small = b"z" * 100
    fzmq.send(a, {"big": big, "big2": big2, "small": small})
    frames = b.recv_multipart(copy=False)
    assert len(frames) == 3  # payload + 2 out-of-band buffers; small stays in band
    assert len(frames[0]) < 1000
    assert sorted(len(f) for f in frames[1:]) == [200_000, 300_000]
    out = fzmq.decode(frames)
    assert out == {"big": big, "big2": big2, "small": small}
    assert not b.poll(0)  # nothing else arrived: exactly one message


def test_small_objects_are_a_single_frame(pair):
    a, b = pair
    fzmq.send(a, {"a": 1, "b": [1, 2, 3], "c": "text"})
    frames = b.recv_multipart()
    assert len(frames) == 1


@needs_numpy
def test_numpy_send_side_zero_copy():
    array = np.arange(1_000_000, dtype=np.float64)
    frames = fzmq.encode({"a": array})
    assert len(frames) == 2
    assert np.shares_memory(np.frombuffer(frames[1], dtype=np.uint8), array)


@needs_numpy
def test_numpy_receive_shares_memory_with_frame(pair):
    a, b = pair
    array = np.random.default_rng(0).random((500, 400))
    fortran = np.asfortranarray(np.arange(300_000, dtype=np.int32).reshape(600, 500))
    fzmq.send(a, {"c": array, "f": fortran})
    frames = b.recv_multipart(copy=False)
    assert len(frames) == 3
    out = fzmq.decode(frames)
    np.testing.assert_array_equal(out["c"], array)
    np.testing.assert_array_equal(out["f"], fortran)
    assert out["f"].flags.f_contiguous
    views = [np.frombuffer(f, dtype=np.uint8) for f in frames[1:]]
    assert any(np.shares_memory(out["c"], v) for v in views)
    assert any(np.shares_memory(out["f"], v) for v in views)
    assert out["c"].flags.writeable  # zmq frames are writable, as pickle does it


@needs_numpy
def test_recv_builds_arrays_on_the_received_frame(pair):
    a, b = pair
    array = np.arange(250_000, dtype=np.int64)
    fzmq.send(a, array)
    out = fzmq.recv(b)
    np.testing.assert_array_equal(out, array)
    assert isinstance(_exporter(out), zmq.Frame)


@needs_numpy
def test_recv_copy_true_still_correct(pair):
    a, b = pair
    array = np.arange(100_000, dtype=np.float32)
    fzmq.send(a, [array, array])
    out = fzmq.recv(b, copy=True)
    np.testing.assert_array_equal(out[0], array)
    assert out[0] is out[1]  # shared reference kept


@needs_numpy
def test_large_array_over_tcp(ctx):
    a = _configure(ctx.socket(zmq.PAIR))
    b = _configure(ctx.socket(zmq.PAIR))
    port = a.bind_to_random_port("tcp://127.0.0.1")
    b.connect(f"tcp://127.0.0.1:{port}")
    array = np.random.default_rng(1).random(6_000_000)  # 48 MB
    tracker = fzmq.send(a, array, track=True)
    out = fzmq.recv(b)
    tracker.wait(RECV_TIMEOUT_MS / 1000)
    assert tracker.done
    np.testing.assert_array_equal(out, array)


# -- socket classes ---------------------------------------------------------------------


def test_socket_class_send_obj_recv_obj():
    context = fzmq.Context()
    try:
        a = _configure(context.socket(zmq.PAIR))
        b = _configure(context.socket(zmq.PAIR))
        assert isinstance(a, fzmq.Socket)
        a.bind("inproc://sockclass")
        b.connect("inproc://sockclass")
        a.send_obj({"k": [1, 2, 3]})
        assert b.recv_obj() == {"k": [1, 2, 3]}
        b.send_obj(Point(3, 4.0, []))
        assert a.recv_obj() == Point(3, 4.0, [])
    finally:
        context.destroy(linger=0)


def test_socket_shadow_and_custom_fory(ctx):
    raw_a = _configure(ctx.socket(zmq.PAIR))
    raw_b = _configure(ctx.socket(zmq.PAIR))
    raw_a.bind("inproc://shadow")
    raw_b.connect("inproc://shadow")
    a = fzmq.Socket.shadow(raw_a)
    strict = fzmq.Socket.shadow(raw_b)
    strict.fory = pyfory.Fory()  # strict: only builtins and registered classes
    a.send_obj([1, "two", {"three": 3.0}])
    assert strict.recv_obj() == [1, "two", {"three": 3.0}]
    a.send_obj(Point(1, 2.0, []))
    with pytest.raises(TypeNotRegisteredError):
        strict.recv_obj()
    a.send_obj("still usable")
    assert strict.recv_obj() == "still usable"


def test_socket_constructor_takes_fory(ctx):
    fory = pyfory.Fory(ref=False, strict=False)
    a = _configure(fzmq.Socket(ctx, zmq.PAIR, fory=fory))
    b = _configure(fzmq.Socket(ctx, zmq.PAIR, fory=fory))
    try:
        assert a.fory is fory
        a.bind("inproc://ctor")
        b.connect("inproc://ctor")
        a.send_obj(Point(1, 2.0, ["a"]))
        assert b.recv_obj() == Point(1, 2.0, ["a"])
    finally:
        a.close(0)
        b.close(0)


def test_router_dealer_with_encode_decode(ctx):
    router = _configure(ctx.socket(zmq.ROUTER))
    dealer = _configure(ctx.socket(zmq.DEALER))
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer.connect(f"tcp://127.0.0.1:{port}")
    fzmq.send(dealer, {"request": 1})
    identity, *frames = router.recv_multipart(copy=False)
    assert fzmq.decode(frames) == {"request": 1}
    router.send_multipart([identity, *fzmq.encode({"reply": 2})], copy=False)
    assert fzmq.recv(dealer) == {"reply": 2}


def test_threads_share_the_default_serializer(ctx):
    errors = []

    def run(n):
        try:
            a = _configure(ctx.socket(zmq.PAIR))
            b = _configure(ctx.socket(zmq.PAIR))
            a.bind(f"inproc://thread-{n}")
            b.connect(f"inproc://thread-{n}")
            for i in range(200):
                value = {"thread": n, "i": i, "data": list(range(i % 17))}
                fzmq.send(a, value)
                assert fzmq.recv(b) == value
            a.close(0)
            b.close(0)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors


def test_lambda_and_closure_travel(pair):
    a, b = pair
    factor = 7

    def scale(x):
        return x * factor

    fzmq.send(a, {"f": scale, "g": lambda y: y + 1})
    out = fzmq.recv(b)
    assert out["f"](3) == 21 and out["g"](1) == 2


# -- asyncio ----------------------------------------------------------------------------


def test_asyncio_functions_and_socket_class():
    async def main():
        context = fzmq.AsyncContext()
        try:
            a = _configure(context.socket(zmq.PAIR))
            b = _configure(context.socket(zmq.PAIR))
            assert isinstance(a, fzmq.AsyncSocket)
            port = a.bind_to_random_port("tcp://127.0.0.1")
            b.connect(f"tcp://127.0.0.1:{port}")
            await a.send_obj({"x": [1, 2]})
            assert await asyncio.wait_for(b.recv_obj(), 20) == {"x": [1, 2]}
            await fzmq.send_async(b, Point(1, 1.0, []))
            assert await asyncio.wait_for(fzmq.recv_async(a), 20) == Point(1, 1.0, [])
            if np is not None:
                array = np.arange(200_000, dtype=np.float64)
                await fzmq.send_async(a, array)
                out = await asyncio.wait_for(fzmq.recv_async(b), 20)
                np.testing.assert_array_equal(out, array)
                assert isinstance(_exporter(out), zmq.Frame)
            # a malformed message on an asyncio socket: clear error, socket usable
            await a.send_multipart([b"not a payload"])
            with pytest.raises(FormatError):
                await asyncio.wait_for(b.recv_obj(), 20)
            await a.send_obj("next")
            assert await asyncio.wait_for(b.recv_obj(), 20) == "next"
        finally:
            context.destroy(linger=0)

    asyncio.run(main())


def test_asyncio_plain_zmq_asyncio_socket():
    async def main():
        context = zmq.asyncio.Context()
        try:
            a = _configure(context.socket(zmq.PAIR))
            b = _configure(context.socket(zmq.PAIR))
            a.bind("inproc://plain-async")
            b.connect("inproc://plain-async")
            receiver = asyncio.ensure_future(fzmq.recv_async(b))
            await fzmq.send_async(a, {"async": True})
            assert await asyncio.wait_for(receiver, 20) == {"async": True}
        finally:
            context.destroy(linger=0)

    asyncio.run(main())


# -- malformed and truncated messages ---------------------------------------------------


def _valid_frames():
    return [bytes(f) for f in fzmq.encode({"a": b"A" * 100_000, "b": bytearray(b"B" * 80_000), "n": 1})]


def _assert_usable(a, b):
    fzmq.send(a, {"after": "error"})
    assert fzmq.recv(b) == {"after": "error"}


def test_garbage_payload(pair):
    a, b = pair
    a.send_multipart([b"definitely not pyfory"])
    with pytest.raises(FormatError):
        fzmq.recv(b)
    _assert_usable(a, b)


def test_empty_payload_frame(pair):
    a, b = pair
    a.send_multipart([b""])
    with pytest.raises(ForyError):
        fzmq.recv(b)
    _assert_usable(a, b)


def test_missing_buffer_frame(pair):
    a, b = pair
    frames = _valid_frames()
    assert len(frames) == 3
    a.send_multipart(frames[:2])
    with pytest.raises(OutOfBandBufferError):
        fzmq.recv(b)
    a.send_multipart(frames[:1])
    with pytest.raises(OutOfBandBufferError):
        fzmq.recv(b)
    _assert_usable(a, b)


def test_extra_frame(pair):
    a, b = pair
    a.send_multipart(_valid_frames() + [b"surplus"])
    with pytest.raises(OutOfBandBufferError, match="not part of this object"):
        fzmq.recv(b)
    a.send_multipart(fzmq.encode("in band only") + [b"surplus"])
    with pytest.raises(OutOfBandBufferError):
        fzmq.recv(b)
    _assert_usable(a, b)


def test_wrong_size_buffer_frame(pair):
    a, b = pair
    frames = _valid_frames()
    a.send_multipart([frames[0], frames[1][:-1], frames[2]])
    with pytest.raises(OutOfBandBufferError):
        fzmq.recv(b)
    a.send_multipart([frames[0], frames[2], frames[1]])  # swapped
    with pytest.raises(OutOfBandBufferError):
        fzmq.recv(b)
    _assert_usable(a, b)


def test_truncated_payload_frame(pair):
    a, b = pair
    payload = fzmq.encode({"key": list(range(50)), "s": "x" * 40})[0]
    for cut in (4, 5, len(payload) // 2, len(payload) - 1):
        a.send_multipart([payload[:cut]])
        with pytest.raises(MalformedDataError):
            fzmq.recv(b)
    _assert_usable(a, b)


def test_mutated_payloads_only_raise_pyfory_errors(pair):
    a, b = pair
    rng = random.Random(1234)
    payload = bytearray(fzmq.encode({"name": "x", "values": [1, 2.5, None], "t": (1, "a"), "n": -7})[0])
    for _ in range(300):
        mutated = bytearray(payload)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(4, len(mutated))] = rng.randrange(256)
        if rng.random() < 0.3:
            mutated = mutated[: rng.randrange(4, len(mutated))]
        a.send_multipart([bytes(mutated)])
        try:
            fzmq.recv(b)
        except ForyError:
            pass
    _assert_usable(a, b)


def test_decode_of_no_frames():
    with pytest.raises(MalformedDataError):
        fzmq.decode([])


def test_recv_nonblocking_raises_again(pair):
    a, b = pair
    with pytest.raises(zmq.Again):
        fzmq.recv(b, zmq.NOBLOCK)


def test_ipc_path_cleanup(tmp_path, ctx):
    path = tmp_path / "one.sock"
    a = _configure(ctx.socket(zmq.PAIR))
    b = _configure(ctx.socket(zmq.PAIR))
    a.bind(f"ipc://{path}")
    b.connect(f"ipc://{path}")
    fzmq.send(b, os.getpid())
    assert fzmq.recv(a) == os.getpid()
    a.close(0)
    b.close(0)


class _CountingSocket(zmq.Socket):
    """A socket class that overrides send, as applications do to log or meter."""

    sent = 0

    def send(self, data, flags=0, copy=True, track=False, **kwargs):
        type(self).sent += 1
        return super().send(data, flags, copy=copy, track=track, **kwargs)


def test_send_keeps_a_socket_class_override_of_send(ctx):
    # fzmq.send hands one-frame messages to pyzmq's backend directly only when the
    # socket's class keeps zmq.Socket.send: an override still sees every message
    a = _configure(_CountingSocket(ctx, zmq.PAIR))
    b = _configure(ctx.socket(zmq.PAIR))
    a.bind(f"inproc://counting-{id(a)}")
    b.connect(f"inproc://counting-{id(a)}")
    for i in range(3):
        fzmq.send(a, {"i": i})
        assert fzmq.recv(b) == {"i": i}
    assert _CountingSocket.sent == 3
    # and a plain socket's message arrives whole through the direct path
    fzmq.send(b, ["back", 1.5])
    assert fzmq.recv(a) == ["back", 1.5]


# -- the direct libzmq path and pyzmq's error behaviour ----------------------------------


def test_direct_libzmq_path_is_bound_with_pyzmqs_cython_backend():
    # pyzmq's wheels are its Cython backend: there the one-frame path must be available,
    # or every small message pays for a zmq.Frame again
    if zmq.backend.Socket.__module__.startswith("zmq.backend.cython"):
        assert transport._libzmq is not None
        assert set(transport._libzmq.FUNCTIONS) >= {"zmq_msg_recv", "zmq_msg_more", "zmq_send"}
    else:  # pragma: no cover - another backend (PyPy's CFFI)
        assert transport._libzmq is None


def test_small_messages_take_the_direct_path(ctx, monkeypatch):
    if transport._libzmq is None:
        pytest.skip("the direct libzmq path is not available with this pyzmq")
    calls = []

    class Counting:
        FUNCTIONS = transport._libzmq.FUNCTIONS

        def __getattr__(self, name):
            calls.append(name)
            return getattr(_real, name)

    _real = transport._libzmq
    monkeypatch.setattr(transport, "_libzmq", Counting())
    a = _configure(ctx.socket(zmq.PAIR))
    b = _configure(ctx.socket(zmq.PAIR))
    a.bind(f"inproc://direct-{id(a)}")
    b.connect(f"inproc://direct-{id(a)}")
    fzmq.send(a, {"id": 1})
    assert fzmq.recv(b) == {"id": 1}
    assert calls == ["send_bytes", "recv_frame"]
    a.close(0)
    b.close(0)


def test_large_in_band_payload_is_read_in_place(pair):
    # a payload frame of at least zmq.COPY_THRESHOLD bytes is not copied on receipt
    a, b = pair
    value = {"text": "é" * 300_000, "ints": list(range(50_000))}
    fzmq.send(a, value)
    assert fzmq.recv(b) == value
    if transport._libzmq is not None:
        fzmq.send(a, value)
        frame = transport._libzmq.recv_frame(b.underlying, 0)
        assert isinstance(frame, transport._libzmq.Message)
        assert len(frame) == len(memoryview(frame)) >= zmq.COPY_THRESHOLD
        assert memoryview(frame).readonly
        assert fzmq.decode([frame]) == value
        assert fzmq.decode([frame.bytes]) == value


@needs_numpy
@pytest.mark.parametrize("copy", [False, True])
def test_large_payload_frame_with_buffer_frames(pair, copy):
    a, b = pair
    value = {"text": "x" * 200_000, "array": np.arange(100_000, dtype=np.float64)}
    fzmq.send(a, value)
    got = fzmq.recv(b, copy=copy)
    assert got["text"] == value["text"]
    assert np.array_equal(got["array"], value["array"])


def test_message_object_on_its_own():
    if transport._libzmq is None:
        pytest.skip("the direct libzmq path is not available with this pyzmq")
    empty = transport._libzmq.Message()
    assert len(empty) == 0 and empty.bytes == b"" and bytes(memoryview(empty)) == b""


def test_direct_calls_refuse_what_is_not_a_socket_or_bytes(ctx):
    if transport._libzmq is None:
        pytest.skip("the direct libzmq path is not available with this pyzmq")
    a = _configure(ctx.socket(zmq.PAIR))
    with pytest.raises(TypeError):
        transport._libzmq.send_bytes(a.underlying, None, 0)
    with pytest.raises(TypeError):
        transport._libzmq.send_bytes(a.underlying, bytearray(b"x"), 0)
    # libzmq checks a null socket itself: ENOTSOCK, as pyzmq raises for a closed socket
    for call in (lambda: transport._libzmq.recv_frame(0, 0), lambda: transport._libzmq.send_bytes(0, b"x", 0)):
        with pytest.raises(zmq.ZMQError) as info:
            call()
        assert info.value.errno == zmq.ENOTSOCK
    a.close(0)


def test_closed_socket_raises_enotsock(ctx, io_path):
    a = _configure(ctx.socket(zmq.PAIR))
    a.bind(f"inproc://closed-{id(a)}")
    a.close(0)
    for operation in (lambda: fzmq.recv(a), lambda: fzmq.send(a, {"id": 1})):
        with pytest.raises(zmq.ZMQError) as info:
            operation()
        assert info.value.errno == zmq.ENOTSOCK


def test_receive_timeout_raises_again_once(ctx, io_path):
    import time

    a = ctx.socket(zmq.PAIR)
    a.linger = 0
    a.rcvtimeo = 200
    a.bind(f"inproc://timeout-{id(a)}")
    start = time.monotonic()
    with pytest.raises(zmq.Again):
        fzmq.recv(a)
    # (not twice the timeout: the error is raised where it happened, not retried)
    assert 0.15 <= time.monotonic() - start < 5
    a.close(0)


def test_send_on_a_full_queue_raises_again(ctx, io_path):
    a = ctx.socket(zmq.PAIR)
    a.linger = 0
    a.sndhwm = 1
    a.bind(f"inproc://full-{id(a)}")  # nobody connected: the first send has nowhere to go
    with pytest.raises(zmq.Again):
        fzmq.send(a, {"id": 1}, zmq.NOBLOCK)
    a.close(0)


def test_context_terminated_while_receiving(io_path):
    context = zmq.Context()
    a = context.socket(zmq.PAIR)
    a.linger = 0
    a.bind(f"inproc://term-{id(a)}")
    outcome = []
    started = threading.Event()

    def receive():
        started.set()
        try:
            fzmq.recv(a)
        except zmq.ContextTerminated as e:
            outcome.append(e)
        a.close(0)

    thread = threading.Thread(target=receive)
    thread.start()
    started.wait(10)
    context.term()  # returns once the blocked recv has failed and the socket is closed
    thread.join(10)
    assert not thread.is_alive() and len(outcome) == 1


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer")
def test_signal_during_a_blocking_receive(ctx, io_path):
    """A signal handler's exception interrupts a blocked recv (Ctrl-C works); after a
    handler that returns, the recv goes on waiting and gets the message."""
    a = _configure(ctx.socket(zmq.PAIR))
    b = _configure(ctx.socket(zmq.PAIR))
    a.bind(f"inproc://signal-{id(a)}")
    b.connect(f"inproc://signal-{id(a)}")

    class Interrupted(Exception):
        pass

    def raising(signum, frame):
        raise Interrupted()

    handled = threading.Event()

    def returning(signum, frame):
        handled.set()

    previous = signal.signal(signal.SIGALRM, raising)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(Interrupted):
            fzmq.recv(b)
        signal.signal(signal.SIGALRM, returning)
        sender = threading.Thread(target=lambda: handled.wait(10) and fzmq.send(a, "after the signal"))
        sender.start()
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        assert fzmq.recv(b) == "after the signal"
        sender.join(10)
        assert handled.is_set()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    a.close(0)
    b.close(0)
