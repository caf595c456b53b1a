"""pyfory.integrations.futures.ProcessPoolExecutor with real worker processes under the
fork, spawn and forkserver start methods (each test has a timeout: a hang fails)."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import time

import pytest
from pyfory.integrations.futures import BrokenProcessPool, ProcessPoolExecutor

METHODS = [m for m in ("fork", "spawn", "forkserver")
           if m in multiprocessing.get_all_start_methods()]
TIMEOUT = 60
SHM_DIR = "/dev/shm"
needs_shm_listing = pytest.mark.skipif(not os.path.isdir(SHM_DIR), reason="no /dev/shm to list")


def ctx(method):
    return multiprocessing.get_context(method)


def shm_segments():
    if not os.path.isdir(SHM_DIR):
        return set()
    return {name for name in os.listdir(SHM_DIR) if name.startswith("pf_")}


def wait_for(predicate, timeout=TIMEOUT):
    """Poll predicate until it holds (True) or timeout seconds passed (its last value)."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def no_leaked_segments():
    before = shm_segments()
    yield
    # segments are unlinked as their results are read, or by the workers' exit: wait for
    # that event (generously: a loaded machine is slow), not for a fixed time
    assert wait_for(lambda: not shm_segments() - before, 30), shm_segments() - before


# ---- helpers that workers import by name ---------------------------------------------------
def square(x):
    return x * x


def add(x, y=0):
    return x + y


def fail(message):
    raise ValueError(message)


def pid(_=None):
    return os.getpid()


def sleep_then(seconds, value=None):
    time.sleep(seconds)
    return value


def kill_self(after=0.0):
    time.sleep(after)
    os.kill(os.getpid(), signal.SIGKILL)


def init_global(value):
    global WORKER_VALUE
    WORKER_VALUE = value


def get_global():
    return WORKER_VALUE


def init_fails():
    raise RuntimeError("initializer failed")


def identity(x):
    return x


def double_array(a):
    a *= 2             # the array a worker receives is writable
    return a


class Unpicklable:
    def __reduce__(self):
        raise TypeError("this object refuses to be serialized")


def return_unpicklable():
    return Unpicklable()


class KillWhileSerializing:
    """Kills the worker while its result is being written (after a large buffer went to
    shared memory): the segment must still be cleaned up."""

    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)


def big_result_then_die(n):
    import numpy as np

    return [np.ones(n), KillWhileSerializing()]


_PARENT = os.getpid()


def _only_in_parent():
    if os.getpid() != _PARENT:
        raise RuntimeError("cannot be rebuilt in a worker")
    return "ok"


class FailsInWorker:
    """Serializes fine; rebuilding it in a worker raises."""

    def __reduce__(self):
        return (_only_in_parent, ())


def make_local_types():
    class LocalError(Exception):
        pass

    class Vector:
        def __init__(self, *xs):
            self.xs = xs

        def scaled(self, k):
            return Vector(*(x * k for x in self.xs))

    return LocalError, Vector


LocalError, Vector = make_local_types()


