"""A ``concurrent.futures`` process pool that serializes with pyfory.

    from pyfory.integrations.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=4) as pool:
        k = 3
        print(list(pool.map(lambda x: x * k, range(10))))   # closures work

The constructor takes the standard library's arguments (``max_workers``, ``mp_context``,
``initializer``, ``initargs``, ``max_tasks_per_child``), the ``pyfory.Fory`` options
(default ``ref=True, strict=False``) and ``shared_memory_threshold``. The executor behaves
as ``concurrent.futures.ProcessPoolExecutor``: ``submit``, ``map`` (``timeout``,
``chunksize``), ``shutdown(wait, cancel_futures)``, context manager; exceptions raised by
a task come back with the worker's traceback as their ``__cause__``; a worker that dies
breaks the pool and every waiting future gets ``BrokenProcessPool``.

Functions, arguments and results travel as pyfory payloads, so lambdas, closures, local
classes and their instances work (the initializer may be a lambda too), and nothing needs
to be installed in the workers.

Design (why it is faster than the standard library for small tasks):

- Each worker has its own duplex pipe. One manager thread in the parent sends work and
  reads results with ``multiprocessing.connection.wait`` over the pipes, the workers'
  sentinels and a wake-up pipe: no queue feeder threads, no shared locks.
- Work is sent in batches when the pool is saturated: with at least four waiting tasks
  per worker and short tasks, one message carries several of them (the batch size follows
  the measured task time, aiming at a few milliseconds of work, at most
  ``max_batch_size``), and one pyfory payload per batch writes a function used by all its
  tasks once. A worker then may hold one more small batch while it works, so it never
  waits for the parent between batches. The price, as with ``map``'s ``chunksize``: a
  long task in a batch delays the tasks behind it in that batch (they show as running);
  ``max_batch_size=1`` turns batching off. With few waiting tasks, each goes alone to an
  idle worker, as in the stdlib.
- The parent never blocks writing to a worker that is busy: a second batch is sent only
  when it fits in the pipe's buffer; larger ones wait for an idle worker. So the two
  sides can never both block writing.
- Buffers of ``shared_memory_threshold`` bytes and more (1 MiB by default; numpy arrays,
  bytes, bytearray, memoryview, PickleBuffer) are written once into a POSIX shared memory
  segment and mapped by the receiver, which unlinks the name at once: the data is not
  copied through the pipe, and the mapping lives as long as the objects that use it.
  Segments are named ``pf_<executor token>_...``; whatever is still there after
  ``shutdown``, a crash or a cancelled task is unlinked by the parent (and by a worker
  whose parent died). ``shared_memory_threshold=None`` turns this off.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import secrets
import sys
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import Any, Callable, Deque, Dict, List, Optional

from pyfory.integrations import DEFAULT_MAX_DEPTH
from pyfory.integrations._tasks import outcomes
from pyfory.integrations._tasks.batches import (
    batch_failed,
    batch_size,
    check_batch,
    encode_batch,
    task_item,
    task_seconds_average,
)
from pyfory.integrations._tasks.handoff import SharedMemoryHandoff, shm_create_lock, shm_supported, shm_sweep
from pyfory.integrations._tasks.inflight import InFlight
from pyfory.integrations._tasks.outcomes import (
    RemoteError,
    _RemoteTraceback,
    capture,
    check_records,
    quoted,
    settle,
    traceback_text,
    with_remote_traceback,
)

import pyfory

__all__ = ["ProcessPoolExecutor", "BrokenProcessPool", "RemoteError", "DEFAULT_SHARED_MEMORY_THRESHOLD",
           "DEFAULT_MAX_BATCH_SIZE"]

LOGGER = logging.getLogger("concurrent.futures")

DEFAULT_SHARED_MEMORY_THRESHOLD = 1 << 20
# a batch for a worker that is still busy must fit in the pipe's buffer (see module doc)
_PREFETCH_BYTES = 32 * 1024
DEFAULT_MAX_BATCH_SIZE = 512
_BATCH_SECONDS = 0.004
# batches only when at least this many tasks per worker are waiting: a few tasks are
# spread one by one, so none waits behind a long task in another's batch
_SATURATED = 4

# message kinds
_TASKS, _EXIT = "T", "X"                     # parent -> worker
_RESULTS, _BATCH_FAILED, _INIT_FAILED = "R", "F", "I"   # worker -> parent

_global_shutdown = False
_live_cores: "weakref.WeakSet[_PoolCore]" = weakref.WeakSet()
_managers_lock = threading.Lock()


def _python_exit():
    """At interpreter exit: let every pool finish its queued work and stop its workers."""
    global _global_shutdown
    _global_shutdown = True
    with _managers_lock:
        cores = list(_live_cores)
    for core in cores:
        core.wakeup()
    for core in cores:
        thread = core.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()


if hasattr(threading, "_register_atexit"):
    threading._register_atexit(_python_exit)
else:  # pragma: no cover - Python 3.8
    import atexit

    atexit.register(_python_exit)


def _after_fork_in_child():
    # a forked process must not keep the parent's ends of other workers' pipes open:
    # those workers would never see the end of file when the parent dies
    for core in list(_live_cores):
        core.close_in_forked_child()
    _live_cores.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ---- the worker -------------------------------------------------------------------------------
_PARENT_POLL_SECONDS = 0.25


def _parent_gone_exit(token: str) -> None:
    """The executor's process is gone: unlink its segments (nobody will map them) and exit
    now, even in the middle of a task."""
    shm_create_lock.acquire(timeout=5)
    shm_sweep(f"pf_{token}_")
    os._exit(1)


def _watch_parent(token: str, parent_pid: int) -> None:
    """A worker's watchdog thread: waits for the parent's sentinel (end of file when it
    dies) and checks the parent pid (a forked sibling may hold the sentinel's other end,
    an orphan is adopted by another process), so a busy worker notices as fast as an idle one."""
    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    while os.getppid() == parent_pid:
        if sentinel is not None:
            try:
                if multiprocessing.connection.wait([sentinel], timeout=_PARENT_POLL_SECONDS):
                    break
            except OSError:
                sentinel = None
        else:
            time.sleep(_PARENT_POLL_SECONDS)
    _parent_gone_exit(token)


class _Initializer:
    """The initializer and its arguments, handed to each worker as it starts, as the
    standard library does: a forked worker inherits them; for spawn and forkserver
    multiprocessing pickles them while it starts the worker, so objects that may only be
    shared that way (a ``multiprocessing.Queue``, a lock) work. What the stock pickler
    cannot send (a lambda, a closure, a local class) goes as a pyfory payload instead."""

    __slots__ = ("fn", "args", "fory_options")

    def __init__(self, fn, args, fory_options):
        self.fn = fn
        self.args = args
        self.fory_options = fory_options

    def __reduce__(self):
        from multiprocessing.reduction import ForkingPickler

        try:
            data = bytes(ForkingPickler.dumps((self.fn, self.args, self.fory_options)))
            return (_initializer_from_pickle, (data,))
        except Exception as e:
            try:
                payload = pyfory.Fory(**self.fory_options).dumps((self.fn, self.args))
            except Exception as e2:
                raise e2 from e
            return (_initializer_from_fory, (payload, self.fory_options))


def _initializer_from_pickle(data):
    import pickle

    return _Initializer(*pickle.loads(data))


def _initializer_from_fory(payload, fory_options):
    fn, args = pyfory.Fory(**fory_options).loads(payload)
    return _Initializer(fn, args, fory_options)


def _worker_main(conn, config):
    """Body of a worker process: run batches of tasks until told to stop."""
    (token, fory_options, init, shm_threshold, max_tasks) = config
    threading.Thread(target=_watch_parent, args=(token, os.getppid()), daemon=True,
                     name="pyfory-parent-watch").start()
    fory = pyfory.Fory(**fory_options)
    framer = pyfory.Fory()
    handoff = SharedMemoryHandoff(f"pf_{token}_w{os.getpid()}_", shm_threshold, accept=f"pf_{token}_")
    handoff.configure(fory)
    if init is not None:
        try:
            init.fn(*init.args)
        except BaseException as e:
            LOGGER.critical("Exception in initializer:", exc_info=True)
            try:
                conn.send_bytes(framer.dumps((_INIT_FAILED, quoted(traceback_text(e)))))
            except OSError:
                pass
            return
    done = 0
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            # the parent is gone: nobody will map what is still in flight
            _parent_gone_exit(token)
        kind, batch_id, task_ids, refs, body = framer.loads(message)
        del message
        if kind == _EXIT:
            return
        try:
            items = check_batch(fory.loads(body, buffers=handoff.open(refs)), len(task_ids))
        except BaseException as e:  # noqa: B036 - the parent retries the tasks one by one
            record = outcomes.encode(handoff, fory, *outcomes.load_failed(e))
            conn.send_bytes(framer.dumps((_BATCH_FAILED, batch_id, task_ids, [record], 0.0)))
            continue
        del body
        records = []
        start = time.perf_counter()
        for i in range(len(items)):
            entry, items[i] = items[i], None   # the arguments go as soon as the task ran
            records.append(outcomes.encode(handoff, fory, *outcomes.run_item(entry)))
            del entry
        elapsed = time.perf_counter() - start
        done += len(items)
        del items
        conn.send_bytes(framer.dumps((_RESULTS, batch_id, task_ids, records, elapsed)))
        del records
        if max_tasks is not None and done >= max_tasks:
            return


def _process_chunk(fn, chunk):
    """Run fn over one chunk of Executor.map's arguments (in a worker)."""
    return [fn(*args) for args in chunk]


