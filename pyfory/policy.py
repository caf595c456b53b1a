"""DeserializationPolicy: hooks that see everything a payload asks the reader to do.

Pass an instance as ``Fory(policy=...)``. The default allows everything; a subclass
overrides the hooks it needs. Raising from a hook aborts ``loads`` (the exception is
the ``__cause__`` of the DeserializationError, or propagates as is when it is a
ForyError such as PolicyViolationError).
"""

from __future__ import annotations

from typing import Any, Optional


class DeserializationPolicy:
    def validate_class(self, cls: type, is_local: bool) -> None:
        """After a class named by the payload was resolved (imported, looked up among the
        registered ones, or rebuilt by value when ``is_local``), before it is used."""

    def validate_module(self, module_name: str, is_local: bool) -> None:
        """Before a module named by the payload is imported or used."""

    def validate_function(self, func: Any, is_local: bool) -> None:
        """After a function was resolved by name or rebuilt by value (``is_local``)."""

    def validate_method(self, method: Any, is_local: bool) -> None:
        """After a bound method was rebuilt."""

    def intercept_reduce_call(self, callable_obj: Any, args: tuple) -> Optional[Any]:
        """Before a reduce callable is called with args; a non-None return value is used
        as the result instead of calling."""
        return None

    def inspect_reduced_object(self, obj: Any) -> Optional[Any]:
        """After a reduce call; a non-None return value replaces the object."""
        return None

    def intercept_setstate(self, obj: Any, state: Any) -> None:
        """Before state is applied to obj; may sanitize ``state`` in place."""

    def authorize_instantiation(self, cls: type, args: tuple, kwargs: Optional[dict]) -> None:
        """Before an instance of cls is created (dataclass, plain object, reduce-built)."""
