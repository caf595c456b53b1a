"""The task core both executors share (pyfory.integrations._tasks): task items, outcome
records, buffer hand-off, batches in flight."""

import pickle
import sys
import threading
from concurrent.futures import Future
from concurrent.futures.process import _RemoteTraceback as StdRemoteTraceback

import pytest
from pyfory.integrations import _tasks
from pyfory.integrations._tasks import handoff as _handoff  # noqa: F401 - _tasks.handoff below

import pyfory
from pyfory.error import DeserializationError, MalformedDataError


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


# ---- task items and a batch the worker could not load -------------------------------------
def test_task_items_round_trip_and_malformed_items():
    fory = pyfory.Fory(ref=True, strict=False)
    by_value = fory.loads(fory.dumps(_tasks.task_item(divmod, (7, 2), {})))
    assert _tasks.open_item(by_value) == (divmod, (7, 2), {})
    named = fory.loads(fory.dumps(_tasks.task_item(divmod, (7, 2), {}, named=True)))
    assert named == ((7, 2), {}) and _tasks.open_item(named, divmod) == (divmod, (7, 2), {})
    for bad in [(1, (), {}), (divmod, [7, 2], {}), (divmod, (), []), (divmod, ()), "x"]:
        with pytest.raises(MalformedDataError):
            _tasks.open_item(bad)
    assert _tasks.outcomes.run_item(((-3,), {}), abs) == (_tasks.OK, 3, "")
    for bad in [(divmod, [7, 2], {}), "x", (divmod, (7, 2)), ((1,), [])]:
        status, exc, tb = _tasks.outcomes.run_item(bad)
        assert status == _tasks.ERROR and type(exc) is MalformedDataError and tb
    assert _tasks.outcomes.run_item((divmod, (7, 2), {}), abs)[0] == _tasks.ERROR  # named: 2 items
    assert _tasks.check_batch([1, 2], 2) == [1, 2]
    for bad, n in [([1], 2), ((1, 2), 2), ("ab", 2)]:
        with pytest.raises(MalformedDataError):
            _tasks.check_batch(bad, n)


def test_batch_failed_retries_several_alone_and_fails_a_lone_task():
    retried, failed = [], []
    assert _tasks.batch_failed(["a", None, "b"], retried.extend, failed.append) is True
    assert retried == ["a", "b"] and failed == []
    assert _tasks.batch_failed([None, "c"], retried.extend, failed.append) is False
    assert failed == ["c"] and retried == ["a", "b"]


# ---- outcome records --------------------------------------------------------------------------
class Unsendable(Exception):
    def __reduce__(self):
        raise TypeError("refuses to travel")


class ExitAtDump:
    def __reduce__(self):
        raise SystemExit(7)


def _record_round_trip(status, value, tb=""):
    """Worker side (encode) then parent side (settle), through frames as zmq sends them."""
    out = pyfory.Fory(ref=True, strict=False)
    handoff = _tasks.FrameHandoff(1024)
    record = _tasks.outcomes.encode(handoff, out, status, value, tb)
    framer = pyfory.Fory()
    (record,) = _tasks.check_records(framer.loads(framer.dumps([record])), 1)
    future = Future()
    _tasks.settle(future, record, out, _tasks.FrameHandoff.reader(handoff.take()))
    return record, future


def test_outcome_records_settle_futures():
    record, future = _record_round_trip(*_tasks.outcomes.run_item((divmod, (7, 2), {})))
    assert record[0] == _tasks.OK and future.result(0) == (3, 1)
    # an exception, with the worker's traceback as its cause
    record, future = _record_round_trip(*_tasks.outcomes.run_item((divmod, (1, 0), {})))
    exc = future.exception(0)
    assert record[0] == _tasks.ERROR and type(exc) is ZeroDivisionError
    assert isinstance(exc.__cause__, _tasks.RemoteTraceback) and "ZeroDivisionError" in str(exc.__cause__)
    # a result that cannot be serialized: the future gets what serializing raised
    record, future = _record_round_trip(*_tasks.outcomes.run_item((threading.Lock, (), {})))
    assert record[0] == _tasks.ERROR and isinstance(future.exception(0), TypeError)
    record, future = _record_round_trip(_tasks.OK, ExitAtDump())
    assert type(future.exception(0)) is SystemExit   # as the stdlib's pool reports it
    # an exception that cannot be serialized: its text, as a RemoteError (a PicklingError)
    record, future = _record_round_trip(*_tasks.outcomes.run_item((_raise, (Unsendable("weird"),), {})))
    exc = future.exception(0)
    assert record[0] == _tasks.ERROR_TEXT and isinstance(exc, _tasks.RemoteError)
    assert isinstance(exc, pickle.PicklingError)
    assert "Unsendable: weird" in str(exc) and "refuses to travel" in str(exc)
    assert "in _raise" in str(exc.__cause__)


def test_out_of_band_results_travel_as_frames():
    big = bytearray(b"x" * 100_000)   # past both thresholds (the handoff's and Fory's own)
    record, future = _record_round_trip(_tasks.OK, [big, bytes(10)])
    assert record[2] == 1 and future.result(0) == [big, bytes(10)]


