"""Nothing is left when the parent dies (issue 15, point 4).

A child process runs an executor with 8 MB numpy arrays travelling both ways through
shared memory; once transfers are in flight it is killed with SIGKILL (no atexit, no
finalizer runs). Its workers must then exit within a few seconds, and no /dev/shm
segment with its executor's prefix may remain. Waits poll for the event with a deadline.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

np = pytest.importorskip("numpy")

SHM_DIR = "/dev/shm"
METHODS = [m for m in ("fork", "spawn", "forkserver")
           if m in multiprocessing.get_all_start_methods()]
# "within a few seconds" on an idle machine; generous here for a loaded 2-core CI box
WORKERS_GONE = 20.0

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(not os.path.isdir(SHM_DIR), reason="no /dev/shm to list")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - reused by another user's process
        return True
    # a zombie (exited, not yet reaped by its new parent) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _segments(prefix: str) -> list:
    return [n for n in os.listdir(SHM_DIR) if n.startswith(prefix)]


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}


FUTURES_USER = textwrap.dedent("""
    import multiprocessing, sys, threading
    import numpy as np
    from pyfory.integrations.futures import ProcessPoolExecutor

    def echo(a):
        return a + 1            # a new 8 MB array back through shared memory

    if __name__ == "__main__":
        pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(sys.argv[1]))
        big = np.zeros(1 << 20)   # 8 MB
        assert pool.submit(echo, big).result(60)[0] == 1
        done = 0
        while True:              # keep 8 transfers in flight until killed
            futures = [pool.submit(echo, big) for _ in range(8)]
            for f in futures:
                f.result(60)
            done += 1
            if done == 2:        # both workers started (on demand) by now
                print(pool._core.token, *pool._processes, flush=True)
                print("busy", flush=True)
""")


def _run_then_kill(tmp_path, source: str, *args: str) -> list:
    """Run source in a child process; when it prints "busy" (transfers in flight), SIGKILL
    it. Returns the words of its first line (what it reported about its executor)."""
    script = tmp_path / "user.py"
    script.write_text(source)
    proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE,
                            text=True, env=_env(), cwd=str(tmp_path))
    try:
        first = proc.stdout.readline().split()
        assert proc.stdout.readline().strip() == "busy"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return first


def _assert_workers_gone(pids: list) -> None:
    assert len(pids) == 2
    start = time.monotonic()
    assert _wait_until(lambda: not any(_alive(p) for p in pids), WORKERS_GONE), \
        f"workers {[p for p in pids if _alive(p)]} still alive {WORKERS_GONE} s after the parent died"
    print(f"workers gone {time.monotonic() - start:.2f} s after SIGKILL of their parent")


@pytest.mark.parametrize("method", METHODS)
def test_futures_workers_and_segments_gone_after_sigkill(tmp_path, method):
    token, *pids = _run_then_kill(tmp_path, FUTURES_USER, method)
    _assert_workers_gone([int(p) for p in pids])
    prefix = f"pf_{token}_"
    assert _wait_until(lambda: not _segments(prefix), 10), f"left in /dev/shm: {_segments(prefix)}"


ZMQ_USER = textwrap.dedent("""
    import numpy as np
    from pyfory.integrations.zmq import Executor

    def echo(a):
        return a + 1

    if __name__ == "__main__":
        ex = Executor(local_workers=2)
        assert ex.wait_for_workers(2, 60)
        big = np.zeros(1 << 20)
        assert ex.submit(echo, big).result(60)[0] == 1
        print(*ex.status()["local_pids"], flush=True)
        done = 0
        while True:
            for f in [ex.submit(echo, big) for _ in range(8)]:
                f.result(60)
            done += 1
            if done == 2:
                print("busy", flush=True)
""")


def test_zmq_local_workers_gone_after_sigkill(tmp_path):
    pytest.importorskip("zmq")
    pids = _run_then_kill(tmp_path, ZMQ_USER)
    _assert_workers_gone([int(p) for p in pids])
