"""multiprocessing with pyfory: lambdas, closures and local classes in Pool tasks.

    python examples/multiprocessing_example.py

The story: a script cleans up sensor readings in parallel. Its per-task logic is built
at run time (a closure over a threshold, a small local class for the output), which plain
pickle refuses to send to worker processes. One call, ``install()``, makes multiprocessing
serialize through pyfory; the workers need no set-up. ``uninstall()`` restores plain
pickle exactly.
"""

from __future__ import annotations

import multiprocessing

from pyfory.integrations import multiprocessing as fory_mp


def make_cleaner(threshold: float):
    class Reading:                                  # a local class: pickle cannot send it
        def __init__(self, sensor: str, value: float, flagged: bool):
            self.sensor, self.value, self.flagged = sensor, value, flagged

        def __repr__(self):
            flag = " (flagged)" if self.flagged else ""
            return f"Reading({self.sensor}={self.value:.1f}{flag})"

    class OutOfRange(ValueError):                   # a local exception class
        pass

    def clean(item):                                # a closure over threshold
        sensor, value = item
        if value < 0:
            raise OutOfRange(f"{sensor}: negative reading {value}")
        return Reading(sensor, value, value > threshold)

    return clean, OutOfRange


def consumer(queue):
    """A separate Process that receives lambdas through a Queue."""
    while True:
        task = queue.get()
        if task is None:
            break
        label, fn, arg = task
        print(f"  consumer process: {label}({arg}) = {fn(arg)}")


def main() -> None:
    readings = [("t1", 21.5), ("t2", 38.2), ("t3", 19.9), ("t4", 41.0)]
    clean, OutOfRange = make_cleaner(threshold=37.5)
    ctx = multiprocessing.get_context("spawn")      # the strictest case: fresh interpreters

    try:
        with ctx.Pool(2) as pool:
            pool.map(clean, readings)
    except Exception as e:
        print(f"plain pickle: {type(e).__name__}: {e}")

    fory_mp.install()                               # Fory(ref=True, strict=False) by default
    try:
        with ctx.Pool(2) as pool:
            print("Pool.map with a closure and a local class:")
            print(" ", pool.map(clean, readings))
            scale = 1.8
            print("Pool.map with a lambda:", pool.map(lambda c: round(c * scale + 32, 1), [20, 37]))
            try:
                pool.apply(clean, (("t5", -3.0),))
            except OutOfRange as e:                 # the same local class, raised in a worker
                print(f"a worker raised {type(e).__name__}: {e}")

        queue = ctx.Queue()
        process = ctx.Process(target=consumer, args=(queue,))   # the Queue itself: stock pickle
        process.start()
        offset = 100
        queue.put(("add offset", lambda x: x + offset, 5))
        queue.put(("square", lambda x: x * x, 12))
        queue.put(None)
        process.join()
    finally:
        fory_mp.uninstall()
    print("after uninstall(), multiprocessing uses plain pickle again:",
          not fory_mp.is_installed())


if __name__ == "__main__":
    main()
