"""Named benchmark workloads: the one list that ``compare.py`` and ``test_bench.py`` run.

A workload is a function that builds the object to serialize, plus metadata saying
which ``Fory`` options it needs and what to compare it against.

Adding a workload
-----------------
Write a module-level function that returns the object and decorate it with
``@workload``; the function's name is the workload's name (``compare.py -k`` selects
by substring). Put it in the section of the issue that asks for it, below::

    @workload(issue=3, description="5,000 dataclass instances",
              setup=register(models.Order))
    def dataclasses_5k():
        return [models.Order(...) for i in range(5_000)]

Options of ``@workload``:

``issue``        the issue that asked for it (documentation; also shown by ``--list``).
``description``  one line for humans.
``needs_ref``    True if the value has shared or cyclic structure that only
                 ``Fory(ref=True)`` reproduces; it then runs with ref=True only.
                 Default: run with both ``ref=False`` and ``ref=True``.
``strict``       False if it needs ``Fory(strict=False)`` (functions, classes by value).
``setup``        ``setup(fory)`` is called on every new ``Fory`` before use: register the
                 workload's classes for strict mode there. ``register(*classes)`` makes one.
``baselines``    which of ``"pickle"``, ``"cloudpickle"`` to compare against (those not
                 installed are left out). pickle is protocol 5, C implementation.
``check``        ``check(original, loaded) -> bool`` when type-strict equality
                 (``deep_equal``) is not the right test, e.g. for functions.
``pending``      "issue N" while pyfory cannot serialize the value yet: a pending
                 workload whose pyfory round trip fails is reported as pending and
                 skipped instead of failing the run. Remove the marker once it passes
                 (``compare.py`` says so when it does).

Classes a workload needs are defined at module level in ``bench/models.py``, so that
pickle can import them by name; local classes and lambdas (issue 4) are created inside
the workload function on purpose, since that is what travels by value.

Every builder is deterministic (seeded), so sizes are comparable between runs.
"""

from __future__ import annotations

import json
import pickle
import random
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from bench import models

try:  # optional baseline
    import cloudpickle
except ImportError:  # pragma: no cover - depends on the environment
    cloudpickle = None

PICKLE_PROTOCOL = 5


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
    unknown = set(baselines) - {"pickle", "cloudpickle"}
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


def available_baselines() -> Dict[str, Codec]:
    found: Dict[str, Codec] = {"pickle": PickleCodec("pickle", pickle)}
    if cloudpickle is not None:
        found["cloudpickle"] = PickleCodec("cloudpickle", cloudpickle)
    return found


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
@workload(issue=2, description="dict of 10,000 str->str (the seed's example)")
def str_dict_10k():
    return {f"key{i}": f"value{i}" for i in range(10_000)}


@workload(issue=2, description="list of 100,000 ints (half < 1,000, 40% within +-1e6, 10% up to 2**40)")
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


@workload(issue=2, description="list of 100,000 floats")
def float_list_100k():
    rng = random.Random(2)
    return [rng.uniform(-1e6, 1e6) for _ in range(100_000)]


_CITIES = ["Berlin", "Lisbon", "Osaka", "Lima", "Nairobi", "Toronto", "Oslo", "Pune", "Quito", "Perth"]
_TAGS = ["admin", "beta", "vip", "trial", "churned", "eu", "us", "apac", "mobile", "web"]


@workload(issue=2, description="2,000 JSON-like records (nested dicts/lists, str/int/float/bool/None), "
                               "as json.loads returns them")
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


@workload(issue=2, description="small 3-key dict (per-call overhead)")
def small_dict():
    return {"id": 42, "name": "alice", "active": True}


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
# Issue 3: objects and classes (classes in bench/models.py, registered by `setup`)
# Pending until pyfory has default serializers for classes; remove `pending` then.
# ======================================================================================
def _order_args(i: int):
    return (i, f"customer{i % 500}", round(i * 0.37 % 1000, 2), i % 10 + 1, i % 2 == 0,
            None if i % 3 else f"note {i}")


@workload(issue=3, description="5,000 dataclass instances", setup=register(models.Order))
def dataclasses_5k():
    return [models.Order(*_order_args(i)) for i in range(5_000)]


@workload(issue=3, description="5,000 plain objects with __dict__", setup=register(models.PlainOrder))
def plain_objects_5k():
    return [models.PlainOrder(*_order_args(i)) for i in range(5_000)]


@workload(issue=3, description="5,000 objects with __slots__", setup=register(models.SlotOrder))
def slotted_objects_5k():
    return [models.SlotOrder(*_order_args(i)) for i in range(5_000)]


@workload(issue=3, description="list of 2,000 namedtuples", setup=register(models.OrderTuple))
def namedtuples_2k():
    return [models.OrderTuple(*_order_args(i)) for i in range(2_000)]


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
