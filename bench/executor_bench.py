"""Process pools: pyfory against the standard library and loky, in one run, as ratios.

    python bench/executor_bench.py                 # everything, a minute or two
    python bench/executor_bench.py --quick         # fewer repetitions
    python bench/executor_bench.py --start-method fork

What is measured (warm pools: workers started and used once before timing; the best of
several repetitions is kept, since this is about what the code costs, not the noise;
for Pool.map, whose runs are short, the median of the per-turn ratios):

1. 10,000 tiny tasks through ``submit`` and ``result``: a module-level function (every
   executor), and a closure (the stdlib cannot send one; loky can, with cloudpickle);
2. ``multiprocessing.Pool.map`` over 100,000 small items (ints, and 3-key dicts), plain
   and with ``pyfory.integrations.multiprocessing.install()``;
3. a 100 MB float64 numpy array sent to a worker and returned.

A ratio is (the other's time) / (pyfory's time): above 1 means pyfory is faster.
Timing is reported here and asserted by nobody.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import importlib
import multiprocessing
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional


def tiny(x):
    return x + 1


def identity(x):
    return x


def _importable():
    """This module under a name the workers can import (functions then go by reference,
    as they would from a user's own module)."""
    if __name__ != "__main__":
        return sys.modules[__name__]
    for name in ("executor_bench", "bench.executor_bench"):
        try:
            return importlib.import_module(name)
        except ImportError:
            pass
    return sys.modules[__name__]


def best(fn: Callable[[], float], repeat: int) -> float:
    times = [fn() for _ in range(repeat)]
    return min(times)


# ---- executors ------------------------------------------------------------------------------
def make_executors(start_method: str) -> Dict[str, Callable[[], cf.Executor]]:
    from pyfory.integrations.futures import ProcessPoolExecutor as ForyExecutor

    ctx = multiprocessing.get_context(start_method)
    makers: Dict[str, Callable[[], cf.Executor]] = {
        "pyfory": lambda: ForyExecutor(2, mp_context=ctx),
        "stdlib": lambda: cf.ProcessPoolExecutor(2, mp_context=ctx),
    }
    try:
        import loky

        makers["loky"] = lambda: loky.ProcessPoolExecutor(2)
    except ImportError:
        from pyfory._extras import install_hint

        print(f"loky is not installed, so it is left out: {install_hint('loky')}", file=sys.stderr)
    return makers


def tiny_tasks(executor, fn, n: int) -> float:
    start = time.perf_counter()
    futures = [executor.submit(fn, i) for i in range(n)]
    for f in futures:
        f.result()
    return time.perf_counter() - start


def bench_tiny_tasks(makers, n: int, repeat: int) -> Dict[str, Dict[str, Optional[float]]]:
    mod = _importable()
    offset = 1

    def closure(x):
        return x + offset

    out: Dict[str, Dict[str, Optional[float]]] = {}
    for name, make in makers.items():
        executor = make()
        try:
            list(executor.map(mod.tiny, range(50)))
            module_fn = best(lambda ex=executor: tiny_tasks(ex, mod.tiny, n), repeat)
            closure_t: Optional[float] = None
            if name != "stdlib":
                executor.submit(closure, 1).result()
                closure_t = best(lambda ex=executor: tiny_tasks(ex, closure, n), repeat)
        finally:
            executor.shutdown()
        out[name] = {"module function": module_fn, "closure": closure_t}
    return out


def bench_big_array(makers, mb: int, repeat: int) -> Dict[str, float]:
    from pyfory._extras import require

    np = require("numpy", "the big-array executor bench", extra="bench")

    mod = _importable()
    array = np.random.default_rng(0).random(mb * (1 << 20) // 8)
    out = {}
    for name, make in makers.items():
        executor = make()
        try:
            executor.submit(mod.identity, np.ones(10)).result()

            def once(executor=executor):
                start = time.perf_counter()
                back = executor.submit(mod.identity, array).result()
                elapsed = time.perf_counter() - start
                assert back.shape == array.shape and back[-1] == array[-1]
                return elapsed

            out[name] = best(once, repeat)
        finally:
            executor.shutdown()
    return out


def small_items(kind: str, n: int) -> list:
    """The items of a Pool.map: ints, or small records as a JSON API would give them."""
    if kind == "ints":
        return list(range(n))
    return [{"id": i, "name": f"user{i}", "score": i * 0.5} for i in range(n)]


def bench_pool_map(start_method: str, items: list, repeat: int) -> Dict[str, float]:
    """Two pools side by side (one started with the swap installed), timed in turns, so
    that a slow moment of the machine hits both. Returns the best and the median time of
    each, and the median of the per-turn ratios (plain / pyfory), the steadiest figure
    on a shared machine."""
    from pyfory.integrations import multiprocessing as fory_mp

    mod = _importable()
    fn = mod.tiny if type(items[0]) is int else mod.identity
    ctx = multiprocessing.get_context(start_method)
    plain = ctx.Pool(2)
    with fory_mp.installed():
        fory = ctx.Pool(2)
    times: Dict[str, List[float]] = {"plain": [], "pyfory": []}
    try:
        for pool in (plain, fory):
            pool.map(fn, items[:100])
        expected = fn(items[-1])
        for _ in range(repeat):
            for name, pool in (("plain", plain), ("pyfory", fory)):
                if name == "pyfory":
                    fory_mp.install()
                try:
                    start = time.perf_counter()
                    result = pool.map(fn, items)
                    times[name].append(time.perf_counter() - start)
                    assert result[-1] == expected
                finally:
                    if name == "pyfory":
                        fory_mp.uninstall()
    finally:
        for pool in (plain, fory):
            pool.close()
            pool.join()
    out = {name: min(values) for name, values in times.items()}
    out.update({f"{name} median": statistics.median(values) for name, values in times.items()})
    out["paired ratio"] = statistics.median(p / f for p, f in zip(times["plain"], times["pyfory"]))
    return out


# ---- report ---------------------------------------------------------------------------------
def fmt_time(t: Optional[float]) -> str:
    if t is None:
        return "n/a"
    return f"{t * 1000:.1f} ms" if t < 10 else f"{t:.2f} s"


def ratio(other: Optional[float], ours: Optional[float]) -> str:
    if other is None or ours is None:
        return "n/a"
    return f"{other / ours:.2f}x"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start-method", default="spawn",
                        choices=multiprocessing.get_all_start_methods())
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args(argv)
    repeat = 2 if args.quick else 5

    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"start method {args.start_method!r}, best of {repeat}")
    makers = make_executors(args.start_method)
    others = [name for name in makers if name != "pyfory"]

    rows = []
    tiny = bench_tiny_tasks(makers, args.tasks, repeat)
    for kind in ("module function", "closure"):
        rows.append((f"{args.tasks:,} tiny tasks, {kind}",
                     {name: tiny[name][kind] for name in makers}))
    big = bench_big_array(makers, args.mb, max(2, repeat - 2))
    rows.append((f"{args.mb} MB numpy array there and back", big))

    header = ["workload", "pyfory"] + others + [f"{name} / pyfory" for name in others]
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for label, times in rows:
        cells = [label, fmt_time(times.get("pyfory"))]
        cells += [fmt_time(times.get(name)) for name in others]
        cells += [ratio(times.get(name), times.get("pyfory")) for name in others]
        print("| " + " | ".join(cells) + " |")

    print()
    print("| workload | plain multiprocessing (median) | with install() (median) | "
          "plain / install (median of per-turn ratios) | (best times) |")
    print("|---|---|---|---|---|")
    # ints: the fixed cost of a map call (thread hand-offs, the same for both) weighs
    # most there; records: serialization is a larger share of the time
    for kind, n, reps in (("ints", args.items, 6 * repeat), ("ints", 10 * args.items, 2 * repeat),
                          ("records", args.items, 3 * repeat)):
        pool = bench_pool_map(args.start_method, small_items(kind, n), reps)
        label = "ints" if kind == "ints" else "3-key dicts"
        print(f"| Pool.map over {n:,} {label} ({reps} runs each, in turns) | "
              f"{fmt_time(pool['plain median'])} | {fmt_time(pool['pyfory median'])} | "
              f"{pool['paired ratio']:.2f}x | "
              f"{ratio(pool['plain'], pool['pyfory'])} |")


if __name__ == "__main__":
    main()
