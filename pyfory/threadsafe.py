"""ThreadSafeFory: one Fory per thread, with registrations applied to all of them."""

from __future__ import annotations

import threading
from typing import Any, Callable, List, Optional

from pyfory._core import Fory
from pyfory.buffers import OOB_THRESHOLD


class ThreadSafeFory:
    """A Fory that many threads may share.

    ``ThreadSafeFory(**fory_kwargs)`` or ``ThreadSafeFory(factory=callable)``. Each thread
    gets its own underlying Fory, created on first use; ``register`` is applied to every
    existing instance and replayed on the ones created later.
    """

    def __init__(self, factory: Optional[Callable[[], Fory]] = None, **fory_kwargs: Any):
        if factory is not None and fory_kwargs:
            raise TypeError("give a factory or Fory keyword arguments, not both")
        self._factory = factory or (lambda: Fory(**fory_kwargs))
        self._local = threading.local()
        self._lock = threading.Lock()
        self._registrations: List[tuple] = []
        self._instances: List[Fory] = []
        self._factory()  # fail early on bad options

    def _fory(self) -> Fory:
        fory = getattr(self._local, "fory", None)
        if fory is None:
            fory = self._factory()
            with self._lock:
                for args, kwargs in self._registrations:
                    fory.register(*args, **kwargs)
                self._instances.append(fory)
            self._local.fory = fory
        return fory

    def register(self, cls, type_id=None, name=None, serializer=None) -> None:
        """Register cls on every underlying Fory (now and later)."""
        kwargs = {"type_id": type_id, "name": name, "serializer": serializer}
        with self._lock:
            self._registrations.append(((cls,), kwargs))
            for fory in self._instances:
                fory.register(cls, **kwargs)

    def dumps(self, obj: Any, buffer_callback=None) -> bytes:
        return self._fory().dumps(obj, buffer_callback=buffer_callback)

    def loads(self, data, buffers=None) -> Any:
        return self._fory().loads(data, buffers=buffers)

    def dumps_with_buffers(self, obj: Any, min_size: int = OOB_THRESHOLD) -> list:
        """Fory.dumps_with_buffers: [payload, large buffer views...]."""
        return self._fory().dumps_with_buffers(obj, min_size)

    serialize = dumps
    deserialize = loads

    def dump(self, obj: Any, stream) -> None:
        self._fory().dump(obj, stream)

    def load(self, stream) -> Any:
        return self._fory().load(stream)
