"""Performance report: run the bench suite, write ``bench/results.md`` and ``bench/results.png``.

    python bench/report.py                  # full run (about 10 minutes), writes bench/results.{md,png}
    nice -n -5 python bench/report.py       # the same, ahead of other work on a shared machine
    python bench/report.py --quick          # smoke run: short timings, written to a temp directory
    python bench/report.py --no-extras      # only the core workloads (no oob / executor / zmq scripts)
    python bench/report.py --json raw.json  # also keep the raw numbers
    python bench/report.py --from-json raw.json   # re-render a saved run (no timing)
    python bench/report.py --check          # exit status 3 when a bar of issue 9 is not met

What it runs
------------
1. The core workloads of ``pyfory/quickbench.py`` through its ``run_suite`` (what
   ``python -m pyfory bench`` and ``bench/compare.py`` run, with more and longer runs):
   every workload with ``ref=False`` and ``ref=True``, against pickle (protocol 5, C) and,
   for the function and local-class workloads, against cloudpickle. Each figure is the
   median of ``--repeats`` timed runs (each run loops the call for at least ``--min-time``
   seconds; runs of all contenders of a workload are interleaved; gc off while timing; the
   allocator is settled first; every round trip is verified before it is timed).
   The plain-data workloads of issue 21 are also timed against msgspec, orjson and msgpack
   (``ref=False``), shown as one table with a column pair per serializer.
2. The bars of issue 9, computed from those numbers and marked met / not met. A ratio whose
   quartile range (baseline's q1/q3 over ours' q3/q1) straddles the bar is flagged as
   within the noise.
3. Optionally the standalone scripts, each in a child process with a time limit, through
   the functions they expose: ``bench/oob.py`` (``cases``), ``bench/executor_bench.py``
   (``make_executors``, ``bench_tiny_tasks``, ``bench_big_array``, ``bench_pool_map``) and
   ``bench/zmq_bench.py`` (``bench_small``, ``bench_stream``, ``bench_inproc``, ``bench_array``,
   ``bench_executor``). They use their own statistics (stated in the report) and are not
   part of the bars. A script that cannot be imported or fails is reported as such, with
   the error.

The markdown states the machine (CPU model from /proc/cpuinfo, cores, memory, Python, OS,
load average before and after, niceness) and the pyfory revision measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if __package__ in (None, ""):  # run as `python bench/report.py`: make `bench` importable
    sys.path.insert(0, ROOT)

from pyfory import quickbench as C  # noqa: E402  (the suite and its measuring loop)

# more than compare.py's 7: on shared machines a busy minute of the neighbours must not move a median
REPORT_REPEATS = 21
REPORT_MIN_TIME = 0.2
EXTRAS = ("oob", "executor", "zmq")
EXTRA_TIMEOUT = {False: 1800, True: 600}  # seconds per extra script: full run, --quick

# Bars of issue 9.
DUMPS_GEOMEAN_BAR = 2.0
LOADS_GEOMEAN_BAR = 1.3
PER_WORKLOAD_BAR = 1.0
SIZE_GEOMEAN_BAR = 0.8
CLOUDPICKLE_SPEED_BAR = 2.0
CLOUDPICKLE_SIZE_BAR = 0.5
PER_CALL_WORKLOAD = "small_dict"
PER_CALL_BAR = 1.2  # our time / pickle's time, at most


# ---- the machine -------------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def machine_info() -> Dict[str, Any]:
    """CPU model and cores (from /proc/cpuinfo), memory, Python, OS, load, niceness."""
    model, mhz, cores = None, None, set()
    phys = None
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = (s.strip() for s in line.partition(":"))
        if key == "model name" and model is None:
            model = value
        elif key == "cpu MHz" and mhz is None:
            mhz = value
        elif key == "physical id":
            phys = value
        elif key == "core id":
            cores.add((phys, value))
    mem_kb = None
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    try:
        os_name = platform.freedesktop_os_release().get("PRETTY_NAME")  # Python >= 3.10
    except (AttributeError, OSError):
        os_name = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "cpu_model": model or platform.processor() or platform.machine(),
        "cpu_mhz": mhz,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "physical_cores": len(cores) or None,
        "memory_gb": round(mem_kb / 1024 ** 2, 1) if mem_kb else None,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": os_name or platform.system(),
        "kernel": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "niceness": os.nice(0) if hasattr(os, "nice") else None,
        "loadavg_before": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def pyfory_info() -> Dict[str, Any]:
    """Version, git revision, and whether the Cython core is compiled and up to date."""
    import importlib

    import pyfory

    info: Dict[str, Any] = {"version": getattr(pyfory, "__version__", "?")}
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "pyfory", "integrations"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        info["git"] = rev or None
        info["uncommitted_changes"] = bool(dirty)
    except (OSError, subprocess.SubprocessError):
        info["git"] = None
    pkg = os.path.dirname(pyfory.__file__)
    compiled, stale = [], []
    for name in sorted(os.listdir(pkg)):
        if not name.endswith(".pyx"):
            continue
        mod = name[:-4]
        try:
            path = importlib.import_module(f"pyfory.{mod}").__file__ or ""
        except ImportError:
            path = ""
        is_ext = not path.endswith((".py", ".pyx"))
        compiled.append((mod, is_ext))
        if is_ext and os.path.getmtime(os.path.join(pkg, name)) > os.path.getmtime(path):
            stale.append(mod)
    info["extensions"] = {mod: ok for mod, ok in compiled}
    info["stale_extensions"] = stale
    return info


# ---- ratios and their noise --------------------------------------------------------------
def _quartiles(times: Sequence[float]) -> Tuple[float, float]:
    if len(times) < 2:
        m = statistics.median(times) if times else float("nan")
        return m, m
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return q1, q3


def ratio_range(row: C.Row, what: str) -> Tuple[Optional[float], Optional[float]]:
    """(low, high) of a time ratio from the quartiles: baseline's q1 over our q3, baseline's
    q3 over our q1. Sizes are exact: (ratio, ratio)."""
    r = row.ratio(what)
    if r is None or what == "size" or row.base is None:
        return r, r
    b1, b3 = _quartiles(getattr(row.base, f"{what}_times") or [getattr(row.base, what)])
    o1, o3 = _quartiles(getattr(row.ours, f"{what}_times") or [getattr(row.ours, what)])
    return b1 / o3, b3 / o1


def _geomean(values: Sequence[float]) -> Optional[float]:
    return C.geomean(list(values))


# ---- the bars ----------------------------------------------------------------------------
@dataclass
class Bar:
    name: str
    target: str
    measured: str
    status: str  # "met", "not met", "not measured"
    note: str = ""


def _fr(r: Optional[float]) -> str:
    return C.fmt_ratio(r)


def _fr_range(lo: Optional[float], hi: Optional[float]) -> str:
    if lo is None or hi is None or lo == hi:
        return ""
    return f" (quartiles {lo:.2f}-{hi:.2f})"


def _label(row: C.Row) -> str:
    return f"{row.workload} ref={row.ref}"


def evaluate_bars(results: C.Results, complete: bool) -> List[Bar]:
    bars: List[Bar] = []
    pickle_rows = [r for r in results.rows if r.baseline == "pickle" and r.base is not None]
    cloud_rows = [r for r in results.rows if r.baseline == "cloudpickle" and r.base is not None]

    missing = [o for o in results.outcomes if o.status in ("failed", "pending")]
    if missing or not complete:
        what = ", ".join(f"{o.workload} ({o.status})" for o in missing) or "a -k selection was run"
        bars.append(Bar("every workload of the suite measured", "all", what, "not met",
                        "the bars below cover only the workloads that ran"))
    else:
        n = len({r.workload for r in results.rows})
        bars.append(Bar("every workload of the suite measured", "all", f"{n} workloads", "met"))

    for ref in (False, True):
        rows = [r for r in pickle_rows if r.ref is ref]
        if not rows:
            continue
        for what, bar in (("dumps", DUMPS_GEOMEAN_BAR), ("loads", LOADS_GEOMEAN_BAR)):
            g = _geomean([r.ratio(what) for r in rows])
            lo = _geomean([ratio_range(r, what)[0] for r in rows])
            hi = _geomean([ratio_range(r, what)[1] for r in rows])
            met = g is not None and g >= bar
            note = "bar inside the quartile range" if lo is not None and hi is not None and lo <= bar <= hi else ""
            bars.append(Bar(f"{what}: geomean pickle/ours, ref={ref} (n={len(rows)})", f">= {bar:.1f}x",
                            _fr(g) + _fr_range(lo, hi), "met" if met else "not met", note))
        below, lowest, noisy = [], None, False
        for r in rows:
            for what in ("dumps", "loads"):
                x = r.ratio(what)
                lo, hi = ratio_range(r, what)
                if lowest is None or x < lowest[0]:
                    lowest = (x, f"{r.workload} {what}")
                if x < PER_WORKLOAD_BAR:
                    # three decimals: a tie rounds to "1.00x" and would read as met
                    below.append(f"{r.workload} {what} {x:.3f}x{_fr_range(lo, hi)}")
                if lo is not None and hi is not None and lo <= PER_WORKLOAD_BAR <= hi:
                    noisy = True
        measured = ("below: " + "; ".join(below)) if below else f"lowest {_fr(lowest[0])} ({lowest[1]})"
        bars.append(Bar(f"every workload pickle/ours, dumps and loads, ref={ref}",
                        f">= {PER_WORKLOAD_BAR:.1f}x", measured, "not met" if below else "met",
                        "some ratio's quartile range includes 1.0" if noisy else ""))
        g = _geomean([r.ratio("size") for r in rows])
        bars.append(Bar(f"size: geomean ours/pickle, ref={ref}", f"<= {SIZE_GEOMEAN_BAR:.1f}",
                        C.fmt_ratio(g, ""), "met" if g is not None and g <= SIZE_GEOMEAN_BAR else "not met"))
        larger = [f"{r.workload} {r.ours.size:,} > {r.base.size:,} B" for r in rows if r.ours.size > r.base.size]
        worst = max(rows, key=lambda r: r.ratio("size"))
        bars.append(Bar(f"size: every workload ours <= pickle, ref={ref}", "<= 1.00",
                        ("larger: " + "; ".join(larger)) if larger
                        else f"largest {C.fmt_ratio(worst.ratio('size'), '')} ({worst.workload})",
                        "not met" if larger else "met"))

    if cloud_rows:
        for what, bar, better in (("dumps", CLOUDPICKLE_SPEED_BAR, "ge"), ("loads", CLOUDPICKLE_SPEED_BAR, "ge"),
                                  ("size", CLOUDPICKLE_SIZE_BAR, "le")):
            fails, noisy = [], False
            for r in cloud_rows:
                x = r.ratio(what)
                lo, hi = ratio_range(r, what)
                ok = x >= bar if better == "ge" else x <= bar
                if not ok:
                    fails.append(f"{_label(r)} {C.fmt_ratio(x, 'x' if what != 'size' else '')}{_fr_range(lo, hi)}")
                if what != "size" and lo is not None and hi is not None and lo <= bar <= hi:
                    noisy = True
            pick = min if better == "ge" else max
            worst = pick(cloud_rows, key=lambda r: r.ratio(what))
            suffix = "x" if what != "size" else ""
            measured = ("not met by: " + "; ".join(fails)) if fails else \
                f"worst {C.fmt_ratio(worst.ratio(what), suffix)} ({_label(worst)})"
            name = (f"{what}: every function/class workload cloudpickle/ours" if what != "size"
                    else "size: every function/class workload ours/cloudpickle")
            bars.append(Bar(f"{name} (n={len(cloud_rows)})",
                            f">= {bar:.1f}x" if better == "ge" else f"<= {bar:.1f}", measured,
                            "not met" if fails else "met",
                            "some ratio's quartile range includes the bar" if noisy else ""))
    else:
        bars.append(Bar("against cloudpickle (functions, lambdas, closures, local classes)", ">= 2x, <= 0.5 size",
                        "no row measured (cloudpickle not installed, or workloads not selected)", "not measured"))

    small = [r for r in pickle_rows if r.workload == PER_CALL_WORKLOAD]
    if small:
        parts, met, noisy = [], True, False
        for r in small:
            for what in ("dumps", "loads"):
                x = 1 / r.ratio(what)  # our time / pickle's
                lo, hi = ratio_range(r, what)
                met &= x <= PER_CALL_BAR
                noisy |= lo is not None and hi is not None and 1 / hi <= PER_CALL_BAR <= 1 / lo
                parts.append(f"{what} ref={r.ref} {x:.2f}")
        bars.append(Bar(f"per-call overhead: {PER_CALL_WORKLOAD} (3-key dict), our time/pickle's",
                        f"<= {PER_CALL_BAR:.1f}", ", ".join(parts), "met" if met else "not met",
                        "bar inside a quartile range" if noisy else ""))
    else:
        bars.append(Bar("per-call overhead: 3-key dict", f"<= {PER_CALL_BAR:.1f}", "not run", "not measured"))
    return bars


# ---- extra scripts (run in child processes) ------------------------------------------------
def _extra_oob(quick: bool) -> Dict[str, Any]:
    from bench import oob

    np = oob.np

    mb = 10 if quick else 100
    objects = [(f"float64 array {mb} MB", np.random.default_rng(0).standard_normal(mb * 1_000_000 // 8))]
    if oob.pd is not None:
        rows = 100 if quick else 10_000
        frame = oob.pd.DataFrame(np.random.default_rng(1).standard_normal((rows, 1000)),
                                 columns=[f"col{i}" for i in range(1000)])
        objects.append((f"DataFrame 1,000 float64 cols x {rows:,} rows", frame))
    out = []
    for title, obj in objects:
        for label, p_t, f_t, p_size, f_size in oob.cases(obj, big=True):
            out.append({"measure": f"{title}: {label}", "ours": f_t, "base": p_t, "baseline": "pickle 5",
                        "unit": "s", "ratio": p_t / f_t, "size_ours": f_size, "size_base": p_size})
    return {"statistic": "median of 9-15 alternating runs (bench/oob.py `compare`); time per call",
            "rows": out}


def _extra_executor(quick: bool) -> Dict[str, Any]:
    from bench import executor_bench as E

    repeat, tasks, mb, items = (2, 2_000, 10, 20_000) if quick else (5, 10_000, 100, 100_000)
    makers = E.make_executors("spawn")
    others = [n for n in makers if n != "pyfory"]
    out = []
    tiny = E.bench_tiny_tasks(makers, tasks, repeat)
    for kind in ("module function", "closure"):
        for other in others:
            ours, base = tiny["pyfory"][kind], tiny[other][kind]
            label = f"{other} ProcessPoolExecutor(2)" + (" (cannot send a closure)" if base is None else "")
            out.append({"measure": f"{tasks:,} tiny tasks, {kind}", "ours": ours, "base": base,
                        "baseline": label, "unit": "s", "ratio": base / ours if base and ours else None})
    big = E.bench_big_array(makers, mb, max(2, repeat - 2))
    for other in others:
        out.append({"measure": f"{mb} MB numpy array there and back", "ours": big["pyfory"], "base": big[other],
                    "baseline": f"{other} ProcessPoolExecutor(2)", "unit": "s",
                    "ratio": big[other] / big["pyfory"]})
    for kind, label in (("ints", "ints"), ("records", "3-key dicts")):
        pool = E.bench_pool_map("spawn", E.small_items(kind, items), 6 * repeat)
        out.append({"measure": f"Pool.map over {items:,} {label}, install() (median of {6 * repeat} "
                               "per-turn ratios)",
                    "ours": pool["pyfory median"], "base": pool["plain median"],
                    "baseline": "plain multiprocessing.Pool(2)", "unit": "s",
                    "ratio": pool["paired ratio"]})
    return {"statistic": f"best of {repeat} runs (bench/executor_bench.py), spawn start method; total time "
                         "(Pool.map: medians, runs in turns)",
            "rows": out}


def _extra_zmq(quick: bool) -> Dict[str, Any]:
    from bench import zmq_bench as Z

    repeats = 2 if quick else 5
    out = []
    for part in (Z.bench_small, Z.bench_stream, Z.bench_inproc, Z.bench_array, Z.bench_executor):
        for name, ours, base, label in part(repeats, quick):
            ok = ours == ours and base == base and base
            unit = "MB/s" if "MB/s" in name else "/s"
            out.append({"measure": name, "ours": ours, "base": base if base == base else None, "baseline": label,
                        "unit": unit, "ratio": ours / base if ok else None})
    return {"statistic": "median of interleaved runs, each contender's in turn (bench/zmq_bench.py); "
                         "rates, higher is better",
            "rows": out}


EXTRA_FUNCS: Dict[str, Callable[[bool], Dict[str, Any]]] = {
    "oob": _extra_oob, "executor": _extra_executor, "zmq": _extra_zmq}
EXTRA_SCRIPTS = {"oob": "bench/oob.py", "executor": "bench/executor_bench.py", "zmq": "bench/zmq_bench.py"}


def run_extra_child(name: str, quick: bool, out_path: str) -> int:
    """In the child process: run one extra and write its rows (or the error) as JSON."""
    try:
        data = EXTRA_FUNCS[name](quick)
    except BaseException as exc:  # report anything, including SystemExit from a script
        data = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=6)}
    with open(out_path, "w") as f:
        json.dump(data, f)
    return 0


def run_extra(name: str, quick: bool, log: Callable[[str], None]) -> Dict[str, Any]:
    timeout = EXTRA_TIMEOUT[quick]
    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, "out.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--run-extra", name, "--extra-out", out_path]
        if quick:
            cmd.append("--quick")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in [ROOT, env.get("PYTHONPATH", "")] if p)
        try:
            proc = subprocess.run(cmd, env=env, cwd=ROOT, timeout=timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout} s"}
        if not os.path.exists(out_path):
            tail = (proc.stderr or "").strip().splitlines()[-3:]
            return {"error": f"exit status {proc.returncode}: " + " | ".join(tail)}
        with open(out_path) as f:
            data = json.load(f)
    if "error" in data:
        log(f"  {name}: {data['error']}")
    return data


# ---- rendering ---------------------------------------------------------------------------
def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> List[str]:
    align = ["---:" if i in right else "---" for i in range(len(headers))]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _mark(text: str, bad: bool) -> str:
    return f"**{text}**" if bad else text


def comparison_table(rows: Sequence[C.Row], baseline: str) -> List[str]:
    cloud = baseline == "cloudpickle"
    speed_bar = CLOUDPICKLE_SPEED_BAR if cloud else PER_WORKLOAD_BAR
    size_bar = CLOUDPICKLE_SIZE_BAR if cloud else 1.0
    headers = ["workload", "ref", "dumps ours", f"dumps {baseline}", "x dumps", "loads ours", f"loads {baseline}",
               "x loads", "size ours", f"size {baseline}", "size ratio", "spread"]
    body = []
    for r in rows:
        b = r.base
        xd, xl, xs = r.ratio("dumps"), r.ratio("loads"), r.ratio("size")
        body.append([r.workload, "T" if r.ref else "F", C.fmt_time(r.ours.dumps), C.fmt_time(b.dumps),
                     _mark(C.fmt_ratio(xd), xd < speed_bar), C.fmt_time(r.ours.loads), C.fmt_time(b.loads),
                     _mark(C.fmt_ratio(xl), xl < speed_bar), C.fmt_size(r.ours.size), C.fmt_size(b.size),
                     _mark(C.fmt_ratio(xs, ""), xs > size_bar), f"{r.spread():.0%}"])
    for ref in (False, True, None):
        group = [r for r in rows if ref is None or r.ref is ref]
        if not group or (ref is None and len({r.ref for r in rows}) < 2):
            continue
        label = "all" if ref is None else f"ref={ref}"
        body.append([f"*geomean ({label}, n={len(group)})*", "", "", "",
                     f"*{C.fmt_ratio(_geomean([r.ratio('dumps') for r in group]))}*", "", "",
                     f"*{C.fmt_ratio(_geomean([r.ratio('loads') for r in group]))}*", "", "",
                     f"*{C.fmt_ratio(_geomean([r.ratio('size') for r in group]), '')}*", ""])
    return _md_table(headers, body, right=range(2, 12))


# Bars of issue 21, shown with the plain-data table (not part of --check)
PLAIN_GEOMEAN_BAR = 1.0   # msgspec time / ours, geomean, dumps and loads
PLAIN_WORKLOAD_BAR = 0.8  # msgspec time / ours, every workload


def plain_data_section(results: C.Results) -> List[str]:
    """Against msgspec, orjson and msgpack (issue 21): ref=False, one row per workload,
    their time over ours as columns, and our size over msgpack's."""
    rows = [r for r in results.rows if r.baseline in C.PLAIN_DATA and r.base is not None]
    if not rows:
        return []
    names = [n for n in C.PLAIN_DATA if any(r.baseline == n for r in rows)]
    by_workload: Dict[str, Dict[str, C.Row]] = {}
    for r in rows:
        by_workload.setdefault(r.workload, {})[r.baseline] = r
    headers = ["workload"] + [f"{n} {what}" for n in names for what in ("x dumps", "x loads")]
    headers += ["size ours", "size msgpack", "size o/msgpack", "spread"]
    body = []
    for workload, found in by_workload.items():
        cells = [workload]
        for n in names:
            r = found.get(n)
            cells += [C.fmt_ratio(r.ratio("dumps")) if r else "-", C.fmt_ratio(r.ratio("loads")) if r else "-"]
        mp = found.get("msgpack")
        any_row = next(iter(found.values()))
        cells += [C.fmt_size(any_row.ours.size), C.fmt_size(mp.base.size) if mp else "-",
                  C.fmt_ratio(mp.ratio("size"), "") if mp else "-",
                  f"{max(r.spread() for r in found.values()):.0%}"]
        body.append(cells)
    foot = ["*geomean*"]
    for n in names:
        group = [r for r in rows if r.baseline == n]
        foot += [f"*{C.fmt_ratio(_geomean([r.ratio(w) for r in group]))}*" for w in ("dumps", "loads")]
    mp_rows = [r for r in rows if r.baseline == "msgpack"]
    foot += ["", "", f"*{C.fmt_ratio(_geomean([r.ratio('size') for r in mp_rows]), '')}*" if mp_rows else "", ""]
    body.append(foot)
    versions = results.meta.get("baseline_versions") or {}
    out = ["## Against msgspec, orjson and msgpack (issue 21)", "",
           "Plain data only, `ref=False`, measured in the same alternating runs as the tables above. "
           "`x dumps` / `x loads`: their time / ours (> 1: pyfory faster); msgspec is its MessagePack "
           "`Encoder().encode` / `Decoder().decode`. Versions: "
           + ", ".join(f"{n} {versions.get(n) or '?'}" for n in names) + ".", ""]
    out += _md_table(headers, body, right=range(1, len(headers)))
    ms = [r for r in rows if r.baseline == "msgspec"]
    if ms:
        notes = []
        for what in ("dumps", "loads"):
            g = _geomean([r.ratio(what) for r in ms])
            notes.append(f"{what} geomean vs msgspec {C.fmt_ratio(g)} "
                         f"({'met' if g >= PLAIN_GEOMEAN_BAR else 'not met'}: >= {PLAIN_GEOMEAN_BAR:.1f}x)")
        low = [f"{r.workload} {w} {C.fmt_ratio(r.ratio(w))}" for r in ms for w in ("dumps", "loads")
               if r.ratio(w) < PLAIN_WORKLOAD_BAR]
        notes.append(f"every workload vs msgspec >= {PLAIN_WORKLOAD_BAR:.1f}x: "
                     + ("met" if not low else "not met (" + "; ".join(low) + ")"))
        larger = [r.workload for r in mp_rows if r.ours.size > r.base.size]
        if mp_rows:
            notes.append("size never larger than msgpack's: "
                         + ("met" if not larger else "not met (" + ", ".join(larger) + ")"))
        out += ["", "Bars of issue 21 (information; not part of `--check`): " + "; ".join(notes) + "."]
    return out + [""]


