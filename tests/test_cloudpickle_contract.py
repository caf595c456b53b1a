"""The rest of pickle's and cloudpickle's contract, one test per behaviour (issue #17).

Where a behaviour is about another process (a fresh interpreter, a grandchild, another
hash seed) the test runs real child processes, each with a timeout.
"""

from __future__ import annotations

import hashlib
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


SIDED_ERROR_CHILD = """
import pickle, sys
err = pickle.loads(sys.stdin.buffer.read())
from pyfory.error import DepthLimitError
print(type(err).__name__, isinstance(err, DepthLimitError), isinstance(err, pickle.UnpicklingError),
      isinstance(err, pickle.PicklingError), err.note)
"""


def test_errors_with_their_side_pickle_to_another_process():
    # multiprocessing and concurrent.futures send a task's exception with pickle
    try:
        pyfory.Fory().loads(pyfory.Fory(max_depth=100).dumps(nested_list(60)))
    except DepthLimitError as e:
        err = e
    err.note = "kept"
    out = run_python(SIDED_ERROR_CHILD, stdin=pickle.dumps(err))
    assert out.split() == [b"DepthLimitError", b"True", b"True", b"False", b"kept"]


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


# ---- dict views ------------------------------------------------------------------------
def test_dict_views_are_rebuilt():
    import collections

    d = {1: "a", (2, 3): "b"}
    od = collections.OrderedDict([("z", 1), ("y", 2)])
    for view in (d.keys(), d.values(), d.items(), od.keys(), od.values(), od.items()):
        back = pyfory.loads(pyfory.dumps(view))
        assert type(back) is type(view) and list(back) == list(view)
    shared = d.keys()
    a, b = pyfory.loads(pyfory.dumps([shared, shared]))
    assert a is b
    with pytest.raises(TypeNotRegisteredError):
        pyfory.Fory().dumps(d.keys())


def test_dict_views_and_weak_collections_count_against_the_graph_budget():
    import weakref

    from pyfory.error import LimitExceededError

    members = [Member() for _ in range(10_000)]
    views = dict.fromkeys(range(10_000)).keys()
    # (roomy, tight): the tight budget holds everything but the dict or set made from
    # the items (10,000 x 48 or 32 bytes)
    cases = ((views, 600_000, 200_000), ([members, weakref.WeakSet(members)], 2_000_000, 1_500_000))
    for value, roomy, tight in cases:
        data = pyfory.dumps(value)
        pyfory.Fory(ref=True, strict=False, max_graph_memory_bytes=roomy).loads(data)
        with pytest.raises(LimitExceededError, match="max_graph_memory_bytes"):
            pyfory.Fory(ref=True, strict=False, max_graph_memory_bytes=tight).loads(data)
        without = pyfory.dumps(list(value) if value is views else [members, list(members)])
        pyfory.Fory(ref=True, strict=False, max_graph_memory_bytes=tight).loads(without)


# ---- descriptors -----------------------------------------------------------------------
class WithSlots:
    __slots__ = ("x",)


def test_descriptors_travel_by_reference():
    for desc in (type.__dict__["__doc__"], WithSlots.__dict__["x"], BaseException.__dict__["args"]):
        assert pyfory.loads(pyfory.dumps(desc)) is desc


ABSTRACT_CLASS = """
import abc

class Base(abc.ABC):
    @abc.abstractclassmethod
    def make(cls):
        ...
    @abc.abstractstaticmethod
    def helper():
        ...
    @abc.abstractproperty
    def size(self):
        "the size"
"""

ABSTRACT_CHILD = ABSTRACT_CLASS + """
import sys
import pyfory
sys.stdout.buffer.write(pyfory.dumps(Base))
"""


def test_abstract_method_wrappers_inside_a_class_by_value():
    import abc

    Base = pyfory.loads(run_python(ABSTRACT_CHILD))
    assert Base.__abstractmethods__ == {"make", "helper", "size"}
    assert type(Base.__dict__["make"]) is abc.abstractclassmethod
    assert type(Base.__dict__["helper"]) is abc.abstractstaticmethod
    assert type(Base.__dict__["size"]) is abc.abstractproperty and Base.size.__doc__ == "the size"
    with pytest.raises(TypeError, match="abstract"):
        Base()

    class Impl(Base):
        make = classmethod(lambda cls: cls())
        helper = staticmethod(lambda: 1)
        size = property(lambda self: 3)

    assert Impl.make().size == 3


