"""Out-of-band buffers: the pickle protocol 5 contract.

`dumps(obj, buffer_callback=cb)` offers each large binary buffer met in the graph to
`cb` as a BufferObject; a falsy return sends it out of band (the payload keeps only
its size), a truthy one keeps it in the payload. `loads(data, buffers=[...])` takes
the out-of-band buffers back, in the same order.
"""

from __future__ import annotations

from typing import BinaryIO

# bytes, bytearray, memoryview and array.array of at least this many bytes are offered
# to buffer_callback; PickleBuffer objects and numpy arrays are always offered (as pickle does)
OOB_THRESHOLD = 1 << 16


class BufferObject:
    """One out-of-band buffer: a view of the original memory, never a copy."""

    __slots__ = ("_view",)

    def __init__(self, view: memoryview):
        self._view = view

    def getbuffer(self) -> memoryview:
        """The memory as a memoryview (zero copy for contiguous data)."""
        return self._view

    def raw(self) -> memoryview:
        """The memory as a flat memoryview of bytes (format 'B')."""
        view = self._view
        if view.format == "B" and view.ndim == 1:
            return view
        return view.cast("B")

    def total_bytes(self) -> int:
        return self._view.nbytes

    def write_to(self, stream: BinaryIO) -> None:
        stream.write(self.raw())

    def __len__(self) -> int:
        return self._view.nbytes

    def __repr__(self) -> str:
        return f"BufferObject({self._view.nbytes} bytes)"


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
