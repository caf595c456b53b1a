"""pyfory benchmarks against pickle (and cloudpickle where relevant).

- ``bench/workloads.py``: the registry of named workloads (the single source of truth).
- ``bench/models.py``: module-level classes the object workloads use (importable by pickle).
- ``python -m bench.compare`` (or ``python bench/compare.py``): the ratio table.
- ``python -m pytest bench --benchmark-only``: the same workloads under pytest-benchmark.

Benchmarks are not tests: nothing here asserts a timing.
"""