# ---- weak collections ------------------------------------------------------------------
class Member:
    pass


def test_weak_collections_keep_the_members_of_the_payload():
    import weakref

    kept, dropped = Member(), Member()
    ws = weakref.WeakSet([kept, dropped])
    wk = weakref.WeakKeyDictionary({kept: 1, dropped: 2})
    wv = weakref.WeakValueDictionary({"kept": kept, "dropped": dropped})
    members, ws2, wk2, wv2 = pyfory.loads(pyfory.dumps([[kept], ws, wk, wv]))
    assert list(ws2) == members and dict(wk2) == {members[0]: 1} and dict(wv2) == {"kept": members[0]}
    with pytest.raises(TypeNotRegisteredError):
        pyfory.Fory().dumps(ws)


ABC_REGISTRY_CHILD = """
import abc, sys
import pyfory

class Shape(abc.ABC):
    pass

class Square:
    pass

Shape.register(Square)
sys.stdout.buffer.write(pyfory.dumps([Shape, Square()]))
"""


def test_abc_registry_weakset_of_a_class_by_value():
    Shape, square = pyfory.loads(run_python(ABC_REGISTRY_CHILD))
    assert isinstance(square, Shape)


# ---- open files ------------------------------------------------------------------------
def test_readable_files_travel_as_content_and_position(tmp_path):
    import io

    path = tmp_path / "data.txt"
    path.write_bytes("héllo\r\nwörld\nend".encode())
    with open(path, encoding="utf-8") as f:
        f.readline()
        back = pyfory.loads(pyfory.dumps(f))
        assert type(back) is io.StringIO and back.read() == f.read() == "wörld\nend"
    with open(path, "rb") as f, open(path, "r+b") as g, open(path, "rb", buffering=0) as h:
        f.read(3)
        for handle in (f, g, h):
            back = pyfory.loads(pyfory.dumps(handle))
            assert type(back) is io.BytesIO and back.tell() == handle.tell()
            assert back.read() == handle.read()


def test_closed_and_write_only_files_are_refused(tmp_path):
    path = tmp_path / "out.txt"
    with open(path, "w") as f:
        with pytest.raises(pickle.PicklingError, match="not open for reading"):
            pyfory.dumps(f)
    with pytest.raises(pickle.PicklingError, match="closed"):
        pyfory.dumps(f)


STD_STREAMS_CHILD = """
import sys
import pyfory
streams = pyfory.loads(sys.stdin.buffer.read())
assert streams == [sys.stdin, sys.stdout, sys.stderr], streams
print("same")
"""


def test_standard_streams_travel_by_reference():
    data = run_python("import sys, pyfory; sys.stdout.buffer.write("
                      "pyfory.dumps([sys.stdin, sys.stdout, sys.stderr]))")
    assert run_python(STD_STREAMS_CHILD, stdin=data).strip() == b"same"


# ---- dynamic modules -------------------------------------------------------------------
DYNAMIC_MODULE_CHILD = """
import sys, textwrap, types
import pyfory

class Unpicklable:
    def __reduce__(self):
        raise ValueError("not this one")

mod = types.ModuleType("made_at_run_time")
exec(textwrap.dedent('''
    x = 1
    def f(y):
        return abs(x + y)
    class Foo:
        def method(self, y):
            return f(y)
'''), mod.__dict__)
# as scipy does: an unpicklable object among the module's builtins
builtins_ns = mod.__dict__["__builtins__"]
if isinstance(builtins_ns, dict):
    builtins_ns["unpicklable_obj"] = Unpicklable()
else:
    builtins_ns.unpicklable_obj = Unpicklable()
sys.stdout.buffer.write(pyfory.dumps([mod, mod]))
"""

