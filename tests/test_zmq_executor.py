"""pyfory.integrations.zmq.Executor: tasks over ZeroMQ to worker processes.

Real worker processes on 127.0.0.1; workers are killed (SIGKILL) and stopped (SIGSTOP)
in the middle of tasks. Task functions live at module level so that workers import them
by name (this module is on the workers' sys.path); lambdas and closures travel by value.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

zmq = pytest.importorskip("zmq")

from pyfory.integrations import zmq as fzmq  # noqa: E402

from pyfory.error import (  # noqa: E402
    DeserializationError,
    ForyError,
    PolicyViolationError,
    TypeNotRegisteredError,
)
from pyfory.policy import DeserializationPolicy  # noqa: E402

try:
    import numpy as np
except ImportError:  # pragma: no cover
    np = None

needs_numpy = pytest.mark.skipif(np is None, reason="numpy not installed")
pytestmark = pytest.mark.timeout(60)

# generous: a loaded CI machine must not make a healthy worker look dead
HB = {"heartbeat_interval": 0.5, "heartbeat_timeout": 30.0}
START = 60  # seconds allowed for worker processes to start and register


# -- task functions (imported by name in the workers) ----------------------------------


def add(a, b):
    return a + b


def mul(a, b):
    return a * b


def fail(message):
    raise ValueError(message)


class CustomError(Exception):
    def __init__(self, message, code):
        super().__init__(message, code)
        self.code = code


def raise_custom():
    raise CustomError("custom failure", 42)


def _only_in(pid):
    if os.getpid() != pid:
        raise RuntimeError("cannot be rebuilt outside the worker that made it")
    return "never"


class FailsOutsideItsWorker:
    """Serialized fine by the worker; rebuilding it in the executor's process raises."""

    def __reduce__(self):
        return (_only_in, (os.getpid(),))


def square_or_unloadable(i):
    return FailsOutsideItsWorker() if i == 150 else i * i


class Unsendable(Exception):
    def __reduce__(self):
        raise TypeError("this exception refuses to be serialized")


def raise_unsendable():
    raise Unsendable("weird")


def return_lock():
    return threading.Lock()


def pid_after(delay):
    time.sleep(delay)
    return os.getpid()


def notify_then_sleep(address, marker, delay, retry_delay=0.0):
    """Tell the test (over a PUSH socket) which process runs this attempt, then sleep
    delay seconds; attempts after the first (marker file exists) sleep retry_delay."""
    import zmq as _zmq

    try:
        with open(marker, "x"):
            first = True
    except FileExistsError:
        first = False
    context = _zmq.Context()
    push = context.socket(_zmq.PUSH)
    push.linger = 5000
    push.connect(address)
    push.send_string(str(os.getpid()))
    push.close()
    context.term()
    time.sleep(delay if first else retry_delay)
    return os.getpid()


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def big_array(n):
    return np.arange(n, dtype=np.float64)


def array_sum(array):
    return float(array.sum())


@dataclasses.dataclass
class Point:
    x: int
    y: int


def point_sum(p):
    return p.x + p.y


@dataclasses.dataclass
class Opaque:
    value: int


class DenyPosix(DeserializationPolicy):
    def validate_module(self, module_name, is_local):
        if module_name in ("os", "posix"):
            raise PolicyViolationError(f"module {module_name} is not allowed here")