def _fmt_extra_value(v: Optional[float], unit: str) -> str:
    if v is None or v != v:
        return "n/a"
    if unit == "s":
        return C.fmt_time(v)
    return f"{v:,.0f} {unit}"


def extras_section(extras: Dict[str, Any]) -> List[str]:
    out = ["## Other benchmark scripts (not part of the bars)", ""]
    if not extras:
        out += ["Not run (`--no-extras`). `python bench/report.py` runs them in child processes through the",
                "functions they expose; see the module docstring.", ""]
        return out
    out += ["End-to-end measurements from the standalone scripts, through the functions they expose, each",
            "script in its own child process. Their statistics differ from the core table (stated per script);",
            "ratio > 1 means pyfory is faster (for times: baseline/ours; for rates: ours/baseline). The",
            "`pyfory` column is the script's pyfory-based path (for `zmq_bench.py`: `pyfory.integrations.zmq`).",
            ""]
    for name, data in extras.items():
        out.append(f"### `{EXTRA_SCRIPTS[name]}`")
        out.append("")
        if "error" in data:
            out += [f"Not included: {data['error']}", ""]
            continue
        out += [f"Statistic: {data['statistic']}.", ""]
        has_size = any("size_ours" in r for r in data["rows"])
        headers = ["measure", "pyfory", "baseline", "baseline figure", "ratio"]
        if has_size:
            headers += ["size ours", "size baseline"]
        body = []
        for r in data["rows"]:
            cells = [r["measure"], _fmt_extra_value(r["ours"], r["unit"]), r["baseline"],
                     _fmt_extra_value(r["base"], r["unit"]),
                     C.fmt_ratio(r["ratio"]) if r["ratio"] is not None else "n/a"]
            if has_size:
                cells += [C.fmt_size(r.get("size_ours")), C.fmt_size(r.get("size_base"))]
            body.append(cells)
        out += _md_table(headers, body, right=[1, 3, 4, 5, 6])
        out.append("")
    return out


