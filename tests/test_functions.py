"""Functions and methods by value and by reference (issue 4), in one process.

Functions that the receiver could not import are rebuilt from their code on every load
(a new function object), so these tests check behaviour and attributes, not identity;
test_cross_process.py loads payloads in a fresh interpreter.
"""

from __future__ import annotations

import asyncio
import functools
import io
import operator
import os
import pickle
import sys
import textwrap
import threading
import types

import pytest

import pyfory
from pyfory import classes, code
from pyfory.error import FormatError, ForyError, MalformedDataError, PolicyViolationError, TypeNotRegisteredError


def rt(obj, ref=True):
    """dumps with one Fory, loads with a fresh one (as another process would)."""
    data = pyfory.Fory(ref=ref, strict=False).dumps(obj)
    return pyfory.Fory(ref=ref, strict=False).loads(data)


def module_level_function(x):
    return x * 3


def exec_functions(source, module_name="dyn_module", extra=None):
    """Functions created from source in a globals dict of a module nobody can import."""
    namespace = {"__name__": module_name}
    namespace.update(extra or {})
    exec(compile(textwrap.dedent(source), f"<{module_name}>", "exec"), namespace)
    return namespace


# ---- by reference ------------------------------------------------------------------------
def test_importable_functions_travel_by_reference(ref):
    assert rt(textwrap.dedent, ref) is textwrap.dedent
    assert rt(module_level_function, ref) is module_level_function
    assert rt(os.path.join, ref) is os.path.join
    data = pyfory.Fory(ref=ref, strict=False).dumps(textwrap.dedent)
    assert b"dedent" in data and len(data) < 40


def test_modules_travel_by_reference(ref):
    assert rt(textwrap, ref) is textwrap
    assert rt(os.path, ref) is os.path


# ---- lambdas, closures ---------------------------------------------------------------------
def test_lambda(ref):
    f = lambda x, y=2: x * y + 1  # noqa: E731
    g = rt(f, ref)
    assert g is not f
    assert g(3) == 7 and g(3, 3) == 10
    assert g.__name__ == "<lambda>" and g.__qualname__ == f.__qualname__
    assert g.__module__ == f.__module__
    assert g.__defaults__ == (2,)


def test_closure_values(ref):
    def make():
        scale, label, items = 3, "lbl", [1, 2]

        def closure(x):
            return label, scale * x + len(items)

        return closure

    assert rt(make(), ref)(5) == ("lbl", 17)


def test_closure_cells_shared_between_functions(ref):
    def make():
        count = 0

        def inc():
            nonlocal count
            count += 1
            return count

        def get():
            return count

        return inc, get

    inc, get = rt(make(), ref)
    assert inc.__closure__[0] is get.__closure__[0]
    inc()
    inc()
    assert get() == 2


def test_empty_cell_stays_empty(ref):
    def make():
        def uses_later():
            return later  # noqa: F821 - assigned after the return, so never

        return uses_later
        later = 1  # noqa: F841

    f = rt(make(), ref)
    with pytest.raises(ValueError):
        f.__closure__[0].cell_contents
    with pytest.raises(NameError):
        f()


def test_self_recursive_local_function(ref):
    def make():
        def fact(n):
            return 1 if n <= 1 else n * fact(n - 1)

        return fact

    fact = rt(make(), ref)
    assert fact(6) == 720
    assert fact.__closure__[0].cell_contents is fact


def test_mutually_recursive_local_functions(ref):
    def make():
        def is_even(n):
            return True if n == 0 else is_odd(n - 1)

        def is_odd(n):
            return False if n == 0 else is_even(n - 1)

        return is_even, is_odd

    is_even, is_odd = rt(make(), ref)
    assert is_even(10) and is_odd(7) and not is_even(3)
    assert is_even.__closure__[0].cell_contents is is_odd
    assert is_odd.__closure__[0].cell_contents is is_even


def test_function_referring_to_itself_through_a_global(ref):
    ns = exec_functions("""
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)
    """)
    fib = rt(ns["fib"], ref)
    assert fib(15) == 610
    assert fib.__globals__["fib"] is fib


def test_only_used_globals_travel(ref):
    ns = exec_functions("""
        def f(x):
            return helper(x) + OFFSET

        def helper(x):
            return x * 2
    """, extra={"OFFSET": 5, "UNUSED": "x" * 100_000})
    data = pyfory.Fory(ref=ref, strict=False).dumps(ns["f"])
    assert len(data) < 1000
    f = pyfory.Fory(ref=ref, strict=False).loads(data)
    assert f(1) == 7
    assert "UNUSED" not in f.__globals__
    assert set(f.__globals__) == {"__builtins__", "__name__", "helper", "OFFSET"}


