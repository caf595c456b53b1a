"""pyfory.integrations.loky as joblib's LOKY_PICKLER: Parallel(n_jobs=2, backend="loky")
with real worker processes (one executor for the module)."""

from __future__ import annotations

import copyreg
import functools
import importlib
import os
import sys

import pytest
from engine_support import copyreg_kept

np = pytest.importorskip("numpy")
with copyreg_kept():
    joblib = pytest.importorskip("joblib", reason="joblib is not installed (pip install \"pyfory[joblib]\")")
    from joblib import Parallel, delayed
    from joblib.externals.loky import set_loky_pickler
    from joblib.externals.loky.backend import reduction as loky_reduction
    from pyfory.integrations import loky as fory_loky

pytestmark = pytest.mark.timeout(120)

MODULE = "pyfory.integrations.loky"


@pytest.fixture(scope="module")
def parallel():
    set_loky_pickler(MODULE)
    try:
        with Parallel(n_jobs=2, backend="loky", timeout=60) as par:
            yield par
    finally:
        set_loky_pickler("cloudpickle")


def _worker_state(_):
    mod = sys.modules.get(MODULE)
    return {"pid": os.getpid(), "pickler": loky_reduction.get_loky_pickler_name(),
            "envelopes": 0 if mod is None else mod.envelopes_loaded}


def test_tasks_and_results_go_through_pyfory(parallel):
    before = fory_loky.envelopes_loaded
    states = parallel(delayed(_worker_state)(i) for i in range(8))
    # the tasks arrived in envelopes, the workers switched to this pickler, and the
    # results came back in envelopes
    assert all(s["envelopes"] > 0 for s in states)
    assert {s["pickler"] for s in states} == {MODULE}
    assert fory_loky.envelopes_loaded > before


def test_lambdas_closures_and_local_classes(parallel):
    k = 5

    class Pair:
        def __init__(self, a, b):
            self.a, self.b = a, b

    def make(i):
        return Pair(i, lambda x: x * k + i)

    out = parallel(delayed(make)(i) for i in range(6))
    assert [p.a for p in out] == list(range(6))
    assert [p.b(2) for p in out] == [10 + i for i in range(6)]
    assert parallel(delayed(lambda x: x + k)(i) for i in range(4)) == [5, 6, 7, 8]


def _describe(arr):
    return type(arr).__name__, arr.flags.writeable, float(arr[::4096].sum()), arr.shape


def test_large_array_is_memmapped(parallel):
    arr = np.arange(50_000_000 // 8, dtype=np.float64)
    out = parallel(delayed(_describe)(arr) for _ in range(2))
    expected = float(arr[::4096].sum())
    # joblib's memmapping reducer ran (the array reached the workers as a read-only
    # memmap, not inside the message)
    assert out == [("memmap", False, expected, arr.shape)] * 2


def test_exception_reaches_the_parent(parallel):
    class Oops(Exception):
        pass

    def fail(i):
        if i == 3:
            raise Oops(f"task {i} failed")
        return i

    with pytest.raises(Exception, match="task 3 failed") as e:
        parallel(delayed(fail)(i) for i in range(6))
    assert type(e.value).__name__ == "Oops"


class _Token:
    def __init__(self, v):
        self.v = v


def _must_not_run(obj):
    raise AssertionError(f"the table's reducer for {type(obj).__name__} ran")


def test_pickler_honours_dispatch_table():
    table = dict(copyreg.dispatch_table)
    table[_Token] = lambda t: (str, (f"reduced {t.v}",))
    table[functools.partial] = _must_not_run
    data = fory_loky.dumps({"t": _Token(4), "p": functools.partial(max, 1), "f": lambda: 2},
                           dispatch_table=table)
    out = fory_loky.loads(data)
    assert out["t"] == "reduced 4"               # the table's reducer ran
    assert out["p"](5) == 5 and out["f"]() == 2   # pyfory kept what it writes itself
    # without a reducer in the table the object travels as itself
    assert fory_loky.loads(fory_loky.dumps(_Token(1))).v == 1


def test_spawn_data_stays_on_the_stock_pickler():
    from multiprocessing.context import set_spawning_popen

    prep = {"sys_path": list(sys.path), "name": "worker"}
    set_spawning_popen(object())          # what loky sets while it writes a new worker's data
    try:
        data = fory_loky.dumps(prep)
    finally:
        set_spawning_popen(None)
    assert MODULE.encode() not in data    # no envelope: the child reads it before sys.path
    assert fory_loky.loads(data) == prep
    assert MODULE.encode() in fory_loky.dumps(prep)     # an envelope otherwise


def test_import_without_joblib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "joblib", None)
    monkeypatch.setitem(sys.modules, "loky", None)
    monkeypatch.delitem(sys.modules, MODULE)
    with pytest.raises(ImportError, match=r'pip install "pyfory\[joblib\]"'):
        importlib.import_module(MODULE)
