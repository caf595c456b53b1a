"""pyfory benchmarks against pickle (and cloudpickle where relevant).

- ``pyfory/quickbench.py``: the named workloads, the contenders and the measuring loop (the
  single source of truth, in the package so that ``python -m pyfory bench`` runs them too);
  ``bench/workloads.py`` and ``bench/models.py`` name them for the scripts here.
- ``python -m bench.compare`` (or ``python bench/compare.py``): the ratio table.
- ``python -m pytest bench --benchmark-only``: the same workloads under pytest-benchmark.

Benchmarks are not tests: nothing here asserts a timing.
"""
