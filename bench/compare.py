"""Compare pyfory against pickle (protocol 5) and cloudpickle, in one process, as ratios.

    python -m bench.compare                 # every workload
    python -m bench.compare -k dict -k list # workloads whose name contains "dict" or "list"
    python -m bench.compare --quick         # fewer, shorter repeats (a rough look)
    python -m bench.compare --json out.json # also write the raw numbers
    python -m bench.compare --from-json out.json  # print a saved run's table again
    python bench/compare.py --list          # the workloads and their options

Method. For each workload the object is built once and every contender's round trip is
verified (type-strict equality, or the workload's own check) before anything is timed.
Each timed callable (``dumps(obj)`` or ``loads(payload)``) gets a loop count from an
autorange (like ``timeit``'s: grow the count until one run takes at least
``--min-time``), then is run ``--repeats`` times; the figure is the MEDIAN per-call time.
Repeats of all contenders of a workload are interleaved (ours, pickle's, ours, ...), so
drift on a noisy machine hits both sides alike. The garbage collector is off while
timing, as in ``timeit`` (``--gc`` keeps it on), and the C allocator is warmed first
(see ``workloads.settle_allocator``: otherwise large payloads time 20x apart depending on
which workloads ran before). pickle's numbers do not depend on ``ref``, so they are
measured once per workload and shown on both rows.

Ratios: ``x dumps`` and ``x loads`` are the baseline's time over ours (> 1: pyfory is
faster); ``size`` is our payload over the baseline's (< 1: pyfory is smaller). The
geometric means of each ratio column close the table. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import statistics
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

if __package__ in (None, ""):  # run as `python bench/compare.py`: make `bench` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import workloads as W  # noqa: E402
from pyfory import quickbench  # noqa: E402

DEFAULT_REPEATS = 7
DEFAULT_MIN_TIME = 0.2  # seconds per timed run, as timeit's autorange
QUICK_REPEATS = 3
QUICK_MIN_TIME = 0.05


# ---- timing ----------------------------------------------------------------------------
# the same timed-callable as `python -m pyfory bench` (the installed package's copy)
Measured = quickbench.Measured


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
    order = {"pickle": 0, "cloudpickle": 1}
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

    cp = W.cloudpickle
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
        "pickle_protocol": W.PICKLE_PROTOCOL,
        "cloudpickle": getattr(cp, "__version__", None) if cp is not None else None,
        "repeats": repeats,
        "min_time": min_time,
        "gc_enabled_while_timing": keep_gc,
        "statistic": "median of repeats, seconds per call",
        "allocator_warmed": True,
    }


def _verify(wl: W.Workload, codec: W.Codec, obj) -> bytes:
    payload = codec.dumps(obj)
    if not wl.verify(obj, codec.loads(payload)):
        raise AssertionError(f"{codec.name}: round trip of {wl.name} is not equal to the original")
    return payload


def run_workload(wl: W.Workload, results: Results, *, repeats: int, min_time: float,
                 keep_gc: bool, cloudpickle_all: bool, log: Callable[[str], None]) -> None:
    obj = wl.make()
    ours: Dict[bool, W.Codec] = {}
    payloads: Dict[str, bytes] = {}
    try:
        for ref in wl.refs:
            codec = W.ForyCodec(wl, ref)
            payloads[codec.name] = _verify(wl, codec, obj)
            ours[ref] = codec
    except Exception as exc:  # report any failure, keep running the suite
        message = f"{type(exc).__name__}: {exc}"
        status = "pending" if wl.pending else "failed"
        results.outcomes.append(Outcome(wl.name, status, message))
        log(f"  {status}{f' ({wl.pending})' if wl.pending else ''}: {message}")
        return

    wanted = set(wl.baselines) | ({"cloudpickle"} if cloudpickle_all else set())
    bases: Dict[str, W.Codec] = {}
    for name, codec in W.available_baselines().items():
        if name not in wanted:
            continue
        try:
            payloads[codec.name] = _verify(wl, codec, obj)
            bases[name] = codec
        except Exception as exc:
            log(f"  {name} cannot round-trip {wl.name}: {type(exc).__name__}: {exc}")

    contenders: List[W.Codec] = [*ours.values(), *bases.values()]
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

    def side(codec: W.Codec) -> Side:
        d, lo = timers[codec.name]
        return Side(codec.name, d.median, lo.median, len(payloads[codec.name]),
                    d.number, lo.number, d.times, lo.times)

    for ref, codec in ours.items():
        mine = side(codec)
        if not bases:
            results.rows.append(Row(wl.name, ref, "-", mine, None))
        for name, base in bases.items():
            results.rows.append(Row(wl.name, ref, name, mine, side(base)))

    if wl.pending:
        results.outcomes.append(Outcome(wl.name, "pending-passes",
                                        f"round trip passes: remove pending={wl.pending!r}"))
    else:
        results.outcomes.append(Outcome(wl.name, "ok"))


def run_suite(selected: Sequence[W.Workload], *, repeats: int = DEFAULT_REPEATS,
              min_time: float = DEFAULT_MIN_TIME, keep_gc: bool = False,
              cloudpickle_all: bool = False,
              log: Callable[[str], None] = lambda s: None) -> Results:
    """Run the workloads and return the results (also used by a future bench/report.py)."""
    W.settle_allocator()
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


# ---- command line ----------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", dest="patterns", action="append", default=[], metavar="SUBSTR",
                    help="run workloads whose name contains SUBSTR (repeatable: any of them)")
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK_REPEATS} repeats of >= {QUICK_MIN_TIME} s instead of "
                         f"{DEFAULT_REPEATS} of >= {DEFAULT_MIN_TIME} s")
    ap.add_argument("--repeats", type=int, help="timed runs per figure (the median is reported)")
    ap.add_argument("--min-time", type=float, help="seconds each timed run lasts at least")
    ap.add_argument("--gc", action="store_true", help="keep the garbage collector on while timing")
    ap.add_argument("--cloudpickle", action="store_true",
                    help="also compare with cloudpickle on every workload (default: only where "
                         "the workload asks for it)")
    ap.add_argument("--json", metavar="FILE", help="write the raw numbers as JSON")
    ap.add_argument("--from-json", metavar="FILE", help="print the table of a saved --json run")
    ap.add_argument("--list", action="store_true", help="list the workloads and exit")
    args = ap.parse_args(argv)

    if args.from_json:
        with open(args.from_json) as f:
            print(report_text(Results.from_json(json.load(f))))
        return 0
    selected = W.select(args.patterns)
    if args.list:
        for wl in selected:
            opts = [f"issue {wl.issue}", "refs=" + "/".join(str(r) for r in wl.refs),
                    f"strict={wl.strict}", "vs " + "/".join(wl.baselines)]
            if wl.setup:
                opts.append("setup")
            if wl.pending:
                opts.append(f"pending: {wl.pending}")
            print(f"{wl.name:22} {wl.description}  [{', '.join(opts)}]")
        return 0
    if not selected:
        print(f"no workload matches {args.patterns}; see --list", file=sys.stderr)
        return 2

    repeats = args.repeats or (QUICK_REPEATS if args.quick else DEFAULT_REPEATS)
    min_time = args.min_time or (QUICK_MIN_TIME if args.quick else DEFAULT_MIN_TIME)
    results = run_suite(selected, repeats=repeats, min_time=min_time, keep_gc=args.gc,
                        cloudpickle_all=args.cloudpickle,
                        log=lambda s: print(s, file=sys.stderr, flush=True))
    print(report_text(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results.to_json(), f, indent=2)
        print(f"\nraw numbers written to {args.json}")
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