# ---- the executor API ------------------------------------------------------------------------
@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("method", METHODS)
def test_submit_map_exceptions_initializer(method, no_leaked_segments):
    with ProcessPoolExecutor(2, mp_context=ctx(method), initializer=init_global,
                             initargs=(41,)) as pool:
        assert pool.submit(square, 12).result(TIMEOUT) == 144
        assert pool.submit(add, 1, y=2).result(TIMEOUT) == 3
        assert pool.submit(get_global).result(TIMEOUT) == 41
        assert list(pool.map(square, range(50))) == [x * x for x in range(50)]
        assert list(pool.map(add, range(30), range(30), chunksize=7)) == [2 * x for x in range(30)]
        future = pool.submit(fail, "went wrong")
        with pytest.raises(ValueError, match="went wrong") as info:
            future.result(TIMEOUT)
        cause = info.value.__cause__
        assert type(cause).__name__ == "_RemoteTraceback"
        assert "went wrong" in str(cause) and "in fail" in str(cause)
        assert isinstance(future.exception(), ValueError)
        with pytest.raises(ValueError):
            list(pool.map(fail, ["x"]))
        # many small tasks: batched, all results in order
        futures = [pool.submit(square, i) for i in range(3000)]
        assert [f.result(TIMEOUT) for f in futures] == [i * i for i in range(3000)]
        assert len(set(pool.map(pid, range(200)))) >= 1
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(square, 1)


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("method", METHODS)
def test_lambdas_closures_local_classes(method):
    k = 3
    with ProcessPoolExecutor(2, mp_context=ctx(method), initializer=lambda: init_global(k)) as pool:
        assert pool.submit(lambda x: x * k, 5).result(TIMEOUT) == 15
        assert list(pool.map(lambda x, y: x * y + k, range(5), range(5))) == [x * x + k for x in range(5)]
        assert pool.submit(get_global).result(TIMEOUT) == 3     # a lambda initializer
        v = pool.submit(Vector(1, 2).scaled, k).result(TIMEOUT)
        assert type(v) is Vector and v.xs == (3, 6)
        fn = pool.submit(lambda: (lambda y: y * k)).result(TIMEOUT)
        assert fn(2) == 6

        def raise_local(message):
            raise LocalError(message)

        with pytest.raises(LocalError, match="a local exception") as info:
            pool.submit(raise_local, "a local exception").result(TIMEOUT)
        assert "raise_local" in str(info.value.__cause__)


@pytest.mark.timeout(TIMEOUT)
def test_no_batching_and_fory_options():
    with ProcessPoolExecutor(2, mp_context=ctx("fork"), max_batch_size=1, ref=False) as pool:
        futures = [pool.submit(square, i) for i in range(500)]
        assert [f.result(TIMEOUT) for f in futures] == [i * i for i in range(500)]
        shared = [1, 2]
        back = pool.submit(identity, [shared, shared]).result(TIMEOUT)
        assert back == [[1, 2], [1, 2]] and back[0] is not back[1]     # ref=False: copies
    with ProcessPoolExecutor(1, mp_context=ctx("fork")) as pool:
        shared = [1, 2]
        back = pool.submit(identity, [shared, shared]).result(TIMEOUT)
        assert back[0] is back[1]                                      # ref=True (default)


@pytest.mark.timeout(TIMEOUT)
def test_map_timeout_and_chunks():
    with ProcessPoolExecutor(1, mp_context=ctx("fork")) as pool:
        assert pool.submit(square, 1).result(TIMEOUT) == 1        # started and warm
        results = pool.map(sleep_then, [0.0, 2.5], timeout=1.0)
        assert next(results) is None
        with pytest.raises(cf.TimeoutError):
            next(results)
        with pytest.raises(ValueError):
            pool.map(square, [1], chunksize=0)
        assert list(pool.map(square, [], chunksize=3)) == []


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("method", METHODS)
def test_shared_memory_round_trip(method, no_leaked_segments):
    np = pytest.importorskip("numpy")
    a = np.arange(1 << 18, dtype=np.float64)          # 2 MiB: through shared memory
    small = np.arange(100, dtype=np.int32)             # in the pipe
    blob = os.urandom(3 << 20)
    with ProcessPoolExecutor(2, mp_context=ctx(method)) as pool:
        back = pool.submit(identity, {"a": a, "same": a, "small": small, "blob": blob}).result(TIMEOUT)
        assert back["a"] is back["same"]
        assert np.array_equal(back["a"], a) and back["a"].flags.writeable
        assert np.array_equal(back["small"], small) and back["blob"] == blob
        doubled = pool.submit(double_array, a).result(TIMEOUT)
        assert np.array_equal(doubled, a * 2)
        assert np.array_equal(a, np.arange(1 << 18, dtype=np.float64))   # the parent's is untouched
        f_order = np.asfortranarray(np.ones((600, 500)))
        got = pool.submit(identity, f_order).result(TIMEOUT)
        assert got.flags.f_contiguous and np.array_equal(got, f_order)
        # every segment was unlinked as soon as it was mapped
        assert not {s for s in shm_segments() if s.startswith(f"pf_{pool._core.token}_")}
    with ProcessPoolExecutor(1, mp_context=ctx(method), shared_memory_threshold=None) as pool:
        assert np.array_equal(pool.submit(identity, a).result(TIMEOUT), a)


