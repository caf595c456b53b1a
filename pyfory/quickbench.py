"""``python -m pyfory bench``: time pyfory against pickle (and cloudpickle) on this machine.

This module is the benchmark suite itself: the named workloads, the contenders and the
measuring loop. ``bench/workloads.py``, ``bench/compare.py`` and ``bench/report.py`` in
the repository import them from here, so the quick bench of an installed package and
the published report time the same values the same way (only the number and length of
the timed runs differ).

Method. For each workload the object is built once and every contender's round trip is
verified (type-strict equality, or the workload's own check) before anything is timed.
Each timed callable (``dumps(obj)`` or ``loads(payload)``) gets a loop count from an
autorange (like ``timeit``'s: grow the count until one run takes at least ``min_time``),
then is run ``repeats`` times; the figure is the MEDIAN per-call time. The runs of all
contenders of a workload alternate, round by round (ours, pickle's, ours, ...), so drift
on a busy machine hits both sides alike. The garbage collector is off while timing, as in
``timeit`` (``keep_gc`` keeps it on), and the C allocator is settled first
(``settle_allocator``). pickle's numbers do not depend on ``ref``, so they are measured
once per workload and shown on both rows. ``spread`` is the largest interquartile range
over the median among a row's timings: ratios closer to 1 than that are noise.

Ratios: ``x dumps`` and ``x loads`` are the baseline's time over ours (> 1: pyfory is
faster); ``size o/b`` is our payload over the baseline's (< 1: pyfory is smaller). The
geometric means per ``ref`` setting close the table. Data workloads are compared with
pickle (protocol 5, the C implementation); functions, closures and local classes -- which
pickle cannot serialize -- with cloudpickle, when it is installed; the plain-data workloads
of issue 21 also with msgspec (MessagePack), orjson and msgpack, when installed, with
``ref=False`` only (they keep no shared references).

Adding a workload
-----------------
Write a module-level function that returns the object and decorate it with
``@workload``; the function's name is the workload's name (``-k`` selects by
substring)::

    @workload(issue=3, description="5,000 dataclass instances", setup=register(Order))
    def dataclasses_5k():
        return [Order(...) for i in range(5_000)]

Options of ``@workload``:

``issue``        the issue that asked for it (documentation; also shown by ``--list``).
``description``  one line for humans.
``needs_ref``    True if the value has shared or cyclic structure that only
                 ``Fory(ref=True)`` reproduces; it then runs with ref=True only.
                 Default: run with both ``ref=False`` and ``ref=True``.
``strict``       False if it needs ``Fory(strict=False)`` (functions, classes by value).
``setup``        ``setup(fory)`` is called on every new ``Fory`` before use: register the
                 workload's classes for strict mode there. ``register(*classes)`` makes one.
``baselines``    which of ``BASELINES`` to compare against (those not installed are left
                 out). pickle is protocol 5, C implementation.
``check``        ``check(original, loaded) -> bool`` when type-strict equality
                 (``deep_equal``) is not the right test, e.g. for functions.
``pending``      "issue N" while pyfory cannot serialize the value yet: a pending
                 workload whose pyfory round trip fails is reported as pending and
                 skipped instead of failing the run.

Classes the workloads use are defined at module level here, so that pickle can import
them by name; local classes and lambdas are created inside the workload function on
purpose, since that is what travels by value. Every builder is deterministic (seeded),
so sizes are comparable between runs.
"""

from __future__ import annotations

import datetime
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
from collections import namedtuple
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple


def _cloudpickle():
    """The cloudpickle module (an optional baseline), or None; imported on first use."""
    try:
        import cloudpickle
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return cloudpickle

PICKLE_PROTOCOL = 5
# serializers of plain data only (dicts, lists, str, int, float, bool, None), compared on the
# workloads of issue 21 when installed: pip install "pyfory[bench]"
PLAIN_DATA = ("msgspec", "orjson", "msgpack")
BASELINES = ("pickle", "cloudpickle") + PLAIN_DATA
DEFAULT_REPEATS, DEFAULT_MIN_TIME = 7, 0.2
QUICK_REPEATS, QUICK_MIN_TIME = 5, 0.05