def machine_lines(m: Dict[str, Any], p: Dict[str, Any], meta: Dict[str, Any]) -> List[str]:
    cores = f"{m['logical_cpus']} logical CPUs"
    if m.get("physical_cores"):
        cores += f" ({m['physical_cores']} cores)"
    if m.get("usable_cpus") not in (None, m["logical_cpus"]):
        cores += f", {m['usable_cpus']} usable by this process"
    cpu = m["cpu_model"] + (f" @ {float(m['cpu_mhz']):.0f} MHz" if m.get("cpu_mhz") else "")
    rev = p.get("git") or "unknown revision"
    if p.get("uncommitted_changes"):
        rev += " + uncommitted changes"
    ext = p.get("extensions", {})
    ext_text = ", ".join(f"{k} {'compiled' if v else 'NOT compiled'}" for k, v in ext.items()) or "none found"
    if p.get("stale_extensions"):
        ext_text += f"; STALE (.pyx newer than .so): {', '.join(p['stale_extensions'])}"
    before, after = m.get("loadavg_before"), m.get("loadavg_after")
    load = "n/a"
    if before:
        load = f"{before[0]:.2f} before"
        if after:
            load += f", {after[0]:.2f} after"
        load += f" (1-minute averages, on {m['usable_cpus']} CPUs)"
    lines = [
        f"- **CPU**: {cpu}; {cores}; {m['memory_gb']} GB RAM",
        f"- **OS**: {m['os']}, {m['kernel']} ({m['arch']})",
        f"- **Python**: {m['python']}",
        f"- **pyfory**: {p.get('version')} at git {rev}; Cython core: {ext_text}",
        f"- **baselines**: pickle protocol {meta['pickle_protocol']} (C `_pickle`)"
        + (f", cloudpickle {meta['cloudpickle']}" if meta.get("cloudpickle") else ", cloudpickle not installed"),
        f"- **load average**: {load}; niceness of the run: {m.get('niceness')}",
    ]
    if before and m.get("usable_cpus") and max(before[0], (after or [0])[0]) > 0.5 * m["usable_cpus"]:
        lines.append("- **warning**: the machine was shared and loaded while this ran: other processes competed "
                     "for the CPUs, so ratios near a bar are uncertain (see the spread column and the quartile "
                     "ranges of the bars)")
    return lines


