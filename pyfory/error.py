"""The pyfory error hierarchy.

Every failure that pyfory detects itself is a ``ForyError``; catching it catches
everything a malformed, hostile or incompatible payload can cause.
"""

from __future__ import annotations

import pickle as _pickle


class ForyError(Exception):
    """Base class of every error raised by pyfory."""


class FormatError(ForyError, _pickle.UnpicklingError, ValueError):
    """The input is not a pyfory payload, or was written by another format version."""


class MalformedDataError(ForyError, _pickle.UnpicklingError, ValueError):
    """The payload is truncated or its bytes do not describe a valid value."""


class TruncatedDataError(MalformedDataError, EOFError):
    """The payload ends before the value it describes is complete."""


class TypeNotRegisteredError(ForyError, TypeError):
    """Strict mode met a class that was not registered on this side."""


class PolicyViolationError(ForyError):
    """A DeserializationPolicy (or strict mode) refused what the payload asked for."""


class LimitExceededError(ForyError):
    """A configured limit (nesting depth, sizes) was exceeded."""


class DepthLimitError(LimitExceededError, RecursionError):
    """Nesting is deeper than ``max_depth`` (or a cycle met with ``ref=False``)."""


class SerializationError(ForyError, _pickle.PicklingError, TypeError):
    """A value cannot be serialized (for example an object that refuses to be pickled)."""


class SchemaMismatchError(ForyError, _pickle.UnpicklingError):
    """A class's fields differ between writer and reader with ``compatible=False``."""


class OutOfBandBufferError(ForyError, ValueError):
    """Out-of-band buffers missing, in excess, or of the wrong size."""



__all__ = [
    "ForyError",
    "FormatError",
    "MalformedDataError",
    "TruncatedDataError",
    "TypeNotRegisteredError",
    "PolicyViolationError",
    "LimitExceededError",
    "DepthLimitError",
    "SerializationError",
    "SchemaMismatchError",
    "OutOfBandBufferError",
]


class DeserializationError(ForyError, _pickle.UnpicklingError):
    """Rebuilding an object failed (a constructor, ``__setstate__`` or reduce callable
    raised while loading); the original exception is the ``__cause__``."""


__all__.append("DeserializationError")


class ChangedDuringSerializationError(SerializationError, RuntimeError):
    """A container was changed (by code run while serializing it) during iteration."""


__all__.append("ChangedDuringSerializationError")


# ---- pickle's error classes ----------------------------------------------------------
# Code written for pickle catches pickle.PicklingError around dumps and
# pickle.UnpicklingError around loads. The classes above that only one side raises
# derive from the matching one. The others (strict refusals, policies, limits,
# out-of-band buffers) can happen on either side: each has two subclasses of the same
# name, one also a PicklingError and one also an UnpicklingError, and dumps / loads
# give the error they raise the class of their side (`on_side`). `except
# DepthLimitError` and `except pickle.UnpicklingError` both catch what loads raises.
_SIDED = (TypeNotRegisteredError, PolicyViolationError, LimitExceededError, DepthLimitError,
          OutOfBandBufferError)
_DUMPS_SIDE: dict = {}
_LOADS_SIDE: dict = {}


def _rebuild_sided(cls, loads: bool, args: tuple):
    """Unpickle an error of a sided class: the error of class cls, on its side again."""
    return on_side(cls(*args), loads)


def _reduce_sided(self):
    # the sided class is not importable by its name (that is cls's name): an instance
    # pickles as cls, then takes its side again (multiprocessing sends errors with pickle)
    rv = Exception.__reduce__(self)
    return (_rebuild_sided, (self._fory_unsided, self._fory_loads_side, rv[1])) + rv[2:]


def _sided_subclass(cls, pickle_error):
    sub = type(cls.__name__, (cls, pickle_error),
               {"__doc__": cls.__doc__, "__module__": __name__, "_fory_unsided": cls,
                "_fory_loads_side": pickle_error is _pickle.UnpicklingError,
                "__reduce__": _reduce_sided})
    sub.__qualname__ = cls.__qualname__
    return sub


def _sided_classes() -> None:
    # most derived first, so that a subclass of a sided class finds its own pair
    for cls in _SIDED:
        _DUMPS_SIDE[cls] = _sided_subclass(cls, _pickle.PicklingError)
        _LOADS_SIDE[cls] = _sided_subclass(cls, _pickle.UnpicklingError)


_sided_classes()


def on_side(error: ForyError, loads: bool) -> ForyError:
    """`error`, now also an UnpicklingError (loads) or a PicklingError (dumps): its class
    becomes the sided subclass of the same name (the exception object, its traceback and
    its cause stay as they are). Classes without a sided pair are left alone."""
    table = _LOADS_SIDE if loads else _DUMPS_SIDE
    cls = type(error)
    sided = table.get(cls.__dict__.get("_fory_unsided", cls))
    if sided is not None:
        error.__class__ = sided
    return error
# ---- pyfory's error names (code written from pyfory's guide) -----------------------
# Each is one of the classes above (not a new class), so `except TypeUnregisteredError`
# and `except TypeNotRegisteredError` catch the same thing. A name with no narrower
# counterpart here is the base ForyError.
TypeUnregisteredError = TypeNotRegisteredError
TypeNotCompatibleError = SchemaMismatchError
ForyStructVersionMismatchError = SchemaMismatchError
ForyTypeMismatchError = SchemaMismatchError
ForyInvalidDataError = MalformedDataError
ForyInvalidRefError = MalformedDataError
ForyUnknownEnumError = MalformedDataError
ForyEncodingError = MalformedDataError
ForyInvalidError = MalformedDataError
ForyOutOfBoundError = TruncatedDataError
ForyBufferOutOfBoundError = TruncatedDataError
ForyDepthExceedError = DepthLimitError
ForyOutOfMemoryError = LimitExceededError
ForyNotAllowedError = PolicyViolationError
ForyUnsupportedError = SerializationError
ForyEncodeError = SerializationError
ForyTypeError = SerializationError
ForyKeyError = ForyError
ForyIOError = ForyError
ForyUnknownError = ForyError
CompileError = ForyError

__all__ += [
    "TypeUnregisteredError", "TypeNotCompatibleError", "ForyStructVersionMismatchError",
    "ForyTypeMismatchError", "ForyInvalidDataError", "ForyInvalidRefError",
    "ForyUnknownEnumError", "ForyEncodingError", "ForyInvalidError", "ForyOutOfBoundError",
    "ForyBufferOutOfBoundError", "ForyDepthExceedError", "ForyOutOfMemoryError",
    "ForyNotAllowedError", "ForyUnsupportedError", "ForyEncodeError", "ForyTypeError",
    "ForyKeyError", "ForyIOError", "ForyUnknownError", "CompileError",
]
