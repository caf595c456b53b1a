"""Compare pyfory against pickle (protocol 5) and cloudpickle, in one process, as ratios.

    python -m bench.compare                 # every workload
    python -m bench.compare -k dict -k list # workloads whose name contains "dict" or "list"
    python -m bench.compare --quick         # fewer, shorter repeats (a rough look)
    python -m bench.compare --json out.json # also write the raw numbers
    python -m bench.compare --from-json out.json  # print a saved run's table again
    python bench/compare.py --list          # the workloads and their options

The workloads, the contenders and the measuring loop are the package's
(``pyfory/quickbench.py``, whose docstring gives the method): this is
``python -m pyfory bench`` with ``--gc``, ``--list`` and ``--from-json`` added, and
``bench/report.py`` runs the same suite with more runs. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from pyfory import quickbench as Q


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", dest="patterns", action="append", default=[], metavar="SUBSTR",
                    help="run workloads whose name contains SUBSTR (repeatable: any of them)")
    ap.add_argument("--quick", action="store_true",
                    help=f"{Q.QUICK_REPEATS} repeats of >= {Q.QUICK_MIN_TIME} s instead of "
                         f"{Q.DEFAULT_REPEATS} of >= {Q.DEFAULT_MIN_TIME} s")
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
            print(Q.report_text(Q.Results.from_json(json.load(f))))
        return 0
    if args.list:
        for wl in Q.select(args.patterns):
            opts = [f"issue {wl.issue}", "refs=" + "/".join(str(r) for r in wl.refs),
                    f"strict={wl.strict}", "vs " + "/".join(wl.baselines)]
            if wl.setup:
                opts.append("setup")
            if wl.pending:
                opts.append(f"pending: {wl.pending}")
            print(f"{wl.name:22} {wl.description}  [{', '.join(opts)}]")
        return 0
    status = Q.run(quick=args.quick, patterns=args.patterns, json_path=args.json, repeats=args.repeats,
                   min_time=args.min_time, all_cloudpickle=args.cloudpickle, keep_gc=args.gc)
    if args.json and status != 2:
        print(f"\nraw numbers written to {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
