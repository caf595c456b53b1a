"""The named benchmark workloads and contenders: the one list that ``compare.py``,
``report.py``, ``test_bench.py`` and ``python -m pyfory bench`` run.

They live in the package, in ``pyfory/quickbench.py`` (an installed pyfory cannot import
this folder), so the quick bench and the report measure the same values; this module
names them for the scripts here. Add a workload there (its docstring says how).
"""

from __future__ import annotations

from pyfory.quickbench import (  # noqa: F401
    PICKLE_PROTOCOL,
    WORKLOADS,
    Codec,
    ForyCodec,
    PickleCodec,
    Workload,
    available_baselines,
    deep_equal,
    make_fory,
    register,
    select,
    settle_allocator,
    workload,
)
