"""ZeroMQ benchmarks: pyfory.integrations.zmq against pyzmq's send_pyobj/recv_pyobj (pickle).

    python bench/zmq_bench.py              # everything, about a minute
    python bench/zmq_bench.py small array  # only some parts: small, stream, inproc, array, executor
    python bench/zmq_bench.py --quick      # fewer repetitions
    python bench/zmq_bench.py --pyzmq-path # ours through pyzmq's send/recv (zmq.Frame) only,
                                           # to see what the direct libzmq calls buy

Not a test: it prints a table of rates and ratios (higher ratio = pyfory faster); each
rate is the median of several rounds, the contenders alternating within every round.

- small: round trips per second over tcp://127.0.0.1 between two processes (an echo
  process loads and re-sends every message) for a 3-key dict and a 2,000-record JSON-like
  list: fzmq.send/recv against send_pyobj/recv_pyobj.
- stream: messages per second one way over tcp://127.0.0.1 between two processes: 100,000
  3-key dicts sent back to back, received and loaded by the other process, which
  acknowledges the end marker. Where the round trip above waits on the sockets' latency
  for every message, this is paced by the per-message work of both ends.
- array: a 100 MB float64 numpy array one way over tcp://127.0.0.1 (time until the
  receiver has the array and acknowledges), against send_pyobj and against raw
  ``send(array, copy=False)`` of its bytes received with ``copy=False`` (the limit).
- inproc: the per-message cost without the sockets' latency: a 3-key dict sent and
  received on an inproc PAIR in one process (round trips per second), fzmq.send/recv
  against send_pyobj/recv_pyobj.
- executor: 10,000 tiny tasks (a module-level function) with 2 local workers, against
  the standard library's ProcessPoolExecutor(2) and, when present,
  pyfory.integrations.futures.ProcessPoolExecutor(2); plus a closure for pyfory.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import functools
import importlib
import os
import statistics
import subprocess
import sys
import time

from pyfory._extras import require

zmq = require("zmq", "bench/zmq_bench.py", extra="bench")
try:
    import numpy as np
except ImportError:  # pragma: no cover
    np = None

from pyfory.integrations import zmq as fzmq  # noqa: E402


def tiny(x):
    """The tiny task of the executor benchmark."""
    return x + 1


def _this_module():
    # the workers must import the task function by name: use this file's importable name
    spec = globals().get("__spec__")
    name = spec.name if spec is not None and spec.name != "__main__" else "zmq_bench"
    if name == "zmq_bench" and os.path.dirname(os.path.abspath(__file__)) not in sys.path:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    return importlib.import_module(name)


def small_dict():
    return {"id": 12345, "name": "Alice", "active": True}


def records(n=2000):
    return [{"id": i, "name": f"user{i}", "email": f"user{i}@example.com", "active": i % 3 == 0,
             "score": i * 0.5, "tags": ["alpha", "beta"] if i % 2 else ["gamma"],
             "address": {"city": "Springfield", "zip": f"{10000 + i}"}} for i in range(n)]


# -- echo / sink processes --------------------------------------------------------------


def _serve(mode: str, address: str) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    sock.connect(address)
    while True:
        if mode == "fory":
            obj = fzmq.recv(sock)
            if obj == "stop":
                break
            fzmq.send(sock, obj)
        elif mode == "pickle":
            obj = sock.recv_pyobj()
            if obj == "stop":
                break
            sock.send_pyobj(obj)
        elif mode in ("fory-stream", "pickle-stream"):
            obj = fzmq.recv(sock) if mode == "fory-stream" else sock.recv_pyobj()
            if obj == "stop":
                break
            if obj == "end":
                sock.send(b"ok")
        elif mode == "fory-sink":
            obj = fzmq.recv(sock)
            if isinstance(obj, str):
                break
            sock.send(b"ok")
        elif mode == "pickle-sink":
            obj = sock.recv_pyobj()
            if isinstance(obj, str):
                break
            sock.send(b"ok")
        elif mode == "raw-sink":
            frame = sock.recv(copy=False)
            if len(frame) < 16:
                break
            np.frombuffer(frame, dtype=np.float64)
            sock.send(b"ok")
    sock.close(0)
    ctx.term()


class Peer:
    def __init__(self, mode: str):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PAIR)
        self.sock.linger = 0
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", mode,
                                      f"tcp://127.0.0.1:{port}"]
                                     + (["--pyzmq-path"] if fzmq.transport._libzmq is None else []),
                                     env={**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd()
                                                                                      for p in sys.path)})

    def close(self, stop_message):
        stop_message()
        self.proc.wait(30)
        self.sock.close(0)
        self.ctx.term()


def _interleaved_median(runs: dict, repeats: int) -> dict:
    """Call every run() in turn, `repeats` rounds (so a busy moment of the machine hits all
    of them alike), and keep the median of each one's results."""
    samples: dict = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            samples[name].append(run())
    return {name: statistics.median(values) for name, values in samples.items()}


