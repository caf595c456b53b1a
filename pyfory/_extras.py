"""Optional dependencies: which extra of ``pyproject.toml`` installs each one.

pyfory itself needs nothing outside the standard library. A payload that holds numpy
arrays or pandas objects needs that package on the reading side, and some commands
(the benchmarks) use more. When one is missing, the error names the extra to install
instead of a bare ``No module named ...``.
"""

from __future__ import annotations

from typing import Optional

# top-level import name -> (extra, what pip calls the package)
OPTIONAL = {
    "numpy": ("numpy", "numpy"),
    "pandas": ("pandas", "pandas"),
    "zmq": ("zmq", "pyzmq"),
    "cloudpickle": ("bench", "cloudpickle"),
    "matplotlib": ("bench", "matplotlib"),
    "loky": ("bench", "loky"),
    "msgpack": ("bench", "msgpack"),
    "msgspec": ("bench", "msgspec"),
    "orjson": ("bench", "orjson"),
}


def install_hint(module: str, extra: Optional[str] = None) -> Optional[str]:
    """``pip install "pyfory[extra]" (or pip install pkg)`` for an optional module, else None.
    ``extra`` overrides the module's own extra (the benchmarks install theirs with ``bench``)."""
    found = OPTIONAL.get((module or "").partition(".")[0])
    if found is None:
        return None
    own, package = found
    return f'pip install "pyfory[{extra or own}]" (or pip install {package})'


def hinted(error: ImportError, needed_by: str = "", extra: Optional[str] = None) -> ImportError:
    """A ModuleNotFoundError like ``error`` whose message names the extra to install, or
    ``error`` itself when the missing module is not an optional dependency of pyfory."""
    name = getattr(error, "name", None) or ""
    hint = install_hint(name, extra)
    if hint is None:
        return error
    root = name.partition(".")[0]
    who = f"{needed_by} needs {root}" if needed_by else f"{root} is an optional dependency of pyfory"
    return ModuleNotFoundError(f"{error}: {who}; install it with {hint}", name=name)


def require(module: str, needed_by: str = "", extra: Optional[str] = None):
    """Import and return ``module``; if it is missing, raise an error that names its extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        better = hinted(e, needed_by, extra)
        if better is e:
            raise
        raise better from e