# -- helpers ----------------------------------------------------------------------------


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _wait_gone(pids, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


class Notifications:
    """A PULL socket tasks report their pid to (see notify_then_sleep)."""

    def __init__(self, marker):
        self.marker = str(marker)
        self.context = zmq.Context()
        self.pull = self.context.socket(zmq.PULL)
        self.pull.linger = 0
        port = self.pull.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"tcp://127.0.0.1:{port}"

    def next_pid(self, timeout=30.0):
        assert self.pull.poll(timeout * 1000), "the task never started"
        return int(self.pull.recv_string())

    def close(self):
        self.pull.close(0)
        self.context.term()


@pytest.fixture
def notes(tmp_path):
    n = Notifications(tmp_path / "first-attempt")
    yield n
    n.close()


@pytest.fixture(scope="module")
def executor():
    ex = fzmq.Executor(local_workers=2, **HB)
    assert ex.wait_for_workers(2, START)
    yield ex
    pids = ex.status()["local_pids"]
    ex.shutdown()
    assert _wait_gone(pids)


def _worker_cli(address, *extra):
    return subprocess.Popen([sys.executable, "-m", "pyfory.integrations.zmq", "worker", address,
                             "--log-level", "WARNING", *extra],
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)})


# -- results ----------------------------------------------------------------------------


def test_submit_and_map(executor):
    assert executor.submit(add, 2, 3).result(30) == 5
    assert executor.submit(pow, 2, 10).result(30) == 1024  # a builtin, by name
    assert executor.submit(add, a=[1], b=[2]).result(30) == [1, 2]
    assert list(executor.map(mul, range(20), range(20))) == [i * i for i in range(20)]
    assert executor.submit(Point, 1, 2).result(30) == Point(1, 2)  # a class is a callable
    assert executor.submit(point_sum, Point(3, 4)).result(30) == 7


def test_lambdas_closures_and_local_classes(executor):
    k = 10
    assert executor.submit(lambda x: x * k, 4).result(30) == 40

    def make_counter(start):
        count = [start]

        def step(n):
            count[0] += n
            return count[0]

        return step

    assert executor.submit(make_counter(5), 3).result(30) == 8
    assert list(executor.map(lambda x: x + k, range(5))) == [10, 11, 12, 13, 14]

    class Local:
        def __init__(self, v):
            self.v = v

    out = executor.submit(lambda: Local(7)).result(30)
    assert type(out).__name__ == "Local" and out.v == 7
    assert executor.submit(functools.partial(add, 100), 1).result(30) == 101


def test_exception_with_remote_traceback(executor):
    future = executor.submit(fail, "boom")
    exc = future.exception(30)
    assert isinstance(exc, ValueError) and str(exc) == "boom"
    assert isinstance(exc.__cause__, fzmq.RemoteTraceback)
    text = str(exc.__cause__)
    assert "in fail" in text and "raise ValueError(message)" in text
    assert exc.remote_traceback in text
    with pytest.raises(ValueError, match="boom"):
        future.result()


def test_custom_and_unsendable_exceptions(executor):
    exc = executor.submit(raise_custom).exception(30)
    assert type(exc) is CustomError and exc.code == 42 and exc.args == ("custom failure", 42)
    exc = executor.submit(raise_unsendable).exception(30)
    assert isinstance(exc, fzmq.RemoteError) and isinstance(exc, pickle.PicklingError)
    assert "Unsendable" in str(exc) and "weird" in str(exc) and "refuses to be serialized" in str(exc)
    assert "raise_unsendable" in str(exc.__cause__)


def test_serialization_errors(executor):
    future = executor.submit(add, threading.Lock(), 1)  # the argument cannot be sent
    assert isinstance(future.exception(30), (ForyError, TypeError))
    # the result cannot be sent back: the future gets what serializing raised (as the
    # stdlib's pool does), with the worker's traceback of that error as its cause
    exc = executor.submit(return_lock).exception(30)
    assert isinstance(exc, TypeError) and "_thread.lock" in str(exc)
    assert isinstance(exc.__cause__, fzmq.RemoteTraceback)
    assert executor.submit(add, 1, 1).result(30) == 2


def test_a_result_that_cannot_be_loaded_fails_only_its_own_future(executor):
    list(executor.map(add, range(500), range(500)))  # learn that tasks are short: batches
    futures = [executor.submit(square_or_unloadable, i) for i in range(300)]
    for i, future in enumerate(futures):
        if i == 150:
            with pytest.raises(DeserializationError, match="cannot be rebuilt outside") as info:
                future.result(30)
            assert type(info.value.__cause__) is RuntimeError
        else:
            assert future.result(30) == i * i


