"""pyfory.integrations.multiprocessing: the reducer swap, with real child processes under
the fork, spawn and forkserver start methods (each test has a timeout: a hang fails)."""

from __future__ import annotations

import ctypes
import functools
import multiprocessing
import multiprocessing.connection
import multiprocessing.queues
import multiprocessing.reduction
import os
import pickle
import subprocess
import sys
import threading
import types
from multiprocessing import shared_memory

import pytest
from pyfory.integrations import multiprocessing as fory_mp

METHODS = [m for m in ("fork", "spawn", "forkserver")
           if m in multiprocessing.get_all_start_methods()]
TIMEOUT = 60
ENVELOPE_PREFIX = b"\x80\x05\x8c" + bytes((len(fory_mp.__name__),)) + fory_mp.__name__.encode()


@pytest.fixture
def swap():
    fory_mp.install()
    try:
        yield
    finally:
        fory_mp.uninstall()


def _targets():
    return (multiprocessing.reduction.ForkingPickler,
            multiprocessing.connection._ForkingPickler,
            multiprocessing.queues._ForkingPickler)


# ---- helpers that child processes import by name ----------------------------------------
def square(x):
    return x * x


def add(x, y):
    return x + y


def fail(x):
    raise ValueError(f"bad value {x}")


def pid_and_installed(_=None):
    return os.getpid(), fory_mp.is_installed()


def make_local_types():
    class LocalError(Exception):
        pass

    class Point:
        def __init__(self, x, y):
            self.x, self.y = x, y

        def __eq__(self, other):
            # a child that imports this module by name makes its own Point class: compare
            # by name (identity is checked where the class travels from the parent)
            return (type(other).__qualname__ == type(self).__qualname__
                    and (self.x, self.y) == (other.x, other.y))

    return LocalError, Point


LocalError, Point = make_local_types()


def raise_local(message):
    raise LocalError(message)


def use_everything(q, sq, jq, conn, lock, rlock, sem, event, cond, value, array):
    """Child side of test_process_with_multiprocessing_objects."""
    with lock, rlock, sem:
        value.value += 1
        array[0] = 42
    k = 10
    received = conn.recv()          # a closure sent by the parent
    conn.send(received(1))
    q.put(lambda x: x + k)          # a lambda back through a Queue
    sq.put(Point(1, 2))
    jq.put(("joinable", fory_mp.is_installed()))
    jq.join()
    with cond:
        cond.notify_all()
    event.set()


def use_manager_and_shm(d, lst, ns, shm_name, sl):
    d["child"] = os.getpid()
    lst.append(len(lst))
    ns.answer = 42
    shm = shared_memory.SharedMemory(shm_name)
    shm.buf[:3] = b"abc"
    shm.close()
    sl[0] = "changed"


def send_back(conn, obj):
    conn.send(obj)
    conn.close()


# ---- install / uninstall ------------------------------------------------------------------
def test_install_uninstall_restores_exactly():
    before = _targets()
    extra = dict(multiprocessing.reduction.ForkingPickler._extra_reducers)
    assert not fory_mp.is_installed()
    fory_mp.install()
    try:
        assert fory_mp.is_installed()
        new = _targets()
        assert all(cls is new[0] for cls in new)
        assert issubclass(new[0], before[0]) and new[0] is not before[0]
        fory_mp.install(max_depth=200)            # again: new options, still one layer
        assert issubclass(_targets()[0], before[0]) and _targets()[0].__bases__ == (before[0],)
        assert fory_mp.options()["max_depth"] == 200
    finally:
        fory_mp.uninstall()
    assert _targets() == before
    assert all(a is b for a, b in zip(_targets(), before))
    assert multiprocessing.reduction.ForkingPickler._extra_reducers == extra
    assert not fory_mp.is_installed()
    fory_mp.uninstall()                           # a no-op
    assert _targets() == before


