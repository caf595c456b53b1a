"""pyfory: fast, compact, safer serialization of any Python object (Python native mode)."""

import importlib.util as _importlib_util
import os as _os
import sys as _sys
import threading as _threading

from pyfory import error

try:
    from pyfory._buffer import Buffer
except ImportError as _e:  # the source tree, without its compiled extensions
    if "pyfory._buffer" not in str(_e):
        raise
    raise ImportError(
        f"pyfory's compiled extensions are missing in {_os.path.dirname(__file__)}: this is "
        "the unbuilt source tree (it shadows an installed pyfory when run from the clone "
        "root). Build it in place with: python -m pip install -e . "
        "(needs a C compiler; the build takes a minute or two)") from _e
from pyfory._core import Fory, ReadContext, Serializer, TypeInfo, WriteContext
from pyfory.buffers import BufferObject
from pyfory.classes import list_registry_pickle_by_value, register_pickle_by_value, unregister_pickle_by_value
from pyfory.error import ForyError
from pyfory.policy import DeserializationPolicy
from pyfory.schema import ANNOTATIONS as _ANNOTATIONS
from pyfory.schema import Ref, dataclass, field
from pyfory.threadsafe import ThreadSafeFory

__version__ = "0.1.0"

# pyfory.Int32, pyfory.FixedUInt64, pyfory.Float32Array, ... (pyfory/schema.py)
globals().update(_ANNOTATIONS)

# pyfory's flag for "the compiled (Cython) serializer is in use": always, here
ENABLE_FORY_CYTHON_SERIALIZATION = True

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
    "dumps",
    "loads",
    "dump",
    "load",
    "register_pickle_by_value",
    "unregister_pickle_by_value",
    "list_registry_pickle_by_value",
    "ENABLE_FORY_CYTHON_SERIALIZATION",
    "field",
    "dataclass",
    "Ref",
    *_ANNOTATIONS,
]


# ---- pickle-style module functions ------------------------------------------------------
# Nesting as deep as pickle's default recursion limit allows.
_PICKLE_STYLE_MAX_DEPTH = 1000
_local = _threading.local()


def _thread_fory() -> Fory:
    fory = getattr(_local, "fory", None)
    if fory is None:
        fory = _local.fory = Fory(ref=True, strict=False, max_depth=_PICKLE_STYLE_MAX_DEPTH)
    return fory


def dumps(obj, protocol=None, *, buffer_callback=None) -> bytes:
    """Serialize any object, like ``cloudpickle.dumps``: functions, lambdas, closures and
    classes the receiver cannot import travel by value; shared and circular references
    are kept (a per-thread ``Fory(ref=True, strict=False)``). ``protocol`` is accepted
    and ignored, so that ``pickle.dumps(obj, 5)`` call sites work unchanged.

    Same trust model as pickle: only load payloads from sources you trust, since loading
    one can run arbitrary code. For untrusted input use ``Fory(strict=True)`` with
    registered classes."""
    return _thread_fory().dumps(obj, buffer_callback=buffer_callback)


def loads(data, *, buffers=None):
    """Deserialize a payload written by ``pyfory.dumps`` (or any ``Fory(ref=True)``).

    Same trust model as ``pickle.loads``: a payload can carry code and run it while it is
    loaded. Never load data from an untrusted source with this function."""
    return _thread_fory().loads(data, buffers=buffers)


def dump(obj, file, protocol=None) -> None:
    """Write obj to a binary file like ``pickle.dump`` (length-prefixed, so several values
    can follow each other); read it back with ``pyfory.load``. ``protocol`` is ignored.
    Same trust model as pickle."""
    _thread_fory().dump(obj, file)


def load(file):
    """Read one value written by ``pyfory.dump`` from a binary file. Same trust model as
    ``pickle.load``: only load files from sources you trust."""
    return _thread_fory().load(file)


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
