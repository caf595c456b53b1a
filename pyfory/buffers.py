"""Out-of-band buffers: the pickle protocol 5 contract.

`dumps(obj, buffer_callback=cb)` offers each large binary buffer met in the graph to
`cb` as a BufferObject; a falsy return sends it out of band (the payload keeps only
its size), a truthy one keeps it in the payload. `loads(data, buffers=[...])` takes
the out-of-band buffers back, in the same order.
"""

from __future__ import annotations

# bytes, bytearray, memoryview and array.array of at least this many bytes are offered
# to buffer_callback; PickleBuffer objects and numpy arrays are always offered (as pickle does)
OOB_THRESHOLD = 1 << 16


# BufferObject lives in the Cython buffer module: it needs the C-level buffer protocol
# on every Python version (a Python class only gets it from 3.12, PEP 688).
from pyfory._buffer import BufferObject  # noqa: E402


def as_view(buf) -> memoryview:
    """A flat byte view of something handed to loads(buffers=...)."""
    if isinstance(buf, BufferObject):
        buf = buf.getbuffer()
    view = memoryview(buf)
    if not view.c_contiguous:
        raise ValueError("out-of-band buffers must be C-contiguous")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view