@pytest.mark.timeout(TIMEOUT)
def test_shared_memory_threshold_is_configurable(no_leaked_segments):
    np = pytest.importorskip("numpy")
    with ProcessPoolExecutor(1, mp_context=ctx("fork"), shared_memory_threshold=1024) as pool:
        a = np.arange(1000, dtype=np.float64)    # 8000 bytes >= 1024: shared memory
        assert np.array_equal(pool.submit(identity, a).result(TIMEOUT), a)
    with pytest.raises(ValueError):
        ProcessPoolExecutor(1, shared_memory_threshold=-1)


@pytest.mark.timeout(TIMEOUT)
def test_no_room_in_shared_memory_falls_back_to_the_pipe(monkeypatch, no_leaked_segments):
    np = pytest.importorskip("numpy")
    from pyfory.integrations._tasks import handoff as handoff_module

    def no_space(name, view):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(handoff_module, "_shm_create", no_space)   # forked workers too
    a = np.arange(1 << 18, dtype=np.float64)
    with ProcessPoolExecutor(1, mp_context=ctx("fork")) as pool:
        assert np.array_equal(pool.submit(identity, a).result(TIMEOUT), a)


# ---- shutdown and cancellation ------------------------------------------------------------
@pytest.mark.timeout(TIMEOUT)
def test_shutdown_cancel_futures(no_leaked_segments):
    np = pytest.importorskip("numpy")
    big = np.ones(1 << 18)
    pool = ProcessPoolExecutor(1, mp_context=ctx("fork"))
    running = pool.submit(sleep_then, 1.0, "done")
    pending = [pool.submit(identity, big) for _ in range(20)]
    assert wait_for(running.running)
    pool.shutdown(wait=True, cancel_futures=True)
    assert running.result(TIMEOUT) == "done"
    cancelled = [f for f in pending if f.cancelled()]
    assert len(cancelled) >= 18
    for f in pending:
        assert f.done()
    with pytest.raises(RuntimeError):
        pool.submit(square, 2)


@pytest.mark.timeout(TIMEOUT)
def test_cancel_pending_and_shutdown_without_wait(no_leaked_segments):
    np = pytest.importorskip("numpy")
    big = np.ones(1 << 18)
    pool = ProcessPoolExecutor(1, mp_context=ctx("fork"))
    blocker = pool.submit(sleep_then, 0.5, 1)
    assert wait_for(blocker.running)
    victims = [pool.submit(identity, big) for _ in range(5)]
    assert any(f.cancel() for f in victims)
    survivor = pool.submit(square, 7)
    pool.shutdown(wait=False)
    assert survivor.result(TIMEOUT) == 49 and blocker.result(TIMEOUT) == 1
    for f in victims:
        assert f.cancelled() or np.array_equal(f.result(TIMEOUT), big)
    assert wait_for(lambda: not pool._processes)


@pytest.mark.timeout(TIMEOUT)
def test_unserializable_task_and_result_do_not_break_the_pool():
    with ProcessPoolExecutor(1, mp_context=ctx("fork")) as pool:
        bad = pool.submit(identity, Unpicklable())
        good = pool.submit(square, 3)
        with pytest.raises(Exception, match="refuses to be serialized"):
            bad.result(TIMEOUT)
        assert good.result(TIMEOUT) == 9
        with pytest.raises(Exception, match="refuses to be serialized"):
            pool.submit(return_unpicklable).result(TIMEOUT)
        assert pool.submit(square, 4).result(TIMEOUT) == 16


class UnsendableError(Exception):
    def __reduce__(self):
        raise TypeError("this exception refuses to be serialized")


def raise_unsendable():
    raise UnsendableError("weird")


