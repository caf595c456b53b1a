"""Adapters that plug pyfory into the places where Python objects cross processes:
``pyfory.integrations.multiprocessing``, ``.futures`` and ``.zmq``; and into engines:
``.dask`` (a Dask serialization family), ``.loky`` (joblib's ``LOKY_PICKLER``) and
``.celery`` (the kombu serializers ``pyfory`` and ``pyfory-strict``)."""