RELAY_CHILD = """
import subprocess, sys
import pyfory

mod, again = pyfory.loads(sys.stdin.buffer.read())
assert mod is again and "made_at_run_time" not in sys.modules
assert mod.f(-5) == 4 and mod.Foo().method(1) == 2
mod.x = 10                      # changed here: the grandchild sees the change
grandchild = subprocess.run([sys.executable, "-c", sys.argv[1]], input=pyfory.dumps(mod),
                            capture_output=True, timeout=60)
assert grandchild.returncode == 0, grandchild.stderr.decode()
sys.stdout.buffer.write(grandchild.stdout)
"""

GRANDCHILD = """
import sys
import pyfory
mod = pyfory.loads(sys.stdin.buffer.read())
print(mod.__name__, mod.x, mod.f(1), mod.Foo().method(2))
"""


def test_dynamic_module_loads_in_a_fresh_process_and_a_grandchild():
    data = run_python(DYNAMIC_MODULE_CHILD)
    out = run_python(RELAY_CHILD, GRANDCHILD, stdin=data)
    # the functions keep the globals they were sent with (x = 1), the module its own x
    assert out.split() == [b"made_at_run_time", b"10", b"2", b"3"]


# ---- register_pickle_by_value(package) -------------------------------------------------
PACKAGE_FILES = {
    "contractpkg/__init__.py": "from contractpkg.sub import helper, Point\n",
    "contractpkg/sub/__init__.py": "from contractpkg.sub import deep\n"
                                   "from contractpkg.sub.deep import Point\n"
                                   "def helper(x):\n    return deep.twice(x) + 1\n",
    "contractpkg/sub/deep.py": "import dataclasses\n"
                               "def twice(x):\n    return 2 * x\n"
                               "@dataclasses.dataclass\nclass Point:\n    x: int\n"
                               "    def norm(self):\n        return twice(self.x)\n",
}

SENDER = """
import sys
import pyfory
import contractpkg
import contractpkg.sub.deep
pyfory.register_pickle_by_value(contractpkg)
sys.stdout.buffer.write(pyfory.dumps([contractpkg.helper, contractpkg.Point(4),
                                      contractpkg.sub.deep.twice, contractpkg.sub]))
"""

RECEIVER = """
import sys
import pyfory
helper, point, twice, sub = pyfory.loads(sys.stdin.buffer.read())
assert not any(name.startswith("contractpkg") for name in sys.modules)
print(helper(3), point.norm(), twice(5), sub.helper(1), type(point).__module__)
"""


def test_register_pickle_by_value_covers_submodules_in_a_process_without_the_package(tmp_path):
    src = tmp_path / "src"
    for name, text in PACKAGE_FILES.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    data = run_python(SENDER, env={"PYTHONPATH": str(src)})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = run_python(RECEIVER, stdin=data, cwd=str(elsewhere), env={"PYTHONPATH": ""})
    assert out.split() == [b"7", b"8", b"10", b"3", b"contractpkg.sub.deep"]


# ---- deterministic bytes ---------------------------------------------------------------
SEEDS = ("0", "1", "2", "3", "12345")

FUNCTION_CHILD = """
import hashlib, sys
import pyfory

ALPHA, BETA, GAMMA = 1, 2.5, "three"
CHOICES = ("red", "green", "blue", "cyan")

def uses_globals(x):
    return (x + ALPHA + BETA, GAMMA, x in CHOICES, {"a": ALPHA, "b": BETA})

class Local:
    b = 2
    a = 1
    names = ("x", "y")
    def method(self):
        return uses_globals(self.a)

first = pyfory.dumps(uses_globals)
assert pyfory.dumps(uses_globals) == first
both = pyfory.dumps([Local, Local()])
assert pyfory.dumps([Local, Local()]) == both    # the same class twice: the same bytes
print(hashlib.sha256(first).hexdigest())
"""


def test_function_by_value_bytes_do_not_depend_on_the_hash_seed():
    digests = {run_python(FUNCTION_CHILD, env={"PYTHONHASHSEED": seed}) for seed in SEEDS}
    assert len(digests) == 1, digests


