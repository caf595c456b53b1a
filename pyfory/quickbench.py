"""``python -m pyfory bench``: time pyfory against pickle (and cloudpickle) on this machine.

Self-contained (it works from an installed package; the repository's ``bench/`` folder
has the full suite). For each workload the value is built once and every contender's
round trip is checked before anything is timed; then each ``dumps(obj)`` and
``loads(payload)`` gets a loop count from an autorange (like ``timeit``: grow it until
one run lasts ``min_time``) and is run ``repeats`` times, interleaved between the
contenders so that drift on a busy machine hits both alike; the figure is the median
time per call. The garbage collector is off while timing, as in ``timeit``.

Ratios: ``x dumps`` and ``x loads`` are the baseline's time over pyfory's (> 1: pyfory is
faster); ``size o/b`` is pyfory's payload size over the baseline's (< 1: pyfory's is
smaller). Geometric means close the table. Data workloads are compared with pickle
(protocol 5, the C implementation); functions, closures and local classes -- which
pickle cannot serialize -- with cloudpickle, when it is installed.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import pickle
import platform
import random
import statistics
import sys
import timeit
from typing import Any, Callable, Dict, List, Optional, Sequence

PICKLE_PROTOCOL = 5
DEFAULT_REPEATS, DEFAULT_MIN_TIME = 7, 0.2
QUICK_REPEATS, QUICK_MIN_TIME = 3, 0.02


# ---- classes the object workloads use (module level: pickle names them by reference) ------
@dataclasses.dataclass
class Order:
    id: int
    customer: str
    price: float
    quantity: int
    paid: bool
    note: Optional[str] = None


class PlainOrder:
    def __init__(self, id, customer, price, quantity, paid, note=None):
        self.id = id
        self.customer = customer
        self.price = price
        self.quantity = quantity
        self.paid = paid
        self.note = note

    def __eq__(self, other):
        return type(other) is type(self) and vars(other) == vars(self)

    __hash__ = None


def _order_args(i: int):
    return (i, f"customer{i % 500}", round(i * 0.37 % 1000, 2), i % 10 + 1, i % 2 == 0,
            None if i % 3 else f"note {i}")


# ---- workloads ---------------------------------------------------------------------------
@dataclasses.dataclass
class Workload:
    name: str
    make: Callable[[], Any]
    description: str
    refs: Sequence[bool] = (False, True)
    strict: bool = True
    register: Sequence[type] = ()
    baseline: str = "pickle"
    check: Optional[Callable[[Any, Any], bool]] = None


def deep_equal(a, b) -> bool:
    """Equality that also requires the same types inside containers and dict order."""
    ta = type(a)
    if ta is not type(b):
        return False
    if ta is list or ta is tuple:
        return len(a) == len(b) and all(deep_equal(x, y) for x, y in zip(a, b))
    if ta is dict:
        return (len(a) == len(b) and deep_equal(list(a), list(b))
                and all(deep_equal(v, b[k]) for k, v in a.items()))
    if ta is float:
        return a == b or (a != a and b != b)
    return a == b


def _same_results(*args):
    def check(original, loaded) -> bool:
        if callable(original):
            original, loaded = [original], [loaded]
        return len(original) == len(loaded) and all(f(*args) == g(*args) for f, g in zip(original, loaded))
    return check


def _int_list():
    rng = random.Random(1)
    return [rng.randrange(1_000) if rng.random() < 0.5 else rng.randint(-(2**40), 2**40)
            for _ in range(100_000)]


def _float_list():
    rng = random.Random(2)
    return [rng.uniform(-1e6, 1e6) for _ in range(100_000)]


def _records():
    rng = random.Random(3)
    cities = ["Berlin", "Lisbon", "Osaka", "Lima", "Nairobi", "Toronto"]
    records = [{
        "id": i, "name": f"user {i}", "email": f"user{i}@example.com", "active": rng.random() < 0.8,
        "balance": round(rng.uniform(0, 10_000), 2), "manager_id": None if i % 7 == 0 else rng.randrange(2_000),
        "tags": rng.sample(["admin", "beta", "vip", "trial", "eu", "us"], rng.randint(0, 3)),
        "address": {"city": rng.choice(cities), "zip": f"{rng.randint(10_000, 99_999)}",
                    "geo": {"lat": rng.uniform(-90, 90), "lng": rng.uniform(-180, 180)}},
    } for i in range(2_000)]
    return json.loads(json.dumps(records))   # shares key strings, as parsed JSON does


def _tuples():
    return [(i, f"name{i}", i * 0.5, i % 3 == 0, None) if i % 2 else (f"k{i}", -i) for i in range(10_000)]


def _shared():
    shared = [list(range(10)) for _ in range(100)]
    return [shared[i % 100] for i in range(5_000)]


def _lambda():
    return lambda x: 10 * x + 1


def _closures():
    def make(i):
        scale, label = i * 2, f"c{i}"

        def closure(x):
            return (label, scale * x)
        return closure
    return [make(i) for i in range(100)]


def _same_local_instances(original, loaded) -> bool:
    return (len(original) == len(loaded)
            and all(type(a).__qualname__ == type(b).__qualname__ and vars(a) == vars(b)
                    and a.total() == b.total() for a, b in zip(original, loaded)))


def _local_class():
    class Item:
        def __init__(self, sku, qty, price):
            self.sku, self.qty, self.price = sku, qty, price

        def total(self):
            return self.qty * self.price
    return [Item(f"SKU{i}", i % 5, i * 0.25) for i in range(1_000)]


def _numpy_array():
    import numpy as np

    return np.arange(1_000_000, dtype=np.float64)


def _numpy_check(a, b) -> bool:
    return type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape and bool((a == b).all())


def workloads() -> List[Workload]:
    wls = [
        Workload("small_dict", lambda: {"id": 42, "name": "alice", "active": True},
                 "small 3-key dict (per-call overhead)"),
        Workload("str_dict_10k", lambda: {f"key{i}": f"value{i}" for i in range(10_000)}, "dict of 10,000 str->str"),
        Workload("int_list_100k", _int_list, "list of 100,000 ints"),
        Workload("float_list_100k", _float_list, "list of 100,000 floats"),
        Workload("json_records_2k", _records, "2,000 JSON-like records (nested dicts and lists)"),
        Workload("tuples_10k", _tuples, "list of 10,000 mixed tuples"),
        Workload("bytes_1mb", lambda: random.Random(4).randbytes(1 << 20), "1 MiB of bytes"),
        Workload("shared_lists_5k", _shared, "5,000 references to 100 shared lists", refs=(True,)),
        Workload("dataclasses_5k", lambda: [Order(*_order_args(i)) for i in range(5_000)],
                 "5,000 dataclass instances", register=(Order,)),
        Workload("objects_5k", lambda: [PlainOrder(*_order_args(i)) for i in range(5_000)],
                 "5,000 plain objects with __dict__", register=(PlainOrder,)),
        Workload("lambda", _lambda, "a lambda (by value)", refs=(True,), strict=False, baseline="cloudpickle",
                 check=_same_results(7)),
        Workload("closures_100", _closures, "100 closures over distinct cells", refs=(True,), strict=False,
                 baseline="cloudpickle", check=_same_results(7)),
        Workload("local_class_1k", _local_class, "a local class (by value) and 1,000 instances", refs=(True,),
                 strict=False, baseline="cloudpickle", check=_same_local_instances),
    ]
    try:
        import numpy  # noqa: F401

        wls.append(Workload("numpy_1m_float64", _numpy_array, "numpy array of 1,000,000 float64 (in band)",
                            check=_numpy_check))
    except ImportError:
        pass
    return wls


# ---- contenders --------------------------------------------------------------------------
class Codec:
    def __init__(self, name, dumps, loads):
        self.name = name
        self.dumps = dumps
        self.loads = loads


def fory_codec(wl: Workload, ref: bool) -> Codec:
    import pyfory

    fory = pyfory.Fory(ref=ref, strict=wl.strict)
    for cls in wl.register:
        fory.register(cls)
    return Codec(f"pyfory(ref={ref})", fory.dumps, fory.loads)


def baselines() -> Dict[str, Codec]:
    found = {"pickle": Codec("pickle", lambda o: pickle.dumps(o, PICKLE_PROTOCOL), pickle.loads)}
    try:
        import cloudpickle

        found["cloudpickle"] = Codec("cloudpickle", lambda o: cloudpickle.dumps(o, PICKLE_PROTOCOL),
                                     cloudpickle.loads)
    except ImportError:
        pass
    return found


class Measured:
    """One timed callable: autoranged loop count, then per-call times of each repeat
    (timeit turns the garbage collector off while timing unless keep_gc)."""

    def __init__(self, fn: Callable[[], Any], keep_gc: bool = False):
        self.timer = timeit.Timer(stmt=fn, setup=gc.enable if keep_gc else "pass")
        self.number = 1
        self.times: List[float] = []

    def autorange(self, min_time: float) -> None:
        number = 1
        while True:
            for step in (1, 2, 5):
                n = number * step
                if self.timer.timeit(n) >= min_time:
                    self.number = n
                    return
            number *= 10

    def run_once(self) -> None:
        self.times.append(self.timer.timeit(self.number) / self.number)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def _verify(wl: Workload, codec: Codec, obj) -> bytes:
    payload = codec.dumps(obj)
    check = wl.check or deep_equal
    if not check(obj, codec.loads(payload)):
        raise AssertionError(f"{codec.name}: the round trip of {wl.name} is not equal to the original")
    return payload


def run_workload(wl: Workload, repeats: int, min_time: float, all_cloudpickle: bool,
                 log: Callable[[str], None]) -> List[Dict[str, Any]]:
    obj = wl.make()
    bases = baselines()
    wanted = [wl.baseline] + (["cloudpickle"] if all_cloudpickle and wl.baseline != "cloudpickle" else [])
    contenders: List[Codec] = []
    payloads: Dict[str, bytes] = {}
    for ref in wl.refs:
        codec = fory_codec(wl, ref)
        payloads[codec.name] = _verify(wl, codec, obj)
        contenders.append(codec)
    ours = list(contenders)
    used = []
    for name in wanted:
        codec = bases.get(name)
        if codec is None:
            log(f"  {name} is not installed: {wl.name} has no baseline")
            continue
        try:
            payloads[codec.name] = _verify(wl, codec, obj)
        except Exception as e:  # a baseline that cannot do it: report, keep going
            log(f"  {name} cannot round-trip {wl.name}: {type(e).__name__}: {e}")
            continue
        contenders.append(codec)
        used.append(codec)
    timers = {}
    for c in contenders:
        dumps, loads, data = c.dumps, c.loads, payloads[c.name]
        timers[c.name] = (Measured(lambda d=dumps: d(obj)), Measured(lambda lo=loads, p=data: lo(p)))
    for pair in timers.values():
        for m in pair:
            m.autorange(min_time)
    for _ in range(repeats):
        for pair in timers.values():
            for m in pair:
                m.run_once()
    rows = []
    for mine in ours:
        md, ml = timers[mine.name]
        if not used:
            rows.append({"workload": wl.name, "ours": mine.name, "baseline": None,
                         "dumps": md.median, "loads": ml.median, "size": len(payloads[mine.name])})
        for base in used:
            bd, bl = timers[base.name]
            rows.append({
                "workload": wl.name, "ours": mine.name, "baseline": base.name,
                "dumps": md.median, "loads": ml.median, "size": len(payloads[mine.name]),
                "base_dumps": bd.median, "base_loads": bl.median, "base_size": len(payloads[base.name]),
                "x_dumps": bd.median / md.median, "x_loads": bl.median / ml.median,
                "size_ratio": len(payloads[mine.name]) / len(payloads[base.name]),
            })
    return rows


# ---- formatting ----------------------------------------------------------------------------
def fmt_time(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _ratio(r: Optional[float], suffix: str = "x") -> str:
    return "-" if r is None else f"{r:.2f}{suffix}"


def geomean(values) -> Optional[float]:
    values = [v for v in values if v]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


HEADERS = ["workload", "ours", "vs", "dumps ours", "dumps base", "x dumps", "loads ours", "loads base",
           "x loads", "size ours", "size base", "size o/b"]


def table(rows: List[Dict[str, Any]]) -> List[str]:
    body = []
    for r in rows:
        body.append([r["workload"], r["ours"].replace("pyfory(", "").rstrip(")"), r["baseline"] or "-",
                     fmt_time(r["dumps"]), fmt_time(r.get("base_dumps")), _ratio(r.get("x_dumps")),
                     fmt_time(r["loads"]), fmt_time(r.get("base_loads")), _ratio(r.get("x_loads")),
                     f"{r['size']:,}", f"{r['base_size']:,}" if r.get("base_size") else "-",
                     _ratio(r.get("size_ratio"), "")])
    foot = []
    for base in ("pickle", "cloudpickle"):
        group = [r for r in rows if r["baseline"] == base]
        if group:
            foot.append([f"geomean (n={len(group)})", "", base, "", "", _ratio(geomean(r["x_dumps"] for r in group)),
                         "", "", _ratio(geomean(r["x_loads"] for r in group)), "", "",
                         _ratio(geomean(r["size_ratio"] for r in group), "")])
    widths = [max(len(x[i]) for x in [HEADERS, *body, *foot]) for i in range(len(HEADERS))]

    def line(cells):
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [line(HEADERS), rule, *map(line, body), *([rule, *map(line, foot)] if foot else [])]


def environment(repeats: int, min_time: float) -> Dict[str, Any]:
    import pyfory

    try:
        import cloudpickle
        cp = getattr(cloudpickle, "__version__", "?")
    except ImportError:
        cp = None
    return {"pyfory": getattr(pyfory, "__version__", "?"), "python": sys.version.split()[0],
            "platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "pickle_protocol": PICKLE_PROTOCOL, "cloudpickle": cp, "repeats": repeats, "min_time": min_time}


def run(quick: bool = False, patterns: Sequence[str] = (), json_path: Optional[str] = None,
        repeats: Optional[int] = None, min_time: Optional[float] = None, all_cloudpickle: bool = False,
        out=None) -> int:
    out = out or sys.stdout
    repeats = repeats or (QUICK_REPEATS if quick else DEFAULT_REPEATS)
    min_time = min_time or (QUICK_MIN_TIME if quick else DEFAULT_MIN_TIME)
    selected = [w for w in workloads() if not patterns or any(p in w.name for p in patterns)]
    if not selected:
        print(f"no workload matches {list(patterns)}; workloads: "
              + ", ".join(w.name for w in workloads()), file=sys.stderr)
        return 2
    env = environment(repeats, min_time)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    # warm the C allocator once (large blocks otherwise start as fresh mmaps)
    block = bytearray(16 << 20)
    del block
    rows: List[Dict[str, Any]] = []
    failures = []
    was_enabled = gc.isenabled()
    for i, wl in enumerate(selected, 1):
        log(f"[{i}/{len(selected)}] {wl.name}: {wl.description}")
        try:
            rows.extend(run_workload(wl, repeats, min_time, all_cloudpickle, log))
        except Exception as e:  # report and continue with the next workload
            failures.append((wl.name, f"{type(e).__name__}: {e}"))
            log(f"  FAILED: {type(e).__name__}: {e}")
        finally:
            if was_enabled:
                gc.enable()
            gc.collect()
    head = (f"pyfory {env['pyfory']} vs pickle (protocol {PICKLE_PROTOCOL})"
            + (f" and cloudpickle {env['cloudpickle']}" if env["cloudpickle"] else " (cloudpickle not installed)")
            + f" -- Python {env['python']} on {env['platform']}")
    print(head, file=out)
    print(f"median of {repeats} repeats (each >= {min_time} s) per call. x dumps / x loads = baseline time / "
          "pyfory time (> 1: pyfory faster); size o/b = pyfory bytes / baseline bytes (< 1: smaller)", file=out)
    print("", file=out)
    for line in table(rows):
        print(line, file=out)
    for name, msg in failures:
        print(f"FAILED {name}: {msg}", file=out)
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"meta": env, "rows": rows, "failures": failures}, f, indent=2)
    return 1 if failures else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(quick="--quick" in sys.argv))