def test_installed_context_manager_and_bad_options():
    before = _targets()
    with fory_mp.installed():
        assert fory_mp.is_installed()
        with fory_mp.installed(ref=False):
            assert fory_mp.options()["ref"] is False
        assert fory_mp.is_installed() and fory_mp.options()["ref"] is True
    assert not fory_mp.is_installed() and _targets() == before
    with pytest.raises(TypeError):
        fory_mp.install(no_such_option=1)
    with pytest.raises(NotImplementedError):
        fory_mp.install(xlang=True)
    assert not fory_mp.is_installed() and _targets() == before


def test_reinstalling_keeps_the_writer_and_new_options_replace_it():
    shared = [1, 2]
    value = [shared, shared]
    with fory_mp.installed():
        first = fory_mp._writer(fory_mp._tls)
        loaded = pickle.loads(multiprocessing.reduction.ForkingPickler.dumps(value))
        assert loaded[0] is loaded[1]                      # ref=True: identity kept
    with fory_mp.installed():
        # same options: the writer (and the types it has resolved) is reused
        assert fory_mp._writer(fory_mp._tls) is first
    with fory_mp.installed(ref=False):
        assert fory_mp._writer(fory_mp._tls) is not first
        loaded = pickle.loads(multiprocessing.reduction.ForkingPickler.dumps(value))
        assert loaded == value and loaded[0] is not loaded[1]   # ref=False: copies
    with fory_mp.installed():
        loaded = pickle.loads(multiprocessing.reduction.ForkingPickler.dumps(value))
        assert loaded[0] is loaded[1]


def test_multiprocessing_types_stay_with_the_stock_pickler():
    from multiprocessing import managers, sharedctypes, synchronize

    ctx = multiprocessing.get_context("spawn")
    for cls in (multiprocessing.queues.Queue, multiprocessing.queues.SimpleQueue,
                multiprocessing.queues.JoinableQueue, synchronize.Lock, synchronize.RLock,
                synchronize.Semaphore, synchronize.Event, synchronize.Condition,
                multiprocessing.connection.Connection, managers.DictProxy,
                managers.NamespaceProxy, shared_memory.SharedMemory,
                shared_memory.ShareableList, sharedctypes.Synchronized):
        assert fory_mp.is_multiprocessing_type(cls), cls
    sharedctypes.RawValue(ctypes.c_int16, 0)     # registers its ctypes type, as pickle sees it
    assert fory_mp.is_multiprocessing_type(ctypes.c_int16)
    for cls in (int, list, types.MethodType, functools.partial, Point, LocalError):
        assert not fory_mp.is_multiprocessing_type(cls), cls
    assert ctx is not None


# ---- the wire ---------------------------------------------------------------------------------
def test_envelope_is_a_plain_pickle_read_without_setup():
    """A fresh interpreter that never imported pyfory reads an envelope with pickle.loads."""
    k = 7
    data = bytes(fory_mp.dumps({"closure": lambda x: x * k, "value": [1, 2.5, "three"]}))
    assert data.startswith(ENVELOPE_PREFIX)
    code = ("import pickle, sys\n"
            "before = 'pyfory' in sys.modules\n"
            "obj = pickle.loads(sys.stdin.buffer.read())\n"
            "print(before, obj['closure'](6), obj['value'])\n")
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True,
                         timeout=TIMEOUT, env=env, check=True)
    assert out.stdout.decode().split() == ["False", "42", "[1,", "2.5,", "'three']"]


@pytest.mark.timeout(TIMEOUT)
def test_messages_are_envelopes_and_uninstall_restores_plain_pickle():
    a, b = multiprocessing.Pipe()
    with fory_mp.installed():
        a.send([1, 2, 3])
        raw = b.recv_bytes()
        assert raw.startswith(ENVELOPE_PREFIX)
        assert pickle.loads(raw) == [1, 2, 3]
        k = 3
        a.send(lambda x: x + k)
        assert b.recv()(1) == 4
    shared = [1]
    with fory_mp.installed(ref=False, max_depth=80):
        a.send([shared, shared, {"k": (1.5, None)}])
        raw = b.recv_bytes()
        assert raw.startswith(ENVELOPE_PREFIX)
        got = pickle.loads(raw)
        assert got == [[1], [1], {"k": (1.5, None)}] and got[0] is not got[1]
    a.send([1, 2, 3])
    raw = b.recv_bytes()
    assert raw == bytes(multiprocessing.reduction.ForkingPickler.dumps([1, 2, 3]))
    assert not raw.startswith(ENVELOPE_PREFIX)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        a.send(lambda x: x)
    a.close()
    b.close()


