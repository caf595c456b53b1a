"""The worker: connects to an executor, runs its task batches, sends results and
heartbeats."""

from __future__ import annotations

import fnmatch
import importlib
import json
import logging
import os
import socket as _socketlib
import sys
import threading
import time
import uuid
from typing import Any, Dict, Iterable, Optional

import zmq
from pyfory.integrations import DEFAULT_MAX_DEPTH
from pyfory.integrations._tasks import outcomes
from pyfory.integrations._tasks.batches import check_batch
from pyfory.integrations._tasks.handoff import FrameHandoff
from pyfory.integrations.zmq.protocol import (
    _COUNT,
    _SECONDS,
    BYE,
    FAILED,
    PING,
    PONG,
    READY,
    REFUSE,
    RESET,
    RESULT,
    RESULT_FLUSH_SECONDS,
    TASK,
    WELCOME,
    _parse_task_header,
)
from pyfory.integrations.zmq.security import (
    AUTHORIZED_DIR,
    LOCAL_WORKER_USER,
    SERVER_SECRET,
    _check_address,
    _load_cert,
)
from pyfory.integrations.zmq.transport import OOB_THRESHOLD, decode

import pyfory
from pyfory.error import (
    MalformedDataError,
    PolicyViolationError,
)

log = logging.getLogger("pyfory.integrations.zmq")