def render_markdown(data: Dict[str, Any], chart_name: Optional[str]) -> str:
    results = C.Results.from_json(data["core"])
    meta, m, p = results.meta, data["machine"], data["pyfory"]
    bars = evaluate_bars(results, data["complete"])
    out = ["# pyfory performance report", ""]
    out.append(f"Generated by `{data['command']}` on {meta['date']}"
               f" in {data['elapsed_s'] / 60:.1f} minutes"
               + (" (rendered again from its saved raw numbers)." if data.get("rendered_from_json") else "."))
    if data["quick"]:
        out += ["", "> **Quick smoke run** (`--quick`): few, short timed runs. Not for publication."]
    if not data["complete"]:
        out += ["", f"> **Partial run**: only workloads matching {data['patterns']}."]
    out += ["", "## Machine", ""] + machine_lines(m, p, meta)
    spreads = [r.spread() for r in results.rows]
    out += ["", "## Method", "",
            f"Every time is the **median of {meta['repeats']} timed runs** per call (each run loops the call",
            f"for at least {meta['min_time']} s, the loop count found by an autorange as in `timeit`). The runs",
            "of all contenders of a workload are interleaved, so a busy moment of the machine hits them alike;",
            f"the garbage collector is {'on' if meta['gc_enabled_while_timing'] else 'off'} while timing; the",
            "C allocator is settled first (`workloads.settle_allocator`); every round trip is verified",
            "before it is timed. pickle's times do not depend on `ref`: they are measured once per workload",
            "and shown on both rows.", "",
            "- `x dumps`, `x loads`: baseline time / our time (> 1: pyfory faster).",
            "- `size ratio`: our payload bytes / the baseline's (< 1: pyfory smaller).",
            "- `spread`: the largest interquartile range / median among the row's timings (noise); "
            + (f"median spread {statistics.median(spreads):.0%}, largest {max(spreads):.0%}." if spreads else ""),
            "- Quartile ranges next to ratios: baseline q1 / our q3 to baseline q3 / our q1.",
            "- Bold: below the bar for that table (pickle: 1.0x per workload, size <= 1.0; cloudpickle: 2.0x,"
            " size <= 0.5).",
            ""]
    out += ["## Bars of issue 9", ""]
    rows = [[b.name, b.target, b.measured, ("**NOT MET**" if b.status == "not met" else b.status)
             + (f" ({b.note})" if b.note else "")] for b in bars]
    out += _md_table(["bar", "target", "measured", "status"], rows)
    unmet = [b for b in bars if b.status != "met"]
    out += ["", f"{len(bars) - len(unmet)} of {len(bars)} bars met." if unmet else f"All {len(bars)} bars met.", ""]
    for baseline, title in (("pickle", "Against pickle (protocol 5)"), ("cloudpickle", "Against cloudpickle")):
        rows_b = [r for r in results.rows if r.baseline == baseline and r.base is not None]
        if rows_b:
            out += [f"## {title}", ""] + comparison_table(rows_b, baseline) + [""]
    out += plain_data_section(results)
    unbased = sorted({r.workload for r in results.rows if r.base is None})
    if unbased:
        out += [f"Measured without a baseline (baseline not installed): {', '.join(unbased)}.", ""]
    if chart_name:
        out += ["## Chart", "", f"![pyfory / pickle and cloudpickle ratios]({chart_name})", ""]
    out += extras_section(data.get("extras") or {})
    notes = [o for o in results.outcomes if o.status != "ok"]
    if notes:
        out += ["## Notes", ""]
        if any(o.status == "pending-passes" for o in notes):
            out += ["`pending-passes`: still marked `pending` in `bench/workloads.py`, but the round trip passes,",
                    "so the workload is measured and counted in the bars like any other.", ""]
        for o in notes:
            out.append(f"- `{o.workload}`: {o.status}: {o.message}")
        out.append("")
    return "\n".join(out)


