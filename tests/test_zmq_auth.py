"""Workers prove who they are, loopback included (issue 15, point 5).

A fake worker process speaks the executor's task protocol (READY, then answering a task
batch with a result payload whose reduce call would create a marker file). Against an
executor that admits only its own local workers (the default on loopback) it receives
no task and the marker never appears; against ``insecure=True`` the same fake does get
the task and the marker appears, which shows the fake and the marker would catch a leak.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

zmq = pytest.importorskip("zmq")

from pyfory.integrations import zmq as fzmq  # noqa: E402

pytestmark = pytest.mark.timeout(120)

HB = {"heartbeat_interval": 0.5, "heartbeat_timeout": 30.0}

FAKE_WORKER = textwrap.dedent("""
    import json, os, pathlib, sys, time, uuid
    import zmq
    import pyfory
    from pyfory.integrations.zmq import protocol as proto
    from pyfory.integrations.zmq import security

    address, marker, report, mode, seconds = sys.argv[1:6]

    class Gadget:
        # loading this runs pathlib.Path.touch(marker) in whoever loads it (strict=False)
        def __reduce__(self):
            return (pathlib.Path.touch, (pathlib.Path(marker),))

    def note(line):
        with open(report, "a") as f:
            f.write(line + "\\n")

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    wid = uuid.uuid4().hex[:16].encode()
    sock.routing_id = b"t" + wid
    if mode == "wrong-secret":  # PLAIN with a guessed password
        sock.plain_username = security.LOCAL_WORKER_USER.encode()
        sock.plain_password = b"guess"
    elif mode == "curve":  # CURVE with keys of its own
        pub, sec = zmq.curve_keypair()
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = pub, sec
    sock.connect(address)
    ready = json.dumps({"id": wid.decode(), "pid": os.getpid(), "host": "fake", "slots": 2,
                        "python": list(sys.version_info[:2]), "pyfory": pyfory.__version__,
                        "strict": False}).encode()
    fory = pyfory.Fory(ref=True, strict=False)
    deadline = time.monotonic() + float(seconds)
    next_ready = 0.0
    note("started")
    while time.monotonic() < deadline:
        if time.monotonic() >= next_ready:
            try:
                sock.send_multipart([proto.READY, ready], zmq.NOBLOCK)
                # an unsolicited result too: it must not be loaded either
                sock.send_multipart([proto.RESULT + b"\\0" * 8 + proto._SECONDS.pack(0.0)
                                     + proto._COUNT.pack(1) + b"\\0" * 8,
                                     pyfory.Fory().dumps([(0, fory.dumps(Gadget()), 0, "")])],
                                    zmq.NOBLOCK)
            except zmq.Again:  # no handshake completed: nothing can be sent
                pass
            next_ready = time.monotonic() + 0.3
        if not sock.poll(100):
            continue
        frames = sock.recv_multipart()
        kind = frames[0][:1]
        if kind == proto.WELCOME:
            note("welcome")
        elif kind == proto.TASK:
            batch, entries = proto._parse_task_header(frames[0])
            note("task")
            head = b"".join([proto.RESULT, batch, proto._SECONDS.pack(0.0),
                             proto._COUNT.pack(len(entries)), *[tid for tid, _ in entries]])
            records = [(proto.ST_OK, fory.dumps(Gadget()), 0, "") for _ in entries]
            sock.send_multipart([head, pyfory.Fory().dumps(records)])
            note("answered")
            break
    sock.close(0)
    ctx.term()
""")


def _run_fake(tmp_path, address, mode, seconds):
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    marker = tmp_path / f"marker-{mode}"
    report = tmp_path / f"report-{mode}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
    proc = subprocess.Popen([sys.executable, str(script), address, str(marker), str(report), mode,
                             str(seconds)], env=env)
    return proc, marker, report


def _lines(path):
    return path.read_text().split() if path.exists() else []


@pytest.mark.parametrize("mode", ["none", "wrong-secret", "curve"])
def test_fake_worker_without_credentials_gets_nothing(tmp_path, mode):
    with fzmq.Executor(local_workers=1, **HB) as ex:
        assert ex.wait_for_workers(1, 60)
        proc, marker, report = _run_fake(tmp_path, ex.address, mode, seconds=4)
        try:
            # tasks keep flowing while the fake tries: they all go to the real worker
            futures = [ex.submit(pow, 2, i) for i in range(200)]
            assert [f.result(60) for f in futures] == [2 ** i for i in range(200)]
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert _lines(report) == ["started"]  # no WELCOME, no task
        assert len(ex.status()["workers"]) == 1
        assert all(w["local"] for w in ex.status()["workers"])
        assert not marker.exists()


def test_insecure_executor_lets_the_fake_in(tmp_path):
    # the control: without authentication the same fake registers, gets the task, and the
    # executor loading its answer runs the gadget
    with fzmq.Executor(insecure=True, **HB) as ex:
        proc, marker, report = _run_fake(tmp_path, ex.address, "none", seconds=60)
        try:
            assert ex.wait_for_workers(1, 60)
            future = ex.submit(pow, 2, 3)
            future.result(60)
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert _lines(report)[:3] == ["started", "welcome", "task"]
    assert marker.exists()


def test_hand_started_worker_needs_credentials(tmp_path):
    # a worker started by hand (no secret) cannot join a default loopback executor ...
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
    with fzmq.Executor(**HB) as ex:
        cli = subprocess.Popen([sys.executable, "-m", "pyfory.integrations.zmq", "worker",
                                ex.address, "--log-level", "WARNING"], env=env)
        try:
            assert not ex.wait_for_workers(1, 3)
        finally:
            cli.terminate()
            cli.wait(30)
    # ... but with CURVE keys it can, on loopback as anywhere
    keys = tmp_path / "keys"
    fzmq.generate_keys(str(keys))
    with fzmq.Executor(curve_keys=str(keys), **HB) as ex:
        cli = subprocess.Popen([sys.executable, "-m", "pyfory.integrations.zmq", "worker",
                                ex.address, "--log-level", "WARNING", "--curve-keys", str(keys)],
                               env=env)
        try:
            assert ex.wait_for_workers(1, 60)
            assert ex.submit(pow, 3, 3).result(60) == 27
        finally:
            cli.terminate()
            cli.wait(30)


def test_ipc_executor_authenticates_too(tmp_path):
    with fzmq.Executor(f"ipc://{tmp_path}/ex.sock", local_workers=1, **HB) as ex:
        assert ex.wait_for_workers(1, 60)
        proc, marker, report = _run_fake(tmp_path, ex.address, "none", seconds=3)
        assert proc.wait(60) == 0
        assert ex.submit(pow, 2, 5).result(60) == 32
        assert _lines(report) == ["started"]
        assert not marker.exists()
