"""pyfory.integrations.dask on a real LocalCluster: two worker processes on 127.0.0.1.

One cluster (with the preload) serves the module; a second, one-worker cluster without
the preload checks the missing-family error. The clients that prove the family carried
the data use ``serializers=["pyfory"]`` only, so nothing could fall back to pickle."""

from __future__ import annotations

import importlib
import logging
import sys

import pytest
from engine_support import copyreg_kept

import pyfory

np = pytest.importorskip("numpy")
with copyreg_kept():
    distributed = pytest.importorskip("distributed", reason="Dask distributed is not installed "
                                      "(pip install \"pyfory[dask]\")")
    import dask
    from distributed.protocol.serialize import deserialize, serialize
    from pyfory.integrations import dask as fory_dask

pytestmark = pytest.mark.timeout(120)

PRELOAD = "pyfory.integrations.dask"
TIMEOUT = 60


def _cluster(**kwargs):
    return distributed.LocalCluster(processes=True, host="127.0.0.1", threads_per_worker=1,
                                    dashboard_address=":0", worker_dashboard_address=":0",
                                    **kwargs)


@pytest.fixture(scope="module")
def cluster():
    # the in-process scheduler installs tblib's reducers for the exceptions it relays
    with copyreg_kept(), _cluster(n_workers=2, preload=[PRELOAD]) as c:
        yield c


@pytest.fixture(scope="module")
def client(cluster):
    # pyfory only: a value pyfory could not carry fails instead of going through pickle
    with fory_dask.connect(cluster, serializers=["pyfory"],
                           deserializers=["pyfory", "error"]) as c:
        yield c


def _root(arr):
    """The object at the bottom of an array's chain of bases and memoryviews."""
    obj = arr
    while True:
        if isinstance(obj, memoryview):
            obj = obj.obj
        elif isinstance(obj, np.ndarray) and obj.base is not None:
            obj = obj.base
        else:
            return obj


def _array_info(arr):
    root = _root(arr)
    return {"writeable": arr.flags.writeable, "owndata": arr.flags.owndata,
            "root_nbytes": memoryview(root).nbytes, "nbytes": arr.nbytes}


def test_family_registered_and_falls_through():
    header, frames = serialize(
        {"f": lambda x: x}, serializers=["pyfory", "pickle"])
    assert header["serializer"] == "pyfory"
    assert deserialize(header, frames)["f"](4) == 4
    # pyfory cannot write a lock (nor can pickle): the family says NotImplementedError and
    # Dask reports the failure through its "error" family
    import threading

    with pytest.raises(NotImplementedError, match="lock"):
        fory_dask.dumps(threading.Lock())
    header, frames = serialize(threading.Lock(),
                                                              serializers=["pyfory", "pickle"])
    assert header["serializer"] == "error"


def test_loads_keeps_writeable_flags_without_copy():
    arr = np.arange(100_000, dtype=np.int64)
    header, frames = fory_dask.dumps(arr)
    assert header["writeable"] == (True,) and len(frames) == 2
    frame = bytearray(frames[1])
    out = fory_dask.loads(header, [frames[0], memoryview(frame)])
    assert out.flags.writeable and _root(out) is frame        # built on the frame itself
    # a read-only frame where the writer's buffer was writeable: the one copy
    copied = fory_dask.loads(header, [frames[0], memoryview(bytes(frame))])
    assert copied.flags.writeable and np.array_equal(copied, arr)
    # a read-only array stays read-only
    arr.flags.writeable = False
    header, frames = fory_dask.dumps(arr)
    assert header["writeable"] == (False,)
    assert not fory_dask.loads(header, [frames[0], memoryview(bytearray(frames[1]))]).flags.writeable
    with pytest.raises(pyfory.error.ForyError, match="writeable flag"):
        fory_dask.loads({"writeable": ()}, [frames[0], memoryview(frame)])


def test_lambda_closure_and_local_class_results(client):
    class Point:
        def __init__(self, x, y):
            self.x, self.y = x, y

    k = 7

    def make(n):
        return {"point": Point(n, n * k), "add": lambda v: v + k + n}

    futures = client.map(make, [1, 2, 3])
    results = client.gather(futures)
    assert [r["point"].x for r in results] == [1, 2, 3]
    assert [r["point"].y for r in results] == [7, 14, 21]
    assert [r["add"](1) for r in results] == [9, 10, 11]
    # the local class travelled by value from the worker (pickle could not have named it)
    assert {type(r["point"]).__name__ for r in results} == {"Point"}


