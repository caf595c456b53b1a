"""pytest-benchmark versions of the workloads in ``bench/workloads.py``.

    python -m pytest bench --benchmark-only
    python -m pytest bench --benchmark-only -k "small_dict or str_dict"
    python -m pytest bench --benchmark-only --benchmark-group-by=group --benchmark-columns=median,iqr,ops

One benchmark per workload x {dumps, loads} x contender, where the contenders are
pyfory (``ref=False`` and ``ref=True``, as far as the workload allows), pickle
(protocol 5) and cloudpickle where the workload asks for it. Benchmarks of one workload
and operation share a group, so pytest-benchmark prints them side by side. Each round
trip is verified before it is timed. The default test run does not collect this file
(``testpaths = ["tests"]``); nothing here asserts a timing.
"""

from __future__ import annotations

import functools
from typing import List, Tuple

import pytest

from bench import workloads as W

pytest.importorskip("pytest_benchmark")
W.settle_allocator()  # same starting state as compare.py (large payloads depend on it)


def _contenders(wl: W.Workload) -> List[str]:
    names = [f"pyfory-ref{int(ref)}" for ref in wl.refs]
    names += [b for b in wl.baselines if b in W.available_baselines()]
    return names


CASES: List[Tuple[str, str]] = [(wl.name, c) for wl in W.select() for c in _contenders(wl)]
IDS = [f"{name}-{contender}" for name, contender in CASES]


@functools.lru_cache(maxsize=None)
def _object(name: str):
    return W.WORKLOADS[name].make()


@functools.lru_cache(maxsize=None)
def _prepared(name: str, contender: str) -> Tuple[W.Codec, bytes]:
    """The codec and the payload of the workload's object, after a verified round trip."""
    wl, obj = W.WORKLOADS[name], _object(name)
    if contender.startswith("pyfory-ref"):
        codec: W.Codec = W.ForyCodec(wl, ref=contender.endswith("1"))
    else:
        codec = W.available_baselines()[contender]
    payload = codec.dumps(obj)
    assert wl.verify(obj, codec.loads(payload)), f"{codec.name}: round trip of {name} differs"
    return codec, payload


def _setup(benchmark, name: str, contender: str, op: str) -> Tuple[W.Codec, bytes]:
    wl = W.WORKLOADS[name]
    try:
        codec, payload = _prepared(name, contender)
    except Exception as exc:
        if wl.pending and contender.startswith("pyfory"):
            pytest.skip(f"pending ({wl.pending}): {type(exc).__name__}: {exc}")
        raise
    benchmark.group = f"{name} {op}"
    benchmark.extra_info["payload_bytes"] = len(payload)
    benchmark.extra_info["contender"] = codec.name
    return codec, payload


@pytest.mark.parametrize(("name", "contender"), CASES, ids=IDS)
def test_dumps(benchmark, name, contender):
    codec, _ = _setup(benchmark, name, contender, "dumps")
    benchmark(codec.dumps_thunk(_object(name)))


@pytest.mark.parametrize(("name", "contender"), CASES, ids=IDS)
def test_loads(benchmark, name, contender):
    codec, payload = _setup(benchmark, name, contender, "loads")
    benchmark(codec.loads_thunk(payload))
