"""A task's outcome: run in a worker, written as an outcome record, settled on its future in
the parent, with the worker's traceback as the exception's cause.

An outcome record, the same in both executors' result messages:

    (status, body, refs, tb)
      OK          body: the result's payload; refs: its out-of-band buffers (handoff.py)
      ERROR       body: the exception's payload; tb: the worker's traceback text
      ERROR_TEXT  body: UTF-8 text of an exception that could not be serialized (type,
                  message, traceback); the parent raises it as a RemoteError

Each outcome has a payload of its own, so one result that cannot be loaded in the parent
fails its own future only."""

from __future__ import annotations

import traceback
from concurrent.futures import Future, InvalidStateError
from typing import Any, Optional

from pyfory.integrations._tasks.batches import open_item

from pyfory.error import DeserializationError, MalformedDataError, SerializationError

try:
    # the futures executor's causes are the stdlib's own class (CPython's tests check the type)
    from concurrent.futures.process import _RemoteTraceback
except ImportError:  # pragma: no cover - a Python without the stdlib process pool
    class _RemoteTraceback(Exception):
        def __init__(self, tb: str):
            self.tb = tb

        def __str__(self) -> str:
            return self.tb


OK = 0
ERROR = 1
ERROR_TEXT = 2


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


class RemoteError(SerializationError):
    """A task raised an exception that could not be sent back as itself; the message holds
    its type and text, and ``__cause__`` the remote traceback. A SerializationError (so a
    ``pickle.PicklingError``), as the standard library's pool reports an exception it
    cannot pickle."""


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


# ---- in the worker --------------------------------------------------------------------------
def failed(exc: BaseException) -> tuple:
    """The (status, value, tb) of a task that raised exc."""
    return (ERROR, exc, capture(exc))


def load_failed(exc: BaseException) -> tuple:
    """The (status, value, tb) of every task of a batch the worker could not load."""
    return failed(payload_error(exc, "loading the task in the worker"))


def run_item(entry: Any, fn: Any = None) -> tuple:
    """(status, value, tb) of one loaded task item (batches.task_item), fn given when the
    batch named it. Whatever the task raises is its outcome, SystemExit included (as in the
    standard library's pool); so is a malformed item."""
    try:
        if fn is None and type(entry) is tuple and len(entry) == 3:
            fn, args, kwargs = entry
        elif fn is not None and type(entry) is tuple and len(entry) == 2:
            args, kwargs = entry
        else:
            fn, args, kwargs = open_item(entry, fn)  # raises the reason
        if type(args) is not tuple or type(kwargs) is not dict:
            raise MalformedDataError("a task must hold a callable, an argument tuple and a dict")
        return (OK, fn(*args, **kwargs), "")
    except BaseException as e:  # noqa: B036 - every failure goes back to the future
        return failed(e)


def encode(handoff: Any, fory: Any, status: int, value: Any, tb: str) -> tuple:
    """The outcome record of (status, value, tb). A result that cannot be serialized is
    replaced by the error serializing raised (the standard library's pool does the same:
    the future gets that PicklingError, or SystemExit); an exception that cannot be
    serialized travels as its text (ERROR_TEXT)."""
    if status == OK:
        try:
            body, refs = handoff.write(fory, value)
            return (OK, body, refs, "")
        except BaseException as e:  # noqa: B036 - as the standard library's pool does
            status, value, tb = failed(e)
    try:
        body, refs = handoff.write(fory, value)
        return (ERROR, body, refs, tb)
    except BaseException as e:  # noqa: B036 - whatever serializing raised: send the text
        reason = f"(it could not be sent back: {type(e).__name__}: {safe_str(e)})"
        first = f"{error_text(value)} {reason}"
        text = f"{first}\n\n{tb}" if tb else first
        return (ERROR_TEXT, text.encode("utf-8", "replace"), None, "")


# ---- in the parent ----------------------------------------------------------------------------
def set_outcome(future: Optional[Future], result: Any = None, exc: Optional[BaseException] = None) -> None:
    """Settle future (unless it is gone, done or cancelled)."""
    if future is None or future.done():
        return
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
    except InvalidStateError:  # cancelled meanwhile
        pass


def settle(future: Optional[Future], record: Any, fory: Any, reader: Any,
           traceback_cls: type = RemoteTraceback) -> None:
    """Load an outcome record, its out-of-band buffers opened by reader (a handoff's),
    and settle future with it; a record for a future that is gone only releases its
    buffers. An error while loading fails this future only (payload_error: never a
    SystemExit as the outcome). This runs once per task in the parent's one I/O thread:
    the common case (a result without buffers) is kept short."""
    try:
        status, body, refs, tb = record
    except (TypeError, ValueError):
        set_outcome(future, exc=MalformedDataError("a worker sent a malformed outcome record"))
        return
    if future is None:
        reader.skip(refs)
        return
    if status == ERROR_TEXT:
        reader.skip(refs)
        text = bytes(body).decode("utf-8", "replace")
        set_outcome(future, exc=with_remote_traceback(RemoteError(text.split("\n", 1)[0]), text,
                                                      traceback_cls))
        return
    try:
        value = fory.loads(body, buffers=reader.open(refs) if refs else None)
    except BaseException as e:  # noqa: B036 - whatever loading raised, the future gets it
        # raised here, not in the worker: no remote traceback; its own cause stays
        set_outcome(future, exc=payload_error(e, "loading the result"))
        return
    try:
        if status == OK:
            future.set_result(value)
        elif status == ERROR and isinstance(value, BaseException):
            future.set_exception(with_remote_traceback(value, tb if type(tb) is str else "", traceback_cls))
        else:
            future.set_exception(MalformedDataError(
                f"a worker sent a malformed outcome (status {status!r}, a {type(value).__qualname__})"))
    except InvalidStateError:  # cancelled or settled meanwhile
        pass


def check_records(records: Any, n: int) -> list:
    """The outcome records of a result message: a list of n (each record's shape is
    checked as it is settled). Raises MalformedDataError otherwise."""
    if type(records) is not list or len(records) != n:
        raise MalformedDataError(f"a result message must hold {n} outcome record(s)")
    return records