def test_large_array_scatter_and_gather_writeable_no_copy(client):
    arr = np.random.default_rng(1).random(50_000_000 // 8)
    [fut] = client.scatter([arr], broadcast=False)
    remote = client.submit(_array_info, fut).result(timeout=TIMEOUT)
    assert remote["writeable"] and not remote["owndata"]
    back = client.gather(fut)
    assert np.array_equal(back, arr)
    info = _array_info(back)
    assert info["writeable"] and not info["owndata"]
    # the array lies inside the buffer the whole message was received into: a copy would
    # own its data or sit in a buffer of exactly its own size
    assert info["root_nbytes"] > info["nbytes"]
    back[0] = -1.0                      # and it can be written to
    assert back[0] == -1.0


def test_task_exception_reaches_the_client(client):
    def fail(x):
        raise ValueError(f"bad input {x}")

    fut = client.submit(fail, 3)
    with pytest.raises(ValueError, match="bad input 3"):
        fut.result(timeout=TIMEOUT)
    assert fut.status == "error"


def _graphs_loaded_on_workers(client):
    def count():
        mod = sys.modules.get(PRELOAD)
        return 0 if mod is None else mod.graphs_loaded

    return sum(client.run(count).values())


def test_task_graphs_through_pyfory(client):
    before = _graphs_loaded_on_workers(client)
    fory_dask.enable_task_graphs()
    try:
        assert fory_dask.task_graphs_enabled()
        envelope = distributed.protocol.pickle.dumps(lambda: 1)
        assert b"_load_graph" in envelope
        k = 11

        class Box:
            def __init__(self, v):
                self.v = v

        fut = client.submit(lambda b: Box(b.v * k), Box(2))
        assert fut.result(timeout=TIMEOUT).v == 22
    finally:
        fory_dask.disable_task_graphs()
    assert not fory_dask.task_graphs_enabled()
    assert b"_load_graph" not in distributed.protocol.pickle.dumps(lambda: 1)
    assert _graphs_loaded_on_workers(client) > before


def test_connect_default_lists(cluster):
    with fory_dask.connect(cluster) as c:
        k = 2
        assert c.submit(lambda: (lambda x: x * k)).result(timeout=TIMEOUT)(21) == 42


@pytest.fixture(scope="module")
def bare():
    """Two workers without the preload (the last tests install the family on them)."""
    with copyreg_kept(), _cluster(n_workers=2) as c:
        yield c


class _Count(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = 0

    def emit(self, record):
        self.records += 1


@pytest.mark.timeout(90)
def test_readme_client_without_preload_fails_fast_naming_it(bare):
    # the README's Client, no connect() or check_workers(): the client preload this module
    # adds gives each worker without the family a stand-in that fails with the hint
    assert PRELOAD in dask.config.get("distributed.client.preload")
    counter = _Count()
    logging.getLogger().addHandler(counter)
    try:
        with distributed.Client(bare, serializers=["pyfory", "dask", "pickle"],
                                deserializers=["pyfory", "dask", "pickle", "error"]) as c:
            k = 5
            with pytest.raises(TypeError, match=f"--preload {PRELOAD}"):
                c.submit(lambda: k).result(timeout=TIMEOUT)
            with pytest.raises(TypeError, match=f"--preload {PRELOAD}"):
                c.gather(c.map(lambda x: x + k, range(4)), errors="raise")
            with pytest.raises(Exception, match=f"--preload {PRELOAD}"):
                c.scatter([np.arange(3)], timeout=TIMEOUT)
            # the stand-in is no family for the check, which still names every worker
            with pytest.raises(fory_dask.MissingPreloadError) as e:
                fory_dask.check_workers(c)
            assert all(w in str(e.value) for w in bare.scheduler_info["workers"])
        # Dask's own lists are unaffected by the stand-in
        with distributed.Client(bare) as plain:
            assert plain.submit(lambda: k * 2).result(timeout=TIMEOUT) == 10
    finally:
        logging.getLogger().removeHandler(counter)
    # a hang fills the log (millions of lines in 20 s were measured); failing fast does not
    assert counter.records < 300


@pytest.mark.timeout(90)
def test_missing_preload_is_a_clear_error_not_a_hang(bare):
    with pytest.raises(fory_dask.MissingPreloadError, match="--preload pyfory.integrations.dask") as e:
        fory_dask.connect(bare)
    workers = bare.scheduler_info["workers"]
    assert len(workers) == 2 and all(w in str(e.value) for w in workers)
    # install() registers the family on the workers (over the stand-in); the check passes
    with fory_dask.connect(bare, install_on_workers=True) as c:
        fory_dask.check_workers(c)
        k = 3
        assert c.submit(lambda: lambda x: x * k).result(timeout=TIMEOUT)(2) == 6


def test_import_without_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    monkeypatch.delitem(sys.modules, PRELOAD)
    with pytest.raises(ImportError, match=r'pip install "pyfory\[dask\]"'):
        importlib.import_module(PRELOAD)