def _get_chunks(iterables, chunksize):
    it = zip(*iterables)
    while True:
        chunk = tuple(itertools.islice(it, chunksize))
        if not chunk:
            return
        yield chunk


def _chain_from_iterable_of_lists(iterable):
    for element in iterable:
        element.reverse()
        while element:
            yield element.pop()


# ---- the parent side --------------------------------------------------------------------------
class _WorkItem:
    __slots__ = ("future", "fn", "args", "kwargs")

    def __init__(self, future, fn, args, kwargs):
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs


class _Worker:
    __slots__ = ("process", "conn", "inflight", "remaining", "retiring", "eof", "init_error")

    def __init__(self, process, conn, remaining):
        self.process = process
        self.conn = conn
        self.inflight = InFlight()             # its batches: work ids, task segments, message size
        self.remaining = remaining             # tasks it may still take (max_tasks_per_child)
        self.retiring = False
        self.init_error: Optional[str] = None   # its initializer failed (traceback text)
        self.eof = False



class _PoolCore:
    """State shared by the executor (its facade) and the manager thread."""

    def __init__(self, max_workers, ctx, init, max_tasks, shm_threshold, fory_options,
                 max_batch=DEFAULT_MAX_BATCH_SIZE):
        self.max_workers = max_workers
        self.max_batch = max_batch
        self.ctx = ctx
        self.init = init
        # spawn and forkserver workers start when work needs them (fork: all at once, as
        # the standard library does: forking once threads run is unsafe)
        self.dynamic = ctx.get_start_method(allow_none=False) != "fork"
        self.idle_credits = 0      # results delivered and not yet matched by a submit
        self.max_tasks = max_tasks
        self.shm_threshold = shm_threshold if shm_supported() else None
        self.fory_options = fory_options
        self.token = secrets.token_hex(4)
        self.lock = threading.Lock()
        self.items: Dict[int, _WorkItem] = {}
        self.pending: Deque[int] = deque()
        self.retry: Deque[int] = deque()       # running items to send again, one per batch
        self.ids = itertools.count()
        self.batch_ids = itertools.count()
        self.workers: Dict[int, _Worker] = {}   # pid -> worker
        self.thread: Optional[threading.Thread] = None
        self.shutdown_requested = False
        self.cancel_pending = False
        self.executor_alive = True
        self.broken: Optional[str] = None
        self.sleeping = False
        self.task_seconds: Optional[float] = None
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.fory = None
        self.framer = None
        self.handoff = SharedMemoryHandoff(f"pf_{self.token}_p", self.shm_threshold,
                                           accept=f"pf_{self.token}_")
        self.parked: Optional[tuple] = None    # a serialized batch waiting for an idle worker
        self.closed_in_child = False
        self.starting_conn = None
        with _managers_lock:
            _live_cores.add(self)

    # -- called from any thread --
    def wakeup(self):
        fd = self.wake_w
        if fd < 0:
            return
        try:
            os.write(fd, b"\0")
        except (BlockingIOError, OSError):
            pass

    def close_in_forked_child(self):
        if self.closed_in_child:
            return
        self.closed_in_child = True
        # the parent's end of the pipe of the worker being forked: kept open in that worker,
        # it would never see end of file when the parent dies
        conns = [worker.conn for worker in self.workers.values()]
        if self.starting_conn is not None:
            conns.append(self.starting_conn)
        for conn in conns:
            try:
                conn.close()
            except OSError:
                pass
        fds = (self.wake_r, self.wake_w)
        self.wake_r = self.wake_w = -1
        self.thread = None
        for fd in fds:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass

    # -- worker processes --
    def start_worker(self):
        parent_conn, child_conn = self.ctx.Pipe(duplex=True)
        config = (self.token, self.fory_options, self.init, self.shm_threshold,
                  self.max_tasks)
        process = self.ctx.Process(target=_worker_main, args=(child_conn, config))
        self.starting_conn = parent_conn   # closed in a forked child (see close_in_forked_child)
        try:
            process.start()
        finally:
            self.starting_conn = None
            child_conn.close()
        self.workers[process.pid] = _Worker(process, parent_conn, self.max_tasks)

    def adjust_workers(self):
        """On submit (lock held), as the standard library does: when a result came back
        since the last submit, a worker is idle and takes the task; otherwise start one
        more worker, up to max_workers."""
        if self.idle_credits > 0:
            self.idle_credits -= 1
        elif len(self.workers) < self.max_workers and self.broken is None:
            self.start_worker()

    # -- the manager thread --
    def run(self):
        try:
            self.fory = pyfory.Fory(**self.fory_options)
            self.handoff.configure(self.fory)
            self.framer = pyfory.Fory()
            self.loop()
        except BaseException as e:  # a bug here must not leave futures hanging
            self.terminate_broken(f"the pool's manager thread failed: {e!r}", quoted(traceback_text(e)))
            raise

    def loop(self):
        while True:
            self.dispatch()
            if self.should_stop():
                self.join_workers()
                return
            waitables: list = [self.wake_r]
            # snapshots of self.workers here and below: submit() may add a worker meanwhile
            for worker in list(self.workers.values()):
                if not worker.eof:
                    waitables.append(worker.conn)
                waitables.append(worker.process.sentinel)
            self.sleeping = True
            # work submitted while we were dispatching, and a worker is free for it?
            ready = multiprocessing.connection.wait(
                waitables, timeout=0 if self.can_dispatch() else None)
            self.sleeping = False
            if self.wake_r in ready:
                try:
                    while os.read(self.wake_r, 4096):
                        pass
                except (BlockingIOError, OSError):
                    pass
            for worker in list(self.workers.values()):
                if worker.conn in ready:
                    if not self.receive(worker):
                        return
            for pid, worker in list(self.workers.items()):
                if worker.process.sentinel in ready:
                    if not self.worker_exited(pid, worker):
                        return

    def should_stop(self) -> bool:
        if self.broken is not None:
            return True
        if not (self.shutdown_requested or not self.executor_alive or _global_shutdown):
            return False
        if self.cancel_pending:
            self.cancel_pending = False
            with self.lock:
                for work_id in list(self.pending):
                    item = self.items.get(work_id)
                    if item is not None and item.future.cancel():
                        del self.items[work_id]
                self.pending.clear()
        return not self.items and not self.pending and not self.retry

    # sending
    def batch_size(self, n_pending: int) -> int:
        """Tasks per message: one, unless the pool is saturated with short tasks (then
        enough for about _BATCH_SECONDS of work, at most max_batch_size)."""
        return batch_size(self.task_seconds, n_pending, len(self.workers), self.max_batch,
                          _BATCH_SECONDS, _SATURATED)

    def free_workers(self):
        """(idle workers, busy workers that may take one more small batch)."""
        idle, busy = [], []
        for worker in list(self.workers.values()):
            if worker.retiring or worker.remaining == 0 or worker.eof:
                continue
            if not worker.inflight:
                idle.append(worker)
            elif len(worker.inflight) == 1 and self.may_prefetch(worker):
                busy.append(worker)
        return idle, busy

    def may_prefetch(self, worker) -> bool:
        """Queue a second batch behind the running one? Only while short tasks come in
        batches (the running batch has several tasks): a task never waits behind a lone,
        possibly long, task while another worker could take it."""
        tasks, size = worker.inflight.only()
        return (tasks > 1 and size < _PREFETCH_BYTES and self.task_seconds is not None
                and self.task_seconds < _BATCH_SECONDS / 2)

    def can_dispatch(self) -> bool:
        if self.parked is not None:
            return bool(self.free_workers()[0])
        if not (self.pending or self.retry):
            return False
        idle, busy = self.free_workers()
        return bool(idle or busy)

    def dispatch(self):
        while self.broken is None:
            idle, busy = self.free_workers()
            if self.parked is not None:
                # a batch too big to queue behind running work waits for an idle worker
                if not idle:
                    return
                task_ids, message, segments = self.parked
                self.parked = None
                worker = max(idle, key=lambda w: w.remaining if w.remaining is not None else 1 << 62)
                self.send(worker, task_ids, message, segments)
                continue
            if not (self.pending or self.retry) or not (idle or busy):
                return
            worker = idle[0] if idle else busy[0]
            batch = self.take_batch(worker)
            if batch is None:
                continue
            if not idle and len(batch[1][1]) > _PREFETCH_BYTES:
                self.parked = batch
                continue
            self.send(worker, *batch)

    def take_batch(self, worker):
        """Pop the next tasks for worker and serialize them; None if all were cancelled."""
        items: List[tuple] = []
        with self.lock:
            if self.retry:
                work_id = self.retry.popleft()
                item = self.items.get(work_id)
                if item is not None:
                    items.append((work_id, item))
            else:
                limit = self.batch_size(len(self.pending))
                if worker.remaining is not None:
                    limit = min(limit, worker.remaining)
                while self.pending and len(items) < limit:
                    work_id = self.pending.popleft()
                    item = self.items[work_id]
                    if not item.future.set_running_or_notify_cancel():
                        del self.items[work_id]
                        continue
                    items.append((work_id, item))
        if not items:
            return None
        return self.serialize(items)

    def encode_tasks(self, items):
        return self.handoff.write(self.fory, [task_item(it.fn, it.args, it.kwargs) for _, it in items])

    def serialize(self, items):
        # tasks that cannot be serialized fail; the others are sent
        encoded = encode_batch(items, self.encode_tasks, self.fail_unserializable)
        if encoded is None:
            return None
        body, refs = encoded
        batch_id = next(self.batch_ids)
        task_ids = [work_id for work_id, _ in items]
        message = self.framer.dumps((_TASKS, batch_id, task_ids, refs, body))
        return task_ids, (batch_id, message), refs

    def fail_unserializable(self, entry, error):
        # as the stdlib's _SafeQueue does when pickling a call item fails
        work_id, item = entry
        with_remote_traceback(error, capture(error), _RemoteTraceback)
        with self.lock:
            self.items.pop(work_id, None)
        item.future.set_exception(error)

    def send(self, worker, task_ids, message, refs):
        batch_id, data = message
        worker.inflight.add(batch_id, task_ids, task_ids, refs, len(data))
        if worker.remaining is not None:
            worker.remaining -= len(task_ids)
        try:
            worker.conn.send_bytes(data)
        except OSError:
            pass  # the worker died: its sentinel tells us next

    # receiving
    def receive(self, worker) -> bool:
        try:
            message = worker.conn.recv_bytes()
        except (EOFError, OSError):
            # the worker is exiting: its sentinel says when it is gone
            worker.eof = True
            return True
        try:
            record = self.framer.loads(message)
            kind = record[0]
            if kind == _RESULTS or kind == _BATCH_FAILED:
                _, batch_id, task_ids, records, elapsed = record
                check_records(records, len(task_ids) if kind == _RESULTS else 1)
        except BaseException as e:
            self.terminate_broken("a worker sent a malformed message", quoted(traceback_text(e)))
            return False
        if kind == _RESULTS or kind == _BATCH_FAILED:
            work_ids, refs = worker.inflight.answer(batch_id, task_ids)
            self.handoff.release(refs)   # the tasks' segments, mapped (and unlinked) by now
            if kind == _RESULTS:
                self.task_seconds = task_seconds_average(self.task_seconds, elapsed, len(records))
                for work_id, outcome in zip(work_ids or (), records):
                    self.complete(work_id, outcome)
                if worker.remaining == 0 and not worker.inflight:
                    worker.retiring = True
            else:
                if worker.remaining is not None:
                    worker.remaining += len(task_ids)
                if batch_failed(work_ids or [], self.retry_alone,
                                lambda work_id: self.complete(work_id, records[0])):
                    self.handoff.skip(records[0][2])
        elif kind == _INIT_FAILED:
            # the pool breaks when this worker has exited (by itself, as in the stdlib),
            # so that what its initializer queued (a log record in a multiprocessing.Queue)
            # has been flushed by then; it gets no task meanwhile
            worker.retiring = True
            worker.init_error = record[1]
        return True

    def retry_alone(self, work_ids):
        """Send these (running) tasks again, one per batch, to find the one(s) that fail."""
        with self.lock:
            self.retry.extend(work_ids)

    def complete(self, work_id, outcome):
        with self.lock:
            item = self.items.pop(work_id, None)
            self.idle_credits += 1
        future = item.future if item is not None else None
        del item
        settle(future, outcome, self.fory, self.handoff, _RemoteTraceback)

    def worker_exited(self, pid, worker) -> bool:
        # read what it sent before it exited
        while not worker.eof and self.broken is None:
            try:
                if not worker.conn.poll(0):
                    break
            except (EOFError, OSError):
                break
            self.receive(worker)
        if self.broken is not None:
            return False
        if worker.init_error is not None:
            worker.process.join(1)
            self.terminate_broken(None, worker.init_error)
            return False
        if worker.inflight or not worker.retiring:
            worker.process.join(1)
            exitcode = worker.process.exitcode
            detail = f"\n'''\nworker process {pid} exited with code {exitcode}'''"
            self.terminate_broken(None, detail)
            return False
        # a worker that reached max_tasks_per_child: replace it
        self.workers.pop(pid, None)
        worker.process.join()
        worker.conn.close()
        if not self.should_stop():
            with self.lock:   # submit() may start workers too
                if len(self.workers) < self.max_workers:
                    self.start_worker()
        return True

    def terminate_broken(self, message, cause_text):
        """Mark the pool broken, fail every waiting future, stop the workers."""
        with self.lock:
            if self.broken is not None:
                return
            self.broken = message or ("A child process terminated abruptly, the process "
                                      "pool is not usable anymore")
            items = list(self.items.values())
            self.items.clear()
            self.pending.clear()
            self.retry.clear()
        self.parked = None
        error = BrokenProcessPool("A process in the process pool was terminated abruptly "
                                  "while the future was running or pending.")
        if cause_text:
            error.__cause__ = _RemoteTraceback(cause_text)
        for item in items:
            try:
                item.future.set_exception(error)
            except Exception:  # cancelled or already done
                pass
        del items
        for worker in list(self.workers.values()):
            if worker.process.is_alive() and not worker.retiring:
                worker.process.terminate()
        self.join_workers(send_exit=False)

    def join_workers(self, send_exit=True):
        with self.lock:   # no submit() starts a worker from now on
            self.shutdown_requested = True
        for worker in list(self.workers.values()):
            if send_exit:
                try:
                    worker.conn.send_bytes(self.framer.dumps((_EXIT, -1, (), None, b"")))
                except (OSError, ValueError, AttributeError):
                    pass
        for worker in list(self.workers.values()):
            worker.process.join(10)
            if worker.process.is_alive():  # pragma: no cover - a worker stuck in user code
                worker.process.kill()
                worker.process.join()
            try:
                worker.conn.close()
            except OSError:
                pass
        self.workers.clear()
        self.handoff.discard()
        shm_sweep(f"pf_{self.token}_")
        with _managers_lock:
            _live_cores.discard(self)
        fds = (self.wake_r, self.wake_w)
        self.wake_r = self.wake_w = -1       # first: wakeup() must not write to a reused fd
        for fd in fds:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass


