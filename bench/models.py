"""Classes used by the object workloads (issue 3).

They live at module level in an importable module (``bench.models``) so that pickle
can name them by reference, exactly as it would in an application. A workload that
uses them registers them for strict mode in its ``setup(fory)`` hook (see
``bench/workloads.py``).

Every class defines ``__eq__`` so that ``compare.py`` can verify a round trip by
equality before timing it.
"""

from __future__ import annotations

from collections import namedtuple

from pyfory import quickbench

# The dataclass and the plain class are the ones `python -m pyfory bench` uses (the
# installed package cannot import this folder): one definition for both benchmarks.
Order = quickbench.Order
PlainOrder = quickbench.PlainOrder


class SlotOrder:
    """The same record as a class with ``__slots__`` (no ``__dict__``)."""

    __slots__ = ("id", "customer", "price", "quantity", "paid", "note")

    def __init__(self, id, customer, price, quantity, paid, note=None):
        self.id = id
        self.customer = customer
        self.price = price
        self.quantity = quantity
        self.paid = paid
        self.note = note

    def _fields(self):
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other):
        return type(other) is type(self) and other._fields() == self._fields()

    __hash__ = None


OrderTuple = namedtuple("OrderTuple", "id customer price quantity paid note")

