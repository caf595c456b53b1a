"""User code that runs in the middle of dumps/loads (custom serializers, __reduce__,
__setstate__, __del__, gc introspection) must never make the Cython core touch freed
memory, NULL slots or half-built objects.

Each case runs in a child process under PYTHONMALLOC=debug (freed memory is poisoned,
so a use-after-free crashes there instead of passing by luck) and prints what it saw;
a crash fails the test instead of killing the test run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest


def run_case(body: str) -> str:
    env = {**os.environ, "PYTHONMALLOC": "debug"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(body)], env=env,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, (
        f"child exited with {proc.returncode}\n{proc.stderr.decode(errors='replace')[-3000:]}")
    return proc.stdout.decode()


def test_dict_value_replaced_by_another_type_while_written():
    # the packed value kind is chosen before the keys are written; a key's serializer
    # that swaps a value for another type must not have it cast blindly
    out = run_case("""
        import pyfory
        from pyfory.error import ChangedDuringSerializationError

        class K:
            def __init__(self, name): self.name = name
            def __hash__(self): return hash(self.name)
            def __eq__(self, other): return isinstance(other, K) and other.name == self.name

        TARGET = {}

        class KSer(pyfory.Serializer):
            def write(self, ctx, obj):
                ctx.write_string(obj.name)
                if obj.name == "a":
                    TARGET["d"][K("b")] = TARGET["new"]     # same size, another type
            def read(self, ctx):
                return K(ctx.read_string())

        fory = pyfory.Fory()
        fory.register(K, name="K", serializer=KSer)
        for values, new in (((1.5, 2.5), 7), (("x", "y"), b"not a str" * 8), ((1, 2), 2 ** 80)):
            d = {K("a"): values[0], K("b"): values[1]}
            TARGET.update(d=d, new=new)
            try:
                fory.dumps(d)
                print("no error")
            except ChangedDuringSerializationError:
                print("changed")
    """)
    assert out.split() == ["changed"] * 3


def test_dict_key_replaced_by_a_non_str_while_written():
    out = run_case("""
        import pyfory
        from pyfory.error import ChangedDuringSerializationError

        TARGET = {}

        class V:
            pass

        class VSer(pyfory.Serializer):
            def write(self, ctx, obj):
                d = TARGET["d"]
                if "b" in d:
                    del d["b"]
                    d[b"key" * 10] = 2
            def read(self, ctx):
                return V()

        fory = pyfory.Fory()
        fory.register(V, name="V", serializer=VSer)
        d = {"a": V(), "b": 1}
        TARGET["d"] = d
        try:
            fory.dumps(d)
            print("no error")
        except ChangedDuringSerializationError:
            print("changed")
    """)
    assert out.strip() == "changed"


@pytest.mark.parametrize("action", ["clear", "pop-later", "replace-later", "swap-key", "none"])
def test_small_str_dict_mutated_by_a_value_serializer_while_written(action):
    # write_dict keeps the items of a small str-keyed dict from its first pass and
    # writes them from there: a value's serializer that drops the dict's other items
    # (their last references) must not leave dangling pointers, and any change to the
    # dict is reported rather than written as a mix of old and new
    out = run_case(f"""
        import pyfory
        from pyfory.error import ChangedDuringSerializationError

        TARGET = {{}}

        class V:
            pass

        class VSer(pyfory.Serializer):
            def write(self, ctx, obj):
                d = TARGET["d"]
                action = {action!r}
                if action == "clear":
                    d.clear()
                elif action == "pop-later":
                    d.pop("later")
                elif action == "replace-later":
                    d["later"] = [object.__new__(V) for _ in range(3)]
                elif action == "swap-key":
                    del d["later"]
                    d["other"] = 1
            def read(self, ctx):
                return V()

        fory = pyfory.Fory()
        fory.register(V, name="V", serializer=VSer)
        for n in (2, 5, 16):
            d = {{"first": V()}}
            for i in range(n - 2):
                d[f"k{{i}}"] = [i, "x" * i]
            d["later"] = ["a fresh list", bytearray(1000)]
            TARGET["d"] = d
            try:
                out = fory.loads(fory.dumps(d))
                print("written", sorted(out) == sorted(d))
            except ChangedDuringSerializationError:
                print("changed")
    """)
    want = "written True" if action == "none" else "changed"
    assert out.splitlines() == [want] * 3


@pytest.mark.parametrize("container", ["tuple", "list", "frozenset"])
def test_half_filled_containers_are_invisible_to_gc(container):
    # a nested serializer walking gc.get_objects() must not find a tuple or list that
    # still has NULL slots (or resize a list the core is filling)
    out = run_case(f"""
        import gc
        import pyfory

        MARK = 123456789

        class Probe:
            def __hash__(self): return 7
            def __eq__(self, other): return isinstance(other, Probe)

        class ProbeSer(pyfory.Serializer):
            def write(self, ctx, obj): pass
            def read(self, ctx):
                for r in gc.get_objects():
                    if type(r) in (tuple, list) and len(r) == 3 and r is not VALUE:
                        try:
                            head = r[0]
                        except Exception:
                            continue
                        if head == MARK:
                            print("found a half-filled container")
                            if type(r) is list:
                                r.extend(range(100))
                            else:
                                r[1]
                return Probe()

        fory = pyfory.Fory()
        fory.register(Probe, name="Probe", serializer=ProbeSer)
        VALUE = {container}([MARK, Probe(), "x"])
        out = fory.loads(fory.dumps(VALUE))
        assert out == VALUE, out
        print("ok")
    """)
    assert out.strip() == "ok"


def test_namedtuple_is_never_seen_with_missing_fields():
    out = run_case("""
        import gc
        from collections import namedtuple
        import pyfory

        fory = pyfory.Fory()

        class P(namedtuple("P", "x y")):
            __slots__ = ()
            def __del__(self):
                self.y                  # a half-built instance would have NULL here

        fory.register(P, name="P")
        data = fory.dumps(P(1, 2))
        try:
            fory.loads(data[:-1])       # truncated: y is missing
        except pyfory.error.ForyError as e:
            print(type(e).__name__)

        class Q(namedtuple("Q", "x y")):
            __slots__ = ()

        class Probe:
            pass

        class ProbeSer(pyfory.Serializer):
            def write(self, ctx, obj): pass
            def read(self, ctx):
                for r in gc.get_objects():
                    if type(r) is Q:
                        r.y
                return Probe()

        fory.register(Q, name="Q")
        fory.register(Probe, name="Probe", serializer=ProbeSer)
        out = fory.loads(fory.dumps(Q(1, Probe())))
        print(type(out).__name__, out.x)
    """)
    assert out.split() == ["TruncatedDataError", "Q", "1"]


def test_object_array_fill_survives_a_del_that_clears_the_items():
    pytest.importorskip("numpy")
    out = run_case("""
        import gc
        import numpy as np
        import pyfory

        HOLD = {}

        class D:
            def __del__(self):
                for r in gc.get_referrers(HOLD["e"]):
                    if type(r) is list and len(r) == 3:
                        r.clear()

        class E:
            def __init__(self, arr=None): self.arr = arr
            def __reduce__(self): return (E, (), {"arr": self.arr})
            def __setstate__(self, state):
                HOLD["e"] = self
                state["arr"][0] = D()     # the array being read, through a back-reference

        fory = pyfory.Fory(ref=True)
        fory.register(E, name="E")
        fory.register(D, name="D")
        a = np.empty(3, dtype=object)
        a[0] = E(a); a[1] = 1; a[2] = 2
        out = fory.loads(fory.dumps(a))
        print(type(out[0]).__name__, out[1], out[2])
    """)
    assert out.split() == ["E", "1", "2"]


def test_out_of_memory_while_growing_leaves_the_fory_usable():
    pytest.importorskip("_testcapi")
    out = run_case("""
        import _testcapi
        import pyfory

        class Big:
            pass

        class BigSer(pyfory.Serializer):
            def write(self, ctx, obj):
                # fill the first block (small payloads start in a kept 512-byte one)
                ctx.write_bytes(b"y" * (506 - ctx.writer_index))
                _testcapi.set_nomemory(0, 1)                        # the next allocation fails
                try:
                    ctx.write_int64(1)                              # -> grow
                finally:
                    _testcapi.remove_mem_hooks()
            def read(self, ctx):
                return Big()

        fory = pyfory.Fory()
        fory.register(Big, name="Big", serializer=BigSer)
        try:
            fory.dumps(Big())
        except MemoryError:
            print("MemoryError")
        assert fory.loads(fory.dumps([1, 2, 3])) == [1, 2, 3]
        assert fory.loads(fory.dumps(list(range(300)))) == list(range(300))
        print("ok")
    """)
    assert out.split() == ["MemoryError", "ok"]


def test_attribute_swapped_for_another_while_the_object_is_written():
    out = run_case("""
        import pyfory
        from pyfory.error import SerializationError

        class Obj:
            pass

        class X:
            pass

        class XSer(pyfory.Serializer):
            def write(self, ctx, x):
                OWNER.__dict__.pop("b")
                OWNER.__dict__["c"] = "value-of-c"
            def read(self, ctx):
                return X()

        fory = pyfory.Fory()
        fory.register(Obj, name="Obj")
        fory.register(X, name="X", serializer=XSer)
        OWNER = Obj()
        OWNER.a = X()
        OWNER.b = "value-of-b"
        try:
            fory.dumps(OWNER)
            print("no error")
        except SerializationError:
            print("changed")
    """)
    assert out.strip() == "changed"


def test_type_meta_that_reads_another_type_keeps_both_types_apart():
    # a serializer's type meta may name other classes: the table slot of the type being
    # read must be the one updated, not the last one added
    import pyfory

    class A:
        pass

    class B:
        pass

    class ASer(pyfory.Serializer):
        def __init__(self, fory=None, cls=None):
            super().__init__(fory, cls)
            self.has_type_meta = True

        def write_type_meta(self, ctx):
            ctx.write_type(B)

        def read_type_meta(self, ctx):
            assert ctx.read_type() is B
            return self

        def write(self, ctx, obj):
            pass

        def read(self, ctx):
            return A()

    fory = pyfory.Fory()
    fory.register(A, name="A", serializer=ASer)
    fory.register(B, name="B")
    out = fory.loads(fory.dumps([A(), B, A(), B]))
    assert type(out[0]) is A and out[1] is B and type(out[2]) is A and out[3] is B
