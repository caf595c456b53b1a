"""What the futures and zmq executors share about task outcomes."""

from __future__ import annotations

from pyfory.error import DeserializationError


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
