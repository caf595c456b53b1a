"""The rest of pickle's and cloudpickle's contract, one test per behaviour (issue #17).

Where a behaviour is about another process (a fresh interpreter, a grandchild, another
hash seed) the test runs real child processes, each with a timeout.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap

import pytest

import pyfory
from pyfory.error import (
    DepthLimitError,
    MalformedDataError,
    OutOfBandBufferError,
    SerializationError,
    TruncatedDataError,
    TypeNotRegisteredError,
)

TIMEOUT = 120
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code: str, *args: str, env: dict | None = None, cwd: str | None = None,
               stdin: bytes | None = None) -> bytes:
    """Run `code` in a fresh interpreter; its stdout (it fails the test on a non-zero exit)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], input=stdin,
                          capture_output=True, timeout=TIMEOUT, env=full_env, cwd=cwd)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def nested_list(depth: int):
    x: list = []
    for _ in range(depth):
        x = [x]
    return x


# ---- pickle's error classes ----------------------------------------------------------
def test_dumps_errors_are_pickling_errors():
    with pytest.raises(pickle.PicklingError) as info:
        pyfory.Fory().dumps(lambda: 0)              # strict refuses a function
    assert isinstance(info.value, TypeNotRegisteredError)
    assert not isinstance(info.value, pickle.UnpicklingError)
    with pytest.raises(pickle.PicklingError) as info:
        pyfory.Fory().dumps(nested_list(60))
    assert isinstance(info.value, DepthLimitError) and isinstance(info.value, RecursionError)
    assert not isinstance(info.value, pickle.UnpicklingError)
    assert issubclass(SerializationError, pickle.PicklingError)


def test_loads_errors_are_unpickling_errors():
    fory = pyfory.Fory()
    data = fory.dumps([1, 2, 3])
    with pytest.raises(pickle.UnpicklingError) as info:
        fory.loads(data[:-1])                       # truncated
    assert isinstance(info.value, TruncatedDataError) and isinstance(info.value, EOFError)
    with pytest.raises(pickle.UnpicklingError):
        fory.loads(b"not a payload")
    with pytest.raises(pickle.UnpicklingError) as info:
        fory.loads(pyfory.Fory(max_depth=100).dumps(nested_list(60)))
    assert isinstance(info.value, DepthLimitError)
    assert not isinstance(info.value, pickle.PicklingError)
    with pytest.raises(pickle.UnpicklingError) as info:
        fory.loads(pyfory.Fory(strict=False).dumps(len))   # strict refuses a builtin function
    assert isinstance(info.value, TypeNotRegisteredError)
    # the same Fory keeps working, and its next error is of the right side again
    assert fory.loads(data) == [1, 2, 3]
    with pytest.raises(pickle.PicklingError):
        fory.dumps(len)


def test_too_few_out_of_band_buffers_is_an_unpickling_error():
    data = pyfory.dumps(pickle.PickleBuffer(b"foobar"), buffer_callback=[].append)
    with pytest.raises(pickle.UnpicklingError) as info:
        pyfory.loads(data, buffers=[])
    assert isinstance(info.value, OutOfBandBufferError)
    with pytest.raises(TypeError):                  # not iterable, as with pickle
        pyfory.loads(data, buffers=object())


def test_non_contiguous_picklebuffer_is_a_pickling_error():
    strided = memoryview(bytearray(range(100))).cast("B", (10, 10))[::2]
    with pytest.raises(pickle.PicklingError, match="non-contiguous"):
        pyfory.dumps(pickle.PickleBuffer(strided))


class NewObjTarget:
    pass


def test_reduce_whose_class_is_not_a_class_is_an_unpickling_error(monkeypatch):
    data = pyfory.dumps(NewObjTarget.__new__(NewObjTarget))
    monkeypatch.setattr(sys.modules[__name__], "NewObjTarget", 42)
    with pytest.raises(pickle.UnpicklingError) as info:
        pyfory.loads(data)
    assert isinstance(info.value, MalformedDataError) and "not a class" in str(info.value)


# ---- runaway recursion while pickling --------------------------------------------------
def test_runaway_recursion_while_pickling_is_a_pickling_error():
    class Endless:
        def __getattribute__(self, name):
            return getattr(self, name)

    with pytest.raises(pickle.PicklingError, match="recursion"):
        pyfory.dumps(Endless())
    # a __getattribute__ that ends is no problem
    class Fine:
        def __getattribute__(self, name):
            return object.__getattribute__(self, name)

    obj = Fine()
    obj.x = 1
    assert pyfory.loads(pyfory.dumps(obj)).x == 1


# ---- depth -----------------------------------------------------------------------------
def test_depth_error_says_how_to_raise_the_limit():
    with pytest.raises(DepthLimitError, match=r"max_depth=50.*Fory\(max_depth=N\)"):
        pyfory.Fory().dumps(nested_list(51))
    data = pyfory.Fory(max_depth=100).dumps(nested_list(51))
    with pytest.raises(DepthLimitError, match=r"max_depth=50.*Fory\(max_depth=N\)"):
        pyfory.Fory().loads(data)
    assert pyfory.Fory(max_depth=51).loads(data) == nested_list(51)


DEEP_CHILD = """
import dataclasses, sys, threading
import pyfory

class Plain:
    def __init__(self, c):
        self.c = c

class Reduced:
    def __init__(self, c):
        self.c = c
    def __reduce__(self):
        return (Reduced, (self.c,))

@dataclasses.dataclass
class Data:
    c: object

MAKERS = {"list": lambda x: [x], "dict": lambda x: {"k": x}, "tuple": lambda x: (x,),
          "frozenset": lambda x: frozenset([x]), "object": Plain, "reduce": Reduced,
          "dataclass": Data}

def run(depth, out):
    for ref in (False, True):
        fory = pyfory.Fory(ref=ref, strict=False, max_depth=depth)
        for kind, make in MAKERS.items():
            n = depth // 2 if kind == "reduce" else depth   # the object and its args tuple
            x = 0
            for _ in range(n):
                x = make(x)
            back = fory.loads(fory.dumps(x))
            for _ in range(n):
                back = back.c if kind in ("object", "reduce", "dataclass") else (
                    back["k"] if kind == "dict" else next(iter(back)))
            assert back == 0, (kind, ref)
            out.append((kind, ref))

depth = int(sys.argv[1])
done = []
run(depth, done)
in_thread = []
t = threading.Thread(target=run, args=(depth, in_thread))
t.start()
t.join()
print(len(done), len(in_thread))
"""


def test_a_thousand_levels_do_not_overflow_the_c_stack():
    # pickle goes about as deep as the recursion limit (1000): a Fory allowed that deep
    # must not overflow the C stack, on the main thread nor in a thread of default stack
    # size (a reduce object is two levels, as in pickle: the object and its arguments);
    # the hard cap, 2000, too
    out = run_python(DEEP_CHILD, "1000")
    assert out.split() == [b"14", b"14"]
    out = run_python(DEEP_CHILD, "2000")
    assert out.split() == [b"14", b"14"]
