"""Adapters that plug pyfory into the places where Python objects cross processes:
``pyfory.integrations.multiprocessing``, ``.futures`` and ``.zmq``; and into engines:
``.dask`` (a Dask serialization family), ``.loky`` (joblib's ``LOKY_PICKLER``) and
``.celery`` (the kombu serializers ``pyfory`` and ``pyfory-strict``)."""

# How deep the objects given to the multiprocessing swap and the executors may nest by
# default. ``Fory()`` keeps its own lower default; the standard library's multiprocessing
# and concurrent.futures accept whatever pickle accepts (CPython's pickler stops near the
# recursion limit, about 1000 levels), so these adapters do too: 1000 levels of user data
# and a little room for their own envelopes (batch lists, task tuples). The recursive core
# needs about this much C stack per level that a thread's default stack (8 MiB on Linux)
# holds many times over (tests/test_executor_depth.py reads and writes it in threads).
DEFAULT_MAX_DEPTH = 1024
