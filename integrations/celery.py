"""pyfory for Celery and kombu: the kombu serializers ``"pyfory"`` and ``"pyfory-strict"``.

    app.conf.update(task_serializer="pyfory", result_serializer="pyfory",
                    accept_content=["pyfory"], result_accept_content=["pyfory"])

    # or, for data from peers you do not trust (registered classes on both sides):
    from pyfory.integrations import celery as fory_celery
    fory_celery.register_strict(Order)
    app.conf.update(task_serializer="pyfory-strict", result_serializer="pyfory-strict",
                    accept_content=["pyfory-strict"], result_accept_content=["pyfory-strict"])

Both serializers are declared in this package's ``kombu.serializers`` entry point, which
kombu reads when ``kombu.serialization`` is imported: every process that has this package
installed and imports kombu (producers, Celery workers, result consumers) has them, with
no import or set-up of its own. ``register()`` registers them by hand (for a process where
the package's metadata is not installed, such as a source checkout on ``sys.path``).

- ``"pyfory"``, content type ``application/x-pyfory``: ``Fory(ref=True, strict=False)``, so
  task arguments and results may be lambdas, closures, local classes, dataclasses, numpy
  arrays (in band: a kombu body is one bytes object). Trust model: pickle's. A consumer
  that accepts it runs whatever a message names; only accept it from trusted producers.
- ``"pyfory-strict"``, content type ``application/x-pyfory-strict``: a strict
  ``Fory(ref=True)`` on both sides: builtins, the standard-library value types and numpy
  arrays of pyfory's strict allowlist, and the classes given to ``register_strict``. Loading
  a message never imports a module or calls a callable the message chose; a message that
  holds a function or an unregistered class is refused with a ``kombu.exceptions.
  DecodeError`` that says why (and such a value cannot be sent either: ``EncodeError``).

The two have different content types because kombu picks the decoder by the message's
content type: a consumer whose ``accept_content`` is ``["pyfory-strict"]`` refuses a message
labelled ``application/x-pyfory`` (``ContentDisallowed``) before decoding anything.

What does not go through pyfory: Celery's own exception results. Celery keeps exception
objects only for the codec named ``"pickle"``; for every other codec (these two included)
it sends a task's exception as its type name, module and message, and rebuilds it on the
result side from an importable class.
"""

from __future__ import annotations

from typing import Any, Optional

try:
    import kombu  # noqa: F401  (the engine this module is for)
except ImportError as _e:  # pragma: no cover - checked in the tests by blocking the import
    raise ImportError(
        "pyfory.integrations.celery needs kombu (Celery's messaging library): "
        "pip install \"pyfory[celery]\"") from _e

import pyfory
from pyfory.threadsafe import ThreadSafeFory

__all__ = ["NAME", "STRICT_NAME", "CONTENT_TYPE", "STRICT_CONTENT_TYPE", "dumps", "loads",
           "strict_dumps", "strict_loads", "register_strict", "register", "codec", "strict_codec"]

NAME = "pyfory"
STRICT_NAME = "pyfory-strict"
CONTENT_TYPE = "application/x-pyfory"
STRICT_CONTENT_TYPE = "application/x-pyfory-strict"
CONTENT_ENCODING = "binary"

_strict = ThreadSafeFory(ref=True, strict=True)


def dumps(obj: Any) -> bytes:
    """The ``"pyfory"`` encoder (any object; pickle's trust model)."""
    return pyfory.dumps(obj)         # the per-thread Fory(ref=True, strict=False)


def loads(data) -> Any:
    """The ``"pyfory"`` decoder: only for messages from trusted producers."""
    return pyfory.loads(data)


def strict_dumps(obj: Any) -> bytes:
    """The ``"pyfory-strict"`` encoder: builtins, allowlisted types, registered classes."""
    return _strict.dumps(obj)


def strict_loads(data) -> Any:
    """The ``"pyfory-strict"`` decoder: never calls what the message names."""
    return _strict.loads(data)


def register_strict(cls: type, type_id: Optional[int] = None, name: Optional[str] = None,
                    serializer=None) -> None:
    """Allow ``cls`` in ``"pyfory-strict"`` messages (``Fory.register``; producers and
    consumers must register the same classes, with the same ids or names)."""
    _strict.register(cls, type_id=type_id, name=name, serializer=serializer)


# what the entry points name: kombu calls register(name, *value)
codec = (dumps, loads, CONTENT_TYPE, CONTENT_ENCODING)
strict_codec = (strict_dumps, strict_loads, STRICT_CONTENT_TYPE, CONTENT_ENCODING)


def register() -> None:
    """Register both serializers with kombu's registry (the entry point already did, where
    this package is installed)."""
    from kombu.serialization import register as kombu_register

    kombu_register(NAME, *codec)
    kombu_register(STRICT_NAME, *strict_codec)