def test_globals_used_by_nested_code_travel(ref):
    ns = exec_functions("""
        def outer():
            def inner():
                return CONSTANT
            class Inside:
                attr = OTHER
            return inner(), Inside.attr
    """, extra={"CONSTANT": 11, "OTHER": "o"})
    assert rt(ns["outer"], ref)() == (11, "o")


def test_functions_of_one_module_share_globals(ref):
    ns = exec_functions("""
        counter = 0

        def bump():
            global counter
            counter += 1

        def read():
            return counter
    """)
    bump, read = rt([ns["bump"], ns["read"]], ref)
    assert bump.__globals__ is read.__globals__
    bump()
    bump()
    assert read() == 2
    assert ns["counter"] == 0


def test_builtins_resolve_on_the_receiver(ref):
    f = rt(lambda xs: (len(xs), max(xs), isinstance(xs, list)), ref)
    assert f([3, 1, 2]) == (3, 3, True)
    assert "len" not in f.__globals__


def test_shadowed_builtin_travels(ref):
    ns = exec_functions("""
        def len(x):
            return -1

        def f(x):
            return len(x)
    """)
    assert rt(ns["f"], ref)([1, 2]) == -1


def test_function_attributes(ref):
    def make():
        def f(a, b: int = 2, *args, c: str = "c", d, **kw) -> tuple:
            "The doc."
            return a, b, args, c, d, kw

        f.__dict__["custom"] = {"k": [1]}
        f.__name__ = "renamed"
        f.__qualname__ = "Some.renamed"
        f.__module__ = "somewhere"
        return f

    f = make()
    g = rt(f, ref)
    assert g(1, d=4) == (1, 2, (), "c", 4, {})
    assert g.__defaults__ == (2,)
    assert g.__kwdefaults__ == {"c": "c"}
    # (this module uses `from __future__ import annotations`: they are strings)
    assert g.__annotations__ == f.__annotations__ == {"b": "int", "c": "str", "return": "tuple"}
    assert g.__doc__ == "The doc."
    assert g.custom == {"k": [1]}
    assert (g.__name__, g.__qualname__, g.__module__) == ("renamed", "Some.renamed", "somewhere")


def test_doc_that_differs_from_the_code(ref):
    def make():
        def f():
            "original"

        def g():
            pass

        f.__doc__ = "changed"
        g.__doc__ = "added"
        return f, g

    f, g = rt(make(), ref)
    assert f.__doc__ == "changed" and g.__doc__ == "added"
    f2 = rt(lambda: "first constant", ref)
    assert f2.__doc__ is None


def test_functools_wraps_keeps_working(ref):
    def make():
        def deco(fn):
            @functools.wraps(fn)
            def wrapper(*a, **k):
                return ("wrapped", fn(*a, **k))

            return wrapper

        @deco
        def target(x):
            "target doc"
            return x + 1

        return target

    target = rt(make(), ref)
    assert target(1) == ("wrapped", 2)
    assert target.__name__ == "target" and target.__doc__ == "target doc"
    assert target.__wrapped__(1) == 2


def test_positional_and_keyword_only_arguments(ref):
    def make():
        def f(a, b=2, /, c=3, *, d, e=5):
            return a, b, c, d, e

        return f

    f = rt(make(), ref)
    assert f(1, d=4) == (1, 2, 3, 4, 5)
    with pytest.raises(TypeError):
        f(a=1, d=4)


def test_generator_function(ref):
    def make():
        limit = 4

        def gen(n):
            for i in range(min(n, limit)):
                yield i * i

        return gen

    assert list(rt(make(), ref)(10)) == [0, 1, 4, 9]


def test_coroutine_and_async_generator(ref):
    def make():
        async def coro(x):
            await asyncio.sleep(0)
            return x * 2

        async def agen(n):
            for i in range(n):
                yield i

        async def main(x):
            return await coro(x), [i async for i in agen(3)]

        return main

    main = rt(make(), ref)
    assert asyncio.run(main(21)) == (42, [0, 1, 2])


