"""The command line: ``python -m pyfory.integrations.zmq worker ADDRESS`` and ``keys DIR``
(run by ``__main__``)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any, Dict, Optional, Sequence

from pyfory.integrations.zmq.security import _check_address, generate_keys
from pyfory.integrations.zmq.worker import Worker, _resolve_spec

import pyfory

log = logging.getLogger("pyfory.integrations.zmq")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pyfory.integrations.zmq",
        description="pyfory ZeroMQ workers and CURVE keys.")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run tasks for the Executor bound at ADDRESS")
    w.add_argument("address", help="the executor's address, e.g. tcp://127.0.0.1:5555")
    w.add_argument("--concurrency", type=int, default=1,
                   help="worker processes to run (each runs one task at a time; default 1)")
    w.add_argument("--prefetch", type=int, default=1,
                   help="task batches a worker process holds besides the one it runs (default 1)")
    w.add_argument("--strict", action="store_true",
                   help="payloads may hold only builtins and --register'ed classes; only functions "
                        "matched by --allow run, and none travel by value")
    w.add_argument("--allow", action="append", metavar="PATTERN",
                   help="fnmatch pattern on MODULE:QUALNAME of functions that may run (repeatable)")
    w.add_argument("--register", action="append", default=[], metavar="MODULE:CLASS",
                   help="register a class with the worker's Fory (for --strict; repeatable)")
    w.add_argument("--policy", metavar="MODULE:NAME",
                   help="a DeserializationPolicy class, factory or instance for loads")
    w.add_argument("--no-ref", action="store_true", help="Fory(ref=False)")
    w.add_argument("--max-depth", type=int, default=None, help="Fory(max_depth=...)")
    w.add_argument("--curve-keys", metavar="DIR",
                   help="CURVE keys written by the 'keys' command (server.key_secret, authorized_clients/)")
    w.add_argument("--curve-secret", metavar="FILE", help="the workers' server secret key file")
    w.add_argument("--curve-clients", metavar="DIR", help="directory of authorized client public keys")
    w.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback address without CURVE (anyone reaching it can run code)")
    w.add_argument("--log-level", default="INFO")
    w.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    w.add_argument("--local-config", action="store_true", help=argparse.SUPPRESS)
    k = sub.add_parser("keys", help="generate CURVE keys for executors and workers")
    k.add_argument("directory")
    return parser


def _worker_main(args: argparse.Namespace) -> int:
    options: Dict[str, Any] = {}
    prefetch = args.prefetch
    curve_keys = args.curve_keys
    log_level = args.log_level
    local = False
    secret = None
    if args.local_config:  # started by an Executor: the rest of the options come on stdin
        config = pyfory.Fory(ref=True, strict=False).loads(sys.stdin.buffer.read())
        options.update(config.get("fory_options") or {})
        prefetch = config.get("prefetch", prefetch)
        curve_keys = config.get("curve_keys") or curve_keys
        secret = config.get("secret")
        log_level = config.get("log_level", log_level)
        local = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the executor decides when we stop
    logging.basicConfig(level=getattr(logging, str(log_level).upper(), logging.INFO),
                        format="%(asctime)s pyfory-zmq-worker[%(process)d] %(levelname)s %(message)s")
    if args.strict:
        options["strict"] = True
    if args.no_ref:
        options["ref"] = False
    if args.max_depth is not None:
        options["max_depth"] = args.max_depth
    if args.policy:
        policy = _resolve_spec(args.policy)
        if isinstance(policy, type) or (callable(policy) and not hasattr(policy, "validate_class")):
            policy = policy()
        options["policy"] = policy
    register = [_resolve_spec(spec) for spec in args.register]

    if args.concurrency > 1 and not local:
        return _supervise(args)
    try:
        worker = Worker(args.address, prefetch=prefetch, fory_options=options, allow=args.allow,
                        register=register, curve_keys=curve_keys, curve_secret=args.curve_secret,
                        curve_clients=args.curve_clients, insecure=args.insecure,
                        parent_pid=args.parent_pid, local=local, secret=secret)
    except ValueError as e:
        print(f"pyfory zmq worker: {e}", file=sys.stderr)
        return 2

    def on_term(signum, frame):
        worker.stop()

    signal.signal(signal.SIGTERM, on_term)
    if not local:
        signal.signal(signal.SIGINT, on_term)
    log.info("worker %d serving %s", os.getpid(), args.address)
    return worker.run()


def _supervise(args: argparse.Namespace) -> int:
    """--concurrency N: run N single worker processes, restart those that die."""
    try:  # fail early (bad address, keys) instead of N times
        _check_address(args.address, bool(args.curve_keys or args.curve_secret), args.insecure, "worker")
    except ValueError as e:
        print(f"pyfory zmq worker: {e}", file=sys.stderr)
        return 2
    argv = [sys.executable, "-m", "pyfory.integrations.zmq", "worker", args.address,
            "--concurrency", "1", "--parent-pid", str(os.getpid()), "--prefetch", str(args.prefetch),
            "--log-level", args.log_level]
    for flag in ("strict", "insecure", "no_ref"):
        if getattr(args, flag):
            argv.append("--" + flag.replace("_", "-"))
    for flag in ("max_depth", "policy", "curve_keys", "curve_secret", "curve_clients"):
        value = getattr(args, flag)
        if value is not None:
            argv += ["--" + flag.replace("_", "-"), str(value)]
    for pattern in args.allow or ():
        argv += ["--allow", pattern]
    for spec in args.register:
        argv += ["--register", spec]
    stopping = threading.Event()

    def on_term(signum, frame):
        stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    children = [subprocess.Popen(argv) for _ in range(args.concurrency)]
    failures = 0
    try:
        while not stopping.wait(0.2):
            for i, child in enumerate(children):
                code = child.poll()
                if code is None:
                    continue
                if code in (2, 3):  # configuration refused: restarting will not help
                    stopping.set()
                    return code
                failures += 1
                log.warning("worker process %d exited with code %s: restarting it", child.pid, code)
                children[i] = subprocess.Popen(argv)
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return 0


def _keys_main(args: argparse.Namespace) -> int:
    paths = generate_keys(args.directory)
    print(f"CURVE keys written to {args.directory}:")
    for what, path in paths.items():
        print(f"  {what:20} {path}")
    print("Workers need server.key_secret and authorized_clients/ "
          f"(--curve-keys {args.directory}); executors need client.key_secret and server.key "
          f"(Executor(..., curve_keys={args.directory!r})). Keep the *.key_secret files private.")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "worker":
        return _worker_main(args)
    return _keys_main(args)
