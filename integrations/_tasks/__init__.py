"""The task core shared by the futures and zmq executors (internal).

Each executor keeps its transport (pipes with a small strict envelope; ZeroMQ frames with
a binary header) and its policy for a lost worker (the futures pool breaks, as the
standard library's does; the zmq executor retries elsewhere). What travels and what it
means is written once, here, one module per concern:

- ``batches``: task items, batch sizing, shedding tasks that cannot be serialized, and a
  batch the worker could not load (retried task by task);
- ``outcomes``: running a task, its outcome record ``(status, body, refs, tb)``, remote
  tracebacks, exceptions that cannot travel, errors raised while loading a payload;
- ``handoff``: out-of-band buffers (ZeroMQ frames, or POSIX shared memory);
- ``inflight``: the batches a worker holds, answered and lost.

A message of either executor:

    tasks    batch id, task ids, [task item, ...] (one payload, its buffers' refs)
    results  batch id, the ids it answers, [outcome record, ...], seconds they took
    failed   batch id, the ids of the batch, one outcome record (the loading error)
"""

from pyfory.integrations._tasks.batches import (  # noqa: F401
    batch_failed,
    batch_size,
    check_batch,
    encode_batch,
    open_item,
    task_item,
    task_seconds_average,
)
from pyfory.integrations._tasks.handoff import FrameHandoff, SharedMemoryHandoff  # noqa: F401
from pyfory.integrations._tasks.inflight import InFlight  # noqa: F401
from pyfory.integrations._tasks.outcomes import (  # noqa: F401
    ERROR,
    ERROR_TEXT,
    OK,
    RemoteError,
    RemoteTraceback,
    _RemoteTraceback,
    capture,
    check_records,
    error_text,
    payload_error,
    quoted,
    settle,
    traceback_text,
    with_remote_traceback,
)