# ---- classes the object workloads use (module level: pickle names them by reference) ------
@dataclass
class Order:
    id: int
    customer: str
    price: float
    quantity: int
    paid: bool
    note: Optional[str] = None


def _init_order(self, id, customer, price, quantity, paid, note=None):
    self.id = id
    self.customer = customer
    self.price = price
    self.quantity = quantity
    self.paid = paid
    self.note = note


class PlainOrder:
    __init__ = _init_order

    def __eq__(self, other):
        return type(other) is type(self) and vars(other) == vars(self)

    __hash__ = None


class SlotOrder:
    """The same record as a class with ``__slots__`` (no ``__dict__``)."""

    __slots__ = ("id", "customer", "price", "quantity", "paid", "note")
    __init__ = _init_order

    def _fields(self):
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other):
        return type(other) is type(self) and other._fields() == self._fields()

    __hash__ = None


OrderTuple = namedtuple("OrderTuple", "id customer price quantity paid note")


# ---- the registry ----------------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    name: str
    make: Callable[[], Any]
    description: str
    issue: int
    needs_ref: bool = False
    strict: bool = True
    setup: Optional[Callable[[Any], None]] = None
    baselines: Tuple[str, ...] = ("pickle",)
    check: Optional[Callable[[Any, Any], bool]] = None
    pending: Optional[str] = None

    @property
    def refs(self) -> Tuple[bool, ...]:
        """The ``ref`` settings this workload runs with."""
        return (True,) if self.needs_ref else (False, True)

    def verify(self, original, loaded) -> bool:
        check = self.check or deep_equal
        return bool(check(original, loaded))


WORKLOADS: Dict[str, Workload] = {}


def workload(*, issue: int, description: str, needs_ref: bool = False, strict: bool = True,
             setup: Optional[Callable[[Any], None]] = None,
             baselines: Sequence[str] = ("pickle",),
             check: Optional[Callable[[Any, Any], bool]] = None,
             pending: Optional[str] = None):
    """Register the decorated builder function as a workload named after it."""
    unknown = set(baselines) - set(BASELINES)
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}")

    def decorate(fn: Callable[[], Any]) -> Callable[[], Any]:
        if fn.__name__ in WORKLOADS:
            raise ValueError(f"workload {fn.__name__!r} is defined twice")
        WORKLOADS[fn.__name__] = Workload(
            name=fn.__name__, make=fn, description=description, issue=issue,
            needs_ref=needs_ref, strict=strict, setup=setup, baselines=tuple(baselines),
            check=check, pending=pending)
        return fn

    return decorate


def register(*classes) -> Callable[[Any], None]:
    """A ``setup`` hook that registers ``classes`` (default serializers) for strict mode."""

    def setup(fory) -> None:
        for cls in classes:
            fory.register(cls)

    return setup


def select(patterns: Sequence[str] = ()) -> List[Workload]:
    """Workloads whose name contains any of ``patterns`` (all of them if none given)."""
    return [w for w in WORKLOADS.values() if not patterns or any(p in w.name for p in patterns)]


def make_fory(wl: Workload, ref: bool):
    """A Fory configured as ``wl`` needs, with its setup hook applied."""
    import pyfory

    fory = pyfory.Fory(xlang=False, ref=ref, strict=wl.strict)
    if wl.setup is not None:
        wl.setup(fory)
    return fory


# ---- the contenders --------------------------------------------------------------------
class Codec:
    """One serializer under test. ``dumps_thunk(obj)`` / ``loads_thunk(data)`` return the
    zero-argument callables that are timed: one lambda, then straight into the C call,
    the same shape for every contender."""

    name = "?"

    def dumps(self, obj) -> bytes:
        raise NotImplementedError

    def loads(self, data):
        raise NotImplementedError

    def dumps_thunk(self, obj) -> Callable[[], bytes]:
        raise NotImplementedError

    def loads_thunk(self, data) -> Callable[[], Any]:
        raise NotImplementedError


