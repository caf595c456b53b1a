"""Classes used by the object workloads (issue 3).

They are defined at module level in ``pyfory/quickbench.py`` (importable, so that pickle
names them by reference, exactly as it would in an application; the installed package's
``python -m pyfory bench`` uses them too). A workload that uses them registers them for
strict mode in its ``setup(fory)`` hook.
"""

from __future__ import annotations

from pyfory.quickbench import Order, OrderTuple, PlainOrder, SlotOrder  # noqa: F401
