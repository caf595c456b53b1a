"""Task batches: what a task item is, how many tiny tasks go in one batch, how a batch
sheds the tasks that cannot be serialized, and what happens to a batch the worker could
not load.

A batch's payload is one list of task items, so a function used by all its tasks is
written once:

    (fn, args, kwargs)   the callable travels in the payload (by reference or by value)
    (args, kwargs)       the callable is named outside the payload (the zmq header's
                         ``module:qualname``, which a strict worker checks before it loads)
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from pyfory.error import MalformedDataError


# ---- task items -------------------------------------------------------------------------------
def task_item(fn: Any, args: tuple, kwargs: dict, named: bool = False) -> tuple:
    """The task item of fn(*args, **kwargs); without fn when the batch names it."""
    return (args, kwargs) if named else (fn, args, kwargs)


def open_item(entry: Any, fn: Any = None) -> tuple:
    """(fn, args, kwargs) of a loaded task item; fn is given when the batch named it.
    Raises MalformedDataError for anything else."""
    if fn is not None:
        if type(entry) is not tuple or len(entry) != 2:
            raise MalformedDataError("a task item must be (args, kwargs)")
        args, kwargs = entry
    else:
        if type(entry) is not tuple or len(entry) != 3:
            raise MalformedDataError("a task item must be (callable, args, kwargs)")
        fn, args, kwargs = entry
    if not callable(fn) or type(args) is not tuple or type(kwargs) is not dict:
        raise MalformedDataError("a task must hold a callable, an argument tuple and a dict")
    return fn, args, kwargs


def check_batch(items: Any, n: int) -> list:
    """A loaded batch: a list of n task items, else MalformedDataError."""
    if type(items) is not list or len(items) != n:
        raise MalformedDataError(f"a task batch must be a list of {n} task item(s)")
    return items


# ---- sizing ---------------------------------------------------------------------------------------
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


# ---- serializing ----------------------------------------------------------------------------------
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


# ---- a batch the worker could not load ------------------------------------------------------------
def batch_failed(tasks: List[Any], retry_alone: Callable[[List[Any]], None],
                 fail: Callable[[Any], None]) -> bool:
    """The worker could not load a batch (its outcome record is the loading error). The
    error may belong to one task of several: those go again, each alone (True: the record
    is not used); a task that was alone fails with it. Tasks already settled (None) are
    left out."""
    live = [task for task in tasks if task is not None]
    if len(live) > 1:
        retry_alone(live)
        return True
    for task in live:
        fail(task)
    return False
