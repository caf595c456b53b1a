"""Builds the Cython extensions; everything else is declared in pyproject.toml."""
import os
import subprocess

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

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
]

# The writer's item loops call small module-level `cdef inline` functions (write_atom,
# write_str_value, ...) once per value; GCC's default limit stops inlining them once they
# hold the fast paths of all atoms, and a call costs ~25 instructions a value (1,000
# small nested lists: 490K instructions inlined, 648K not). Raised for GCC only: other
# compilers keep their defaults.
GCC_ONLY_ARGS = {"pyfory._core": ["--param=max-inline-insns-single=400"]}


def is_gcc(command) -> bool:
    try:
        out = subprocess.run([command[0], "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "Free Software Foundation" in out and "clang" not in out.lower()


class BuildExt(build_ext):
    def build_extensions(self):
        if is_gcc(getattr(self.compiler, "compiler_so", None) or ["cc"]):
            for ext in self.extensions:
                ext.extra_compile_args = list(ext.extra_compile_args or []) + GCC_ONLY_ARGS.get(ext.name, [])
        super().build_extensions()


setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=cythonize(
        extensions,
        compiler_directives=DIRECTIVES,
        annotate=bool(os.environ.get("PYFORY_ANNOTATE")),
    ),
)
