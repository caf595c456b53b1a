"""pyfory: fast, compact, safer serialization of any Python object (Python native mode)."""

from pyfory import error
from pyfory._buffer import Buffer
from pyfory._core import Fory, ReadContext, Serializer, TypeInfo, WriteContext
from pyfory.error import ForyError

__version__ = "0.1.0"

__all__ = [
    "Fory",
    "Serializer",
    "Buffer",
    "WriteContext",
    "ReadContext",
    "TypeInfo",
    "ForyError",
    "error",
]
