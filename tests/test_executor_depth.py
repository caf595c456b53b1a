"""Deep nesting through the integrations (issue 17, depth): the multiprocessing swap, the
futures executor and the zmq executor accept what the standard library's multiprocessing
and concurrent.futures accept (pickle goes to about 1000 levels), in both directions,
with the parent's side read in the executors' own threads (no C stack overflow there)."""

from __future__ import annotations

import multiprocessing
import threading

import pytest
from pyfory.integrations import DEFAULT_MAX_DEPTH
from pyfory.integrations import multiprocessing as fory_mp
from pyfory.integrations.futures import ProcessPoolExecutor

import pyfory
from pyfory.error import DepthLimitError

TIMEOUT = 120
DEPTHS = [300, 1000]
pytestmark = pytest.mark.timeout(300)


def nest(n):
    x = []
    for _ in range(n):
        x = [x]
    return x


def depth(x):
    d = 0
    while x:
        x = x[0]
        d += 1
    return d


def deeper(x):
    """Depth of x, and x one level deeper (a deep result travels back)."""
    return depth(x), [x]


def _check(result, n):
    d, back = result
    assert d == n
    assert depth(back) == n + 1


def test_default_is_about_pickles_limit():
    assert DEFAULT_MAX_DEPTH >= 1000
    # the integrations' default is theirs: Fory()'s own stays lower
    with pytest.raises(DepthLimitError):
        pyfory.Fory().dumps(nest(300))


class Node:
    pass


class Reduced:
    def __init__(self, inner):
        self.inner = inner

    def __reduce__(self):
        return (Reduced, (self.inner,))


def _nest_with(make, n):
    x = None
    for _ in range(n):
        x = make(x)
    return x


def _node(inner):
    node = Node()
    node.inner = inner
    return node


SHAPES = {
    "list": lambda n: nest(n),
    "dict": lambda n: _nest_with(lambda x: {"k": x}, n),
    "object": lambda n: _nest_with(_node, n),
    "reduce": lambda n: _nest_with(Reduced, n // 2),  # the args tuple is a level too
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_fory_at_the_integrations_depth_in_a_small_thread(shape):
    # the recursive core at the integrations' depth in a thread with a quarter of the
    # default 8 MiB stack: no C stack overflow (a crash would fail the test run)
    fory = pyfory.Fory(ref=True, strict=False, max_depth=DEFAULT_MAX_DEPTH)
    value = SHAPES[shape](1000)
    out = {}

    def run():
        out["payload"] = len(fory.dumps(value))
        out["back"] = type(fory.loads(fory.dumps(value)))

    old = threading.stack_size(2 << 20)
    try:
        thread = threading.Thread(target=run)
        thread.start()
    finally:
        threading.stack_size(old)
    thread.join(TIMEOUT)
    assert out["back"] is type(value) and out["payload"] > 0


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_swap(method):
    with fory_mp.installed():
        ctx = multiprocessing.get_context(method)
        with ctx.Pool(1) as pool:
            for n in DEPTHS:
                _check(pool.apply_async(deeper, (nest(n),)).get(TIMEOUT), n)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_futures_executor(method):
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(method)) as pool:
        for n in DEPTHS:
            _check(pool.submit(deeper, nest(n)).result(TIMEOUT), n)
        # a batch of deep tasks (one payload holding several)
        futures = [pool.submit(deeper, nest(300)) for _ in range(50)]
        for f in futures:
            _check(f.result(TIMEOUT), 300)


def test_futures_executor_max_depth_is_still_an_option():
    with ProcessPoolExecutor(1, max_depth=100) as pool:
        with pytest.raises(DepthLimitError):
            pool.submit(depth, nest(300)).result(TIMEOUT)


def test_zmq_executor():
    fzmq = pytest.importorskip("pyfory.integrations.zmq")
    with fzmq.Executor(local_workers=1, heartbeat_timeout=30.0) as ex:
        assert ex.wait_for_workers(1, TIMEOUT)
        for n in DEPTHS:
            _check(ex.submit(deeper, nest(n)).result(TIMEOUT), n)


def test_zmq_transport():
    zmq = pytest.importorskip("zmq")
    fzmq = pytest.importorskip("pyfory.integrations.zmq")
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://depth")
        b.connect("inproc://depth")
        fzmq.send(a, nest(1000))
        assert b.poll(TIMEOUT * 1000)
        assert depth(fzmq.recv(b)) == 1000
    finally:
        a.close(0)
        b.close(0)
        ctx.term()