def test_a_result_that_cannot_be_loaded_fails_its_future_only():
    fory = pyfory.Fory(ref=True, strict=False)
    strict = pyfory.Fory()

    class Local:
        pass

    handoff = _tasks.FrameHandoff(1024)
    records = [_tasks.outcomes.encode(handoff, fory, _tasks.OK, value, "") for value in (Local(), 5)]
    reader = _tasks.FrameHandoff.reader(handoff.take())
    futures = [Future(), Future()]
    for future, record in zip(futures, records):
        _tasks.settle(future, record, strict, reader)
    assert isinstance(futures[0].exception(0), pyfory.error.ForyError)
    assert futures[1].result(0) == 5
    # SystemExit raised while loading is never the outcome
    exit_record = _tasks.outcomes.encode(handoff, fory, _tasks.OK, ExitOnLoad(), "")
    future = Future()
    _tasks.settle(future, exit_record, fory, _tasks.FrameHandoff.reader([]))
    assert type(future.exception(0)) is DeserializationError


class ExitOnLoad:
    def __reduce__(self):
        return (sys.exit, (3,))


def test_malformed_records_and_frame_counts_are_refused():
    for bad in [None, (), "x"]:
        with pytest.raises(MalformedDataError):
            _tasks.check_records(bad, 1)
    with pytest.raises(MalformedDataError):
        _tasks.check_records([(0, b"", 0, "")], 2)
    # a malformed record fails its own future, and never raises in the settling thread
    fory = pyfory.Fory()
    five = fory.dumps(5)
    for bad in [(0, five, 0), None, (9, five, 0, ""), (0, "text", 0, ""), (1, five, 0, ""),
                (0, five, "frames", "")]:
        future = Future()
        _tasks.settle(future, bad, fory, _tasks.FrameHandoff.reader([]))
        assert isinstance(future.exception(0), (MalformedDataError, pyfory.error.ForyError, TypeError)), bad
    reader = _tasks.FrameHandoff.reader([b"a"])
    for refs in (2, -1, "1", 1.0):
        with pytest.raises(MalformedDataError):
            reader.open(refs)
    assert [bytes(v) for v in reader.open(1)] == [b"a"]


def test_shared_memory_refs_only_name_the_executors_own_segments():
    handoff = _tasks.SharedMemoryHandoff("pf_test_w1_", 16, accept="pf_test_")
    for refs in ([("pf_other_1", 8)], [("pf_test_/../x", 8)], [("pf_test_1", 0)], [["pf_test_1", 8]],
                 "pf_test_1", [("pf_test_1", 8.0)]):
        with pytest.raises(MalformedDataError):
            handoff.open(refs)
    assert handoff.open(None) is None and handoff.open([]) is None


@pytest.mark.skipif(not _tasks.handoff.shm_supported(), reason="no POSIX shared memory")
def test_shared_memory_handoff_round_trip():
    fory = pyfory.Fory(ref=True, strict=False)
    writer = _tasks.SharedMemoryHandoff("pf_test_w1_", 1024, accept="pf_test_")
    writer.configure(fory)
    data = bytearray(range(256)) * 64
    body, refs = writer.write(fory, [data, b"small"])
    assert len(refs) == 1 and refs[0][0].startswith("pf_test_w1_") and refs[0][1] == len(data)
    reader = _tasks.SharedMemoryHandoff("pf_test_p", 1024, accept="pf_test_")
    out = fory.loads(body, buffers=reader.open(refs))
    assert out == [data, b"small"]
    with pytest.raises(FileNotFoundError):   # the reader unlinked the name once it was mapped
        reader.open(refs)


# ---- in flight ------------------------------------------------------------------------------------
def test_in_flight_batches_answered_in_parts_and_lost():
    held = _tasks.InFlight()
    held.add(b"b1", [1, 2, 3], ["t1", "t2", "t3"], refs=["seg"], size=100)
    held.add(b"b2", [4], ["t4"])
    assert len(held) == 2 and held.count == 4
    assert held.answer(b"b1", [2, 9]) == (["t2", None], None)   # 9: not waiting
    assert held.answer(b"nope", [1]) == (None, None)             # a stale batch
    assert held.answer(b"b1", [1, 3]) == (["t1", "t3"], ["seg"])  # the batch is done: its refs
    assert len(held) == 1 and held.count == 1 and held.only() == (1, 0)
    held.add(b"b3", [5, 6], ["t5", "t6"], refs=["seg3"])
    held.answer(b"b3", [6])
    assert held.take_all() == (["t4", "t5"], [["seg3"]])
    assert len(held) == 0 and held.count == 0
    # answered whole, in order (every futures batch): the tasks as sent, and the refs
    held.add(7, [10, 11], ["a", "b"], refs=["s7"])
    assert held.answer(7, [10, 11]) == (["a", "b"], ["s7"]) and len(held) == 0 and held.count == 0
    # an id answered twice counts once
    held.add(8, [1, 2], ["x", "y"])
    assert held.answer(8, [1, 1]) == (["x", None], None) and held.count == 1
    assert held.answer(8, [2]) == (["y"], None) and held.count == 0 and len(held) == 0
