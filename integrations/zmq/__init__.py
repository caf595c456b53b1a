"""ZeroMQ integration: pyfory messages on ZeroMQ sockets, and a task executor over ZeroMQ.

Transport
---------
One multipart message per object: the pyfory payload in the first frame, then one frame
per out-of-band buffer (numpy arrays, large bytes/bytearray/memoryview, PickleBuffer),
sent with ``copy=False`` so large buffers are handed to ZeroMQ without a copy, and on the
receiving side rebuilt directly on the received frames (a received numpy array shares
memory with its frame)::

    from pyfory.integrations import zmq as fzmq

    fzmq.send(sock, {"x": big_array})          # like sock.send_pyobj(...)
    obj = fzmq.recv(sock)                      # like sock.recv_pyobj()
    await fzmq.send_async(async_sock, obj)     # zmq.asyncio sockets
    obj = await fzmq.recv_async(async_sock)

    ctx = fzmq.Context()                       # sockets with send_obj/recv_obj methods
    s = ctx.socket(zmq.PAIR); s.send_obj(obj); s.recv_obj()

``encode(obj) -> frames`` and ``decode(frames) -> obj`` are the building blocks, for
sockets that add their own envelope frames (ROUTER identities, topics).

A malformed or truncated message raises a ``pyfory.error.ForyError`` subclass; the whole
message has been consumed, so the socket stays usable for the next one. The default
serializer is ``Fory(ref=True, strict=False)`` (pickle's and ``recv_pyobj``'s trust model:
only talk to peers you trust); pass ``fory=pyfory.Fory()`` (strict) or a policy for
anything else.

Task execution
--------------
``Executor(address, local_workers=0, **fory_options)`` is a ``concurrent.futures.Executor``
that binds a ROUTER socket at ``address``; workers connect to it::

    with Executor("tcp://127.0.0.1:5555", local_workers=2) as ex:
        print(ex.submit(lambda x: x * 2, 21).result())

    # on any machine (see "Security" below before leaving loopback)
    python -m pyfory.integrations.zmq worker tcp://127.0.0.1:5555 --concurrency 4

Every worker process advertises a number of slots (1 running + ``prefetch`` queued batches);
the executor never sends it more than that (backpressure: the rest wait in the executor,
and go to whichever worker frees a slot first). A batch is a single task until the
executor has measured how long tasks take; tiny tasks then travel many to a message (one
payload, so a closure used by all of them is written once), long ones stay one per batch.
Workers ping the executor every ``heartbeat_interval`` seconds from a separate thread, so
a long task is not mistaken for a dead worker; a worker that stops answering for
``heartbeat_timeout`` seconds (dead, stopped, stuck in C code holding the GIL, or
unreachable), or a local worker process that exits, has its tasks retried on other
workers up to ``max_retries`` times; after that their futures fail with
``WorkerLostError``. Local workers that die are replaced. Delivery is at least once: a
task whose worker died after running it, before its result arrived, runs again.

Security
--------
A worker runs the code it receives. Executors and workers therefore only use loopback
TCP, ``ipc://`` and ``inproc://`` addresses unless ZeroMQ CURVE is configured (or
``insecure=True`` / ``--insecure`` is given explicitly). With CURVE the *worker* is the
CURVE server: it holds the server secret key and only accepts executors whose client
public key is in its ``authorized_clients`` directory; the executor checks the workers'
server public key. ``python -m pyfory.integrations.zmq keys DIR`` writes such a set of
keys. Workers accept ``--strict`` (payloads may contain only builtins and ``--register``ed
classes, and only functions named with ``--allow`` run), ``--allow`` and ``--policy``.

Workers prove who they are, on loopback too: without ``curve_keys`` an executor on a
loopback or ``ipc://`` address makes a random secret of its own and hands it to the local
workers it starts (on their stdin, never on a command line); its ROUTER socket is a ZeroMQ
PLAIN server (a ZAP handler in the executor's process) that lets in only peers presenting
that secret, so any other local process completes no handshake: it gets no task and the
executor reads none of its frames. Hand-started workers therefore need CURVE keys
(``curve_keys=DIR`` / ``--curve-keys DIR``), or the executor is made open explicitly with
``insecure=True``. Results from authenticated workers are read with ``strict=False``: they
run the executor's code anyway. ``inproc://`` (reachable only from this process) stays open.

Layout
------
One module per concern; every public name is importable from this package:
``transport`` (encode/decode, send/recv, the Socket and Context classes), ``security``
(address checks, CURVE keys, the local workers' secret), ``protocol`` (the task wire
protocol: message kinds and binary headers), ``worker``, ``executor``, ``cli`` (the command
line, run by ``__main__``). What both process executors share lives in the task core,
``pyfory.integrations._tasks``: task items and batches, outcome records and remote errors,
the buffer hand-off (here: frames), the batches each worker holds.
"""

from __future__ import annotations

from pyfory.integrations.zmq.cli import main  # noqa: F401
from pyfory.integrations.zmq.executor import Executor  # noqa: F401
from pyfory.integrations.zmq.protocol import RemoteError, RemoteTraceback, WorkerLostError  # noqa: F401
from pyfory.integrations.zmq.security import LOCAL_WORKER_USER, generate_keys, is_local_address  # noqa: F401
from pyfory.integrations.zmq.transport import (  # noqa: F401 - the public names
    OOB_THRESHOLD,
    AsyncContext,
    AsyncSocket,
    Context,
    Socket,
    decode,
    default_fory,
    encode,
    recv,
    recv_async,
    send,
    send_async,
)
from pyfory.integrations.zmq.worker import Worker  # noqa: F401

__all__ = [
    "send",
    "recv",
    "send_async",
    "recv_async",
    "encode",
    "decode",
    "Socket",
    "Context",
    "AsyncSocket",
    "AsyncContext",
    "Executor",
    "Worker",
    "WorkerLostError",
    "RemoteError",
    "RemoteTraceback",
    "generate_keys",
    "is_local_address",
    "OOB_THRESHOLD",
]
