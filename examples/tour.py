"""A short tour of pyfory: run it, read the output, then read the code.

    python examples/tour.py            # every section, a few seconds
    python examples/tour.py speed      # only the sections named (see SECTIONS)

Each section is one function decorated with ``@section``; sections run in the order they
are defined. To add one (multiprocessing, concurrent.futures, ZeroMQ, ...), write a
function below the others and decorate it: nothing else needs to change.
"""

from __future__ import annotations

import datetime
import decimal
import io
import os
import pickle
import statistics
import sys
import tempfile
import textwrap
import timeit
from typing import Callable, Dict

import pyfory

SECTIONS: Dict[str, Callable[[], None]] = {}
SECTIONS_RUN: list = []


def section(title: str):
    """Register the decorated function as a tour section with a printed title."""

    def decorate(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            print()
            print(f"== {len(SECTIONS_RUN) + 1}. {title} ".ljust(78, "="))
            SECTIONS_RUN.append(fn.__name__)
            fn()

        SECTIONS[fn.__name__] = run
        return fn

    return decorate



def say(text: str = "") -> None:
    print(textwrap.indent(text, "  ") if text else "")


# ---------------------------------------------------------------------------------------
@section("Builtin values round trip")
def builtins() -> None:
    fory = pyfory.Fory()  # Python native mode; ref=False, strict=True are the defaults
    record = {
        "id": 12345678901234567890123456789,  # beyond 64 bits
        "user": "Zoë",
        "created": datetime.datetime(2024, 5, 17, 9, 30, tzinfo=datetime.timezone.utc),
        "price": decimal.Decimal("19.99"),
        "tags": {"new", "sale"},
        "thumbnail": b"\x89PNG\r\n\x1a\n",
        "ratings": [4.5, 5.0, 3.5],
        "shipping": {"express": True, "eta_days": 2, "tracking": None},
        "dimensions": (30, 20, 5),
    }
    data = fory.dumps(record)
    back = fory.loads(data)
    say(f"fory.dumps(record) -> {len(data)} bytes "
        f"(pickle protocol 5: {len(pickle.dumps(record, protocol=5))} bytes)")
    say(f"fory.loads(data) == record -> {back == record}")
    say()
    for key, value in back.items():
        same = type(value) is type(record[key]) and value == record[key]
        say(f"  {key:<11} {type(value).__name__:<9} {'kept' if same else 'CHANGED'}: {value!r}")


# ---------------------------------------------------------------------------------------
@section("Shared references and cycles (ref=True)")
def shared_references() -> None:
    address = {"city": "Lisbon"}
    people = [{"name": "Ana", "home": address}, {"name": "Rui", "home": address}]
    say("Two people share one address dict; after a round trip, is it still one dict?")
    for ref in (False, True):
        fory = pyfory.Fory(ref=ref)
        back = fory.loads(fory.dumps(people))
        shared = back[0]["home"] is back[1]["home"]
        say(f"  Fory(ref={ref!s:<5}) -> {'one shared dict' if shared else 'two equal copies'}")
    say()

    node = {"name": "ouroboros"}
    node["self"] = node
    fory = pyfory.Fory(ref=True)
    back = fory.loads(fory.dumps(node))
    say("A dict that contains itself:")
    say(f"  Fory(ref=True)  -> back['self'] is back: {back['self'] is back}")
    try:
        pyfory.Fory(ref=False).dumps(node)
    except pyfory.ForyError as exc:
        say(f"  Fory(ref=False) -> {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------------------------
class Player:
    def __init__(self, name: str, score: int, inventory: list):
        self.name, self.score, self.inventory = name, score, inventory

    def __repr__(self) -> str:
        return f"Player({self.name!r}, score={self.score}, inventory={self.inventory!r})"


class PlayerSerializer(pyfory.Serializer):
    """Writes exactly the three fields, in order; reads them back the same way."""

    def write(self, ctx, player):
        ctx.write_string(player.name)
        ctx.write_varint64(player.score)
        ctx.write_value(player.inventory)  # any nested value

    def read(self, ctx):
        return Player(ctx.read_string(), ctx.read_varint64(), ctx.read_value())


@section("Strict mode: only registered classes")
def strict_mode() -> None:
    hero = Player("Ada", 9001, ["lamp", ("coins", 12)])
    fory = pyfory.Fory()  # strict=True: the default
    try:
        fory.dumps(hero)
    except pyfory.error.TypeNotRegisteredError as exc:
        say("Unregistered class, strict mode refuses to write it:")
        say(f"  {type(exc).__name__}: {exc}")
    say()

    fory.register(Player, serializer=PlayerSerializer)
    data = fory.dumps(hero)
    say(f"After fory.register(Player, serializer=PlayerSerializer): {len(data)} bytes")
    say(f"  loads -> {fory.loads(data)!r}")
    say()

    stranger = pyfory.Fory()  # a reader that never registered Player
    try:
        stranger.loads(data)
    except pyfory.error.TypeNotRegisteredError as exc:
        say("A reader without the registration will not build the object either:")
        say(f"  {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------------------------
@section("Several values through a file")
def files() -> None:
    fory = pyfory.Fory()
    values = [{"event": "start", "at": datetime.date(2024, 1, 1)}, list(range(5)), "the end"]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "events.fory")
        with open(path, "wb") as f:
            for value in values:
                fory.dump(value, f)
        say(f"fory.dump() x {len(values)} -> {os.path.getsize(path)} bytes in {os.path.basename(path)}")
        with open(path, "rb") as f:
            while True:
                try:
                    say(f"  fory.load(f) -> {fory.load(f)!r}")
                except EOFError:
                    say("  fory.load(f) -> EOFError: end of the file, as pickle.load does")
                    break
    stream = io.BytesIO()
    fory.dump("in memory too", stream)
    stream.seek(0)
    say(f"and any file-like object: {fory.load(stream)!r}")


# ---------------------------------------------------------------------------------------
@section("Functions, lambdas, closures and local classes (like cloudpickle)")
def code_by_value() -> None:
    fory = pyfory.Fory(ref=True, strict=False)   # trusted data only: payloads carry code
    rate = 1.2

    def scaled(x):
        return x * rate                          # a closure over `rate`

    class Invoice:                               # a local class, methods and all
        def __init__(self, amount):
            self.amount = amount

        def total(self):
            return scaled(self.amount)

    data = fory.dumps([lambda x: x + 1, scaled, Invoice(100)])
    inc, fn, invoice = fory.loads(data)
    say(f"lambda(41) -> {inc(41)}, closure(10) -> {fn(10)}, local class method -> {invoice.total()}")
    say(f"{len(data)} bytes for all three; strict mode refuses them:")
    try:
        pyfory.Fory().loads(data)
    except pyfory.error.ForyError as e:
        say(f"  {type(e).__name__}: {str(e)[:90]}")


@section("Out-of-band buffers: big arrays without copies")
def out_of_band() -> None:
    try:
        import numpy as np
    except ImportError:
        say("(numpy is not installed: pip install -e '.[numpy]' to see this section)")
        return
    fory = pyfory.Fory()
    array = np.arange(1_000_000, dtype=np.float64)
    buffers = []
    payload = fory.dumps({"weights": array}, buffer_callback=lambda b: buffers.append(b) or False)
    say(f"payload {len(payload)} bytes + {len(buffers)} buffer of {buffers[0].total_bytes():,} bytes")
    loaded = fory.loads(payload, buffers=[b.getbuffer() for b in buffers])["weights"]
    say(f"loaded array shares memory with the buffer (no copy): {np.shares_memory(loaded, array)}")


@section("multiprocessing and concurrent.futures with lambdas")
def process_pools() -> None:
    import multiprocessing

    from pyfory.integrations import multiprocessing as fory_mp
    from pyfory.integrations.futures import ProcessPoolExecutor

    k = 3
    with fory_mp.installed():
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            say(f"Pool.map(lambda x: x * k, range(6)) -> {pool.map(lambda x: x * k, range(6))}")
    with ProcessPoolExecutor(max_workers=2) as pool:
        say(f"executor.submit(closure) -> {[pool.submit(lambda i: i * k, i).result() for i in range(3)]}")


@section("ZeroMQ: objects over sockets, tasks over workers")
def zeromq() -> None:
    try:
        import zmq
    except ImportError:
        say("(pyzmq is not installed: pip install -e '.[zmq]' to see this section)")
        return
    from pyfory.integrations import zmq as fory_zmq

    ctx = zmq.Context.instance()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    pull.bind("inproc://tour")
    push.connect("inproc://tour")
    fory_zmq.send(push, {"task": lambda x: x ** 2, "args": (7,)})
    msg = fory_zmq.recv(pull)
    say(f"received over inproc: task(*args) -> {msg['task'](*msg['args'])}")
    push.close()
    pull.close()
    with fory_zmq.Executor(local_workers=2) as ex:
        offset = 100
        results = list(ex.map(lambda x: x + offset, range(5)))
        say(f"Executor.map(lambda, ...) on 2 local workers, over {ex.address} -> {results}")


# ---------------------------------------------------------------------------------------
def _per_call(*fns: Callable[[], object], budget: float = 0.01, runs: int = 7) -> list:
    """Median seconds per call of each fn. The runs of all fns are interleaved, so a
    burst of noise on a busy machine hits every contender alike."""
    timers = [timeit.Timer(fn) for fn in fns]
    numbers = [max(1, int(budget / max(t.timeit(1), 1e-7))) for t in timers]
    samples: list = [[] for _ in fns]
    for _ in range(runs):
        for timer, number, out in zip(timers, numbers, samples):
            out.append(timer.timeit(number) / number)
    return [statistics.median(out) for out in samples]


def _bar(ratio: float) -> str:
    return "#" * max(1, min(30, round(ratio * 4)))


@section("Speed and size against pickle (protocol 5)")
def speed() -> None:
    workloads = {
        "dict of 10,000 str->str": {f"key{i}": f"value{i}" for i in range(10_000)},
        "list of 100,000 floats": [i * 0.731 for i in range(100_000)],
        "1,000 JSON-like records": [
            {"id": i, "name": f"user{i}", "active": i % 3 == 0, "score": i * 1.5,
             "tags": ["a", "b"], "address": {"city": "Oslo", "zip": None}}
            for i in range(1_000)
        ],
        "3-key dict (per call)": {"id": 1, "name": "ana", "ok": True},
    }
    fory = pyfory.Fory()
    say("pyfory vs pickle, median of 7 interleaved timed runs each.")
    say("(A quick look: python -m bench.compare runs the full, careful comparison.)")
    for name, obj in workloads.items():
        _race(fory, name, obj)


def _race(fory: pyfory.Fory, name: str, obj: object) -> None:
    data, pdata = fory.dumps(obj), pickle.dumps(obj, protocol=5)
    assert fory.loads(data) == obj
    ours_d, theirs_d, ours_l, theirs_l = _per_call(
        lambda: fory.dumps(obj), lambda: pickle.dumps(obj, 5),
        lambda: fory.loads(data), lambda: pickle.loads(pdata))
    say()
    say(f"{name}")
    for what, ours, theirs in (("dumps", ours_d, theirs_d), ("loads", ours_l, theirs_l)):
        ratio = theirs / ours
        verdict = f"{ratio:5.2f}x faster" if ratio >= 1 else f"{1 / ratio:5.2f}x slower"
        say(f"  {what}  {_fmt(ours):>9} vs {_fmt(theirs):>9}  {verdict}  {_bar(ratio)}")
    say(f"  size   {len(data):>9,} vs {len(pdata):>9,}  {len(data) / len(pdata):5.2f} of pickle's")

def _fmt(seconds: float) -> str:
    for unit, scale in (("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


# ---------------------------------------------------------------------------------------
def main(argv) -> int:
    unknown = [name for name in argv if name not in SECTIONS]
    if unknown:
        print(f"unknown section(s) {unknown}; choose from: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    print(f"pyfory {pyfory.__version__} tour -- Python {sys.version.split()[0]}")
    for name in argv or SECTIONS:
        SECTIONS[name]()
    print()
    print("That's the tour. Next: python -m bench.compare for the full benchmark table.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