def test_super_in_methods(ref):
    def make():
        class Base:
            def hello(self):
                return "base"

        class Child(Base):
            def hello(self):
                return "child+" + super().hello()

        return Child

    assert rt(make(), ref)().hello() == "child+base"


def test_same_code_is_written_once(ref):
    def make(i):
        def closure(x):
            return x + i

        return closure

    one = pyfory.Fory(ref=ref, strict=False).dumps([make(0)])
    many = pyfory.Fory(ref=ref, strict=False).dumps([make(i) for i in range(100)])
    assert len(many) < len(one) + 99 * 12
    loaded = pyfory.Fory(ref=ref, strict=False).loads(many)
    assert [f(1) for f in loaded] == [i + 1 for i in range(100)]
    assert all(f.__code__ is loaded[0].__code__ for f in loaded)


def test_function_reached_twice_is_one_object(ref):
    f = lambda: 1  # noqa: E731
    a, b = rt([f, f], ref)
    assert a is b


def test_cells_and_code_as_values(ref):
    def make():
        x = [1]

        def f():
            return x

        return f

    f = make()
    g, cell, co = rt([f, f.__closure__[0], f.__code__], ref)
    assert cell is g.__closure__[0]
    assert co is g.__code__
    standalone_cell = rt(types.CellType(5), ref)
    assert standalone_cell.cell_contents == 5
    with pytest.raises(ValueError):
        rt(types.CellType(), ref).cell_contents
    rebuilt = types.FunctionType(rt(f.__code__, ref), {}, None, None, (types.CellType([2]),))
    assert rebuilt() == [2]


def test_submodules_reached_through_a_global_are_listed(ref):
    import xml.dom.minidom

    ns = exec_functions("""
        def parse(text):
            return xml.dom.minidom.parseString(text).documentElement.tagName
    """, extra={"xml": xml})
    data = pyfory.Fory(ref=ref, strict=False).dumps(ns["parse"])
    assert b"xml.dom.minidom" in data
    assert pyfory.Fory(ref=ref, strict=False).loads(data)("<a/>") == "a"


