"""Buffer hand-off: how the large buffers of a payload (numpy arrays, bytes, PickleBuffer)
reach the other process without being copied into the payload.

Both executors write a payload with ``handoff.write(fory, obj) -> (body, refs)`` and read
it with ``fory.loads(body, buffers=reader.open(refs))``, the reader being a received
message's ``FrameReader`` or the ``SharedMemoryHandoff`` itself; ``refs`` travels in the
message next to the body and says where the buffers are:

- ``FrameHandoff`` (ZeroMQ): refs is how many frames of the multipart message, after the
  ones already opened, belong to this body; the frames are memoryviews of the original
  memory on the way out and the received frames' memory on the way in.
- ``SharedMemoryHandoff`` (pipes): refs is a list of ``(segment name, size)``; each buffer
  is written once into a POSIX shared memory segment that the reader maps and unlinks at
  once, so the memory lives as long as the objects built on it.
"""

from __future__ import annotations

import errno
import itertools
import mmap
import os
import threading
from typing import Any, List, Optional, Sequence, Tuple

from pyfory.error import MalformedDataError

try:
    import _posixshmem
except ImportError:  # pragma: no cover - Windows
    _posixshmem = None


# ---- ZeroMQ frames ----------------------------------------------------------------------------
class FrameHandoff:
    """Buffers of at least min_size bytes become frames of their own, appended to
    ``frames`` (take them with take() and send them after the message's other frames)."""

    __slots__ = ("min_size", "frames")

    def __init__(self, min_size: int):
        self.min_size = min_size
        self.frames: list = []

    def write(self, fory: Any, obj: Any) -> Tuple[bytes, int]:
        parts = fory.dumps_with_buffers(obj, self.min_size)
        if len(parts) == 1:
            return parts[0], 0
        self.frames.extend(parts[1:])
        return parts[0], len(parts) - 1

    def take(self) -> list:
        frames, self.frames = self.frames, []
        return frames

    def discard(self) -> None:
        self.frames = []

    @staticmethod
    def reader(frames: Sequence[Any]) -> "FrameReader":
        return FrameReader(frames)


class FrameReader:
    """Hands out a received message's buffer frames, in order, refs frames per body."""

    __slots__ = ("frames", "pos")

    def __init__(self, frames: Sequence[Any]):
        self.frames = frames
        self.pos = 0

    def open(self, refs: Any) -> Optional[list]:
        if refs is None or refs == 0:
            return None
        if type(refs) is not int or refs < 0 or self.pos + refs > len(self.frames):
            raise MalformedDataError(f"a message names {refs!r} buffer frame(s); "
                                     f"{len(self.frames) - self.pos} are left")
        frames = self.frames[self.pos:self.pos + refs]
        self.pos += refs
        return [memoryview(f) for f in frames]

    def skip(self, refs: Any) -> None:
        if type(refs) is int and refs > 0:
            self.pos += refs


# ---- POSIX shared memory --------------------------------------------------------------------
_SHM_DIR = "/dev/shm"
_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0)

# held while a segment is being made: a worker whose parent died sweeps its executor's
# segments under it, so that none is half-made (and missed) when the worker exits
shm_create_lock = threading.Lock()


def shm_supported() -> bool:
    return _posixshmem is not None


def _shm_create(name: str, view: memoryview) -> None:
    fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, view.nbytes)
        if hasattr(os, "posix_fallocate"):
            # reserve the pages now: writing to a mapping of a full tmpfs is a SIGBUS,
            # this is an OSError (ENOSPC) we can handle
            try:
                os.posix_fallocate(fd, 0, view.nbytes)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
        mm = mmap.mmap(fd, view.nbytes)
    except BaseException:
        os.close(fd)
        shm_unlink(name)
        raise
    os.close(fd)
    try:
        mm[:] = view
    except BaseException:
        shm_unlink(name)
        raise
    finally:
        mm.close()


def _shm_attach(name: str, size: int) -> mmap.mmap:
    """Map a segment and unlink its name: the memory lives as long as the mapping."""
    fd = _posixshmem.shm_open("/" + name, os.O_RDWR, 0o600)
    try:
        return mmap.mmap(fd, size, flags=mmap.MAP_SHARED | _MAP_POPULATE)
    finally:
        os.close(fd)
        shm_unlink(name)


def shm_unlink(name: str) -> None:
    try:
        _posixshmem.shm_unlink("/" + name)
    except (FileNotFoundError, OSError):
        pass


def shm_sweep(prefix: str) -> None:
    """Unlink every segment whose name starts with prefix (Linux: listed in /dev/shm)."""
    if _posixshmem is None:
        return
    try:
        names = os.listdir(_SHM_DIR)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix):
            shm_unlink(name)


class SharedMemoryHandoff:
    """Buffers of at least threshold bytes go to new segments named prefix + a counter
    (threshold None: everything stays in the payload); only segments whose names start
    with accept are opened or unlinked on the reading side (the executor's own)."""

    __slots__ = ("prefix", "accept", "threshold", "counter", "names")

    def __init__(self, prefix: str, threshold: Optional[int], accept: str):
        self.prefix = prefix
        self.accept = accept
        self.threshold = threshold if shm_supported() else None
        self.counter = itertools.count()
        self.names: List[tuple] = []

    def configure(self, fory: Any) -> None:
        """Let fory offer buffers as small as the threshold (its own default is larger)."""
        if self.threshold is not None:
            fory.oob_threshold = min(fory.oob_threshold, max(self.threshold, 1))

    def __call__(self, buf: Any) -> bool:  # pyfory's buffer_callback
        size = buf.total_bytes()
        if self.threshold is None or size < self.threshold or size == 0:
            return True  # in band
        name = f"{self.prefix}{next(self.counter)}"
        try:
            with shm_create_lock:
                _shm_create(name, buf.raw())
        except OSError:
            return True  # no room in shared memory (a small /dev/shm): in the payload
        self.names.append((name, size))
        return False

    def write(self, fory: Any, obj: Any) -> Tuple[bytes, list]:
        try:
            body = fory.dumps(obj, buffer_callback=self)
        except BaseException:
            self.discard()
            raise
        return body, self.take()

    def take(self) -> list:
        names, self.names = self.names, []
        return names

    def discard(self) -> None:
        self.release(self.take())

    def _checked(self, refs: Any) -> list:
        if refs is None:
            return []
        if type(refs) not in (list, tuple) or not all(
                type(r) is tuple and len(r) == 2 and type(r[0]) is str and r[0].startswith(self.accept)
                and "/" not in r[0] and type(r[1]) is int and r[1] > 0 for r in refs):
            raise MalformedDataError(f"malformed shared memory references: {refs!r}"[:200])
        return list(refs)

    def open(self, refs: Any) -> Optional[list]:
        """Map the segments of refs (and unlink their names)."""
        if not refs and (refs is None or type(refs) in (list, tuple)):
            return None
        segments = self._checked(refs)
        if not segments:
            return None
        maps = []
        try:
            for name, size in segments:
                maps.append(_shm_attach(name, size))
        except BaseException:
            self.release(segments)
            raise
        return maps

    def skip(self, refs: Any) -> None:
        self.release(self._checked(refs))

    def release(self, refs: Any) -> None:
        """Unlink segments nobody will map (a message not delivered, a task cancelled)."""
        for name, _ in refs or ():
            shm_unlink(name)
