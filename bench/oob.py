"""Out-of-band buffers against pickle protocol 5: a large float64 array and a
1,000-column DataFrame, in band and out of band.

    python bench/oob.py [--quick]

Prints median times and ratios (pickle time / pyfory time: > 1 means pyfory is faster).
Out of band, both write only a small header and hand the array's memory to the
callback, so the time must not depend on the array's size: the script also times
1 MB, 10 MB and 100 MB arrays to show it.
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyfory  # noqa: E402
from pyfory._extras import require  # noqa: E402

np = require("numpy", "bench/oob.py", extra="bench")

try:
    import pandas as pd
except ImportError:  # pragma: no cover
    pd = None


def compare(p_fn, f_fn, repeat: int, number: int = 1):
    """Median time of one call of each function. The two are timed alternately, run
    after run (each run: `number` calls), so that a noisy machine slows both alike."""
    p_times, f_times = [], []
    gc_was = gc.isenabled()
    gc.disable()
    try:
        p_fn()                                 # warm up
        f_fn()
        for _ in range(repeat):
            for fn, times in ((p_fn, p_times), (f_fn, f_times)):
                t0 = time.perf_counter()
                for _ in range(number):
                    fn()
                times.append((time.perf_counter() - t0) / number)
                gc.collect()
    finally:
        if gc_was:
            gc.enable()
    return statistics.median(p_times), statistics.median(f_times)


def cases(obj, big: bool):
    """(label, pickle fn, pyfory fn) for dumps and loads, in band and out of band."""
    fory = pyfory.Fory(strict=False, ref=True)

    p_in = pickle.dumps(obj, protocol=5)
    f_in = fory.dumps(obj)
    p_bufs: list = []
    p_oob = pickle.dumps(obj, protocol=5, buffer_callback=p_bufs.append)
    f_bufs: list = []
    f_oob = fory.dumps(obj, buffer_callback=f_bufs.append)
    assert len(p_bufs) == len(f_bufs), (len(p_bufs), len(f_bufs))

    def p_dump_oob():
        pickle.dumps(obj, protocol=5, buffer_callback=[].append)

    def f_dump_oob():
        fory.dumps(obj, buffer_callback=[].append)

    rows = [
        ("dumps in band", lambda: pickle.dumps(obj, protocol=5), lambda: fory.dumps(obj), len(p_in), len(f_in)),
        ("loads in band", lambda: pickle.loads(p_in), lambda: fory.loads(f_in), len(p_in), len(f_in)),
        ("dumps out of band", p_dump_oob, f_dump_oob, len(p_oob), len(f_oob)),
        ("loads out of band", lambda: pickle.loads(p_oob, buffers=p_bufs),
         lambda: fory.loads(f_oob, buffers=f_bufs), len(p_oob), len(f_oob)),
    ]
    for label, p_fn, f_fn, p_size, f_size in rows:
        in_band = "in band" in label
        repeat = (9 if big else 15) if in_band else 15
        number = 1 if in_band else 200
        p_t, f_t = compare(p_fn, f_fn, repeat, number)
        yield label, p_t, f_t, p_size, f_size


def fmt_time(s: float) -> str:
    if s >= 1e-3:
        return f"{s * 1e3:9.2f} ms"
    return f"{s * 1e6:9.2f} us"


def report(title: str, obj, big: bool) -> list:
    print(f"\n{title}")
    print(f"  {'':20} {'pickle-5':>12} {'pyfory':>12} {'ratio':>7}   payload bytes (pickle / pyfory)")
    out = []
    for label, p_t, f_t, p_size, f_size in cases(obj, big):
        ratio = p_t / f_t
        out.append((title, label, ratio))
        print(f"  {label:20} {fmt_time(p_t)} {fmt_time(f_t)} {ratio:7.2f}   {p_size:,} / {f_size:,}")
    return out


def size_independence() -> None:
    print("\nout of band, by array size (dumps + loads, one round trip)")
    print(f"  {'size':>8} {'pickle-5':>12} {'pyfory':>12} {'ratio':>7}")
    fory = pyfory.Fory(strict=False)
    for mb in (1, 10, 100):
        arr = np.ones(mb * (1 << 20) // 8)

        def p_rt(arr=arr):
            bufs: list = []
            pickle.loads(pickle.dumps(arr, protocol=5, buffer_callback=bufs.append), buffers=bufs)

        def f_rt(arr=arr):
            bufs: list = []
            fory.loads(fory.dumps(arr, buffer_callback=bufs.append), buffers=bufs)

        p_t, f_t = compare(p_rt, f_rt, 15, 200)
        print(f"  {mb:>5} MB {fmt_time(p_t)} {fmt_time(f_t)} {p_t / f_t:7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 MB array, 100-row frame")
    args = parser.parse_args()
    mb = 10 if args.quick else 100
    arr = np.random.default_rng(0).standard_normal(mb * 1_000_000 // 8)
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}"
          + (f", pandas {pd.__version__}" if pd is not None else ", pandas not installed"))
    results = report(f"float64 array, {arr.nbytes / 1e6:.0f} MB", arr, big=True)
    if pd is not None:
        rows = 100 if args.quick else 10_000
        df = pd.DataFrame(np.random.default_rng(1).standard_normal((rows, 1000)),
                          columns=[f"col{i}" for i in range(1000)])
        results += report(f"DataFrame, 1,000 float64 columns x {rows:,} rows "
                          f"({df.memory_usage().sum() / 1e6:.0f} MB)", df, big=True)
        mixed = pd.DataFrame({f"c{i}": (np.arange(rows, dtype=np.int64) if i % 3 == 0 else
                                        np.arange(rows, dtype=np.float32) if i % 3 == 1 else
                                        np.arange(rows) % 2 == 0) for i in range(1000)})
        results += report(f"DataFrame, 1,000 columns of int64/float32/bool x {rows:,} rows",
                          mixed, big=True)
    size_independence()
    print("\nratio = pickle time / pyfory time (> 1: pyfory is faster)")


if __name__ == "__main__":
    main()