@needs_numpy
def test_large_arrays_travel_out_of_band(executor):
    n = 2_000_000  # 16 MB
    result = executor.submit(big_array, n).result(30)
    np.testing.assert_array_equal(result, np.arange(n, dtype=np.float64))
    base = result
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    assert isinstance(base, memoryview) and isinstance(base.obj, zmq.Frame)  # no copy made
    assert executor.submit(array_sum, np.ones(n)).result(30) == float(n)


def test_load_is_balanced(executor):
    pids = set(executor.map(pid_after, [0.2] * 8))
    assert len(pids) == 2
    assert pids == set(executor.status()["local_pids"])


def test_bounded_tasks_in_flight(notes):
    # slots = 1 running + 1 prefetched batch per worker, one task per batch: never more
    # than 2 tasks on a worker, the rest wait in the executor
    with fzmq.Executor(local_workers=2, prefetch=1, max_batch=1, **HB) as ex:
        assert ex.wait_for_workers(2, START)
        futures = [ex.submit(notify_then_sleep, notes.address, notes.marker, 0.3, 0.3) for _ in range(12)]
        notes.next_pid()
        seen_pending = seen_full = False
        while not all(f.done() for f in futures):
            status = ex.status()
            for w in status["workers"]:
                assert w["batches"] <= w["slots"] == 2
                assert w["in_flight"] <= 2
                seen_full |= w["in_flight"] == 2
            seen_pending |= status["pending"] > 0
            time.sleep(0.02)
        assert seen_pending and seen_full
        assert all(isinstance(f.result(), int) for f in futures)


def test_map_timeout(executor):
    with pytest.raises(cf.TimeoutError):
        list(executor.map(pid_after, [3.0], timeout=0.3))