REDUMP_CHILD = """
import hashlib, sys
import pyfory
cls = pyfory.loads(sys.stdin.buffer.read())
assert cls().total() == 6
print(hashlib.sha256(pyfory.dumps(cls)).hexdigest())
print(hashlib.sha256(pyfory.dumps([cls, cls(), cls.total])).hexdigest())
"""


def test_a_class_by_value_redumped_in_fresh_processes_gives_the_same_bytes():
    # a class by value carries a tracker id (random, once per class, as cloudpickle's):
    # the processes that received it write it back with that id and identical bytes,
    # whatever their hash seed (class dict order, interned names, shared tuples)
    namespace = {"__module__": "__main__"}
    exec(textwrap.dedent("""
        zeta = 1
        alpha = 2
        beta = {"k": (1, 2), "j": (1, 2)}
        tags = ("p", "q", "r", "s")
        names = ("zeta", "alpha", "total", "join")     # equal to names of the class
        label = "alpha"
        sep = "join"
        shared = ((1, 2), (1, 2))
        def total(self):
            return self.zeta + self.alpha + len(self.beta) + 1
    """), namespace)
    del namespace["__builtins__"]
    cls = type("Dynamic", (), namespace)
    data = pyfory.dumps(cls)
    assert pyfory.dumps(cls) == data
    digests = {run_python(REDUMP_CHILD, stdin=data, env={"PYTHONHASHSEED": seed}) for seed in SEEDS}
    assert len(digests) == 1, digests
    # and the class written back is byte for byte the class as it was sent (strings
    # that a receiver interns, such as attribute names, do not change the bytes)
    assert digests.pop().split()[0].decode() == hashlib.sha256(data).hexdigest()


ECHO_DIGEST_CHILD = """
import hashlib, sys
import pyfory
value = pyfory.loads(sys.stdin.buffer.read())
print(hashlib.sha256(pyfory.dumps(value)).hexdigest())
"""

USES_CLASS_CHILD = """
import sys
import pyfory

class Config:
    keys = ("alpha", "beta")
    alpha = 1
    beta = "beta"
    def get(self, name):
        return getattr(self, name)

def build(name):
    return Config().get(name), Config.keys

sys.stdout.buffer.write(pyfory.dumps(build))
"""


def test_a_function_that_uses_a_dynamic_class_chains_with_the_same_bytes():
    data = run_python(USES_CLASS_CHILD, env={"PYTHONHASHSEED": "7"})
    assert pyfory.loads(data)("beta") == ("beta", ("alpha", "beta"))
    digests = {run_python(ECHO_DIGEST_CHILD, stdin=data, env={"PYTHONHASHSEED": seed})
               for seed in SEEDS}
    assert digests == {hashlib.sha256(data).hexdigest().encode() + b"\n"}


# ---- the inspector decodes the new ids ---------------------------------------------------
def test_inspector_decodes_the_new_types(tmp_path):
    import collections
    import types
    import weakref

    from pyfory.inspector import inspect, render_text

    namespace = {"__name__": "__main__"}
    exec(ABSTRACT_CLASS, namespace)
    mod = types.ModuleType("made_here")
    mod.x = 1
    member = Member()
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    with open(path, "rb") as f:
        data = pyfory.dumps([mod, os, {1: 2}.keys(), {1: 2}.values(), {1: 2}.items(),
                             collections.OrderedDict(a=1).items(), member,
                             weakref.WeakSet([member]), weakref.WeakKeyDictionary({member: 1}),
                             weakref.WeakValueDictionary({1: member}), f, sys.__stdout__,
                             type.__dict__["__doc__"], WithSlots.__dict__["x"], namespace["Base"]])
    report = inspect(data)
    assert report["status"] == "ok", report.get("error")
    assert report["payloads"][0]["root"]["end"] == len(data)
    text = render_text(report)
    for name in ("builtins.module", "builtins.dict_keys", "builtins.odict_items", "_weakrefset.WeakSet",
                 "_io.BufferedReader", "_io.TextIOWrapper", "builtins.getset_descriptor",
                 "builtins.member_descriptor", "abc.abstractclassmethod", "abc.abstractproperty"):
        assert name in text
    assert "imports: os" in text and "made_here" not in text.split("imports:")[1].split("\n")[0]
