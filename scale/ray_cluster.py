"""Reaching a Ray cluster: one call that connects or says in one line why it can't, and the message a failed
replica or task left, cut down to the engine's line."""

from __future__ import annotations

import os
import re
import socket
import tempfile

from ..engine.errors import BitError, require
from ..engine.private_temp import users_temp_folder

LOCAL = "local"  # start a Ray instance in this process (one node, this machine), as `ray.init()` does
CONNECT_TIMEOUT_S = 5.0


def import_ray():
    """Ray, or the one line that says which extra brings it."""
    return require("ray")


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a GCS or Ray Client address ("host:port", "ray://host:port"); None for "auto"."""
    if address == "auto":
        return None
    bare = address.removeprefix("ray://")
    host, sep, port = bare.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise BitError(f"--ray {address!r}: expected host:port, ray://host:port, auto or {LOCAL}")
    return host.strip("[]"), int(port)


def connect(address: str, namespace: str = "bit-trt"):
    """ray.init for `address`, or a one-line BitError: an address that nothing answers is found within
    CONNECT_TIMEOUT_S by a plain TCP connect, before Ray's own retries (a minute) would start."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    if address == LOCAL:
        # Ray makes its temporary folder (sessions: logs, sockets) mode 0777, /tmp/ray by default: inside a 0700
        # folder of this user's instead, other local users reach none of it. One per user, as Ray's own, so each
        # run's session is a session_* folder beside the last ones (session_latest: this run's logs), not a new
        # folder in /tmp. Ray 2.59+ turns token authentication on for local clusters by itself.
        private = users_temp_folder("bit-ray-") or tempfile.mkdtemp(prefix="bit-ray-")
        ray.init(
            namespace=namespace,
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=False,
            _temp_dir=os.path.join(private, "r"),
        )
        return ray
    target = _host_port(address)
    if target is not None:
        try:
            socket.create_connection(target, timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise BitError(f"--ray {address}: no Ray cluster answers there ({reason})") from None
    try:
        ray.init(address=address, namespace=namespace, configure_logging=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise BitError(f"--ray {address}: cannot connect ({first_line(str(exc))})") from None
    return ray


_BIT_ERROR = re.compile(r"BitError: (.+)")


def first_line(message: str) -> str:
    """The engine's own line where a remote traceback carries one (a replica's or a task's BitError), else the
    message's last non-empty line, which is where Ray puts the exception."""
    found = _BIT_ERROR.findall(message)
    if found:
        return found[-1].strip()
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[-1] if lines else message
