"""Per-call instruction counts of small dumps/loads, measured with callgrind.

Run under valgrind twice, with N=0 and with N calls, and divide the difference:

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.0 \
        python -S bench/callgrind_calls.py dict3 dumps 0
    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.N \
        python -S bench/callgrind_calls.py dict3 dumps 100000

or let `python bench/callgrind_calls.py --all N` run every case and print the table.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALUES = {
    "dict3": lambda: {"id": 12345, "name": "alice", "ok": True},
    "list100": lambda: list(range(100)),
}


def run(case, op, n):
    sys.path.insert(0, ROOT)
    from pyfory import Fory
    f = Fory()
    value = VALUES[case]()
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


def count(case, op, n):
    out = f"/tmp/cg.{os.getpid()}.{case}.{op}.{n}"
    env = dict(os.environ, PYTHONHASHSEED="0")
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                    sys.executable, "-S", os.path.abspath(__file__), case, op, str(n)],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(out) as fh:
        for line in fh:
            if line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split()[1])
    os.unlink(out)
    return total


def main():
    if sys.argv[1] == "--all":
        n = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
        for case in VALUES:
            for op in ("dumps", "loads"):
                per_call = (count(case, op, n) - count(case, op, 0)) / n
                print(f"{case:8} {op:6} {per_call:8.0f} instructions/call")
        return
    run(sys.argv[1], sys.argv[2], int(sys.argv[3]))


if __name__ == "__main__":
    main()
