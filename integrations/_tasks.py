"""The task core shared by the futures and zmq executors (internal): how a task's outcome
is captured in a worker and rebuilt in the parent (remote tracebacks, exceptions that
cannot travel, errors raised while loading a payload), how many tiny tasks go in one
batch, and how a batch sheds the tasks that cannot be serialized. Each executor keeps its
own transport (pipes and shared memory; ZeroMQ frames) and message layout; what a task
outcome means, and the batching rules, are written once, here."""

from __future__ import annotations

import traceback
from typing import Any, Callable, List, Optional

from pyfory.error import DeserializationError

try:
    # the futures executor's causes are the stdlib's own class (CPython's tests check the type)
    from concurrent.futures.process import _RemoteTraceback
except ImportError:  # pragma: no cover - a Python without the stdlib process pool
    class _RemoteTraceback(Exception):
        def __init__(self, tb: str):
            self.tb = tb

        def __str__(self) -> str:
            return self.tb


# ---- remote tracebacks --------------------------------------------------------------------
class RemoteTraceback(_RemoteTraceback):
    """Set as ``__cause__`` of an exception raised by a zmq task: the worker's traceback
    text. A subclass of the standard library's ``_RemoteTraceback``, which the futures
    executor sets, as the stdlib's does."""

    def __init__(self, tb: str):
        Exception.__init__(self, tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def traceback_text(exc: BaseException) -> str:
    """The formatted traceback of exc (type, message, frames)."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def quoted(tb: str) -> str:
    """A traceback text as it shows inside the parent's traceback."""
    return f'\n"""\n{tb}"""'


def capture(exc: BaseException) -> str:
    """In a worker: the traceback text of exc, and exc made ready to travel (its frames,
    which cannot, dropped)."""
    tb = traceback_text(exc)
    exc.__traceback__ = None
    return tb


def with_remote_traceback(exc: BaseException, tb: str, cls: type = RemoteTraceback) -> BaseException:
    """In the parent: exc with the worker's traceback text tb as its ``__cause__`` (and as
    ``exc.remote_traceback`` where the exception takes attributes)."""
    if tb:
        exc.__cause__ = cls(quoted(tb))
        try:
            exc.remote_traceback = tb
        except Exception:
            pass
    return exc


def safe_str(obj: Any) -> str:
    try:
        return str(obj)
    except Exception:
        return f"<{type(obj).__qualname__} (str() failed)>"


def error_text(exc: BaseException, tb: str = "") -> str:
    """What is sent for an exception that cannot itself be serialized: its type and text,
    then the traceback."""
    text = f"{type(exc).__module__}.{type(exc).__qualname__}: {safe_str(exc)}"
    return f"{text}\n\n{tb}" if tb else text


def payload_error(exc: BaseException, what: str) -> BaseException:
    """The error to report for exc, raised while loading a payload (a task batch in a
    worker, results in the parent). An Exception is reported as it is. SystemExit,
    KeyboardInterrupt and other BaseExceptions come from the payload (a reduce call), not
    from a task nor a user asking to stop, so they are never passed on as a task's
    outcome: the future gets a DeserializationError whose ``__cause__`` is exc."""
    if isinstance(exc, Exception):
        return exc
    text = str(exc)
    error = DeserializationError(f"{what} raised {type(exc).__name__}" + (f": {text}" if text else ""))
    error.__cause__ = exc
    return error


# ---- batching -------------------------------------------------------------------------------
def task_seconds_average(old: Optional[float], seconds: float, n: int) -> Optional[float]:
    """The moving average of the time per task, after a batch of n tasks took seconds."""
    if n <= 0 or seconds < 0:
        return old
    per_task = seconds / n
    return per_task if old is None else 0.7 * old + 0.3 * per_task


def batch_size(task_seconds: Optional[float], waiting: int, workers: int, max_batch: int,
               target_seconds: float, min_waiting_per_worker: int = 0) -> int:
    """Tasks for the next batch: one until the time per task is known (or when fewer than
    min_waiting_per_worker tasks per worker wait), else enough for about target_seconds
    of work, no more than an even share of what waits over the workers, at most max_batch."""
    workers = max(1, workers)
    if max_batch <= 1 or task_seconds is None or waiting < min_waiting_per_worker * workers:
        return 1
    share = -(-waiting // workers)
    by_time = int(target_seconds / max(task_seconds, 1e-7))
    return max(1, min(max_batch, share, by_time))


def encode_batch(tasks: List[Any], encode: Callable[[List[Any]], Any],
                 fail: Callable[[Any, BaseException], None]) -> Optional[Any]:
    """encode(tasks); when that fails, the tasks that cannot be serialized alone fail
    (fail(task, error), with what serializing raised, as the stdlib's pool does) and leave
    the list (in place), and the others are encoded. None when no task is left."""
    try:
        return encode(tasks)
    except BaseException as e:  # noqa: B036 - the futures get whatever serializing raised
        if len(tasks) == 1:
            fail(tasks[0], e)
            tasks.clear()
            return None
        error = e
    good = []
    for task in tasks:
        try:
            encode([task])
            good.append(task)
        except BaseException as e:  # noqa: B036 - as above
            fail(task, e)
    if len(good) == len(tasks):  # each one alone, but not all together: none goes
        for task in good:
            fail(task, error)
        good = []
    tasks[:] = good
    if not good:
        return None
    return encode_batch(tasks, encode, fail)