class ProcessPoolExecutor(Executor):
    """``concurrent.futures.ProcessPoolExecutor`` with pyfory serialization.

    Args:
        max_workers: number of worker processes (default: the number of CPUs).
        mp_context: a multiprocessing context (start method); default: the default
            context, or "spawn" when max_tasks_per_child is given (as the stdlib does).
        initializer, initargs: called in each worker when it starts (may be a lambda).
        max_tasks_per_child: a worker exits and is replaced after this many tasks.
        shared_memory_threshold: buffers of at least this many bytes travel through
            shared memory (default 1 MiB); None to send everything through the pipe.
        max_batch_size: at most this many tasks per message to a worker (default 512);
            1 sends every task on its own (see the module doc: batching).
        **fory_options: ``pyfory.Fory`` options (default ``ref=True, strict=False,
            max_depth=1024``: nesting as deep as pickle allows).
    """

    def __init__(self, max_workers: Optional[int] = None, mp_context=None,
                 initializer: Optional[Callable] = None, initargs: tuple = (), *,
                 max_tasks_per_child: Optional[int] = None,
                 shared_memory_threshold: Optional[int] = DEFAULT_SHARED_MEMORY_THRESHOLD,
                 max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                 **fory_options: Any):
        if max_workers is None:
            cpu_count = getattr(os, "process_cpu_count", os.cpu_count)
            max_workers = cpu_count() or 1
            if sys.platform == "win32":  # pragma: no cover
                max_workers = min(61, max_workers)
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if mp_context is None:
            mp_context = (multiprocessing.get_context("spawn") if max_tasks_per_child is not None
                          else multiprocessing.get_context())
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
            if mp_context.get_start_method(allow_none=False) == "fork":
                raise ValueError("max_tasks_per_child is incompatible with the 'fork' "
                                 "multiprocessing start method; supply a different mp_context.")
        if shared_memory_threshold is not None and shared_memory_threshold < 0:
            raise ValueError("shared_memory_threshold must be >= 0 or None")
        if not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError("max_batch_size must be an integer >= 1")
        options = {"ref": True, "strict": False, "max_depth": DEFAULT_MAX_DEPTH}
        options.update(fory_options)
        pyfory.Fory(**options)   # fail early on bad options
        init = None
        if initializer is not None:
            init = _Initializer(initializer, tuple(initargs), options)
        self._max_workers = max_workers
        self._mp_context = mp_context
        self._core = _PoolCore(max_workers, mp_context, init, max_tasks_per_child,
                               shared_memory_threshold, options, max_batch_size)
        self._started = False
        core = self._core
        self._finalizer = weakref.finalize(self, _executor_collected, core)

    @property
    def _processes(self) -> Dict[int, Any]:
        """pid -> Process of the live workers (as the stdlib's attribute)."""
        return {pid: w.process for pid, w in list(self._core.workers.items())}

    @property
    def _executor_manager_thread(self) -> Optional[threading.Thread]:
        """The thread that sends work and reads results (the stdlib's name for its own)."""
        return self._core.thread

    @property
    def _broken(self):
        return self._core.broken or False

    def _start(self):
        core = self._core
        if core.dynamic:
            core.adjust_workers()
        else:
            for _ in range(self._max_workers):
                core.start_worker()
        thread = threading.Thread(target=core.run, name="pyfory-ProcessPoolExecutor-manager",
                                  daemon=True)
        core.thread = thread
        thread.start()
        self._started = True

    def submit(self, fn, /, *args, **kwargs) -> Future:
        core = self._core
        with core.lock:
            if core.broken:
                raise BrokenProcessPool(core.broken)
            if core.shutdown_requested:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _global_shutdown:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            future = Future()
            work_id = next(core.ids)
            core.items[work_id] = _WorkItem(future, fn, args, kwargs)
            core.pending.append(work_id)
            if not self._started:
                self._start()
            elif core.dynamic:
                core.adjust_workers()
        if core.sleeping:
            core.wakeup()
        return future

    submit.__doc__ = Executor.submit.__doc__

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        """Like the stdlib's: chunksize > 1 sends the arguments in chunks of that size."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        results = super().map(partial(_process_chunk, fn), _get_chunks(iterables, chunksize),
                              timeout=timeout)
        return _chain_from_iterable_of_lists(results)

    def shutdown(self, wait=True, *, cancel_futures=False):
        core = self._core
        with core.lock:
            if cancel_futures:
                core.cancel_pending = True
            core.shutdown_requested = True
        thread = core.thread
        if thread is None:
            # never started: nothing to stop, only our wake-up pipe to close
            if core.wake_r >= 0:
                core.join_workers(send_exit=False)
            return
        core.wakeup()
        if wait and thread is not threading.current_thread():   # not from a done-callback
            thread.join()

    shutdown.__doc__ = Executor.shutdown.__doc__


def _executor_collected(core: _PoolCore):
    core.executor_alive = False
    if core.closed_in_child:
        return
    if core.thread is None:
        if core.wake_r >= 0:
            core.join_workers(send_exit=False)
        return
    if core.wake_w >= 0:
        core.wakeup()