class ForyCodec(Codec):
    def __init__(self, wl: Workload, ref: bool):
        self.ref = ref
        self.fory = make_fory(wl, ref)
        self.name = f"pyfory(ref={ref})"

    def dumps(self, obj):
        return self.fory.dumps(obj)

    def loads(self, data):
        return self.fory.loads(data)

    def dumps_thunk(self, obj):
        dumps = self.fory.dumps
        return lambda: dumps(obj)

    def loads_thunk(self, data):
        loads = self.fory.loads
        return lambda: loads(data)


class PickleCodec(Codec):
    """pickle or cloudpickle at protocol 5 (protocol passed positionally: a keyword or a
    functools.partial would add measurable overhead on small values)."""

    def __init__(self, name: str, module):
        self.name = name
        self.module = module

    def dumps(self, obj):
        return self.module.dumps(obj, PICKLE_PROTOCOL)

    def loads(self, data):
        return self.module.loads(data)

    def dumps_thunk(self, obj):
        dumps, protocol = self.module.dumps, PICKLE_PROTOCOL
        return lambda: dumps(obj, protocol)

    def loads_thunk(self, data):
        loads = self.module.loads
        return lambda: loads(data)


class CallCodec(Codec):
    """A serializer given as its two one-argument calls (encode, decode)."""

    def __init__(self, name: str, dumps: Callable[[Any], bytes], loads: Callable[[Any], Any]):
        self.name = name
        self._dumps = dumps
        self._loads = loads

    def dumps(self, obj):
        return self._dumps(obj)

    def loads(self, data):
        return self._loads(data)

    def dumps_thunk(self, obj):
        dumps = self._dumps
        return lambda: dumps(obj)

    def loads_thunk(self, data):
        loads = self._loads
        return lambda: loads(data)


def _plain_data_codecs() -> Dict[str, Codec]:
    """msgspec (its MessagePack encoder), orjson and msgpack, those that are installed."""
    import importlib

    found: Dict[str, Codec] = {}
    for name in PLAIN_DATA:
        try:
            mod = importlib.import_module("msgspec.msgpack" if name == "msgspec" else name)
        except ImportError:
            continue
        if name == "msgspec":
            found[name] = CallCodec(name, mod.Encoder().encode, mod.Decoder().decode)
        elif name == "orjson":
            found[name] = CallCodec(name, mod.dumps, mod.loads)
        else:
            found[name] = CallCodec(name, mod.packb, mod.unpackb)
    return found


def available_baselines() -> Dict[str, Codec]:
    found: Dict[str, Codec] = {"pickle": PickleCodec("pickle", pickle)}
    cp = _cloudpickle()
    if cp is not None:
        found["cloudpickle"] = PickleCodec("cloudpickle", cp)
    found.update(_plain_data_codecs())
    return found


def baseline_versions() -> Dict[str, Optional[str]]:
    """Version of every optional baseline, None when it is not installed."""
    import importlib

    out: Dict[str, Optional[str]] = {}
    for name in ("cloudpickle",) + PLAIN_DATA:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            out[name] = None
            continue
        version = getattr(mod, "__version__", None) or getattr(mod, "version", None)
        out[name] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version or "?")
    return out


def settle_allocator() -> None:
    """Put the C allocator in the steady state of a long-running process before timing.

    glibc's malloc serves large blocks (128 KiB and up, at first) with fresh mmap()s,
    which cost a page fault per 4 KiB on every call, until the process frees one big
    mmapped block; then it raises its threshold and reuses heap memory. Without this,
    ``pickle.dumps`` of 1 MiB of bytes measured 23 us or 450-700 us on the same machine
    depending only on which workloads ran before it. Allocating and freeing one 16 MiB
    block (below glibc's 32 MiB cap for the dynamic threshold) makes every run start
    from the warm state, whatever ``-k`` selects. Harmless on other allocators.
    """
    block = bytearray(16 << 20)
    del block


