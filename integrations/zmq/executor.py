"""The Executor: a concurrent.futures.Executor that binds a ROUTER socket, starts local
workers and spreads task batches over every worker that registers."""

from __future__ import annotations

import atexit
import concurrent.futures as _cf
import itertools
import json
import logging
import os
import secrets
import socket as _socketlib
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from typing import Any, Callable, Dict, List, Optional

import zmq
from pyfory.integrations import DEFAULT_MAX_DEPTH
from pyfory.integrations._tasks.batches import (
    batch_failed,
    batch_size,
    encode_batch,
    task_item,
    task_seconds_average,
)
from pyfory.integrations._tasks.handoff import FrameHandoff
from pyfory.integrations._tasks.inflight import InFlight
from pyfory.integrations._tasks.outcomes import check_records, payload_error, set_outcome, settle
from pyfory.integrations.zmq.protocol import (
    _ID,
    _SECONDS,
    BATCH_SECONDS,
    BYE,
    FAILED,
    PONG,
    READY,
    REFUSE,
    RESET,
    RESULT,
    WELCOME,
    WorkerLostError,
    _callable_name,
    _describe_callable,
    _parse_tids,
    _task_header,
)
from pyfory.integrations.zmq.security import (
    _ZAP_DOMAIN,
    _check_address,
    _client_curve,
    _plain_authenticator,
    _split_tcp,
    is_local_address,
)
from pyfory.integrations.zmq.transport import OOB_THRESHOLD

import pyfory
from pyfory.error import ForyError

log = logging.getLogger("pyfory.integrations.zmq")


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
        return task_item(self.fn, self.args, self.kwargs, named=bool(self.name))

    def release(self) -> None:
        self.fn = self.args = self.kwargs = self.future = None


class _WorkerRecord:
    __slots__ = ("wid", "rid", "hid", "slots", "inflight", "task_seconds", "last_seen",
                 "pid", "host", "proc")

    def __init__(self, wid: bytes, slots: int, pid: int, host: str, now: float):
        self.wid = wid
        self.rid = b"t" + wid
        self.hid = b"h" + wid
        self.slots = slots  # batches it may hold
        self.inflight = InFlight()  # batch id -> the tasks without a result yet
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
        self._framer = pyfory.Fory()  # result messages' outcome records (strict: plain data)
        self._handoff = FrameHandoff(OOB_THRESHOLD)
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
                         "batches": len(w.inflight), "in_flight": w.inflight.count,
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
                self._dispatch()
                if self._cancel_pending:  # after dispatching: what a free worker takes now runs
                    self._cancel_queued()
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
            if cmd == RESULT:
                (seconds,) = _SECONDS.unpack_from(head, 9)
                tids = _parse_tids(head, 17)
            else:
                tids = _parse_tids(head, 9)
            tasks, _refs = worker.inflight.answer(batch, tids)
            if tasks is None:  # a stale batch (its tasks were retried elsewhere): ignore
                return
            if cmd == RESULT:
                worker.task_seconds = task_seconds_average(worker.task_seconds, seconds, len(tids))
                self._results(tasks, frames[2:], len(tids))
            else:
                self._batch_failed(tasks, frames[2:])
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

    def _records(self, frames: list, n: int, tasks: list) -> Optional[tuple]:
        """(outcome records, frame reader) of a result message; None when it cannot be
        read (its tasks fail with the error)."""
        try:
            return check_records(self._framer.loads(frames[0]), n), FrameHandoff.reader(frames[1:])
        except BaseException as e:  # noqa: B036 - whatever loading raised, the futures get it
            error = payload_error(e, "loading the results")
            log.debug("a result message could not be loaded: %r", error)
            for task in tasks:
                if task is not None:
                    self._finish(task, exc=error)
            return None

    def _results(self, tasks: list, frames: list, n: int) -> None:
        read = self._records(frames, n, tasks)
        if read is None:
            return
        records, reader = read
        for task, record in zip(tasks, records):
            self._settle(task, record, reader)

    def _batch_failed(self, tasks: list, frames: list) -> None:
        read = self._records(frames, 1, tasks)
        if read is None:
            return
        (record,), reader = read
        batch_failed(tasks, self._retry_alone, lambda task: self._settle(task, record, reader))

    def _retry_alone(self, tasks: list) -> None:
        for task in tasks:
            task.solo = True
        self._pending.extendleft(reversed(tasks))

    def _settle(self, task: Optional[_Task], record: tuple, reader: Any) -> None:
        future = None
        if task is not None:
            self._tasks.pop(task.tid, None)
            future = task.future
            task.release()
        settle(future, record, self._io_fory, reader)

    def _finish(self, task: _Task, result: Any = None, exc: Optional[BaseException] = None) -> None:
        self._tasks.pop(task.tid, None)
        future = task.future
        task.release()
        set_outcome(future, result, exc)

    def _batch_size(self, worker: _WorkerRecord, free_workers: int) -> int:
        return batch_size(worker.task_seconds, len(self._pending), free_workers, self.max_batch,
                          BATCH_SECONDS)

    def _encode_batch(self, tasks: list) -> Optional[list]:
        """The payload frames of a batch; tasks that cannot be serialized fail and leave it."""
        return encode_batch(tasks, self._encode_tasks, self._fail_task)

    def _encode_tasks(self, tasks: list) -> list:
        """[payload, *buffer frames] of a batch's task items."""
        handoff = self._handoff
        handoff.discard()  # frames of an attempt that shed a task
        body, _n = handoff.write(self._io_fory, [t.item() for t in tasks])
        return [body, *handoff.take()]

    def _fail_task(self, task: _Task, exc: BaseException) -> None:
        self._finish(task, exc=exc)

    def _dispatch(self) -> None:
        pending = self._pending
        if not pending or not self._workers:
            return
        while pending:
            free = [w for w in self._workers.values() if len(w.inflight) < w.slots]
            if not free:
                return
            worker = min(free, key=lambda w: (len(w.inflight), w.inflight.count))
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
            worker.inflight.add(batch, [t.tid for t in tasks], tasks)

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
        log.warning("%s; %d task(s) in flight", what, worker.inflight.count)
        if worker.proc is not None:
            if worker.proc.poll() is None:  # hung: it is ours, end it
                worker.proc.kill()
        else:
            self._send([worker.rid, RESET, b"declared lost"])
        retry = []
        held, _refs = worker.inflight.take_all()
        for task in held:
            task.attempts += 1
            task.failures.append(what)
            if task.attempts > self.max_retries:
                self._finish(task, exc=WorkerLostError(
                    f"task {task.label} was lost {task.attempts} time(s) (max_retries="
                    f"{self.max_retries}): " + "; ".join(task.failures)))
            else:
                retry.append(task)
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
            worker.inflight.take_all()

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
