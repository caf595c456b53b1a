"""Builds the Cython extensions; everything else is declared in pyproject.toml."""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DIRECTIVES = {
    "language_level": "3",
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "embedsignature": True,
    "binding": False,
}

extensions = [
    Extension("pyfory._buffer", ["pyfory/_buffer.pyx"]),
    Extension("pyfory._core", ["pyfory/_core.pyx"]),
    Extension("pyfory._objects", ["pyfory/_objects.pyx"]),
    Extension("pyfory._reduce", ["pyfory/_reduce.pyx"]),
    # the ZeroMQ transport's direct libzmq calls (no zmq header or library needed to build)
    Extension("pyfory.integrations.zmq._libzmq", ["integrations/zmq/_libzmq.pyx"]),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=DIRECTIVES,
        annotate=bool(os.environ.get("PYFORY_ANNOTATE")),
    ),
)
