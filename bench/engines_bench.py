"""Dask, joblib/loky and Celery: pyfory's adapters against each engine's default.

    python bench/engines_bench.py                  # all three engines, about two minutes
    python bench/engines_bench.py --quick          # fewer repetitions
    python bench/engines_bench.py --only dask      # or loky, celery

What is measured (warm workers; the cases of a workload take turns, several times):

1. Dask (LocalCluster, 2 worker processes, 127.0.0.1): a 50 MB float64 array scattered to a
   worker and gathered back, and the gather of 20,000 records (3-key dicts) that a worker
   holds; ``Client(serializers=["pyfory", "dask", "pickle"])`` against the default client
   (Dask's "dask" family for arrays, "pickle" for the rest).
2. joblib ``Parallel(n_jobs=2, backend="loky")``: 10,000 small tasks (a closure, auto
   batching), a 50 MB array sent to each of 2 tasks (joblib memmaps it: same path for
   both picklers), the same with memmapping off (``max_nbytes=None``: the array inside the
   message), and a 50 MB array returned by a task; ``LOKY_PICKLER`` this package against
   loky's default cloudpickle.
3. Celery (in-process solo worker, ``memory://`` broker, results in memory): 300 tasks,
   each taking and returning 200 records; serializer "pyfory" against the default "json"
   and against "pickle" (one worker after the other: the best run of each).

Times are the best turn; a ratio is the median over turns of (the default's time) /
(pyfory's time) in the same turn: above 1 means pyfory is faster.
Timing is reported here and asserted by nobody.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

N_RECORDS = 20_000
ARRAY_BYTES = 50_000_000


def interleaved(cases: Dict[str, Callable[[], float]], repeat: int) -> Dict[str, List[float]]:
    """The times of each case, turn by turn: the cases take turns, so that a burst of load
    on a shared machine hits all of them alike, and turn i of one pairs with turn i of
    another."""
    times: Dict[str, List[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            times[name].append(fn())
    return times


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def records(n: int) -> list:
    return [{"id": i, "name": f"user{i}", "score": i * 0.5} for i in range(n)]


# ---- Dask -----------------------------------------------------------------------------
def bench_dask(repeat: int) -> Dict[str, Dict[str, List[float]]]:
    import numpy as np
    from distributed import Client, LocalCluster
    from pyfory.integrations import dask as fory_dask

    arr = np.random.default_rng(0).random(ARRAY_BYTES // 8)
    out: Dict[str, Dict[str, List[float]]] = {"default": {}, "pyfory": {}}
    with LocalCluster(n_workers=2, processes=True, host="127.0.0.1", threads_per_worker=1,
                      dashboard_address=":0", preload=["pyfory.integrations.dask"]) as cluster:
        clients = {"default": Client(cluster), "pyfory": fory_dask.connect(cluster)}
        try:
            worker = sorted(clients["default"].scheduler_info()["workers"])[0]

            def scatter_gather(name):
                client = clients[name]
                t = time.perf_counter()
                [fut] = client.scatter([arr], workers=[worker])
                back = client.gather(fut)
                elapsed = time.perf_counter() - t
                assert back.shape == arr.shape
                fut.release()
                return elapsed

            held = {name: c.submit(records, N_RECORDS, pure=False) for name, c in clients.items()}
            for fut in held.values():
                fut.result()
            workloads = {
                "dask: 50 MB array scatter + gather": scatter_gather,
                f"dask: gather a list of {N_RECORDS:,} records":
                    lambda name: timed(lambda: clients[name].gather(held[name])),
            }
            for workload, fn in workloads.items():
                turns = interleaved({name: (lambda name=name, fn=fn: fn(name)) for name in clients}, repeat)
                for name, ts in turns.items():
                    out[name][workload] = ts
        finally:
            for client in clients.values():
                client.close()
    return out


# ---- joblib / loky ----------------------------------------------------------------------
def make_array(nbytes: int):
    import numpy as np

    return np.ones(nbytes // 8)


def array_sum(a) -> float:
    return float(a[::4096].sum())


def bench_loky(repeat: int) -> Dict[str, Dict[str, List[float]]]:
    import numpy as np
    from joblib import Parallel, delayed
    from joblib.externals.loky import set_loky_pickler

    arr = np.ones(ARRAY_BYTES // 8)
    k = 3
    picklers = {"default": "cloudpickle", "pyfory": "pyfory.integrations.loky"}
    out: Dict[str, Dict[str, List[float]]] = {"default": {}, "pyfory": {}}

    def with_pickler(pickler, fn):
        def run():
            set_loky_pickler(pickler)
            return timed(fn)
        return run

    def par(max_nbytes="1M"):
        # a new Parallel per run (auto batching starts afresh), on loky's reusable executor
        # (the same warm workers throughout)
        return Parallel(n_jobs=2, backend="loky", max_nbytes=max_nbytes)

    workloads = {
        "loky: 10,000 small tasks (closure)":
            lambda: par()(delayed(lambda x: x + k)(i) for i in range(10_000)),
        "loky: 50 MB array to 2 tasks (memmapped)":
            lambda: par()(delayed(array_sum)(arr) for _ in range(2)),
        "loky: 50 MB array to 2 tasks (in the message)":
            lambda: par(None)(delayed(array_sum)(arr) for _ in range(2)),
        "loky: 50 MB array returned by a task":
            lambda: par()(delayed(make_array)(ARRAY_BYTES) for _ in range(1)),
    }
    try:
        par()(delayed(array_sum)(arr) for _ in range(2))      # start and warm the workers
        for workload, fn in workloads.items():
            cases = {name: with_pickler(p, fn) for name, p in picklers.items()}
            for name, ts in interleaved(cases, repeat).items():
                out[name][workload] = ts
    finally:
        set_loky_pickler("cloudpickle")
    return out


# ---- Celery -----------------------------------------------------------------------------
def bench_celery(repeat: int) -> Dict[str, Dict[str, List[float]]]:
    import celery
    from celery.contrib.testing.worker import start_worker
    from pyfory.integrations import celery as fory_celery

    fory_celery.register()    # the entry point did, where the package is installed
    payload = records(200)
    serializers = {"default": "json", "pickle": "pickle", "pyfory": "pyfory"}
    out = {}
    # one worker at a time (two memory:// workers in one process step on each other), so
    # the turns do not pair: each serializer's best turn is kept
    for name, serializer in serializers.items():
        app = celery.Celery(f"bench_{serializer}", broker="memory://", backend="cache+memory://",
                            set_as_current=False)
        app.conf.update(task_serializer=serializer, result_serializer=serializer,
                        accept_content=[serializer], result_accept_content=[serializer],
                        broker_transport_options={"polling_interval": 0.001})
        echo = app.task(name=f"echo_{serializer}")(_echo)
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=20):
            echo.delay(payload).get(timeout=30, interval=0.001)

            def many(echo=echo):
                results = [echo.delay(payload) for _ in range(300)]
                for r in results:
                    r.get(timeout=60, interval=0.001)

            out[name] = {"celery: 300 tasks, 200 records each way": [min(timed(many) for _ in range(repeat))]}
    return out


def _echo(rows):
    return rows


def table(results: Dict[str, Dict[str, List[float]]], baselines: List[str]) -> List[str]:
    """Rows: pyfory's best time, and for each baseline its best time and the median of the
    turn-by-turn ratios (the baseline's time / pyfory's time in the same turn)."""
    rows = []
    for workload, ours in results["pyfory"].items():
        cells = []
        for base in baselines:
            other = results.get(base, {}).get(workload)
            if other:
                ratio = statistics.median(o / t for o, t in zip(other, ours))
                cells.append(f"{min(other) * 1e3:.0f} ms ({ratio:.2f}x)")
            else:
                cells.append("-")
        rows.append(f"| {workload} | {min(ours) * 1e3:.0f} ms | " + " | ".join(cells) + " |")
    return rows


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--only", choices=["dask", "loky", "celery"], action="append")
    args = parser.parse_args(argv)
    repeat = 3 if args.quick else 7
    only = args.only or ["dask", "loky", "celery"]
    print(f"CPython {platform.python_version()}, {os.cpu_count()} cores, best of {repeat}")
    print("| workload | pyfory | engine default (ratio) | pickle (ratio) |")
    print("| --- | --- | --- | --- |")
    for engine, fn in (("dask", bench_dask), ("loky", bench_loky), ("celery", bench_celery)):
        if engine not in only:
            continue
        try:
            results = fn(repeat)
        except ImportError as e:
            print(f"| {engine}: not installed ({e}) | | | |")
            continue
        for row in table(results, ["default", "pickle"]):
            print(row)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