def test_concurrent_submitters(executor):
    results = {}

    def submit_many(n):
        results[n] = [executor.submit(add, n, i) for i in range(200)]

    threads = [threading.Thread(target=submit_many, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for n, futures in results.items():
        assert [f.result(30) for f in futures] == [n + i for i in range(200)]


def test_ipc_address(tmp_path):
    with fzmq.Executor(f"ipc://{tmp_path}/executor.sock", local_workers=1, **HB) as ex:
        assert ex.address == f"ipc://{tmp_path}/executor.sock"
        assert ex.submit(add, 40, 2).result(START) == 42


def test_inproc_executor_with_worker_threads():
    with pytest.raises(ValueError, match="inproc"):
        fzmq.Executor("inproc://pyfory-no-processes", local_workers=1)
    context = zmq.Context()
    try:
        with fzmq.Executor("inproc://pyfory-executor", context=context, **HB) as ex:
            worker = fzmq.Worker(ex.address, context=context)
            thread = threading.Thread(target=worker.run, daemon=True)
            thread.start()
            assert ex.wait_for_workers(1, 30)
            assert ex.submit(add, 1, 2).result(30) == 3
            assert ex.submit(lambda: threading.get_ident()).result(30) == thread.ident
        worker.stop()
        thread.join(30)
        assert not thread.is_alive()
    finally:
        context.term()


# -- failures: killed and hung workers --------------------------------------------------


def test_sigkill_mid_task_retries_on_another_worker(notes):
    with fzmq.Executor(local_workers=2, max_retries=2, **HB) as ex:
        assert ex.wait_for_workers(2, START)
        future = ex.submit(notify_then_sleep, notes.address, notes.marker, 60.0)
        victim = notes.next_pid()
        os.kill(victim, signal.SIGKILL)
        retried_on = notes.next_pid()
        assert retried_on != victim
        assert future.result(30) == retried_on
        assert ex.wait_for_workers(2, START)  # the dead worker was replaced
        assert victim not in ex.status()["local_pids"]
        assert ex.submit(add, 1, 2).result(30) == 3


def test_retries_exhausted_gives_clear_error():
    with fzmq.Executor(local_workers=2, max_retries=1, **HB) as ex:
        assert ex.wait_for_workers(2, START)
        future = ex.submit(die)  # kills every worker it runs on
        exc = future.exception(45)
        assert isinstance(exc, fzmq.WorkerLostError)
        assert "lost 2 time(s)" in str(exc) and "max_retries=1" in str(exc) and "exited" in str(exc)
        assert ex.submit(add, 2, 2).result(45) == 4  # the executor keeps working


def test_no_retries(notes):
    with fzmq.Executor(local_workers=1, max_retries=0, **HB) as ex:
        future = ex.submit(notify_then_sleep, notes.address, notes.marker, 60.0)
        os.kill(notes.next_pid(), signal.SIGKILL)
        with pytest.raises(fzmq.WorkerLostError, match="max_retries=0"):
            future.result(30)


def test_hung_worker_detected_by_heartbeats(notes):
    with fzmq.Executor(local_workers=2, heartbeat_interval=0.2, heartbeat_timeout=2.0) as ex:
        assert ex.wait_for_workers(2, START)
        future = ex.submit(notify_then_sleep, notes.address, notes.marker, 60.0)
        victim = notes.next_pid()
        os.kill(victim, signal.SIGSTOP)  # alive but silent: no heartbeats
        try:
            retried_on = notes.next_pid()
            assert retried_on != victim
            assert future.result(30) == retried_on
            assert _wait_gone([victim])  # the hung local worker was killed
        finally:
            if _alive(victim):
                os.kill(victim, signal.SIGKILL)


# -- shutdown ---------------------------------------------------------------------------


def test_shutdown_leaves_no_processes():
    ex = fzmq.Executor(local_workers=2, **HB)
    assert ex.wait_for_workers(2, START)
    pids = ex.status()["local_pids"]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    futures = [ex.submit(pid_after, 0.1) for _ in range(6)]
    ex.shutdown(wait=True)
    assert all(f.done() and not f.cancelled() for f in futures)  # pending work finished first
    assert not any(_alive(p) for p in pids)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(add, 1, 2)


def test_shutdown_cancel_futures(notes):
    ex = fzmq.Executor(local_workers=1, prefetch=0, **HB)
    running = ex.submit(notify_then_sleep, notes.address, notes.marker, 1.0)
    queued = [ex.submit(add, i, i) for i in range(10)]
    notes.next_pid()
    pids = ex.status()["local_pids"]
    ex.shutdown(wait=False, cancel_futures=True)
    assert running.result(30) == pids[0]
    assert all(f.cancelled() for f in queued)
    ex.shutdown(wait=True)
    assert not any(_alive(p) for p in pids)


def test_shutdown_without_workers_does_not_hang():
    ex = fzmq.Executor(local_workers=0, heartbeat_interval=0.1, heartbeat_timeout=0.5)
    future = ex.submit(add, 1, 2)
    ex.shutdown(wait=True)
    with pytest.raises(fzmq.WorkerLostError, match="no worker"):
        future.result(1)


class _WorkersCannotStart(fzmq.Executor):
    def _spawn_local(self):
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])


def test_local_workers_that_cannot_start_break_the_executor():
    ex = _WorkersCannotStart(local_workers=1, **HB)
    future = ex.submit(add, 1, 2)
    with pytest.raises(cf.BrokenExecutor, match="exit before they register"):
        future.result(60)
    with pytest.raises(cf.BrokenExecutor):
        ex.submit(add, 1, 2)
    ex.shutdown()


