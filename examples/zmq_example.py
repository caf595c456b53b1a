"""pyfory over ZeroMQ: objects and numpy arrays on sockets, and a task executor.

    python examples/zmq_example.py

1. Send Python objects (with large numpy arrays inside) between two sockets: one
   multipart message per object, the arrays travel in their own frames without being
   copied, and the received arrays live in the received frames.
2. Run lambdas and closures on worker processes with pyfory.integrations.zmq.Executor,
   get results, exceptions with the worker's traceback, and large results out of band.
3. How to run workers on other machines (CURVE keys) — printed at the end.
"""

from __future__ import annotations

import asyncio
import os
import time

import zmq
from pyfory.integrations import zmq as fzmq

import pyfory.error

try:
    import numpy as np
except ImportError:  # numpy is optional for this example
    np = None


def transport() -> None:
    print("== 1. objects on sockets")
    ctx = fzmq.Context()  # sockets with send_obj / recv_obj
    sender = ctx.socket(zmq.PAIR)
    receiver = ctx.socket(zmq.PAIR)
    port = sender.bind_to_random_port("tcp://127.0.0.1")
    receiver.connect(f"tcp://127.0.0.1:{port}")

    message = {"step": 1, "labels": ["cat", "dog"], "weights": {"a": 0.5, "b": 1.5}}
    if np is not None:
        message["image"] = np.random.default_rng(0).random((1000, 1000))  # 8 MB

    sender.send_obj(message)
    frames = receiver.recv_multipart(copy=False)  # look at the message itself...
    print(f"  one message of {len(frames)} frame(s): payload {len(frames[0])} bytes"
          + (f", array frame {len(frames[1]):,} bytes" if len(frames) > 1 else ""))
    received = fzmq.decode(frames)  # ...then decode it (recv_obj does both)
    if np is not None:
        in_frame = np.shares_memory(received["image"], np.frombuffer(frames[1], dtype=np.uint8))
        print(f"  array equal: {np.array_equal(received['image'], message['image'])}, "
              f"built on the received frame (no copy): {in_frame}")

    # the functions work on any socket, including zmq.asyncio ones
    async def async_roundtrip():
        actx = fzmq.AsyncContext()
        a, b = actx.socket(zmq.PAIR), actx.socket(zmq.PAIR)
        a.bind("inproc://example")
        b.connect("inproc://example")
        await a.send_obj({"hello": "asyncio"})
        out = await b.recv_obj()
        actx.destroy(linger=0)
        return out

    print(f"  asyncio: {asyncio.run(async_roundtrip())}")

    # a malformed message raises a pyfory error; the socket goes on working
    sender.send_multipart([b"not a pyfory payload"])
    try:
        receiver.recv_obj()
    except pyfory.error.ForyError as e:
        print(f"  malformed message -> {type(e).__name__}: {e}")
    sender.send_obj("next message")
    print(f"  socket still usable: {receiver.recv_obj()!r}")
    ctx.destroy(linger=0)


def fail(x):
    if x == 3:
        raise ValueError(f"bad input {x}")
    return x


def executor() -> None:
    print("== 2. tasks on worker processes")
    t = time.perf_counter()
    with fzmq.Executor(local_workers=2) as ex:  # tcp://127.0.0.1 on a free port
        ex.wait_for_workers(2, timeout=60)
        print(f"  executor at {ex.address}, 2 workers ready in {time.perf_counter() - t:.1f} s")

        k = 10
        print(f"  lambda: {ex.submit(lambda x: x * k, 4).result()}")
        print(f"  map over a closure: {list(ex.map(lambda x: x + k, range(5)))}")
        pids = set(ex.map(lambda _: (time.sleep(0.05), os.getpid())[1], range(8)))
        print(f"  load balanced over {len(pids)} worker processes")

        error = ex.submit(fail, 3).exception()
        print(f"  exception: {type(error).__name__}: {error}")
        last_line = str(error.__cause__).strip().splitlines()[-2]
        print(f"  remote traceback ends with: {last_line.strip()}")

        if np is not None:
            big = ex.submit(lambda n: np.ones(n), 5_000_000).result()  # 40 MB back, out of band
            print(f"  large result: {big.nbytes:,} bytes, sum {big.sum():.0f}")

        t = time.perf_counter()
        futures = [ex.submit(abs, -i) for i in range(10_000)]
        assert [f.result() for f in futures] == list(range(10_000))
        print(f"  10,000 tiny tasks: {10_000 / (time.perf_counter() - t):,.0f} tasks/s")
    print("  shut down: the worker processes are gone")


def remote_workers() -> None:
    print("== 3. workers on other machines")
    print("""  Workers prove who they are. Local workers get their executor's own secret;
  workers started by hand need ZeroMQ CURVE keys, on loopback as anywhere else:
      python -m pyfory.integrations.zmq keys ./keys        # once; copy to the machines
      Executor("tcp://0.0.0.0:5555", curve_keys="./keys")  # client.key_secret + server.key
      python -m pyfory.integrations.zmq worker tcp://HOST:5555 --curve-keys ./keys
  (or Executor("tcp://127.0.0.1:5555", insecure=True) lets any local process be a worker)
  Lock a worker down further with --strict --allow 'mypackage.tasks:*' or --policy.""")


if __name__ == "__main__":
    transport()
    executor()
    remote_workers()