# ---- verification ----------------------------------------------------------------------
def deep_equal(a, b) -> bool:
    """Equality that also requires the same types inside builtin containers (so that a
    float that comes back as an int, or a tuple as a list, is caught) and the same dict
    order; NaN equals NaN."""
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


def _same_results(*args) -> Callable[[Any, Any], bool]:
    """``check`` for functions (or lists of them): equal results on ``args``."""

    def check(original, loaded) -> bool:
        if callable(original):
            original, loaded = [original], [loaded]
        return (len(original) == len(loaded)
                and all(f(*args) == g(*args) for f, g in zip(original, loaded)))

    return check


# ======================================================================================
# Issue 2: builtin values
# ======================================================================================
# the workloads of issue 21 are also compared with the plain-data serializers
PLAIN = ("pickle",) + PLAIN_DATA


@workload(issue=2, description="dict of 10,000 str->str (the seed's example)", baselines=PLAIN)
def str_dict_10k():
    return {f"key{i}": f"value{i}" for i in range(10_000)}


@workload(issue=2, description="list of 100,000 ints (half < 1,000, 40% within +-1e6, 10% up to 2**40)",
          baselines=PLAIN)
def int_list_100k():
    rng = random.Random(1)
    out = []
    for _ in range(100_000):
        r = rng.random()
        if r < 0.5:
            out.append(rng.randrange(1_000))
        elif r < 0.9:
            out.append(rng.randint(-1_000_000, 1_000_000))
        else:
            out.append(rng.randint(-(2**40), 2**40))
    return out


@workload(issue=2, description="list of 100,000 floats", baselines=PLAIN)
def float_list_100k():
    rng = random.Random(2)
    return [rng.uniform(-1e6, 1e6) for _ in range(100_000)]


_CITIES = ["Berlin", "Lisbon", "Osaka", "Lima", "Nairobi", "Toronto", "Oslo", "Pune", "Quito", "Perth"]
_TAGS = ["admin", "beta", "vip", "trial", "churned", "eu", "us", "apac", "mobile", "web"]


@workload(issue=2, description="2,000 JSON-like records (nested dicts/lists, str/int/float/bool/None), "
                               "as json.loads returns them", baselines=PLAIN)
def json_records_2k():
    rng = random.Random(3)
    records = []
    for i in range(2_000):
        records.append({
            "id": i,
            "uuid": f"{rng.getrandbits(128):032x}",
            "name": f"user {i}",
            "email": f"user{i}@example.com",
            "active": rng.random() < 0.8,
            "verified": rng.random() < 0.5,
            "balance": round(rng.uniform(0, 10_000), 2),
            "age": rng.randint(18, 90),
            "manager_id": None if i % 7 == 0 else rng.randrange(2_000),
            "tags": rng.sample(_TAGS, rng.randint(0, 4)),
            "address": {
                "street": f"{rng.randint(1, 999)} Main St",
                "city": rng.choice(_CITIES),
                "zip": f"{rng.randint(10_000, 99_999)}",
                "geo": {"lat": rng.uniform(-90, 90), "lng": rng.uniform(-180, 180)},
            },
            "orders": [
                {"sku": f"SKU-{rng.randint(1_000, 9_999)}", "qty": rng.randint(1, 5),
                 "price": round(rng.uniform(1, 500), 2), "shipped": rng.random() < 0.5,
                 "coupon": None}
                for _ in range(rng.randint(0, 3))
            ],
        })
    # Through JSON, so the object looks like real parsed JSON: json.loads shares each
    # repeated key string between records, while values are fresh strings.
    return json.loads(json.dumps(records))


@workload(issue=2, description="list of 10,000 tuples of mixed types and lengths")
def mixed_tuples_10k():
    out = []
    for i in range(10_000):
        k = i % 4
        if k == 0:
            out.append((i, f"name{i}", i * 0.5, i % 3 == 0, None))
        elif k == 1:
            out.append((f"k{i}", -i))
        elif k == 2:
            out.append((i * 1.5, i, "x", True))
        else:
            out.append((i, (i, f"v{i}"), None))
    return out


