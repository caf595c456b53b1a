"""Malformed input never crashes or hangs the reader (issue: safety).

The mutation fuzzer runs in a child process, so a segfault is a failed test rather
than a dead test run. It first tries every truncation and every single-byte change (seven
values per byte) of each of its ~150 real payloads, which takes about a second, then random
multi-byte mutations until its time budget is spent (10 s by default, about 400,000 cases
on this project's 2-core VM; at least 20,000 however busy the machine).
Longer runs: PYFORY_FUZZ_SECONDS=600 python -m pytest tests/test_fuzz.py
"""

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyfory
from pyfory.error import ForyError

FUZZ_SCRIPT = os.path.join(os.path.dirname(__file__), "fuzz", "fuzz_payloads.py")
SECONDS = float(os.environ.get("PYFORY_FUZZ_SECONDS", "10"))


@pytest.mark.timeout(SECONDS * 4 + 120)
def test_mutated_payloads_fail_cleanly_in_child_process():
    # the child imports the same pyfory as this test run, installed or not
    root = os.path.dirname(os.path.dirname(os.path.abspath(pyfory.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(
        [sys.executable, FUZZ_SCRIPT, "--seconds", str(SECONDS)],
        capture_output=True, text=True, timeout=SECONDS * 4 + 100, env=env,
    )
    assert proc.returncode == 0, f"fuzzer exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["failures"] == []
    assert report["corpus"] > 50
    # the systematic part ran to the end (>= 1 truncation and 7 changes per byte), then random cases
    assert report["systematic"] > 50_000
    assert report["cases"] >= report["systematic"] + 20_000


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_after_a_valid_header(tail):
    fory = pyfory.Fory(strict=False, ref=True)
    try:
        fory.loads(b"\xfd\x59\x02\x01" + tail)
    except ForyError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes(data):
    fory = pyfory.Fory()
    try:
        fory.loads(data)
    except ForyError:
        pass


def test_count_that_input_cannot_back_is_rejected_before_allocating():
    fory = pyfory.Fory()
    # a list claiming 2**40 elements in a 20-byte payload
    payload = b"\x08" + b"\x80\x80\x80\x80\x80\x80\x01" + b"\x00" * 8
    with pytest.raises(pyfory.error.MalformedDataError, match="exceeds"):
        fory.loads(payload)


def test_same_instance_works_after_failures():
    fory = pyfory.Fory(ref=True)
    good = fory.dumps({"a": [1, 2, 3]})
    for cut in range(len(good)):
        with pytest.raises(ForyError):
            fory.loads(good[:cut])
        assert fory.loads(good) == {"a": [1, 2, 3]}