def test_module_of_a_function_is_never_imported_by_the_sender(tmp_path, monkeypatch, ref):
    marker = tmp_path / "imported"
    (tmp_path / "pyfory_import_trap.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ns = exec_functions("""
        def top_level(x):
            return x - 1

        class TopLevel:
            def method(self):
                return "m"
    """, module_name="pyfory_import_trap")
    f, obj = rt([ns["top_level"], ns["TopLevel"]()], ref)
    assert not marker.exists()
    assert "pyfory_import_trap" not in sys.modules
    assert f(1) == 0 and obj.method() == "m"


# ---- methods and other callables ------------------------------------------------------------
class GlobalThing:
    def __init__(self, n):
        self.n = n

    def times(self, x):
        return self.n * x

    @classmethod
    def make(cls, n):
        return cls(n)

    @staticmethod
    def double(x):
        return 2 * x


def test_bound_methods(ref):
    assert rt(GlobalThing(4).times, ref)(5) == 20
    assert rt(GlobalThing.make, ref)(3).n == 3
    assert rt(GlobalThing.double, ref) is GlobalThing.double

    def make():
        class Local:
            def __init__(self, n):
                self.n = n

            def times(self, x):
                return self.n * x

            @classmethod
            def make(cls, n):
                return cls(n)

            @staticmethod
            def double(x):
                return 2 * x

        return Local

    local = make()
    assert rt(local(6).times, ref)(2) == 12
    assert rt(local.make, ref)(5).n == 5
    assert rt(local.double, ref)(8) == 16


def test_methods_of_builtins_partial_and_operator(ref):
    lst = [1]
    append = rt(lst.append, ref)
    append(2)
    assert append.__self__ == [1, 2]
    p = rt(functools.partial(lambda a, b, c=0: a + b + c, 1, c=10), ref)
    assert p(2) == 13
    assert rt(operator.itemgetter(1, 0), ref)("ab") == ("b", "a")
    assert rt(operator.attrgetter("n"), ref)(GlobalThing(9)) == 9
    assert rt(operator.methodcaller("split", ","), ref)("a,b") == ["a", "b"]
    assert rt(str.upper, ref) is str.upper


def test_descriptor_objects_themselves(ref):
    def getter(self):
        "getter doc"
        return 1

    prop = rt(property(getter, None, None), ref)
    assert type(prop) is property and prop.fget(None) == 1 and prop.__doc__ == "getter doc"
    prop2 = rt(property(getter, doc="own doc"), ref)
    assert prop2.__doc__ == "own doc"
    sm = rt(staticmethod(lambda: 5), ref)
    assert type(sm) is staticmethod and sm.__func__() == 5
    cm = rt(classmethod(lambda cls: cls), ref)
    assert type(cm) is classmethod and cm.__func__(int) is int
    cp = rt(functools.cached_property(lambda self: 7), ref)
    assert type(cp) is functools.cached_property


def test_mappingproxy(ref):
    mp = rt(types.MappingProxyType({"a": 1}), ref)
    assert type(mp) is types.MappingProxyType and dict(mp) == {"a": 1}


# ---- strict mode, policy, errors ---------------------------------------------------------------
class _WritesFile:
    """An object whose reduce calls a function by value with a side effect."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        touch = lambda p: open(p, "w").close() or "touched"  # noqa: E731
        return (touch, (self.path,))


def test_strict_mode_refuses_code_before_running_anything(tmp_path):
    path = str(tmp_path / "side-effect")
    data = pyfory.Fory(strict=False).dumps(_WritesFile(path))
    with pytest.raises((TypeNotRegisteredError, PolicyViolationError)) as info:
        pyfory.Fory().loads(data)
    assert "strict" in str(info.value)
    assert not os.path.exists(path)
    assert pyfory.Fory(strict=False).loads(data) == "touched"
    assert os.path.exists(path)


def test_strict_mode_refuses_to_write_functions():
    with pytest.raises(TypeNotRegisteredError, match="strict"):
        pyfory.Fory().dumps(lambda: 1)


def test_strict_mode_refuses_payloads_with_code_objects():
    data = pyfory.Fory(strict=False).dumps((lambda: 1).__code__)
    with pytest.raises(ForyError, match="strict"):
        pyfory.Fory().loads(data)


class RecordingPolicy(pyfory.DeserializationPolicy):
    def __init__(self, refuse=None):
        self.functions = []
        self.methods = []
        self.refuse = refuse

    def validate_function(self, func, is_local):
        self.functions.append((func.__name__, is_local))
        if self.refuse is not None and func.__name__ == self.refuse:
            raise PolicyViolationError(f"refused {func.__name__}")

    def validate_method(self, method, is_local):
        self.methods.append((method.__func__.__name__, is_local))


def test_policy_sees_methods():
    def make():
        class Local:
            def local_method(self):
                return 1

        return Local().local_method

    data = pyfory.Fory(strict=False).dumps([make(), GlobalThing(1).times])
    policy = RecordingPolicy()
    local, global_ = pyfory.Fory(strict=False, policy=policy).loads(data)
    assert local() == 1 and global_(2) == 2
    assert policy.methods == [("local_method", True), ("times", False)]


def test_policy_sees_functions_by_value_and_by_reference():
    def make():
        def local_one(x):
            return module_level_function(x)

        return local_one

    data = pyfory.Fory(strict=False).dumps([make(), textwrap.dedent])
    policy = RecordingPolicy()
    f, g = pyfory.Fory(strict=False, policy=policy).loads(data)
    assert ("local_one", True) in policy.functions
    assert ("dedent", False) in policy.functions
    with pytest.raises(PolicyViolationError, match="refused local_one"):
        pyfory.Fory(strict=False, policy=RecordingPolicy(refuse="local_one")).loads(data)


def _code_header_offset(data):
    return data.index(code._CODE_HEADER)


def test_code_from_another_python_version_is_refused():
    data = bytearray(pyfory.Fory(strict=False).dumps(lambda: 1))
    i = _code_header_offset(bytes(data))
    data[i] ^= 0x55
    with pytest.raises(FormatError, match="another Python version"):
        pyfory.Fory(strict=False).loads(bytes(data))
    data[i] ^= 0x55
    data[i + 2] += 1
    with pytest.raises(FormatError, match="format"):
        pyfory.Fory(strict=False).loads(bytes(data))


def test_corrupted_code_is_detected_before_marshal():
    fory = pyfory.Fory(strict=False)
    data = fory.dumps(lambda x: x + 12345)
    start = _code_header_offset(data) + len(code._CODE_HEADER) + 2
    failures = 0
    for i in range(start, start + 40):
        mutated = bytearray(data)
        mutated[i] ^= 0x21
        try:
            fory.loads(bytes(mutated))
        except MalformedDataError:
            failures += 1
    assert failures == 40
    assert fory.loads(data)(1) == 12346


def test_truncated_function_payloads_fail_cleanly(ref):
    def make():
        k = [1, 2]

        def f(x=3):
            return x + len(k)

        return f

    fory = pyfory.Fory(strict=False, ref=ref)
    data = fory.dumps(make())
    for cut in range(len(data)):
        with pytest.raises(ForyError):
            fory.loads(data[:cut])
    assert fory.loads(data)() == 5


# ---- register_pickle_by_value ----------------------------------------------------------------
@pytest.fixture
def temp_module(tmp_path, monkeypatch):
    name = "pyfory_temp_module_%d" % os.getpid()
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        FACTOR = 10

        def scale(x):
            return x * FACTOR

        class Thing:
            def value(self):
                return scale(4)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(name)
    yield module
    sys.modules.pop(name, None)
    if name in classes.list_registry_pickle_by_value():
        classes.unregister_pickle_by_value(module)


def test_register_pickle_by_value(temp_module, ref):
    assert rt(temp_module.scale, ref) is temp_module.scale
    pyfory.register_pickle_by_value(temp_module)
    assert temp_module.__name__ in pyfory.list_registry_pickle_by_value()
    scale = rt(temp_module.scale, ref)
    assert scale is not temp_module.scale and scale(2) == 20
    assert scale.__globals__ is not temp_module.__dict__
    assert scale.__module__ == temp_module.__name__
    thing = rt(temp_module.Thing(), ref)
    assert thing.value() == 40
    pyfory.unregister_pickle_by_value(temp_module)
    assert rt(temp_module.scale, ref) is temp_module.scale


def test_register_pickle_by_value_errors(temp_module):
    with pytest.raises(ValueError):
        pyfory.register_pickle_by_value("not a module")
    with pytest.raises(ValueError):
        pyfory.unregister_pickle_by_value(temp_module)
    fake = types.ModuleType("never_imported_module_xyz")
    with pytest.raises(ValueError):
        pyfory.register_pickle_by_value(fake)


# ---- pickle-style module functions --------------------------------------------------------------
def test_module_level_dumps_loads_dump_load(tmp_path):
    def make():
        shared = {"n": 1}

        def f(x):
            return x + shared["n"]

        return f, shared

    value = make()
    f, shared = pyfory.loads(pyfory.dumps(value))
    assert f(1) == 2 and f.__closure__[0].cell_contents is shared
    assert pyfory.loads(pyfory.dumps(value, 5))[0](1) == 2     # pickle's positional protocol
    cyclic = []
    cyclic.append(cyclic)
    back = pyfory.loads(pyfory.dumps(cyclic))
    assert back[0] is back
    path = tmp_path / "values.bin"
    with open(path, "wb") as fh:
        pyfory.dump(lambda: "first", fh)
        pyfory.dump({"second": 2}, fh)
    with open(path, "rb") as fh:
        assert pyfory.load(fh)() == "first"
        assert pyfory.load(fh) == {"second": 2}
        with pytest.raises(EOFError):
            pyfory.load(fh)
    assert "trust" in pyfory.loads.__doc__ and "pickle" in pyfory.loads.__doc__


def test_module_level_functions_out_of_band_buffers():
    big = bytearray(b"x" * 100_000)
    buffers = []
    data = pyfory.dumps([pickle.PickleBuffer(big), lambda: 3], buffer_callback=buffers.append)
    assert len(data) < 10_000 and buffers
    loaded = pyfory.loads(data, buffers=buffers)
    assert bytes(loaded[0]) == bytes(big) and loaded[1]() == 3


def test_module_level_functions_use_one_fory_per_thread():
    seen = {}

    def work(i):
        seen[i] = pyfory._thread_fory()
        assert pyfory.loads(pyfory.dumps(lambda: i))() == i

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(f) for f in seen.values()}) == 4
    assert all(f.ref and not f.strict for f in seen.values())


def test_module_level_functions_handle_deep_nesting():
    class Node:
        def __init__(self, nxt):
            self.nxt = nxt

    node = None
    for _ in range(400):
        node = Node(node)
    back = pyfory.loads(pyfory.dumps(node))
    depth = 0
    while back is not None:
        back = back.nxt
        depth += 1
    assert depth == 400


def test_dump_writes_to_any_binary_stream():
    stream = io.BytesIO()
    pyfory.dump(module_level_function, stream)
    stream.seek(0)
    assert pyfory.load(stream) is module_level_function