@workload(issue=2, description="1 MiB of bytes")
def bytes_1mb():
    return random.Random(4).randbytes(1 << 20)


@workload(issue=2, description="small 3-key dict (per-call overhead)", baselines=PLAIN)
def small_dict():
    return {"id": 42, "name": "alice", "active": True}


@workload(issue=21, description="list of 10,000 non-ASCII strings (Latin-1, Greek, CJK, emoji; 5-40 chars)",
          baselines=PLAIN)
def non_ascii_str_10k():
    rng = random.Random(5)
    alphabets = ["àéîõüßçñ", "αβγδεζηθλμπσω", "日本語中文字漢字", "😀🚀🌍🎉"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(5, 40)))
            for alphabet in (alphabets[i % 4] for i in range(10_000))]


@workload(issue=21, description="1,000 small nested lists ([int, str, [float, bool, None]])", baselines=PLAIN)
def nested_lists_1k():
    return [[i, f"item{i}", [i * 0.25, i % 2 == 0, None]] for i in range(1_000)]


NESTED_DEPTH = 40


@workload(issue=2, description=f"100 fresh chains of nested lists, total nesting depth {NESTED_DEPTH}")
def nested_list_depth40():
    # Every level is built fresh: with ref=False a shared sub-list is (legitimately)
    # written once per occurrence, which would measure something else.
    def chain(seed: int):
        node = [seed, f"leaf{seed}", seed * 0.5]  # innermost, at depth NESTED_DEPTH
        for level in range(NESTED_DEPTH - 2):
            node = [level, f"level{level}", [level, level + 1], node]
        return node

    return [chain(i) for i in range(100)]


# ======================================================================================
# Issue 3: objects and classes (classes in bench/py, registered by `setup`)
# Pending until pyfory has default serializers for classes; remove `pending` then.
# ======================================================================================
def _order_args(i: int):
    return (i, f"customer{i % 500}", round(i * 0.37 % 1000, 2), i % 10 + 1, i % 2 == 0,
            None if i % 3 else f"note {i}")


@workload(issue=3, description="5,000 dataclass instances", setup=register(Order))
def dataclasses_5k():
    return [Order(*_order_args(i)) for i in range(5_000)]


@workload(issue=3, description="5,000 plain objects with __dict__", setup=register(PlainOrder))
def plain_objects_5k():
    return [PlainOrder(*_order_args(i)) for i in range(5_000)]


@workload(issue=3, description="5,000 objects with __slots__", setup=register(SlotOrder))
def slotted_objects_5k():
    return [SlotOrder(*_order_args(i)) for i in range(5_000)]


@workload(issue=3, description="list of 2,000 namedtuples", setup=register(OrderTuple))
def namedtuples_2k():
    return [OrderTuple(*_order_args(i)) for i in range(2_000)]


# ======================================================================================
# Issue 4: functions and classes by value, against cloudpickle (pickle cannot do these)
# ======================================================================================
@workload(issue=4, description="a lambda", strict=False, baselines=("cloudpickle",),
          check=_same_results(7))
def lambda_fn():
    return lambda x: 10 * x + 1


@workload(issue=4, description="100 closures over distinct cells", strict=False,
          baselines=("cloudpickle",), check=_same_results(7))
def closures_100():
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


@workload(issue=4, description="local class (by value) and 1,000 of its instances", strict=False,
          baselines=("cloudpickle",), check=_same_local_instances)
def local_class_1k():
    class Item:
        def __init__(self, sku, qty, price):
            self.sku, self.qty, self.price = sku, qty, price

        def total(self):
            return self.qty * self.price

    return [Item(f"SKU{i}", i % 5, i * 0.25) for i in range(1_000)]


# ---- timing ----------------------------------------------------------------------------
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


