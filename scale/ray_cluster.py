"""Reaching a Ray cluster: one call that connects or says in one line why it can't, and the message a failed
replica or task left, cut down to the engine's line."""

from __future__ import annotations

import os
import re
import secrets
import socket
import tempfile

from ..engine.errors import BitError, require
from ..engine.private_temp import kept_private_file, users_temp_folder

LOCAL = "local"  # start a Ray instance in this process (one node, this machine), as `ray.init()` does
CONNECT_TIMEOUT_S = 5.0
TOKEN_FILE = "auth_token"  # a local cluster's token, in this user's private folder (see _private_token_auth)
_own_token: str | None = None  # the token file connect(LOCAL) named in RAY_AUTH_TOKEN_PATH, while it is named there


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
        # folder in /tmp. The token that keeps other users' code off the cluster is there too.
        private = users_temp_folder("bit-ray-") or tempfile.mkdtemp(prefix="bit-ray-")
        _private_token_auth(private)
        ray.init(
            namespace=namespace,
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=False,
            _temp_dir=os.path.join(private, "r"),
        )
        return ray
    _forget_own_token()
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


def _private_token_auth(folder: str) -> None:
    """Token authentication for a local cluster, its token in `folder` (this user's, 0700) as a 0600 file, made
    once and kept for the next runs as Ray keeps its own.

    Ray 2.59+ turns token authentication on for a local cluster by itself, but writes the token it makes to
    ~/.ray/auth_token with the umask's mode (0644 under the usual 022): any local user who can enter the home
    folder reads it, and with it runs code as this user on every cluster that token guards. A token or token file
    the caller gave (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH), or RAY_AUTH_MODE=disabled, is the caller's and is kept.
    """
    global _own_token
    mode = os.environ.get("RAY_AUTH_MODE", "token").lower()
    if mode != "token" or os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    try:
        path = kept_private_file(folder, TOKEN_FILE, lambda: secrets.token_hex(32))
    except OSError as exc:
        raise BitError(f"--ray {LOCAL}: cannot write its token in {folder} ({exc.strerror or exc})") from None
    # Ray's processes inherit it, never on a command line. RAY_AUTH_MODE is left to ray.init, which sets it to
    # token and refreshes its configuration, read once when Ray was imported, to match.
    os.environ["RAY_AUTH_TOKEN_PATH"] = _own_token = path


def _forget_own_token() -> None:
    """A local run's token stays in this process's environment, where Ray's processes read it: a later connection
    to another cluster from the same process must not present it, but the token that cluster's user gave Ray."""
    global _own_token
    if _own_token is not None and os.environ.get("RAY_AUTH_TOKEN_PATH") == _own_token:
        del os.environ["RAY_AUTH_TOKEN_PATH"]
        from ray._raylet import AuthenticationTokenLoader

        AuthenticationTokenLoader.instance().reset_cache()  # Ray caches the token it read
    _own_token = None


_BIT_ERROR = re.compile(r"BitError: (.+)")


def first_line(message: str) -> str:
    """The engine's own line where a remote traceback carries one (a replica's or a task's BitError), else the
    message's last non-empty line, which is where Ray puts the exception."""
    found = _BIT_ERROR.findall(message)
    if found:
        return found[-1].strip()
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[-1] if lines else message