@pytest.mark.timeout(TIMEOUT)
def test_large_buffers_through_pipe_and_queue(swap):
    np = pytest.importorskip("numpy")
    arr = np.arange(300_000, dtype=np.float64).reshape(1000, 300)
    blob = bytes(range(256)) * 1024
    a, b = multiprocessing.Pipe()
    received = []
    reader = threading.Thread(target=lambda: received.append(b.recv()))
    reader.start()          # the message is larger than the pipe's buffer
    a.send({"arr": arr, "same": arr, "blob": blob, "fortran": np.asfortranarray(arr)})
    reader.join(TIMEOUT)
    got = received[0]
    assert got["arr"] is got["same"]
    assert np.array_equal(got["arr"], arr) and got["arr"].flags.writeable
    assert got["fortran"].flags.f_contiguous and np.array_equal(got["fortran"], arr)
    assert got["blob"] == blob
    q = multiprocessing.get_context("fork").Queue()
    q.put(arr)
    assert np.array_equal(q.get(timeout=TIMEOUT), arr)
    q.close()
    q.join_thread()
    a.close()
    b.close()


# ---- real children ------------------------------------------------------------------------------
@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("method", METHODS)
def test_pool_apis(swap, method):
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2) as pool:
        assert pool.map(square, range(20)) == [x * x for x in range(20)]
        assert pool.map(square, range(20), chunksize=3) == [x * x for x in range(20)]
        assert list(pool.imap(square, range(10))) == [x * x for x in range(10)]
        assert sorted(pool.imap_unordered(square, range(10))) == [x * x for x in range(10)]
        assert pool.starmap(add, [(1, 2), (3, 4)]) == [3, 7]
        assert pool.apply_async(add, (5, 6)).get(TIMEOUT) == 11
        assert pool.apply(add, ("a", "b")) == "ab"
        assert pool.map_async(square, [3]).get(TIMEOUT) == [9]
        with pytest.raises(ValueError, match="bad value 3"):
            pool.apply(fail, (3,))
        with pytest.raises(ValueError, match="bad value 4"):
            pool.map(fail, [4])
        # the workers send their results through pyfory too (inherited or propagated)
        assert all(installed for _, installed in pool.map(pid_and_installed, range(4)))
    with ctx.Pool(1, maxtasksperchild=2) as pool:
        pids = {pid for pid, _ in pool.map(pid_and_installed, range(6), chunksize=1)}
        assert len(pids) >= 2


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("method", METHODS)
def test_lambdas_closures_local_classes(swap, method):
    ctx = multiprocessing.get_context(method)
    k = 3
    with ctx.Pool(2, initializer=lambda: None) as pool:
        assert pool.map(lambda x: x * k, range(10)) == [x * k for x in range(10)]

        def shift(p):
            return Point(p.x + k, p.y - k)

        shifted = pool.map(shift, [Point(1, 1), Point(2, 2)])
        assert shifted == [Point(4, -2), Point(5, -1)]
        assert all(type(p) is Point for p in shifted)   # the class went there and back
        fn = pool.apply(lambda: (lambda y: y + k))      # a lambda as a result
        assert fn(1) == 4

        def local_raise():
            raise LocalError("closure")

        # the class went to the worker by value with the closure: the same class comes back
        with pytest.raises(LocalError, match="closure"):
            pool.apply_async(local_raise).get(TIMEOUT)
        # a local class the worker made itself (raise_local is imported by name there):
        # it comes back by value, with its name and message (as with cloudpickle)
        with pytest.raises(Exception, match="from a worker") as info:
            pool.apply(raise_local, ("from a worker",))
        assert type(info.value).__qualname__ == LocalError.__qualname__
        assert type(info.value).__module__ == LocalError.__module__


def lambda_result():
    return lambda: 42