@pytest.mark.timeout(TIMEOUT)
def test_exception_that_cannot_travel_is_a_remote_error():
    import pickle

    from pyfory.integrations.futures import RemoteError

    with ProcessPoolExecutor(1, mp_context=ctx("fork")) as pool:
        exc = pool.submit(raise_unsendable).exception(TIMEOUT)
        # as the zmq executor's (one task core): its type, text and why it could not travel,
        # a PicklingError as the stdlib's pool reports it, the worker's traceback as cause
        assert isinstance(exc, RemoteError) and isinstance(exc, pickle.PicklingError)
        assert "UnsendableError: weird" in str(exc) and "refuses to be serialized" in str(exc)
        assert type(exc.__cause__).__name__ == "_RemoteTraceback"
        assert "in raise_unsendable" in str(exc.__cause__)
        assert pool.submit(square, 5).result(TIMEOUT) == 25


@pytest.mark.timeout(TIMEOUT)
def test_task_that_fails_to_load_in_a_worker_fails_alone():
    with ProcessPoolExecutor(1, mp_context=ctx("fork")) as pool:
        list(pool.map(square, range(2000)))     # learn that tasks are short: batches follow
        futures = [pool.submit(square, i) for i in range(200)]
        futures.insert(100, pool.submit(identity, FailsInWorker()))
        for i, f in enumerate(futures):
            if i == 100:
                with pytest.raises(Exception, match="cannot be rebuilt"):
                    f.result(TIMEOUT)
            else:
                assert f.result(TIMEOUT) == (i if i < 100 else i - 1) ** 2


# ---- broken pools ----------------------------------------------------------------------------
@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("method", METHODS)
def test_worker_killed_mid_task_breaks_the_pool(method, no_leaked_segments):
    np = pytest.importorskip("numpy")
    pool = ProcessPoolExecutor(2, mp_context=ctx(method))
    assert pool.submit(square, 2).result(TIMEOUT) == 4
    slow = pool.submit(sleep_then, 30, "never")
    dying = pool.submit(kill_self, 0.5)
    queued = [pool.submit(identity, np.ones(1 << 18)) for _ in range(4)]
    for f in [dying, slow] + queued:
        with pytest.raises(BrokenProcessPool):
            f.result(TIMEOUT)
    with pytest.raises(BrokenProcessPool):
        pool.submit(square, 1)
    pool.shutdown()


@pytest.mark.timeout(TIMEOUT)
def test_worker_killed_from_outside(no_leaked_segments):
    pool = ProcessPoolExecutor(2, mp_context=ctx("spawn"))
    busy = pool.submit(sleep_then, 0.5, 1)   # two tasks at once: two workers start
    assert pool.submit(square, 3).result(TIMEOUT) == 9 and busy.result(TIMEOUT) == 1
    pids = set(pool._processes)
    assert len(pids) == 2
    running = pool.submit(sleep_then, 30)
    assert wait_for(running.running)
    os.kill(next(iter(pids)), signal.SIGKILL)
    with pytest.raises(BrokenProcessPool):
        running.result(TIMEOUT)
    pool.shutdown()
    assert not pool._processes


@pytest.mark.timeout(TIMEOUT)
@needs_shm_listing
def test_worker_crash_after_writing_shared_memory(no_leaked_segments):
    pytest.importorskip("numpy")
    with ProcessPoolExecutor(1, mp_context=ctx("fork")) as pool:
        with pytest.raises(BrokenProcessPool):
            pool.submit(big_result_then_die, 1 << 18).result(TIMEOUT)


@pytest.mark.timeout(TIMEOUT)
def test_initializer_failure_breaks_the_pool():
    pool = ProcessPoolExecutor(1, mp_context=ctx("fork"), initializer=init_fails)
    with pytest.raises(BrokenProcessPool):
        pool.submit(square, 2).result(TIMEOUT)
    with pytest.raises(BrokenProcessPool):
        pool.submit(square, 2)
    pool.shutdown()


# ---- workers on demand, initializer at worker start, payloads that raise SystemExit ------
@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("method", [m for m in METHODS if m != "fork"])
def test_workers_start_on_demand_and_idle_ones_are_reused(method):
    with ProcessPoolExecutor(4, mp_context=ctx(method)) as pool:
        assert not pool._processes                     # nothing before the first submit
        for i in range(5):                             # one at a time: one worker does it all
            assert pool.submit(square, i).result(TIMEOUT) == i * i
        assert len(pool._processes) == 1
        blockers = [pool.submit(sleep_then, 0.5, i) for i in range(4)]   # four at once
        assert [f.result(TIMEOUT) for f in blockers] == [0, 1, 2, 3]
        assert 2 <= len(pool._processes) <= 4


