"""Who may talk to whom: loopback address checks, CURVE key sets, and the per-executor
secret local workers present (ZeroMQ PLAIN through a ZAP handler)."""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
from typing import Dict

import zmq

log = logging.getLogger("pyfory.integrations.zmq")

SERVER_KEY = "server.key"
SERVER_SECRET = "server.key_secret"
CLIENT_KEY = "client.key"
CLIENT_SECRET = "client.key_secret"
AUTHORIZED_DIR = "authorized_clients"


def _split_tcp(address: str):
    rest = address[len("tcp://"):]
    if ";" in rest:  # "source;destination" form of connect: the destination matters
        rest = rest.split(";", 1)[1]
    if rest.startswith("["):
        host = rest[1:rest.index("]")]
        port = rest[rest.index("]") + 2:]
    else:
        host, _, port = rest.rpartition(":")
    return host, port


def is_local_address(address: str) -> bool:
    """True for ``inproc://``, ``ipc://`` and TCP on a loopback address (127.0.0.0/8, ::1,
    localhost). Anything else is reachable from other machines."""
    if address.startswith(("inproc://", "ipc://")):
        return True
    if not address.startswith("tcp://"):
        return False
    try:
        host, _ = _split_tcp(address)
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host or interface name, "*"
        return False


# the PLAIN user name local workers present with their executor's secret
LOCAL_WORKER_USER = "pyfory-local-worker"
_ZAP_DOMAIN = "pyfory-executor"


def _check_address(address: str, curve: bool, insecure: bool, who: str) -> None:
    if is_local_address(address) or curve:
        return
    if insecure:
        log.warning("%s on %s without CURVE authentication (--insecure): anyone who can reach "
                    "this address can run code on the workers", who, address)
        return
    raise ValueError(
        f"refusing to use {address!r} without authentication: a worker runs the code it "
        f"receives, so an open {who} on a network address is remote code execution for anyone "
        f"who can reach it. Use a loopback address (tcp://127.0.0.1:PORT), ipc:// or inproc://, "
        f"or configure ZeroMQ CURVE keys (python -m pyfory.integrations.zmq keys DIR, then "
        f"curve_keys=DIR / --curve-keys DIR), or pass insecure=True / --insecure explicitly.")


def generate_keys(directory: str) -> Dict[str, str]:
    """Write a CURVE key set: the workers' server key pair, the executor's client key pair,
    and ``authorized_clients/`` holding the client's public key. Returns the paths."""
    import zmq.auth

    os.makedirs(directory, exist_ok=True)
    auth_dir = os.path.join(directory, AUTHORIZED_DIR)
    os.makedirs(auth_dir, exist_ok=True)
    server_pub, server_sec = zmq.auth.create_certificates(directory, "server")
    client_pub, client_sec = zmq.auth.create_certificates(directory, "client")
    for secret in (server_sec, client_sec):
        os.chmod(secret, 0o600)
    authorized = os.path.join(auth_dir, CLIENT_KEY)
    shutil.copyfile(client_pub, authorized)
    return {"server_public": server_pub, "server_secret": server_sec, "client_public": client_pub,
            "client_secret": client_sec, "authorized_clients": auth_dir}


def _load_cert(path: str):
    import zmq.auth

    public, secret = zmq.auth.load_certificate(path)
    return public, secret


def _client_curve(sock: zmq.Socket, keys_dir: str) -> None:
    """Executor side: CURVE client with the client key pair, trusting the server key."""
    public, secret = _load_cert(os.path.join(keys_dir, CLIENT_SECRET))
    if not secret:
        raise ValueError(f"{keys_dir}/{CLIENT_SECRET} has no secret key")
    server_public, _ = _load_cert(os.path.join(keys_dir, SERVER_KEY))
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = server_public


def _plain_authenticator(ctx: zmq.Context, secret: str):
    """A ZAP handler on ctx that admits PLAIN peers presenting secret (and nobody else)."""
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(ctx, log=logging.getLogger("pyfory.integrations.zmq.auth"))
    try:
        auth.start()
    except zmq.ZMQError as e:
        raise ValueError(
            f"cannot start the executor's authenticator on this zmq.Context ({e}): it already "
            f"has a ZAP handler. Use curve_keys=..., or a context of its own") from e
    auth.configure_plain(domain=_ZAP_DOMAIN, passwords={LOCAL_WORKER_USER: secret})
    return auth

