"""pyfory: fast, compact, safer serialization of any Python object (Python native mode)."""

import importlib.util as _importlib_util
import os as _os
import sys as _sys

from pyfory import error
from pyfory._buffer import Buffer
from pyfory._core import Fory, ReadContext, Serializer, TypeInfo, WriteContext
from pyfory.buffers import BufferObject
from pyfory.error import ForyError
from pyfory.policy import DeserializationPolicy
from pyfory.threadsafe import ThreadSafeFory

__version__ = "0.1.0"

__all__ = [
    "Fory",
    "ThreadSafeFory",
    "DeserializationPolicy",
    "BufferObject",
    "Serializer",
    "Buffer",
    "WriteContext",
    "ReadContext",
    "TypeInfo",
    "ForyError",
    "error",
]


def _source_checkout_integrations() -> None:
    """In a source checkout the adapters live in the top-level `integrations/` folder
    (installed as pyfory.integrations); make `pyfory.integrations` import the same way
    when this package is imported straight from the checkout."""
    if "pyfory.integrations" in _sys.modules or _importlib_util.find_spec("pyfory.integrations"):
        return
    folder = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "integrations")
    init = _os.path.join(folder, "__init__.py")
    if not _os.path.isfile(init):
        return
    spec = _importlib_util.spec_from_file_location("pyfory.integrations", init,
                                                   submodule_search_locations=[folder])
    module = _importlib_util.module_from_spec(spec)
    _sys.modules["pyfory.integrations"] = module
    spec.loader.exec_module(module)


_source_checkout_integrations()
