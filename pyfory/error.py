"""The pyfory error hierarchy.

Every failure that pyfory detects itself is a ``ForyError``; catching it catches
everything a malformed, hostile or incompatible payload can cause.
"""

from __future__ import annotations


class ForyError(Exception):
    """Base class of every error raised by pyfory."""


class FormatError(ForyError, ValueError):
    """The input is not a pyfory payload, or was written by another format version."""


class MalformedDataError(ForyError, ValueError):
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


class SerializationError(ForyError, TypeError):
    """A value cannot be serialized (for example an object that refuses to be pickled)."""


class SchemaMismatchError(ForyError):
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


class DeserializationError(ForyError):
    """Rebuilding an object failed (a constructor, ``__setstate__`` or reduce callable
    raised while loading); the original exception is the ``__cause__``."""


__all__.append("DeserializationError")


class ChangedDuringSerializationError(SerializationError, RuntimeError):
    """A container was changed (by code run while serializing it) during iteration."""


__all__.append("ChangedDuringSerializationError")


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
