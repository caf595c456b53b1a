"""concurrent.futures with pyfory: closures as tasks, big arrays through shared memory.

    python examples/futures_example.py

The story: a notebook-style analysis fans work out to processes. The tasks are closures
and lambdas (the standard library's executor cannot send them), the data is a large numpy
array (it travels through shared memory, not through the pipe), and a failing task comes
back with the worker's traceback, as with the standard library.
"""

from __future__ import annotations

import os
import time

from pyfory.integrations.futures import ProcessPoolExecutor


def pf_segments():
    """Shared memory segments of pyfory executors (Linux lists them in /dev/shm)."""
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith("pf_")) if os.path.isdir(
        "/dev/shm") else []


def main() -> None:
    try:
        import numpy as np
    except ImportError:
        np = None

    with ProcessPoolExecutor(max_workers=2, initializer=lambda: print(
            f"  worker {os.getpid()} ready", flush=True)) as pool:
        weights = {"a": 0.5, "b": 2.0}
        score = lambda key, value: weights[key] * value       # noqa: E731  a closure
        futures = [pool.submit(score, k, v) for k, v in [("a", 10), ("b", 3), ("a", 4)]]
        print("closures:", [f.result() for f in futures])

        start = time.perf_counter()
        results = list(pool.map(lambda x: x * x, range(10_000), chunksize=500))
        print(f"map over 10,000 items: sum={sum(results)} "
              f"in {time.perf_counter() - start:.3f} s")

        if np is not None:
            data = np.random.default_rng(1).random((2000, 2500))   # 40 MB
            start = time.perf_counter()
            column_means = pool.submit(lambda a: a.mean(axis=0), data).result()
            normalized = pool.submit(lambda a: a - a.mean(), data).result()
            print(f"40 MB array to a worker and a 40 MB result back: "
                  f"{time.perf_counter() - start:.3f} s, means[:3]={column_means[:3].round(3)}, "
                  f"result writable={normalized.flags.writeable}")

        def check(x):
            if x > 2:
                raise ValueError(f"{x} is too large")
            return x

        try:
            list(pool.map(check, [1, 2, 3]))
        except ValueError as e:
            print(f"a task failed: {e!r}; the worker's traceback is attached:")
            lines = [line for line in str(e.__cause__).splitlines() if line.strip(' "')]
            print("   ", lines[-2].strip(), "/", lines[-1].strip())
    print("shared memory segments left after shutdown:", pf_segments())


if __name__ == "__main__":
    main()