def _resolve_spec(spec: str) -> Any:
    """Import ``module:attr`` (attr may be dotted)."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected MODULE:NAME, got {spec!r}")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Worker:
    """One worker: connects a DEALER socket to an executor's address and runs its tasks,
    one at a time, in the calling thread (``run()``). A separate thread sends heartbeats.

    Usually started with ``python -m pyfory.integrations.zmq worker ADDRESS``; this class is
    the same thing for code that wants to run a worker itself.

    fory_options: for the worker's Fory (default ``ref=True, strict=False, max_depth=1024``). With
    ``strict=True`` payloads may hold only builtins and ``register``ed classes, functions
    cannot travel by value, and only functions matching ``allow`` run.
    allow: ``fnmatch`` patterns on ``module:qualname`` of the functions that may run (by
    default any function when not strict, none when strict).
    policy: a DeserializationPolicy for loads; also asked about functions named by tasks.
    curve_keys: a directory written by ``generate_keys`` (server secret key and
    ``authorized_clients/``); curve_secret / curve_clients override its two parts.
    local: started by an Executor on this machine: exit when the executor says goodbye or
    its process (``parent_pid``) goes away, instead of waiting for another executor.
    secret: the per-executor secret a local worker presents (ZeroMQ PLAIN) to an executor
    that runs without CURVE keys; handed over by the executor, not chosen by users.
    """

    def __init__(self, address: str, *, prefetch: int = 1, fory_options: Optional[dict] = None,
                 allow: Optional[Iterable[str]] = None, register: Iterable[Any] = (),
                 policy: Any = None, curve_keys: Optional[str] = None,
                 curve_secret: Optional[str] = None, curve_clients: Optional[str] = None,
                 insecure: bool = False, context: Optional[zmq.Context] = None,
                 parent_pid: Optional[int] = None, local: bool = False,
                 secret: Optional[str] = None):
        self.address = address
        self.secret = secret
        if curve_keys:
            curve_secret = curve_secret or os.path.join(curve_keys, SERVER_SECRET)
            curve_clients = curve_clients or os.path.join(curve_keys, AUTHORIZED_DIR)
        if bool(curve_secret) != bool(curve_clients):
            raise ValueError("CURVE needs both the server secret key and the authorized clients directory")
        self.curve_secret = curve_secret
        self.curve_clients = curve_clients
        _check_address(address, bool(curve_secret), insecure, "worker")
        if curve_secret:
            public, secret = _load_cert(curve_secret)
            if not secret:
                raise ValueError(f"{curve_secret} holds no secret key")
            if not os.path.isdir(curve_clients):
                raise ValueError(f"authorized clients directory {curve_clients} does not exist")
            self._curve_pair = (public, secret)
        options = {"ref": True, "strict": False, "max_depth": DEFAULT_MAX_DEPTH}
        options.update(fory_options or {})
        if policy is not None:
            options["policy"] = policy
        # --strict and the policy are about what this worker loads; what it sends back (results,
        # exceptions) is written by a Fory without them, as the executor would
        self.fory = pyfory.Fory(**options)
        out_options = {k: v for k, v in options.items() if k not in ("strict", "policy")}
        self.out_fory = pyfory.Fory(strict=False, **out_options)
        self._framer = pyfory.Fory()  # outcome records (plain data)
        self._handoff = FrameHandoff(OOB_THRESHOLD)
        for cls in register:
            self.fory.register(cls)
            self.out_fory.register(cls)
        self.strict = bool(options.get("strict"))
        self.policy = options.get("policy")
        self.allow = list(allow) if allow is not None else None
        if self.strict and not self.allow:
            log.warning("strict worker without --allow patterns: every task will be refused")
        self.prefetch = max(0, int(prefetch))
        self.parent_pid = parent_pid
        self.local = local
        self._ctx = context
        self._stop = False
        self._hb_session: Optional[tuple] = None
        self._hb_signal: Optional[tuple] = None
        self._hb_cond = threading.Condition()
        self._wake_r = self._wake_w = -1
        self._functions: Dict[str, Any] = {}
        self._resolved: Dict[bytes, Any] = {}
        self.tasks_done = 0

    # -- control ----------------------------------------------------------------------
    def stop(self) -> None:
        """Ask run() to return (from another thread or a signal handler)."""
        self._stop = True
        self._wake()

    def _wake(self) -> None:
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"\0")
            except (BlockingIOError, OSError):
                pass

    def _secure(self, sock: zmq.Socket) -> None:
        if self.curve_secret:
            sock.curve_publickey, sock.curve_secretkey = self._curve_pair
            sock.curve_server = True
        elif self.secret:
            sock.plain_username = LOCAL_WORKER_USER.encode()
            sock.plain_password = self.secret.encode()

    def run(self) -> int:
        """Serve executors until stopped; returns a process exit code."""
        ctx = self._ctx or zmq.Context()
        auth = None
        if self.curve_secret:
            from zmq.auth.thread import ThreadAuthenticator

            auth = ThreadAuthenticator(ctx, log=logging.getLogger("pyfory.integrations.zmq.auth"))
            auth.start()
            auth.configure_curve(domain="*", location=self.curve_clients)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        hb = threading.Thread(target=self._heartbeat_loop, args=(ctx,), name="pyfory-zmq-heartbeat",
                              daemon=True)
        hb.start()
        code = 0
        try:
            while not self._stop:
                outcome = self._session(ctx)
                if outcome == "refused":
                    code = 3
                    break
                if outcome in ("bye", "lost") and self.local:
                    break
                if outcome != "stop":
                    log.info("worker session ended (%s); registering again", outcome)
        finally:
            self._stop = True
            with self._hb_cond:
                self._hb_cond.notify_all()
            hb.join(5)
            wake_r, wake_w = self._wake_r, self._wake_w
            self._wake_r = self._wake_w = -1
            os.close(wake_r)
            os.close(wake_w)
            if auth is not None:
                auth.stop()
            if self._ctx is None:
                ctx.term()
        return code

    # -- the task socket ----------------------------------------------------------------
    def _session(self, ctx: zmq.Context) -> str:
        wid = uuid.uuid4().hex[:16].encode()
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 1000
        sock.routing_id = b"t" + wid
        sock.immediate = True
        sock.reconnect_ivl = 100
        sock.reconnect_ivl_max = 2000
        self._secure(sock)
        sock.connect(self.address)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        ready = json.dumps({
            "id": wid.decode(), "pid": os.getpid(), "host": _socketlib.gethostname(),
            "slots": 1 + self.prefetch, "python": list(sys.version_info[:2]),
            "pyfory": pyfory.__version__, "strict": self.strict,
        }).encode()
        welcomed = False
        next_ready = 0.0
        started = time.monotonic()
        warned = started
        try:
            while not self._stop:
                now = time.monotonic()
                if not welcomed and now >= next_ready:
                    try:
                        sock.send_multipart([READY, ready], zmq.NOBLOCK)
                    except zmq.Again:
                        pass
                    next_ready = now + 0.5
                    if now - warned > 30:
                        warned = now
                        log.warning("still waiting for an executor at %s (%.0f s); an executor "
                                    "without insecure=True lets in only workers with its CURVE "
                                    "keys (--curve-keys DIR)", self.address, now - started)
                events = dict(poller.poll(500 if not welcomed else 1000))
                if self._wake_r in events:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                signal_ = self._hb_signal
                if signal_ is not None and signal_[1] == wid:
                    return signal_[0]
                if sock not in events:
                    continue
                for _ in range(64):
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    head = frames[0].bytes
                    kind = head[:1]
                    if kind == TASK:
                        self._run_batch(sock, head, frames[1:])
                    elif kind == WELCOME:
                        if not welcomed:
                            welcomed = True
                            try:
                                config = json.loads(frames[1].bytes)
                            except (IndexError, ValueError):
                                config = {}
                            self._start_heartbeats(wid, config)
                            log.info("registered with the executor at %s as %s", self.address,
                                     wid.decode())
                    elif kind == RESET:
                        return "reset"
                    elif kind == BYE:
                        return "bye"
                    elif kind == REFUSE:
                        reason = frames[1].bytes.decode("utf-8", "replace") if len(frames) > 1 else ""
                        log.error("the executor refused this worker: %s", reason)
                        return "refused"
                    else:
                        log.warning("ignoring an unknown message from the executor")
                    if self._stop:
                        break
            return "stop"
        finally:
            with self._hb_cond:
                self._hb_session = None
                self._hb_signal = None
                self._hb_cond.notify_all()
            sock.close()

    def _resolve_function(self, name: str) -> Any:
        if self.allow is not None or self.strict:
            if not any(fnmatch.fnmatchcase(name, pattern) for pattern in (self.allow or ())):
                raise PolicyViolationError(
                    f"this worker does not run {name}: it is not matched by the worker's --allow "
                    f"patterns {self.allow or []}")
        module = name.partition(":")[0]
        policy = self.policy
        if policy is not None:
            policy.validate_module(module, False)
        fn = self._functions.get(name)
        if fn is None:
            fn = _resolve_spec(name)
            self._functions[name] = fn
        if policy is not None:
            policy.validate_function(fn, False)
        return fn

    def _run_batch(self, sock: zmq.Socket, head: bytes, frames: list) -> None:
        try:
            batch, entries = _parse_task_header(head)
        except MalformedDataError:
            log.warning("ignoring a malformed task message")
            return
        tids = [tid for tid, _ in entries]
        try:
            if (self.strict or self.allow is not None) and not all(name for _, name in entries):
                raise PolicyViolationError(
                    "this worker runs only functions named by reference and matched by its --allow "
                    "patterns; a task carries its callable by value (a lambda, closure, partial, "
                    "method, callable object or a function defined in __main__)")
            items = check_batch(decode(frames, self.fory), len(entries))
        except BaseException as e:  # noqa: B036 - the executor retries the tasks one by one
            if isinstance(e, KeyboardInterrupt) and not self.local:
                raise
            head = FAILED + batch + _COUNT.pack(len(tids)) + b"".join(tids)
            self._send_records(sock, head, [self._encode(outcomes.load_failed(e))])
            return
        records: list = []
        done: list = []
        encode, handoff, out, call = outcomes.encode, self._handoff, self.out_fory, self._call
        start = time.perf_counter()
        last = len(entries) - 1
        for i, (tid, name) in enumerate(entries):
            entry, items[i] = items[i], None  # the arguments go as soon as the task ran
            records.append(encode(handoff, out, *call(name, entry)))
            del entry
            done.append(tid)
            now = time.perf_counter()
            if i == last or now - start >= RESULT_FLUSH_SECONDS:
                head = b"".join([RESULT, batch, _SECONDS.pack(now - start), _COUNT.pack(len(done)), *done])
                self._send_records(sock, head, records)
                records, done, start = [], [], now
        self.tasks_done += len(entries)

    def _call(self, name: bytes, entry: Any) -> tuple:
        """(status, value, tb) of one task item; a named function is resolved (and checked
        against --allow and the policy) here."""
        fn = None
        if name:
            try:
                fn = self._resolved.get(name)  # allowed and imported before (no policy to ask)
                if fn is None:
                    fn = self._resolve_function(name.decode("utf-8"))
                    if self.policy is None:
                        self._resolved[name] = fn
            except BaseException as e:  # noqa: B036 - the task's outcome
                return outcomes.failed(e)
        outcome = outcomes.run_item(entry, fn)
        if outcome[0] == outcomes.ERROR and isinstance(outcome[1], KeyboardInterrupt) and not self.local:
            raise outcome[1]  # a hand-started worker stops on Ctrl-C; the executor retries the task
        return outcome

    def _encode(self, outcome: tuple) -> tuple:
        return outcomes.encode(self._handoff, self.out_fory, *outcome)

    def _send_records(self, sock: zmq.Socket, head: bytes, records: list) -> None:
        self._send(sock, [head, self._framer.dumps(records), *self._handoff.take()])

    def _send(self, sock: zmq.Socket, frames: list) -> None:
        try:
            sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            log.warning("could not send results: the executor is not connected (it will retry the tasks)")

    # -- the heartbeat socket -----------------------------------------------------------
    def _start_heartbeats(self, wid: bytes, config: dict) -> None:
        interval = float(config.get("heartbeat_interval", 1.0))
        timeout = float(config.get("heartbeat_timeout", 10.0))
        with self._hb_cond:
            self._hb_signal = None
            self._hb_session = (wid, max(0.01, interval), max(interval, timeout))
            self._hb_cond.notify_all()

    def _signal(self, what: str, wid: bytes) -> None:
        self._hb_signal = (what, wid)
        self._wake()

    def _parent_gone(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def _heartbeat_loop(self, ctx: zmq.Context) -> None:
        sock = None
        current = None
        last_pong = time.monotonic()
        try:
            while not self._stop:
                if self._parent_gone():
                    log.warning("the process that started this worker is gone: exiting")
                    os._exit(1)
                session = self._hb_session
                if session is not current:
                    if sock is not None:
                        sock.close(0)
                        sock = None
                    current = session
                    if session is not None:
                        sock = ctx.socket(zmq.DEALER)
                        sock.linger = 0
                        sock.routing_id = b"h" + session[0]
                        sock.reconnect_ivl = 100
                        sock.reconnect_ivl_max = 2000
                        self._secure(sock)
                        sock.connect(self.address)
                        last_pong = time.monotonic()
                if sock is None:
                    with self._hb_cond:
                        if self._hb_session is None and not self._stop:
                            self._hb_cond.wait(0.5)
                    continue
                wid, interval, timeout = session
                try:
                    sock.send(PING, zmq.NOBLOCK)
                except zmq.Again:
                    pass
                deadline = time.monotonic() + interval
                while not self._stop and self._hb_session is session:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    if sock.poll(min(remaining, 0.5) * 1000):
                        msg = sock.recv_multipart(zmq.NOBLOCK)[0]
                        if msg[:1] == PONG:
                            last_pong = time.monotonic()
                        elif msg[:1] == RESET:
                            self._signal("reset", wid)
                    if self._parent_gone():
                        break
                if (not self.local and self._hb_session is session
                        and time.monotonic() - last_pong > timeout):
                    log.warning("no answer from the executor for %.1f s: registering again",
                                time.monotonic() - last_pong)
                    self._signal("lost", wid)
                    with self._hb_cond:
                        while self._hb_session is session and not self._stop:
                            self._hb_cond.wait(0.5)
        finally:
            if sock is not None:
                sock.close(0)