def test_interpreter_exit_and_kill_leave_no_workers(tmp_path):
    script = tmp_path / "user.py"
    script.write_text(textwrap.dedent("""
        import os, sys, time
        from pyfory.integrations.zmq import Executor
        ex = Executor(local_workers=2)
        ex.wait_for_workers(2, 60)
        print(" ".join(map(str, ex.status()["local_pids"])), flush=True)
        print(ex.submit(lambda: 41 + 1).result(30), flush=True)
        if sys.argv[1] == "hang":
            time.sleep(600)
        # "exit": no shutdown() call, the interpreter exits
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
    for mode in ("exit", "hang"):
        proc = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, text=True,
                                env=env)
        try:
            pids = [int(p) for p in proc.stdout.readline().split()]
            assert len(pids) == 2
            assert proc.stdout.readline().strip() == "42"
            if mode == "hang":
                proc.kill()  # the executor's process dies: its workers must follow
            assert proc.wait(30) in (0, -signal.SIGKILL)
            assert _wait_gone(pids), f"workers left behind after {mode}"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# -- remote workers, strict mode and policies ------------------------------------------


def test_worker_command_with_concurrency():
    with fzmq.Executor(insecure=True, **HB) as ex:  # hand-started workers hold no credentials
        cli = _worker_cli(ex.address, "--concurrency", "2")
        try:
            assert ex.wait_for_workers(2, START)
            pids = {w["pid"] for w in ex.status()["workers"]}
            assert set(ex.map(pid_after, [0.2] * 8)) == pids
            assert ex.submit(lambda x: -x, 5).result(30) == -5
        finally:
            cli.terminate()
            assert cli.wait(30) == 0
        assert _wait_gone(pids)


def test_strict_worker_runs_only_allowed_functions_on_plain_data():
    with fzmq.Executor(insecure=True, **HB) as ex:  # hand-started workers hold no credentials
        cli = _worker_cli(ex.address, "--strict", "--allow", f"{__name__}:add", "--allow",
                          f"{__name__}:point_*", "--register", f"{__name__}:Point")
        try:
            assert ex.wait_for_workers(1, START)
            assert ex.submit(add, 2, 3).result(30) == 5
            assert ex.submit(add, [1], [2, {"k": (3,)}]).result(30) == [1, 2, {"k": (3,)}]
            with pytest.raises(PolicyViolationError, match="--allow"):
                ex.submit(mul, 2, 3).result(30)
            with pytest.raises(PolicyViolationError, match="by value"):
                ex.submit(lambda: 1).result(30)
            with pytest.raises(PolicyViolationError):
                ex.submit(functools.partial(add, 1), 2).result(30)
            assert ex.submit(point_sum, Point(1, 2)).result(30) == 3  # a --register'ed class
            with pytest.raises(TypeNotRegisteredError):
                ex.submit(add, Opaque(1), Opaque(2)).result(30)
        finally:
            cli.terminate()
            cli.wait(30)


def test_policy_reaches_local_workers():
    with fzmq.Executor(local_workers=1, policy=DenyPosix(), **HB) as ex:
        with pytest.raises(PolicyViolationError, match="not allowed"):
            ex.submit(os.getpid).result(START)
        assert ex.submit(add, 1, 2).result(30) == 3


def test_worker_policy_option():
    with fzmq.Executor(insecure=True, **HB) as ex:  # hand-started workers hold no credentials
        cli = _worker_cli(ex.address, "--policy", f"{__name__}:DenyPosix")
        try:
            assert ex.wait_for_workers(1, START)
            with pytest.raises(PolicyViolationError):
                ex.submit(os.getpid).result(30)
            assert ex.submit(add, 1, 2).result(30) == 3
        finally:
            cli.terminate()
            cli.wait(30)


# -- security ---------------------------------------------------------------------------


def test_non_loopback_addresses_need_curve_or_insecure():
    for address in ("tcp://0.0.0.0:*", "tcp://*:*", "tcp://192.0.2.1:5555"):
        with pytest.raises(ValueError, match="CURVE"):
            fzmq.Executor(address)
    for address in ("tcp://127.0.0.1:5555", "tcp://localhost:1", "tcp://[::1]:1", "ipc:///tmp/x",
                    "inproc://x", "tcp://127.0.0.2:1"):
        assert fzmq.is_local_address(address)
    for address in ("tcp://0.0.0.0:1", "tcp://*:1", "tcp://10.0.0.1:1", "tcp://example.com:1",
                    "tcp://eth0:1", "pgm://239.0.0.1:1"):
        assert not fzmq.is_local_address(address)


def test_worker_command_refuses_network_address_without_curve():
    out = subprocess.run([sys.executable, "-m", "pyfory.integrations.zmq", "worker",
                          "tcp://192.0.2.1:5555"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)})
    assert out.returncode == 2
    assert "CURVE" in out.stderr and "--insecure" in out.stderr


def test_insecure_opt_in():
    with fzmq.Executor("tcp://0.0.0.0:*", local_workers=1, insecure=True, **HB) as ex:
        assert ex.submit(add, 20, 22).result(START) == 42


def test_keys_command_and_curve_executor(tmp_path):
    keys = tmp_path / "keys"
    out = subprocess.run([sys.executable, "-m", "pyfory.integrations.zmq", "keys", str(keys)],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)})
    assert out.returncode == 0, out.stderr
    for name in ("server.key", "server.key_secret", "client.key", "client.key_secret",
                 "authorized_clients/client.key"):
        assert (keys / name).is_file()
    assert (keys / "server.key_secret").stat().st_mode & 0o077 == 0
    with fzmq.Executor(local_workers=1, curve_keys=str(keys), **HB) as ex:
        assert ex.submit(add, 1, 2).result(START) == 3
        assert ex.submit(lambda: "curve").result(30) == "curve"


def test_curve_worker_rejects_unauthenticated_clients(tmp_path):
    import zmq.auth
    from zmq.utils.monitor import recv_monitor_message

    keys = tmp_path / "keys"
    fzmq.generate_keys(str(keys))
    intruder_keys = tmp_path / "intruder"
    fzmq.generate_keys(str(intruder_keys))  # a key pair the worker does not know
    context = zmq.Context()
    try:
        for attempt in ("plain", "unknown key"):
            router = context.socket(zmq.ROUTER)
            router.linger = 0
            if attempt == "unknown key":
                public, secret = zmq.auth.load_certificate(str(intruder_keys / "client.key_secret"))
                router.curve_publickey, router.curve_secretkey = public, secret
                router.curve_serverkey = zmq.auth.load_certificate(str(keys / "server.key"))[0]
            monitor = router.get_monitor_socket()
            port = router.bind_to_random_port("tcp://127.0.0.1")
            cli = _worker_cli(f"tcp://127.0.0.1:{port}", "--curve-keys", str(keys))
            try:
                failed = None
                deadline = time.monotonic() + 30
                while failed is None and time.monotonic() < deadline:
                    if monitor.poll(500):
                        event = recv_monitor_message(monitor)["event"]
                        if event in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                                     zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                            failed = event
                        assert event != zmq.EVENT_HANDSHAKE_SUCCEEDED, attempt
                assert failed is not None, f"{attempt}: the handshake did not fail"
                assert not router.poll(1000), f"{attempt}: the worker talked to an unauthenticated client"
            finally:
                cli.terminate()
                cli.wait(30)
                router.disable_monitor()
                monitor.close(0)
                router.close(0)
        # and a whole Executor with the wrong keys never gets a worker
        with fzmq.Executor(curve_keys=str(intruder_keys), **HB) as ex:
            cli = _worker_cli(ex.address, "--curve-keys", str(keys))
            try:
                assert not ex.wait_for_workers(1, 3)
            finally:
                cli.terminate()
                cli.wait(30)
    finally:
        context.term()