def render_chart(data: Dict[str, Any], path: str) -> None:
    from pyfory._extras import require

    matplotlib = require("matplotlib", "the report's chart")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    results = C.Results.from_json(data["core"])
    m = data["machine"]
    groups = [("pickle", [r for r in results.rows if r.baseline == "pickle" and r.base is not None]),
              ("cloudpickle", [r for r in results.rows if r.baseline == "cloudpickle" and r.base is not None])]
    labels, entries, separators = [], [], []
    for baseline, rows in groups:
        if not rows:
            continue
        if labels:
            separators.append(len(labels) - 0.5)
        tag = "" if baseline == "pickle" else " [cloudpickle]"
        for r in rows:
            labels.append(f"{r.workload} ref={'T' if r.ref else 'F'}{tag}")
            entries.append({"dumps": (r.ratio("dumps"), *ratio_range(r, "dumps")),
                            "loads": (r.ratio("loads"), *ratio_range(r, "loads")),
                            "size": r.ratio("size"), "geo": False})
        for ref in (False, True):
            g = [r for r in rows if r.ref is ref]
            if g:
                labels.append(f"GEOMEAN ref={'T' if ref else 'F'}{tag}")
                entries.append({what: (_geomean([r.ratio(what) for r in g]),
                                       _geomean([ratio_range(r, what)[0] for r in g]),
                                       _geomean([ratio_range(r, what)[1] for r in g]))
                                for what in ("dumps", "loads")}
                               | {"size": _geomean([r.ratio("size") for r in g]), "geo": True})
    n = len(labels)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 0.24 * n + 2.6), sharey=True,
                                   gridspec_kw={"width_ratios": [3, 2]})
    ys = list(range(n))
    h = 0.38
    for what, off, color in (("dumps", -h / 2, "#3b6fb6"), ("loads", h / 2, "#e08a2c")):
        vals = [e[what][0] for e in entries]
        err = [[max(0.0, e[what][0] - e[what][1]) for e in entries],
               [max(0.0, e[what][2] - e[what][0]) for e in entries]]
        ax1.barh([y + off for y in ys], vals, height=h, color=color, label=f"{what}: baseline time / ours",
                 xerr=err, error_kw={"elinewidth": 0.7, "capsize": 1.5, "ecolor": "#333333"})
    for y, e in zip(ys, entries):
        if e["geo"]:
            for ax in (ax1, ax2):
                ax.axhspan(y - 0.5, y + 0.5, color="#eeeeee", zorder=0)
    ax1.set_xscale("log")
    hi = max(max(e["dumps"][2] or 1, e["loads"][2] or 1) for e in entries)
    lo = min(min(e["dumps"][1] or 1, e["loads"][1] or 1) for e in entries)
    ax1.set_xlim(min(0.5, lo * 0.9), max(4, hi * 1.3))
    ticks = [t for t in (0.5, 0.75, 1, 1.3, 2, 3, 5, 10, 20, 50) if ax1.get_xlim()[0] <= t <= ax1.get_xlim()[1]]
    ax1.xaxis.set_major_locator(FixedLocator(ticks))
    ax1.xaxis.set_minor_locator(NullLocator())
    ax1.xaxis.set_minor_formatter(NullFormatter())
    ax1.set_xticklabels([f"{t:g}x" for t in ticks])
    ax1.axvline(1.0, color="black", lw=1, label="1.0: parity (pickle: every workload)")
    ax1.axvline(LOADS_GEOMEAN_BAR, color="#e08a2c", lw=1, ls=":", label=f"{LOADS_GEOMEAN_BAR:g}x: loads geomean bar")
    ax1.axvline(DUMPS_GEOMEAN_BAR, color="#3b6fb6", lw=1, ls="--",
                label=f"{DUMPS_GEOMEAN_BAR:g}x: dumps geomean bar; cloudpickle, every workload")
    ax1.set_title("speed: baseline time / pyfory time (> 1: pyfory faster)", fontsize=8)
    sizes = [e["size"] for e in entries]
    ax2.barh(ys, sizes, height=0.6, color="#4c9a5b", label="size: pyfory bytes / baseline bytes")
    ax2.axvline(1.0, color="black", lw=1)
    ax2.axvline(SIZE_GEOMEAN_BAR, color="#4c9a5b", lw=1, ls="--", label=f"{SIZE_GEOMEAN_BAR:g}: size geomean bar")
    ax2.axvline(CLOUDPICKLE_SIZE_BAR, color="#888888", lw=1, ls=":",
                label=f"{CLOUDPICKLE_SIZE_BAR:g}: size bar vs cloudpickle")
    ax2.set_xlim(0, max(1.1, max(sizes) * 1.05))
    ax2.set_title("size: pyfory bytes / baseline bytes (< 1: smaller)", fontsize=8)
    handles = [h for ax in (ax1, ax2) for h in ax.get_legend_handles_labels()[0]]
    fig.legend(handles, [h.get_label() for h in handles], loc="lower center", ncol=3, fontsize=7, frameon=False)
    for ax in (ax1, ax2):
        for s in separators:
            ax.axhline(s, color="#555555", lw=0.8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", color="#dddddd", lw=0.5)
        ax.set_axisbelow(True)
    ax1.set_yticks(ys)
    ax1.set_yticklabels(labels)
    ax1.set_ylim(n - 0.5, -0.5)
    meta = results.meta
    fig.suptitle(f"pyfory {data['pyfory'].get('version')} vs pickle 5 / cloudpickle: median of {meta['repeats']} "
                 f"runs, whiskers = quartile range\n{m['cpu_model']}, {m['usable_cpus']} CPUs, {m['python']}, "
                 f"{m['os']} ({meta['date'][:10]})" + (" - QUICK RUN" if data["quick"] else ""), fontsize=9)
    fig.tight_layout(rect=(0, 0.7 / fig.get_figheight(), 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    _shrink_png(path)


def _shrink_png(path: str, limit: int = 200_000) -> None:
    """Keep the chart small: quantize to a palette (lossless-looking for a flat chart)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow comes with matplotlib
        return
    try:
        with Image.open(path) as im:
            small = im.convert("RGB").quantize(colors=64)
        small.save(path, optimize=True)
    except Exception as exc:  # keep matplotlib's PNG as it is
        print(f"note: could not shrink {path}: {exc}", file=sys.stderr)
    if os.path.getsize(path) > limit:
        print(f"warning: {path} is {os.path.getsize(path):,} bytes (> {limit:,})", file=sys.stderr)


# ---- command line ------------------------------------------------------------------------
def measure(args, log: Callable[[str], None]) -> Dict[str, Any]:
    import time

    start = time.monotonic()
    machine = machine_info()
    pyf = pyfory_info()
    if pyf["stale_extensions"]:
        log(f"warning: stale extensions {pyf['stale_extensions']}: run `python setup.py build_ext --inplace`")
    selected = C.select(args.patterns)
    repeats = args.repeats or (C.QUICK_REPEATS if args.quick else REPORT_REPEATS)
    min_time = args.min_time or (C.QUICK_MIN_TIME if args.quick else REPORT_MIN_TIME)
    log(f"core suite: {len(selected)} workloads, median of {repeats} runs of >= {min_time} s, "
        f"niceness {machine['niceness']}, load {machine['loadavg_before']}")
    results = C.run_suite(selected, repeats=repeats, min_time=min_time, log=log)
    if hasattr(os, "getloadavg"):
        machine["loadavg_after"] = list(os.getloadavg())
    extras: Dict[str, Any] = {}
    for name in ([] if args.no_extras else args.extras):
        log(f"extra: {EXTRA_SCRIPTS[name]} (child process)")
        extras[name] = run_extra(name, args.quick, log)
    return {"command": "python bench/report.py" + (" " + " ".join(args.argv) if args.argv else ""),
            "quick": args.quick, "complete": not args.patterns, "patterns": args.patterns,
            "elapsed_s": time.monotonic() - start, "machine": machine, "pyfory": pyf,
            "core": results.to_json(), "extras": extras}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/report.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke run: {C.QUICK_REPEATS} runs of >= {C.QUICK_MIN_TIME} s, small extras; "
                         "written to a temp directory unless --out-dir is given")
    ap.add_argument("--repeats", type=int, help=f"timed runs per figure (default {REPORT_REPEATS})")
    ap.add_argument("--min-time", type=float, help=f"seconds per timed run (default {REPORT_MIN_TIME})")
    ap.add_argument("-k", dest="patterns", action="append", default=[], metavar="SUBSTR",
                    help="only workloads whose name contains SUBSTR (a partial report)")
    ap.add_argument("--extras", default=",".join(EXTRAS),
                    help=f"comma-separated standalone scripts to include (default: {','.join(EXTRAS)})")
    ap.add_argument("--no-extras", action="store_true", help="only the core workloads")
    ap.add_argument("--out-dir", help="where results.md and results.png go (default: bench/)")
    ap.add_argument("--json", metavar="FILE", help="also write the raw numbers as JSON")
    ap.add_argument("--from-json", metavar="FILE", help="render a saved --json run instead of measuring")
    ap.add_argument("--no-chart", action="store_true", help="skip the PNG")
    ap.add_argument("--check", action="store_true", help="exit with status 3 if a bar is not met")
    ap.add_argument("--run-extra", choices=EXTRAS, help=argparse.SUPPRESS)
    ap.add_argument("--extra-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.argv = [a for a in (sys.argv[1:] if argv is None else argv)]

    if args.run_extra:
        return run_extra_child(args.run_extra, args.quick, args.extra_out)
    args.extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    unknown = set(args.extras) - set(EXTRAS)
    if unknown:
        ap.error(f"unknown extras {sorted(unknown)}; choose from {','.join(EXTRAS)}")

    def log(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    if args.from_json:
        with open(args.from_json) as f:
            data = json.load(f)
        data["rendered_from_json"] = True
    else:
        data = measure(args, log)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
        log(f"raw numbers: {args.json}")

    out_dir = args.out_dir or (os.path.join(tempfile.gettempdir(), "pyfory-report-quick") if data["quick"] else HERE)
    os.makedirs(out_dir, exist_ok=True)
    md_path = os.path.join(out_dir, "results.md")
    png_path = os.path.join(out_dir, "results.png")
    chart = None
    if not args.no_chart:
        try:
            render_chart(data, png_path)
            chart = os.path.basename(png_path)
        except ImportError as exc:
            log(f"no chart: {exc}")
    text = render_markdown(data, chart)
    with open(md_path, "w") as f:
        f.write(text + "\n")
    bars = evaluate_bars(C.Results.from_json(data["core"]), data["complete"])
    print(text[text.index("## Bars"):text.index("## Against")] if "## Against" in text else text)
    print(f"written: {md_path}" + (f", {png_path} ({os.path.getsize(png_path):,} bytes)" if chart else ""))
    results = C.Results.from_json(data["core"])
    if results.failed:
        return 1
    if args.check and any(b.status != "met" for b in bars):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
