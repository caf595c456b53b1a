"""DeserializationPolicy: hooks that see everything a payload asks the reader to do.

Pass an instance as ``Fory(policy=...)``. The default allows everything; a subclass
overrides the hooks it needs, with pyfory's signatures: every hook takes ``**kwargs``
(room for more context later), and ``is_local`` is passed by keyword, so
``def validate_class(self, cls, is_local, **kwargs)`` and
``def validate_class(self, cls, *, is_local, **kwargs)`` both work.

A hook rejects by raising: the exception reaches the caller of ``loads`` as itself
(a ``ValueError`` raised in ``validate_class`` is the ``ValueError`` that ``loads``
raises), and the same Fory reads the next payload normally.
"""

from __future__ import annotations

from typing import Any, Optional


class DeserializationPolicy:
    def validate_class(self, cls: type, is_local: bool = False, **kwargs) -> None:
        """After a class named by the payload was resolved (imported, looked up among the
        registered ones, or rebuilt by value when ``is_local``), before it is used."""

    def validate_module(self, module_name: str, is_local: bool = False, **kwargs) -> None:
        """Before a module named by the payload is imported or used."""

    def validate_function(self, func: Any, is_local: bool = False, **kwargs) -> None:
        """After a function was resolved by name or rebuilt by value (``is_local``)."""

    def validate_method(self, method: Any, is_local: bool = False, **kwargs) -> None:
        """After a bound method was rebuilt (``is_local``: its function by value)."""

    def intercept_reduce_call(self, callable_obj: Any, args: tuple, **kwargs) -> Optional[Any]:
        """Before a reduce callable is called with args (and ``kwargs=`` its keyword
        arguments, when it has some); a non-None return value is used as the result
        instead of calling."""
        return None

    def inspect_reduced_object(self, obj: Any, **kwargs) -> Optional[Any]:
        """After a reduce call; a non-None return value replaces the object."""
        return None

    def intercept_setstate(self, obj: Any, state: Any, **kwargs) -> None:
        """Before state is applied to obj; may sanitize ``state`` in place."""

    def authorize_instantiation(self, cls: type, args: tuple = (), kwargs: Optional[dict] = None,
                                **more) -> None:
        """Before an instance of cls is created (dataclass, plain object, reduce-built);
        ``args`` and ``kwargs`` (passed by keyword) are the constructor's arguments."""


def hook_exception(policy, exc: BaseException) -> Optional[BaseException]:
    """The exception a hook of `policy` raised, if `exc` is it or was raised from it (a
    wrapper's ``__cause__``), else None. Found by the hook's own frame
    in the traceback: free on the normal path, nothing to do at the call sites."""
    codes = _hook_codes(type(policy))
    seen = 0
    while exc is not None and seen < 8:
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code in codes:
                return exc
            tb = tb.tb_next
        exc = exc.__cause__
        seen += 1
    return None


_HOOKS = ("validate_class", "validate_module", "validate_function", "validate_method",
          "intercept_reduce_call", "inspect_reduced_object", "intercept_setstate",
          "authorize_instantiation")
_codes_cache: dict = {}


def _hook_codes(cls: type) -> frozenset:
    try:
        codes = _codes_cache.get(cls)
    except TypeError:       # a class made unhashable by its metaclass: not cached
        return _find_hook_codes(cls)
    if codes is None:
        codes = _codes_cache[cls] = _find_hook_codes(cls)
    return codes


def _find_hook_codes(cls: type) -> frozenset:
    found = set()
    for name in _HOOKS:
        func = getattr(cls, name, None)
        code = getattr(func, "__code__", None)
        if code is not None and getattr(DeserializationPolicy, name) is not func:
            found.add(code)
    return frozenset(found)