@pytest.mark.timeout(TIMEOUT)
def test_fork_pool_starts_every_worker_at_first_submit():
    with ProcessPoolExecutor(3, mp_context=ctx("fork")) as pool:
        assert pool.submit(square, 2).result(TIMEOUT) == 4
        assert len(pool._processes) == 3


def put_in_queue(q, value):
    q.put(value)


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("method", METHODS)
def test_initializer_gets_what_may_only_be_inherited(method):
    # a multiprocessing.Queue may only be handed over when the worker starts, as the
    # stdlib's initargs are
    mp = ctx(method)
    q = mp.Queue()
    with ProcessPoolExecutor(1, mp_context=mp, initializer=put_in_queue, initargs=(q, "ready")) as pool:
        assert pool.submit(square, 3).result(TIMEOUT) == 9
        assert q.get(timeout=TIMEOUT) == "ready"
    # what the stock pickler cannot send still works: a lambda initializer, by pyfory
    box = []
    with ProcessPoolExecutor(1, mp_context=ctx("spawn"),
                             initializer=lambda: init_global(len(box) + 41)) as pool:
        assert pool.submit(get_global).result(TIMEOUT) == 41


def exit_now():
    raise SystemExit(3)


class ExitsWhenLoaded:
    def __reduce__(self):
        return (exit_now, ())


def return_exits_when_loaded():
    return ExitsWhenLoaded()


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_system_exit_from_a_payload_is_not_a_task_outcome(method):
    from pyfory.error import DeserializationError

    with ProcessPoolExecutor(1, mp_context=ctx(method)) as pool:
        # raised while the worker loads the task, and while the parent loads the result
        for future in (pool.submit(identity, ExitsWhenLoaded()), pool.submit(return_exits_when_loaded)):
            with pytest.raises(DeserializationError, match="raised SystemExit: 3"):
                future.result(TIMEOUT)
        # the pool is still sound; a task that itself raises SystemExit reports it, as the stdlib
        assert pool.submit(square, 5).result(TIMEOUT) == 25
        with pytest.raises(SystemExit):
            pool.submit(exit_now).result(TIMEOUT)


# ---- max_tasks_per_child and arguments ---------------------------------------------------
@pytest.mark.timeout(TIMEOUT)
def test_max_tasks_per_child():
    with ProcessPoolExecutor(1, mp_context=ctx("forkserver"), max_tasks_per_child=2) as pool:
        pids = [pool.submit(pid).result(TIMEOUT) for _ in range(6)]
        assert len(set(pids)) == 3
        assert list(pool.map(square, range(10))) == [x * x for x in range(10)]
    with pytest.raises(ValueError, match="fork"):
        ProcessPoolExecutor(1, mp_context=ctx("fork"), max_tasks_per_child=1)
    with pytest.raises(TypeError):
        ProcessPoolExecutor(1, max_tasks_per_child="2")
    with pytest.raises(ValueError):
        ProcessPoolExecutor(1, max_tasks_per_child=0)
    default = ProcessPoolExecutor(1, max_tasks_per_child=3)
    assert default._mp_context.get_start_method() == "spawn"
    default.shutdown()


def test_constructor_arguments():
    with pytest.raises(ValueError):
        ProcessPoolExecutor(0)
    with pytest.raises(TypeError):
        ProcessPoolExecutor(1, initializer=3)
    with pytest.raises(NotImplementedError):
        ProcessPoolExecutor(1, xlang=True)
    with pytest.raises(TypeError):
        ProcessPoolExecutor(1, no_such_fory_option=True)
    with pytest.raises(ValueError):
        ProcessPoolExecutor(1, max_batch_size=0)
    pool = ProcessPoolExecutor()
    assert pool._max_workers >= 1
    pool.shutdown()          # never started: nothing to stop
    assert isinstance(pool, cf.Executor)