# ---- results ---------------------------------------------------------------------------
@dataclass
class Side:
    """One contender's figures on one workload: median seconds per call, payload bytes."""

    name: str
    dumps: float
    loads: float
    size: int
    number_dumps: int = 0
    number_loads: int = 0
    dumps_times: List[float] = field(default_factory=list)
    loads_times: List[float] = field(default_factory=list)


@dataclass
class Row:
    workload: str
    ref: bool
    baseline: str
    ours: Side
    base: Optional[Side]

    def spread(self) -> float:
        """Largest relative spread (interquartile range / median) of the row's timings:
        a ratio that differs from 1 by less than this is within the noise."""
        sides = [self.ours] + ([self.base] if self.base else [])
        times = [t for side in sides for t in (side.dumps_times, side.loads_times) if len(t) > 1]
        return max((relative_iqr(t) for t in times), default=0.0)

    def ratio(self, what: str) -> Optional[float]:
        if self.base is None:
            return None
        if what == "size":
            return self.ours.size / self.base.size
        return getattr(self.base, what) / getattr(self.ours, what)


@dataclass
class Outcome:
    workload: str
    status: str  # "ok", "pending", "failed", "pending-passes"
    message: str = ""


@dataclass
class Results:
    meta: Dict[str, Any]
    rows: List[Row] = field(default_factory=list)
    outcomes: List[Outcome] = field(default_factory=list)

    @property
    def failed(self) -> List[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def to_json(self) -> Dict[str, Any]:
        rows = []
        for r in self.rows:
            d = asdict(r)
            d["ratio_dumps"], d["ratio_loads"], d["ratio_size"] = (
                r.ratio("dumps"), r.ratio("loads"), r.ratio("size"))
            d["spread"] = r.spread()
            rows.append(d)
        return {"meta": self.meta, "rows": rows, "geomeans": geomeans(self.rows),
                "outcomes": [asdict(o) for o in self.outcomes]}

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Results":
        def side(d):
            return Side(**d) if d else None

        rows = [Row(r["workload"], r["ref"], r["baseline"], side(r["ours"]), side(r["base"]))
                for r in data["rows"]]
        return cls(data["meta"], rows, [Outcome(**o) for o in data["outcomes"]])


def relative_iqr(times: Sequence[float]) -> float:
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return (q3 - q1) / statistics.median(times)


def geomean(values: Sequence[float]) -> Optional[float]:
    values = [v for v in values if v is not None and v > 0]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def geomeans(rows: Sequence[Row]) -> List[Dict[str, Any]]:
    """Geometric means of each ratio column, per baseline: per ref setting and overall."""
    out = []
    order = {name: i for i, name in enumerate(BASELINES)}
    for baseline in sorted({r.baseline for r in rows if r.base is not None},
                           key=lambda b: (order.get(b, 9), b)):
        mine = [r for r in rows if r.baseline == baseline and r.base is not None]
        groups = [(f"ref={ref}", [r for r in mine if r.ref is ref]) for ref in (False, True)]
        groups.append(("all", mine))
        for label, group in groups:
            if group:
                out.append({"baseline": baseline, "group": label, "n": len(group),
                            **{what: geomean([r.ratio(what) for r in group])
                               for what in ("dumps", "loads", "size")}})
    return out


# ---- running ---------------------------------------------------------------------------
def environment(repeats: int, min_time: float, keep_gc: bool) -> Dict[str, Any]:
    import pyfory

    cp = _cloudpickle()
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or "",
        "cpu_count": os.cpu_count(),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "pyfory": getattr(pyfory, "__version__", "?"),
        "pyfory_path": os.path.dirname(pyfory.__file__),
        "pickle_protocol": PICKLE_PROTOCOL,
        "cloudpickle": getattr(cp, "__version__", None) if cp is not None else None,
        "baseline_versions": baseline_versions(),
        "repeats": repeats,
        "min_time": min_time,
        "gc_enabled_while_timing": keep_gc,
        "statistic": "median of repeats, seconds per call",
        "allocator_warmed": True,
    }


