"""Triton locked down for serving: the models fixed at start, its admin APIs closed to every client. One home for
bit-serve's Triton (pytriton_patches.lock_down), the command bit-triton prints, docker/Dockerfile.triton's CMD and
the Kubernetes overlay's arguments (tests/docker and tests/deploy hold the last two to it).

A client of an open Triton can load models (a Python-backend model.py runs as the server's user) where model control
is explicit, and use the shared-memory, trace and logging APIs anywhere; a port published on 127.0.0.1 is still open
to every local user. Triton can restrict those APIs to callers that send a given header; the header here is one no
HTTP or gRPC client can send, so there is no credential to steal or to leave on a command line.
"""

from __future__ import annotations

import re

# Triton's restricted-API categories closed to every client. Statistics stay open, read-only as in a stock Triton:
# perf_analyzer needs them, and they hold counts and times, no data.
ADMIN_APIS = ("model-repository", "shared-memory", "trace", "logging")
# A header no client can send: HTTP/1.1 ends a header line at LF, and HTTP/2 (gRPC) refuses names with spaces or
# control characters (RFC 9113, 8.2.1). The restriction is a name and a value, so both are unsendable.
ADMIN_HEADER = "bit-serve has no admin API\n"
RESTRICTION = f"{','.join(ADMIN_APIS)}:{ADMIN_HEADER}={ADMIN_HEADER}"
# tritonserver's options, without the leading "--": models loaded at start only, admin APIs closed on both protocols
SERVER_ARGS = {
    "model-control-mode": "none",
    "http-restricted-api": RESTRICTION,
    "grpc-restricted-protocol": RESTRICTION,
}
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def arguments() -> list[str]:
    """SERVER_ARGS as tritonserver's arguments, one "--option=value" each."""
    return [f"--{key}={value}" for key, value in SERVER_ARGS.items()]


def shell_word(arg: str) -> str:
    """`arg` as one bash word: as it is where that is safe, else ANSI-C quoted ($'...'), which keeps the header's
    newline on one printed line."""
    if _PLAIN.fullmatch(arg):
        return arg
    return "$'" + arg.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"
