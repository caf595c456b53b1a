"""The task core both executors share (pyfory.integrations._tasks)."""

from concurrent.futures.process import _RemoteTraceback as StdRemoteTraceback

import pytest
from pyfory.integrations import _tasks

from pyfory.error import DeserializationError


def _raise(exc):
    raise exc


def test_remote_traceback_capture_and_rebuild():
    try:
        _raise(ValueError("went wrong"))
    except ValueError as e:
        exc = e
    tb = _tasks.capture(exc)
    assert exc.__traceback__ is None
    assert "went wrong" in tb and "in _raise" in tb
    rebuilt = _tasks.with_remote_traceback(exc, tb, _tasks._RemoteTraceback)
    assert rebuilt is exc
    cause = exc.__cause__
    assert type(cause) is StdRemoteTraceback
    assert issubclass(_tasks.RemoteTraceback, StdRemoteTraceback)
    assert cause.tb == str(cause) == f'\n"""\n{tb}"""'
    assert exc.remote_traceback == tb
    # no traceback text: no cause
    other = KeyError("k")
    assert _tasks.with_remote_traceback(other, "").__cause__ is None


def test_error_text_and_payload_error():
    class BadStr(Exception):
        def __str__(self):
            raise RuntimeError("no text")

    assert _tasks.error_text(ValueError("x"), "TB") == "builtins.ValueError: x\n\nTB"
    assert "(str() failed)" in _tasks.error_text(BadStr())
    exc = ValueError("plain")
    assert _tasks.payload_error(exc, "loading") is exc
    stop = SystemExit(3)
    error = _tasks.payload_error(stop, "loading the result")
    assert isinstance(error, DeserializationError) and error.__cause__ is stop
    assert "loading the result raised SystemExit: 3" in str(error)


def test_batch_size_rules():
    # unknown task time, batching off: one task
    assert _tasks.batch_size(None, 1000, 2, 512, 0.004) == 1
    assert _tasks.batch_size(1e-6, 1000, 2, 1, 0.004) == 1
    # too few waiting per worker: one task
    assert _tasks.batch_size(1e-6, 7, 2, 512, 0.004, 4) == 1
    # by time, by share, by max_batch
    assert _tasks.batch_size(1e-3, 1000, 2, 512, 0.004) == 4
    assert _tasks.batch_size(1e-6, 10, 4, 512, 0.004) == 3
    assert _tasks.batch_size(1e-7, 100_000, 2, 64, 0.005) == 64
    assert _tasks.task_seconds_average(None, 0.01, 10) == pytest.approx(0.001)
    assert _tasks.task_seconds_average(0.001, 0.02, 10) == pytest.approx(0.0013)
    assert _tasks.task_seconds_average(0.5, 1.0, 0) == 0.5


def test_encode_batch_sheds_unserializable_tasks():
    def encode(tasks):
        if any(t == "bad" for t in tasks):
            raise TypeError("cannot serialize bad")
        return "+".join(tasks)

    failed = []
    tasks = ["a", "bad", "b", "bad"]
    assert _tasks.encode_batch(tasks, encode, lambda t, e: failed.append((t, type(e)))) == "a+b"
    assert tasks == ["a", "b"]
    assert failed == [("bad", TypeError), ("bad", TypeError)]
    failed.clear()
    tasks = ["bad"]
    assert _tasks.encode_batch(tasks, encode, lambda t, e: failed.append(t)) is None
    assert tasks == [] and failed == ["bad"]

    # each task alone fits, all together do not: every task fails with that error
    def too_big(tasks):
        if len(tasks) > 1:
            raise ValueError("too big together")
        return tasks[0]

    failed.clear()
    tasks = ["x", "y"]
    assert _tasks.encode_batch(tasks, too_big, lambda t, e: failed.append((t, str(e)))) is None
    assert failed == [("x", "too big together"), ("y", "too big together")] and tasks == []
