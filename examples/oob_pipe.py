"""Send large numpy arrays to another process through a multiprocessing Pipe, with the
payload in band and the arrays' memory out of band.

The sender serializes with a buffer_callback that keeps every buffer out of band: the
payload is then a few hundred bytes, and each buffer is a view of the array's own memory
(no copy), sent as its own message with Connection.send_bytes. The receiver allocates a
bytearray of the announced size for each buffer, receives into it with recv_bytes_into,
and hands those bytearrays to loads: the arrays it gets back are built on them (no copy
after the bytes arrived), and are writable because the bytearrays are.

    python examples/oob_pipe.py [megabytes]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import pyfory  # noqa: E402


def make_value(n: int) -> dict:
    return {
        "weights": np.arange(n, dtype=np.float64) * 0.5,              # the big one
        "ids": np.arange(n // 8, dtype=np.int32)[::-1].copy(),
        "meta": {"name": "layer-1", "shape": (n,), "dtype": np.dtype("float64")},
    }


def send(conn, fory, value) -> tuple:
    """Payload and buffers as separate messages: [sizes], payload, buffer, buffer, ..."""
    buffers = []
    t0 = time.perf_counter()
    # list.append returns None (falsy): every buffer offered goes out of band
    payload = fory.dumps(value, buffer_callback=buffers.append)
    send.dumps_seconds = time.perf_counter() - t0
    conn.send_bytes(fory.dumps([bo.total_bytes() for bo in buffers]))
    conn.send_bytes(payload)
    for bo in buffers:
        conn.send_bytes(bo.raw())             # a view of the array's memory: no copy
    return payload, buffers


def receive(conn, fory):
    sizes = fory.loads(conn.recv_bytes())
    payload = conn.recv_bytes()
    buffers = []
    for size in sizes:
        buf = bytearray(size)                 # preallocated, writable
        got = conn.recv_bytes_into(buf)
        if got != size:
            raise RuntimeError(f"expected a {size}-byte buffer, got {got} bytes")
        buffers.append(buf)
    t0 = time.perf_counter()
    value = fory.loads(payload, buffers=buffers)
    receive.loads_seconds = time.perf_counter() - t0
    return value, payload, buffers


def receiver(conn, report, n: int) -> None:
    fory = pyfory.Fory()                      # strict mode: numpy data needs no registration
    report.send_bytes(b"ready")
    t0 = time.perf_counter()
    value, payload, buffers = receive(conn, fory)
    elapsed = time.perf_counter() - t0
    weights = value["weights"]
    expected = make_value(n)
    report.send_bytes(fory.dumps({
        "seconds": elapsed,
        "loads_seconds": receive.loads_seconds,
        "payload_bytes": len(payload),
        "buffer_bytes": [len(b) for b in buffers],
        "equal": all(np.array_equal(value[k], expected[k]) for k in ("weights", "ids"))
        and value["meta"] == expected["meta"],
        "zero_copy": bool(np.shares_memory(weights, np.frombuffer(buffers[0], dtype=np.uint8))),
        "writable": bool(weights.flags.writeable),
    }))


def main() -> None:
    mb = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    n = mb * (1 << 20) // 8
    value = make_value(n)
    fory = pyfory.Fory()
    ctx = mp.get_context("spawn")
    recv_end, send_end = ctx.Pipe(duplex=False)
    report_recv, report_send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=receiver, args=(recv_end, report_send, n))
    child.start()
    report_recv.recv_bytes()                  # the child has started (spawn) and imported

    t0 = time.perf_counter()
    payload, buffers = send(send_end, fory, value)
    sent = time.perf_counter() - t0
    result = fory.loads(report_recv.recv_bytes())
    total = time.perf_counter() - t0
    child.join(timeout=60)

    data_bytes = sum(bo.total_bytes() for bo in buffers)
    print(f"value: {mb} MB float64 array + {value['ids'].nbytes / 2**20:.0f} MB int32 array + metadata")
    print(f"payload (in band):   {len(payload):,} bytes")
    print(f"buffers (out of band): {len(buffers)} messages, "
          + ", ".join(f"{bo.total_bytes():,}" for bo in buffers) + " bytes")
    print(f"sender:   {sent * 1e3:8.1f} ms to serialize and write every message "
          f"(fory.dumps, a first call: {send.dumps_seconds * 1e6:.0f} us)")
    print(f"receiver: {result['seconds'] * 1e3:8.1f} ms to receive and rebuild "
          f"({data_bytes / 2**20 / result['seconds']:.0f} MiB/s; "
          f"fory.loads, a first call: {result['loads_seconds'] * 1e6:.0f} us)")
    print(f"total:    {total * 1e3:8.1f} ms (until the receiver's report arrived)")
    print(f"round trip equal: {result['equal']}; array built on the received bytearray "
          f"(no copy): {result['zero_copy']}; writable: {result['writable']}")
    if not (result["equal"] and result["zero_copy"] and result["writable"]) or child.exitcode != 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
