"""Celery with the kombu serializer "pyfory": lambdas, dataclasses and arrays as arguments.

    python examples/celery_example.py

The story: a Celery app (here with the in-memory broker and an in-process worker, so the
example needs no RabbitMQ or Redis) sends tasks with the "pyfory" serializer: a lambda as
an argument, a dataclass, a numpy array, a local-class result. Nothing registers the
serializer: kombu found it through this package's entry point. A second, strict setup
("pyfory-strict") carries registered classes only and refuses a function.
"""

from __future__ import annotations

import dataclasses

import celery
import kombu.serialization
from celery.contrib.testing.worker import start_worker
from kombu.exceptions import EncodeError
from pyfory.integrations import celery as fory_celery


@dataclasses.dataclass
class Order:
    item: str
    qty: int


app = celery.Celery("example", broker="memory://", backend="cache+memory://")
app.conf.update(task_serializer="pyfory", result_serializer="pyfory", accept_content=["pyfory"],
                result_accept_content=["pyfory"],
                broker_transport_options={"polling_interval": 0.01})


@app.task
def apply(fn, order):
    class Receipt:                       # a local class as the result
        def __init__(self, total):
            self.total = total

    return Receipt(fn(order))


@app.task
def column_sums(arr):
    return arr.sum(axis=0)


def main() -> None:
    import numpy as np

    price = 2.5
    with start_worker(app, pool="solo", perform_ping_check=False):
        receipt = apply.delay(lambda o: o.qty * price, Order("pen", 4)).get(timeout=30, interval=0.01)
        print("lambda + dataclass in, local class out: total =", receipt.total)
        print("numpy array:", column_sums.delay(np.arange(12).reshape(3, 4)).get(timeout=30, interval=0.01))

    fory_celery.register_strict(Order)
    _, _, body = kombu.serialization.dumps(Order("ink", 1), serializer="pyfory-strict")
    print("strict, registered dataclass:", kombu.serialization.loads(
        body, "application/x-pyfory-strict", "binary", accept=["application/x-pyfory-strict"]))
    try:
        kombu.serialization.dumps(lambda: 1, serializer="pyfory-strict")
    except EncodeError as e:
        print("strict refuses a function:", e)


if __name__ == "__main__":
    main()