def _verify(wl: Workload, codec: Codec, obj) -> bytes:
    payload = codec.dumps(obj)
    if not wl.verify(obj, codec.loads(payload)):
        raise AssertionError(f"{codec.name}: round trip of {wl.name} is not equal to the original")
    return payload


def run_workload(wl: Workload, results: Results, *, repeats: int, min_time: float,
                 keep_gc: bool, cloudpickle_all: bool, log: Callable[[str], None]) -> None:
    obj = wl.make()
    ours: Dict[bool, Codec] = {}
    payloads: Dict[str, bytes] = {}
    try:
        for ref in wl.refs:
            codec = ForyCodec(wl, ref)
            payloads[codec.name] = _verify(wl, codec, obj)
            ours[ref] = codec
    except Exception as exc:  # report any failure, keep running the suite
        message = f"{type(exc).__name__}: {exc}"
        status = "pending" if wl.pending else "failed"
        results.outcomes.append(Outcome(wl.name, status, message))
        log(f"  {status}{f' ({wl.pending})' if wl.pending else ''}: {message}")
        return

    wanted = set(wl.baselines) | ({"cloudpickle"} if cloudpickle_all else set())
    bases: Dict[str, Codec] = {}
    for name, codec in available_baselines().items():
        if name not in wanted:
            continue
        try:
            payloads[codec.name] = _verify(wl, codec, obj)
            bases[name] = codec
        except Exception as exc:
            log(f"  {name} cannot round-trip {wl.name}: {type(exc).__name__}: {exc}")

    contenders: List[Codec] = [*ours.values(), *bases.values()]
    timers = {c.name: (Measured(c.dumps_thunk(obj), keep_gc),
                       Measured(c.loads_thunk(payloads[c.name]), keep_gc)) for c in contenders}
    for pair in timers.values():
        for m in pair:
            m.autorange(min_time)
    for _ in range(repeats):
        for pair in timers.values():
            for m in pair:
                m.run_once()
    del obj
    gc.collect()

    def side(codec: Codec) -> Side:
        d, lo = timers[codec.name]
        return Side(codec.name, d.median, lo.median, len(payloads[codec.name]),
                    d.number, lo.number, d.times, lo.times)

    for ref, codec in ours.items():
        mine = side(codec)
        if not bases:
            results.rows.append(Row(wl.name, ref, "-", mine, None))
        for name, base in bases.items():
            if ref and name in PLAIN_DATA:  # they keep no shared references: compared with ref=False
                continue
            results.rows.append(Row(wl.name, ref, name, mine, side(base)))

    if wl.pending:
        results.outcomes.append(Outcome(wl.name, "pending-passes",
                                        f"round trip passes: remove pending={wl.pending!r}"))
    else:
        results.outcomes.append(Outcome(wl.name, "ok"))


def run_suite(selected: Sequence[Workload], *, repeats: int = DEFAULT_REPEATS,
              min_time: float = DEFAULT_MIN_TIME, keep_gc: bool = False,
              cloudpickle_all: bool = False,
              log: Callable[[str], None] = lambda s: None) -> Results:
    """Run the workloads and return the results (also used by a future bench/report.py)."""
    settle_allocator()
    results = Results(environment(repeats, min_time, keep_gc))
    for i, wl in enumerate(selected, 1):
        log(f"[{i}/{len(selected)}] {wl.name}")
        run_workload(wl, results, repeats=repeats, min_time=min_time, keep_gc=keep_gc,
                     cloudpickle_all=cloudpickle_all, log=log)
    return results


