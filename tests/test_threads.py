"""ThreadSafeFory, and a plain Fory shared by threads (README: it works)."""

import threading
from dataclasses import dataclass

import pytest

import pyfory


@dataclass
class Item:
    name: str
    values: list


def _hammer(fory, results, errors, seed):
    try:
        for i in range(300):
            value = {"seed": seed, "i": i, "items": [Item(f"n{seed}-{i}", [i, seed] * 3)], "s": {seed, i}}
            back = fory.loads(fory.dumps(value))
            if back != value:
                errors.append((seed, i, back))
                return
        results.append(seed)
    except Exception as e:  # noqa: BLE001 - reported below
        errors.append((seed, repr(e)))


def _run_threads(fory, n=8):
    results, errors = [], []
    threads = [threading.Thread(target=_hammer, args=(fory, results, errors, s)) for s in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert sorted(results) == list(range(n))


@pytest.mark.timeout(180)
def test_thread_safe_fory_many_threads():
    fory = pyfory.ThreadSafeFory(ref=True)
    fory.register(Item)
    _run_threads(fory)


@pytest.mark.timeout(180)
def test_plain_fory_shared_by_threads_works():
    fory = pyfory.Fory(ref=True)
    fory.register(Item)
    _run_threads(fory)


def test_registration_reaches_instances_created_before_and_after():
    fory = pyfory.ThreadSafeFory()
    fory.dumps(1)                       # creates this thread's instance first
    fory.register(Item)
    assert fory.loads(fory.dumps(Item("a", [1]))) == Item("a", [1])
    out = []
    t = threading.Thread(target=lambda: out.append(fory.loads(fory.dumps(Item("b", [2])))))
    t.start()
    t.join(30)
    assert out == [Item("b", [2])]


def test_factory_form_and_argument_check():
    fory = pyfory.ThreadSafeFory(factory=lambda: pyfory.Fory(ref=True, strict=False))
    x = [1]
    back = fory.loads(fory.dumps([x, x]))
    assert back[0] is back[1]
    with pytest.raises(TypeError):
        pyfory.ThreadSafeFory(factory=pyfory.Fory, ref=True)
