"""ThreadSafeFory: one Fory per thread, with registrations applied to all of them."""

from __future__ import annotations

import threading
from typing import Any, Callable, List, Optional

from pyfory._core import Fory
from pyfory.buffers import OOB_THRESHOLD


class ThreadSafeFory:
    """A Fory that many threads may share.

    ``ThreadSafeFory(**fory_kwargs)`` or ``ThreadSafeFory(fory_factory=callable)``
    (``factory=`` is the same). Each thread gets its own underlying Fory, created on
    first use; ``register_type`` / ``register`` / ``register_serializer`` are applied
    to every existing instance and replayed on the ones created later.
    """

    def __init__(self, fory_factory: Optional[Callable[[], Fory]] = None, *,
                 factory: Optional[Callable[[], Fory]] = None, **fory_kwargs: Any):
        if fory_factory is not None and factory is not None:
            raise TypeError("give fory_factory or factory, not both")
        fory_factory = fory_factory or factory
        if fory_factory is not None and fory_kwargs:
            raise TypeError("give a factory or Fory keyword arguments, not both")
        self._factory = fory_factory or (lambda: Fory(**fory_kwargs))
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
                for method, args, kwargs in self._registrations:
                    getattr(fory, method)(*args, **kwargs)
                self._instances.append(fory)
            self._local.fory = fory
        return fory

    def _apply(self, method: str, *args, **kwargs) -> None:
        self._fory()    # this thread's instance: a bad registration fails here, now
        with self._lock:
            for fory in self._instances:
                getattr(fory, method)(*args, **kwargs)
            self._registrations.append((method, args, kwargs))

    def register_type(self, cls, *, type_id=None, name=None, serializer=None,
                      namespace=None, typename=None) -> None:
        """Fory.register_type on every underlying Fory (now and later). A serializer
        factory or class is called once per underlying Fory."""
        self._apply("register_type", cls, type_id=type_id, name=name, serializer=serializer,
                    namespace=namespace, typename=typename)

    def register(self, cls, type_id=None, name=None, serializer=None, *,
                 namespace=None, typename=None) -> None:
        """register_type (type_id, name and serializer may be given by position)."""
        self.register_type(cls, type_id=type_id, name=name, serializer=serializer,
                           namespace=namespace, typename=typename)

    def register_serializer(self, cls, serializer) -> None:
        """Fory.register_serializer on every underlying Fory (now and later)."""
        self._apply("register_serializer", cls, serializer)

    def dumps(self, obj: Any, buffer=None, buffer_callback=None, unsupported_callback=None):
        return self._fory().dumps(obj, buffer, buffer_callback, unsupported_callback)

    def loads(self, data, buffers=None, unsupported_objects=None) -> Any:
        return self._fory().loads(data, buffers, unsupported_objects)

    def dumps_with_buffers(self, obj: Any, min_size: int = OOB_THRESHOLD) -> list:
        """Fory.dumps_with_buffers: [payload, large buffer views...]."""
        return self._fory().dumps_with_buffers(obj, min_size)

    serialize = dumps
    deserialize = loads

    def dump(self, obj: Any, stream) -> None:
        self._fory().dump(obj, stream)

    def load(self, stream) -> Any:
        return self._fory().load(stream)

    def reset(self) -> None:
        self._fory().reset()

    def reset_read(self) -> None:
        self._fory().reset_read()

    def reset_write(self) -> None:
        self._fory().reset_write()
