"""Shared by the engine tests (test_dask, test_loky, test_celery).

Importing distributed registers reducers in ``copyreg.dispatch_table`` for the whole
process (tblib's for every exception class and for tracebacks, dask's for method
descriptors), and Celery's test worker installs tblib's when it starts. pyfory honours
that table as pickle does, so those reducers would change how the rest of the suite's
objects are written. ``copyreg_kept()`` puts the table back as it was."""

from __future__ import annotations

import contextlib
import copyreg


@contextlib.contextmanager
def copyreg_kept():
    saved = dict(copyreg.dispatch_table)
    try:
        yield
    finally:
        copyreg.dispatch_table.clear()
        copyreg.dispatch_table.update(saved)