# ---- formatting ------------------------------------------------------------------------
def fmt_time(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_ratio(r: Optional[float], suffix: str = "x") -> str:
    return "-" if r is None else f"{r:.2f}{suffix}"


def fmt_size(n: Optional[int]) -> str:
    return "-" if n is None else f"{n:,}"


HEADERS = ["workload", "ref", "vs", "dumps ours", "dumps base", "x dumps",
           "loads ours", "loads base", "x loads", "size ours", "size base", "size o/b", "spread"]
RIGHT = {3, 4, 5, 6, 7, 8, 9, 10, 11, 12}


def table_lines(rows: Sequence[Row]) -> List[str]:
    body = []
    for r in rows:
        b = r.base
        body.append([r.workload, str(r.ref), r.baseline,
                     fmt_time(r.ours.dumps), fmt_time(b and b.dumps), fmt_ratio(r.ratio("dumps")),
                     fmt_time(r.ours.loads), fmt_time(b and b.loads), fmt_ratio(r.ratio("loads")),
                     fmt_size(r.ours.size), fmt_size(b and b.size), fmt_ratio(r.ratio("size"), ""),
                     f"{r.spread():.0%}"])
    foot = []
    for g in geomeans(rows):
        foot.append([f"geomean ({g['group']}, n={g['n']})", "", g["baseline"], "", "",
                     fmt_ratio(g["dumps"]), "", "", fmt_ratio(g["loads"]), "", "",
                     fmt_ratio(g["size"], ""), ""])
    widths = [max(len(x[i]) for x in [HEADERS, *body, *foot]) for i in range(len(HEADERS))]

    def line(cells):
        return "  ".join(c.rjust(w) if i in RIGHT else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [line(HEADERS), rule, *map(line, body), rule, *map(line, foot)]


def report_text(results: Results) -> str:
    m = results.meta
    out = [f"pyfory {m['pyfory']} vs pickle (protocol {m['pickle_protocol']})"
           + (f" and cloudpickle {m['cloudpickle']}" if m["cloudpickle"] else "")
           + f" -- Python {m['python']} on {m['platform']}",
           f"median of {m['repeats']} repeats (each >= {m['min_time']} s), per call;"
           f" gc {'on' if m['gc_enabled_while_timing'] else 'off'} while timing."
           " x dumps / x loads = base time / our time (>1: pyfory faster);"
           " size o/b = our bytes / base bytes (<1: pyfory smaller);"
           " spread = largest IQR/median of the row's timings (noise)"]
    load, cpus = m.get("loadavg"), m.get("cpu_count") or 1
    if load is not None and load[0] > 0.5 * cpus:
        out.append(f"warning: load average {load[0]:.2f} on {cpus} CPUs before the run: other"
                   " processes compete for the CPU, so ratios near 1 are noisy")
    out.append("")
    out += table_lines(results.rows)
    notes = [o for o in results.outcomes if o.status != "ok"]
    if notes:
        out.append("")
        for o in notes:
            out.append(f"{o.status:>14}: {o.workload}: {o.message}")
    return "\n".join(out)



# ---- python -m pyfory bench -------------------------------------------------------------
def run(quick: bool = False, patterns: Sequence[str] = (), json_path: Optional[str] = None,
        repeats: Optional[int] = None, min_time: Optional[float] = None, all_cloudpickle: bool = False,
        keep_gc: bool = False, out=None) -> int:
    """The command: run the selected workloads, print the table; 2 if nothing matches."""
    out = out or sys.stdout
    selected = select(patterns)
    if not selected:
        print(f"no workload matches {list(patterns)}; workloads: "
              + ", ".join(w.name for w in select()), file=sys.stderr)
        return 2
    repeats = repeats or (QUICK_REPEATS if quick else DEFAULT_REPEATS)
    min_time = min_time or (QUICK_MIN_TIME if quick else DEFAULT_MIN_TIME)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if _cloudpickle() is None and any("cloudpickle" in w.baselines for w in selected):
        from pyfory._extras import install_hint

        log(f"cloudpickle is not installed: the function and local-class workloads run without a "
            f"baseline ({install_hint('cloudpickle')})")
    results = run_suite(selected, repeats=repeats, min_time=min_time, keep_gc=keep_gc,
                        cloudpickle_all=all_cloudpickle, log=log)
    print(report_text(results), file=out)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results.to_json(), f, indent=2)
    return 1 if results.failed else 0
