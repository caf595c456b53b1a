"""Adapters that plug pyfory into the places where Python objects cross processes:
``pyfory.integrations.multiprocessing``, ``.futures`` and ``.zmq``."""