def generator_result():
    return (i for i in range(3))


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("method", METHODS)
def test_unserializable_result_is_maybe_encoding_error(swap, method):
    """CPython's test_unpickleable_result, kept for what pyfory cannot send: the result
    fails with MaybeEncodingError (error_callback too) and the pool keeps its workers. A
    lambda, its stdlib subject, travels by value here (mp_conformance.py skips that test)."""
    from multiprocessing.pool import MaybeEncodingError

    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2) as pool:
        for _ in range(5):
            errors = []
            res = pool.apply_async(generator_result, error_callback=errors.append)
            with pytest.raises(MaybeEncodingError) as info:
                res.get(TIMEOUT)
            assert errors and isinstance(errors[0], MaybeEncodingError)
            assert info.value.exc is not None and info.value.value is not None
        assert pool.apply(lambda_result)() == 42
        assert pool.map(square, range(4)) == [0, 1, 4, 9]


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("method", METHODS)
def test_process_with_multiprocessing_objects(swap, method):
    ctx = multiprocessing.get_context(method)
    q, sq, jq = ctx.Queue(), ctx.SimpleQueue(), ctx.JoinableQueue()
    parent_end, child_end = ctx.Pipe()
    lock, rlock, sem = ctx.Lock(), ctx.RLock(), ctx.Semaphore(2)
    event, cond = ctx.Event(), ctx.Condition()
    value, array = ctx.Value("i", 0), ctx.Array("d", 3)
    p = ctx.Process(target=use_everything,
                    args=(q, sq, jq, child_end, lock, rlock, sem, event, cond, value, array))
    p.start()
    k = 5
    parent_end.send(lambda x: x * k)
    assert parent_end.recv() == 5
    assert q.get(timeout=TIMEOUT)(1) == 11
    assert sq.get() == Point(1, 2)
    assert jq.get(timeout=TIMEOUT) == ("joinable", True)
    jq.task_done()
    assert event.wait(TIMEOUT)
    p.join(TIMEOUT)
    assert p.exitcode == 0
    assert value.value == 1 and array[0] == 42.0
    for queue in (q, jq):
        queue.close()
        queue.join_thread()


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("method", METHODS)
def test_manager_proxies_and_shared_memory(swap, method):
    ctx = multiprocessing.get_context(method)
    shm = shared_memory.SharedMemory(create=True, size=16)
    sl = shared_memory.ShareableList(["original", 2])
    try:
        with ctx.Manager() as manager:
            d, lst, ns = manager.dict(), manager.list([0]), manager.Namespace()
            p = ctx.Process(target=use_manager_and_shm, args=(d, lst, ns, shm.name, sl))
            p.start()
            p.join(TIMEOUT)
            assert p.exitcode == 0
            assert d["child"] == p.pid and list(lst) == [0, 1] and ns.answer == 42
            assert bytes(shm.buf[:3]) == b"abc" and sl[0] == "changed"
            with ctx.Pool(1) as pool:       # proxies as task arguments
                assert pool.apply(len, (lst,)) == 2
    finally:
        shm.close()
        shm.unlink()
        sl.shm.close()
        sl.shm.unlink()


@pytest.mark.timeout(TIMEOUT)
def test_child_replies_through_pyfory_and_propagate_false():
    ctx = multiprocessing.get_context("spawn")
    with fory_mp.installed():
        a, b = ctx.Pipe()
        p = ctx.Process(target=send_back, args=(b, [Point(1, 2)]))
        p.start()
        raw = a.recv_bytes()
        p.join(TIMEOUT)
        assert raw.startswith(ENVELOPE_PREFIX)      # the child installed itself
        assert pickle.loads(raw) == [Point(1, 2)]
    with fory_mp.installed(propagate=False):
        with ctx.Pool(1) as pool:
            assert pool.apply(pid_and_installed)[1] is False
            assert pool.apply(square, (4,)) == 16
    with fory_mp.installed(ref=False, max_depth=80):
        with ctx.Pool(1) as pool:          # children install with the parent's options
            options = pool.apply(fory_mp.options)
            assert options["ref"] is False and options["max_depth"] == 80
