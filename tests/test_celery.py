"""The kombu serializers "pyfory" and "pyfory-strict": a real Celery worker (in-process,
solo pool) on the memory:// broker, and a real kombu consumer for the strict case."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys

import pytest
from engine_support import copyreg_kept

import pyfory

np = pytest.importorskip("numpy")
with copyreg_kept():
    celery = pytest.importorskip("celery", reason="Celery is not installed (pip install \"pyfory[celery]\")")
    import kombu
    import kombu.serialization
    from celery.contrib.testing.worker import start_worker
    from kombu.exceptions import ContentDisallowed, DecodeError, EncodeError
    from pyfory.integrations import celery as fory_celery

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 30
MODULE = "pyfory.integrations.celery"


@dataclasses.dataclass
class Order:
    item: str
    qty: int


app = celery.Celery("pyfory_test", broker="memory://", backend="cache+memory://", set_as_current=False)
app.conf.update(task_serializer="pyfory", result_serializer="pyfory", accept_content=["pyfory"],
                result_accept_content=["pyfory"], broker_connection_retry_on_startup=False,
                # the memory transport polls; the default second per poll would dominate
                broker_transport_options={"polling_interval": 0.01})


@app.task
def apply(fn, value):
    class Result:                      # a local class: pickle could not name it
        def __init__(self, v):
            self.v = v

    return Result(fn(value))


@app.task
def restock(order):
    return Order(order.item, order.qty + 10)


@app.task
def double(arr):
    return arr * 2


@pytest.fixture(scope="module")
def worker():
    # the test worker installs tblib's exception reducers in copyreg
    with copyreg_kept(), start_worker(app, pool="solo", perform_ping_check=False,
                                      shutdown_timeout=20) as w:
        yield w


def test_entry_point_registers_both_without_an_import():
    # a fresh interpreter that imports only kombu: the entry point did the rest
    code = ("import sys, kombu.serialization as s; r = s.registry; "
            "print(r.name_to_type['pyfory'], r.name_to_type['pyfory-strict'], "
            f"{MODULE!r} in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["application/x-pyfory", "application/x-pyfory-strict", "True"]


def test_lambda_argument_and_local_class_result(worker):
    k = 6
    result = apply.delay(lambda x: x * k, 7).get(timeout=TIMEOUT, interval=0.01)
    assert result.v == 42
    assert type(result).__qualname__ == "apply.<locals>.Result"


def test_dataclass(worker):
    assert restock.delay(Order("pen", 2)).get(timeout=TIMEOUT, interval=0.01) == Order("pen", 12)


def test_numpy_array(worker):
    arr = np.arange(100_000, dtype=np.int32).reshape(100, 1000)
    out = double.delay(arr).get(timeout=TIMEOUT, interval=0.01)
    assert out.dtype == np.int32 and out.shape == (100, 1000)
    assert np.array_equal(out, arr * 2)


def test_messages_are_pyfory():
    content_type, encoding, body = kombu.serialization.dumps(((lambda: 1,), {}, {}), serializer="pyfory")
    assert content_type == "application/x-pyfory" and encoding == "binary"
    # a pyfory payload with reference tracking (its header byte: 0x50 | F_REF)
    assert body[0] == 0x51
    args, kwargs, embed = pyfory.Fory(ref=True, strict=False).loads(body)
    assert args[0]() == 1 and kwargs == {} and embed == {}


def _consume_one(conn, queue, accept):
    """Decode one message with a real kombu consumer; returns the body or the exception."""
    seen = []

    def on_message(message):
        try:
            seen.append(message.decode())
        except Exception as e:
            seen.append(e)
        message.ack()

    with kombu.Consumer(conn, [queue], accept=accept, on_message=on_message):
        conn.drain_events(timeout=TIMEOUT)
    assert len(seen) == 1
    return seen[0]


def _publish_raw(conn, queue, body, content_type):
    with conn.Producer() as producer:
        producer.publish(body, routing_key=queue.name, declare=[queue], content_type=content_type,
                         content_encoding="binary", serializer=None)


def test_strict_consumer_refuses_a_function():
    fory_celery.register_strict(Order)
    queue = kombu.Queue("pyfory-strict-test", exchange=kombu.Exchange("pyfory-strict-test"),
                        routing_key="pyfory-strict-test")
    with kombu.Connection("memory://") as conn:
        # a registered dataclass goes through
        with conn.Producer(serializer="pyfory-strict") as producer:
            producer.publish({"order": Order("ink", 1)}, routing_key=queue.name, declare=[queue])
        assert _consume_one(conn, queue, ["pyfory-strict"]) == {"order": Order("ink", 1)}
        # a function cannot be sent strictly ...
        with pytest.raises(EncodeError):
            kombu.serialization.dumps({"f": lambda: 1}, serializer="pyfory-strict")
        # ... and a payload carrying one, labelled strict, is refused when it is read
        _publish_raw(conn, queue, pyfory.dumps({"f": print}), "application/x-pyfory-strict")
        err = _consume_one(conn, queue, ["pyfory-strict"])
        assert isinstance(err, DecodeError)
        assert "strict mode refuses" in str(err)
        # a strict consumer does not even decode a non-strict message
        _publish_raw(conn, queue, pyfory.dumps({"f": print}), "application/x-pyfory")
        assert isinstance(_consume_one(conn, queue, ["pyfory-strict"]), ContentDisallowed)


def test_register_by_hand_is_idempotent():
    fory_celery.register()
    reg = kombu.serialization.registry
    assert reg.name_to_type["pyfory"] == "application/x-pyfory"
    assert reg.type_to_name["application/x-pyfory-strict"] == "pyfory-strict"


def test_import_without_kombu_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "kombu", None)
    monkeypatch.delitem(sys.modules, MODULE)
    with pytest.raises(ImportError, match=r'pip install "pyfory\[celery\]"'):
        importlib.import_module(MODULE)
