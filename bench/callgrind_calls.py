"""Instruction counts of dumps/loads, measured with callgrind (stable on a busy machine,
unlike timings).

Run under valgrind twice, with N=0 and with N calls, and divide the difference:

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.0 \
        python -S bench/callgrind_calls.py dict3 dumps 0
    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.N \
        python -S bench/callgrind_calls.py dict3 dumps 100000

or let `python bench/callgrind_calls.py --all N` run every small case and print the
table, and `python bench/callgrind_calls.py --plain N` the plain-data workloads of issue
21 (``pyfory/quickbench.py``, ``ref=False``), N calls each (default 5), per call.
`--keep DIR` keeps the N-call profiles (for callgrind_annotate).
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALUES = {
    "dict3": lambda: {"id": 12345, "name": "alice", "ok": True},
    "list100": lambda: list(range(100)),
    "none": lambda: None,
}
# the plain-data workloads of issue 21, by their quickbench names
PLAIN = ("str_dict_10k", "int_list_100k", "float_list_100k", "json_records_2k",
         "small_dict", "non_ascii_str_10k", "nested_lists_1k")


def make_value(case):
    if case in VALUES:
        return VALUES[case]()
    from pyfory import quickbench
    return quickbench.WORKLOADS[case].make()


def run(case, op, n):
    sys.path.insert(0, ROOT)
    from pyfory import Fory
    f = Fory()
    value = make_value(case)
    payload = f.dumps(value)
    f.loads(payload)
    if op == "dumps":
        dumps = f.dumps
        for _ in range(n):
            dumps(value)
    else:
        loads = f.loads
        for _ in range(n):
            loads(payload)


def count(case, op, n, keep=None):
    out = f"/tmp/cg.{os.getpid()}.{case}.{op}.{n}"
    env = dict(os.environ, PYTHONHASHSEED="0")
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                    sys.executable, "-S", os.path.abspath(__file__), case, op, str(n)],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(out) as fh:
        for line in fh:
            if line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split()[1])
    if keep and n:
        os.makedirs(keep, exist_ok=True)
        os.replace(out, os.path.join(keep, f"{case}.{op}"))
    else:
        os.unlink(out)
    return total


def table(cases, n, keep=None):
    for case in cases:
        for op in ("dumps", "loads"):
            per_call = (count(case, op, n, keep) - count(case, op, 0)) / n
            print(f"{case:18} {op:6} {per_call:12,.0f} instructions/call", flush=True)


def main():
    args = sys.argv[1:]
    keep = None
    if "--keep" in args:
        i = args.index("--keep")
        keep = args[i + 1]
        del args[i:i + 2]
    if args[0] == "--all":
        table(VALUES, int(args[1]) if len(args) > 1 else 100000, keep)
        return
    if args[0] == "--plain":
        cases = [a for a in args[2:]] or PLAIN
        table(cases, int(args[1]) if len(args) > 1 else 5, keep)
        return
    run(args[0], args[1], int(args[2]))


if __name__ == "__main__":
    main()