def _echo_peer(mode: str, value):
    peer = Peer(mode)
    sock = peer.sock
    if mode == "fory":
        def loop(n):
            for _ in range(n):
                fzmq.send(sock, value)
                fzmq.recv(sock)

        def stop():
            fzmq.send(sock, "stop")
    else:
        def loop(n):
            for _ in range(n):
                sock.send_pyobj(value)
                sock.recv_pyobj()

        def stop():
            sock.send_pyobj("stop")
    return peer, loop, stop


def _peer_rates(make_peer, value, count: int, repeats: int) -> dict:
    """Messages (or round trips) per second of pyfory and pickle, each with its own peer
    process, interleaved and warmed up; the peers are stopped afterwards."""
    peers = {mode: make_peer(mode, value) for mode in ("fory", "pickle")}
    for _, loop, _ in peers.values():
        loop(max(1, count // 10))  # warm up (and wait for the connection)

    def timed(loop):
        t = time.perf_counter()
        loop(count)
        return count / (time.perf_counter() - t)

    rates = _interleaved_median({mode: functools.partial(timed, loop) for mode, (_, loop, _) in peers.items()},
                                repeats * 2)
    for peer, _, stop in peers.values():
        peer.close(stop)
    return rates


def bench_small(repeats: int, quick: bool):
    rows = []
    for label, value, count in (("3-key dict", small_dict(), 2000 if quick else 5000),
                                ("2,000 records", records(), 20 if quick else 60)):
        rates = _peer_rates(_echo_peer, value, count, repeats)
        rows.append((f"round trips/s, {label}", rates["fory"], rates["pickle"], "send_pyobj"))
    return rows


def _stream_peer(mode: str, value):
    peer = Peer(f"{mode}-stream")
    sock = peer.sock
    send = functools.partial(fzmq.send, sock) if mode == "fory" else sock.send_pyobj

    def loop(n):
        # n messages one way, then an end marker the peer acknowledges once it has
        # received and loaded all of them (the queues' high-water marks pace the sender)
        for _ in range(n):
            send(value)
        send("end")
        sock.recv()

    return peer, loop, functools.partial(send, "stop")


def bench_stream(repeats: int, quick: bool):
    rates = _peer_rates(_stream_peer, small_dict(), 20_000 if quick else 100_000, repeats)
    return [("messages/s one way, 3-key dict", rates["fory"], rates["pickle"], "send_pyobj")]


def bench_inproc(repeats: int, quick: bool):
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://zmq-bench-inproc")
    b.connect("inproc://zmq-bench-inproc")
    value = small_dict()
    count = 5_000 if quick else 20_000

    def fory_rate(n=count):
        t = time.perf_counter()
        for _ in range(n):
            fzmq.send(a, value)
            fzmq.recv(b)
        return n / (time.perf_counter() - t)

    def pickle_rate(n=count):
        t = time.perf_counter()
        for _ in range(n):
            a.send_pyobj(value)
            b.recv_pyobj()
        return n / (time.perf_counter() - t)

    rates = _interleaved_median({"fory": fory_rate, "pickle": pickle_rate}, repeats * 2)
    a.close(linger=0)
    b.close(linger=0)
    ctx.term()
    return [("inproc round trips/s, 3-key dict, one process", rates["fory"], rates["pickle"], "send_pyobj")]


def _sink_peer(mode: str, array):
    peer = Peer(mode)
    sock = peer.sock
    if mode == "fory-sink":
        def once():
            fzmq.send(sock, array)
            sock.recv()

        def stop():
            fzmq.send(sock, "stop")
    elif mode == "pickle-sink":
        def once():
            sock.send_pyobj(array)
            sock.recv()

        def stop():
            sock.send_pyobj("stop")
    else:
        def once():
            sock.send(array, copy=False)
            sock.recv()

        def stop():
            sock.send(b"stop")
    return peer, once, stop


def bench_array(repeats: int, quick: bool):
    if np is None:
        return [("100 MB array", float("nan"), float("nan"), "numpy missing")]
    array = np.random.default_rng(0).random(100 * 1024 * 1024 // 8)
    mb = array.nbytes / 1e6
    peers = {mode: _sink_peer(mode, array) for mode in ("fory-sink", "pickle-sink", "raw-sink")}
    for _, once, _ in peers.values():
        once()  # warm up

    def timed(once):
        t = time.perf_counter()
        once()
        return mb / (time.perf_counter() - t)

    rates = _interleaved_median({mode: functools.partial(timed, once) for mode, (_, once, _) in peers.items()},
                              repeats * (2 if quick else 4))
    for peer, _, stop in peers.values():
        peer.close(stop)
    return [
        ("100 MB array one way, MB/s (vs pickle)", rates["fory-sink"], rates["pickle-sink"], "send_pyobj"),
        ("100 MB array one way, MB/s (vs raw)", rates["fory-sink"], rates["raw-sink"], "raw send(copy=False)"),
    ]


def _executor_rate(executor, fn, n):
    t = time.perf_counter()
    futures = [executor.submit(fn, i) for i in range(n)]
    for f in futures:
        f.result()
    return n / (time.perf_counter() - t)


def bench_executor(repeats: int, quick: bool):
    me = _this_module()
    n = 2000 if quick else 10000
    k = 1
    closure = lambda x: x + k  # noqa: E731
    with contextlib.ExitStack() as stack:
        ours = stack.enter_context(fzmq.Executor(local_workers=2))
        ours.wait_for_workers(2, 60)
        stdlib = stack.enter_context(cf.ProcessPoolExecutor(2))
        pools = {"ours": ours, "stdlib": stdlib}
        try:
            from pyfory.integrations.futures import ProcessPoolExecutor as ForyPool
        except ImportError:
            ForyPool = None
        else:
            pools["futures"] = stack.enter_context(ForyPool(2))
        for pool in pools.values():
            list(pool.map(me.tiny, range(200)))  # warm up: workers started, imports done
        list(ours.map(closure, range(200)))
        runs = {name: functools.partial(_executor_rate, pool, me.tiny, n) for name, pool in pools.items()}
        runs["ours-closure"] = functools.partial(_executor_rate, ours, closure, n)
        rates = _interleaved_median(runs, repeats)
    rows = [(f"Executor tasks/s, {n} tiny tasks", rates["ours"], rates["stdlib"],
             "stdlib ProcessPoolExecutor(2)")]
    if "futures" in rates:
        rows.append((f"Executor tasks/s, {n} tiny tasks", rates["ours"], rates["futures"],
                     "pyfory futures.ProcessPoolExecutor(2)"))
    else:
        rows.append((f"Executor tasks/s, {n} tiny tasks", rates["ours"], float("nan"),
                     "pyfory futures.ProcessPoolExecutor (not available)"))
    rows.append((f"Executor tasks/s, {n} tiny closures", rates["ours-closure"], rates["stdlib"],
                 "stdlib, module-level function (it cannot send closures)"))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="*", default=["small", "stream", "inproc", "array", "executor"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pyzmq-path", action="store_true",
                        help="send and receive through pyzmq's send/recv only (no direct libzmq calls)")
    parser.add_argument("--serve", nargs=2, metavar=("MODE", "ADDRESS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pyzmq_path:
        fzmq.transport._libzmq = None
    if args.serve:
        _serve(*args.serve)
        return 0
    repeats = 2 if args.quick else 5
    rows = []
    for part in args.parts:
        rows += {"small": bench_small, "stream": bench_stream, "inproc": bench_inproc, "array": bench_array,
                 "executor": bench_executor}[part](repeats, args.quick)
    print(f"\npyfory.integrations.zmq benchmarks (python {sys.version.split()[0]}, pyzmq {zmq.__version__}, "
          f"libzmq {zmq.zmq_version()}, {os.cpu_count()} CPUs; ours "
          f"{'through pyzmq' if fzmq.transport._libzmq is None else 'with direct libzmq calls'})\n")
    print(f"| {'measure':45} | {'pyfory':>12} | {'baseline':>12} | {'ratio':>6} | baseline |")
    print(f"|{'-' * 47}|{'-' * 14}|{'-' * 14}|{'-' * 8}|----------|")
    for name, ours, base, label in rows:
        ratio = ours / base if base == base and base else float("nan")
        print(f"| {name:45} | {ours:12,.0f} | {base:12,.0f} | {ratio:5.2f}x | {label} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
