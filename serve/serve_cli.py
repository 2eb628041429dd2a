"""`bit-serve BUNDLE`: a real Triton Inference Server on this host, in front of a Classifier on any backend."""

from __future__ import annotations

import argparse
import errno
import os
import secrets
import shutil
import socket
import sys
import tempfile

from ..engine.classify_cli import open_classifier
from ..engine.errors import BitError
from .triton_models import default_model_name

PROG = "bit-serve"
TOKEN_ENV = "BIT_SERVE_ACCESS_TOKEN"
TOKEN_FILE = "access-token"
INSTALL = "python3 -m venv .venv-serve && .venv-serve/bin/pip install -c constraints-serve.txt -e '.[serve]'"

EPILOG = f"""\
models:
  <name>        float NHWC images in [0, 1] ("images", FP32 [R, R, 3], dynamically batched) -> logits FP32 [C]
  <name>_image  encoded images ("image", BYTES [1]: JPEG, PNG, ...) -> logits FP32 [C] and
                classes BYTES [5] ("probability:index:label")
  <name> defaults to bit_<variant> (e.g. bit_r50x3). A float image that is not finite or not in [0, 1] gets
  NaN logits (the rest of its batch is answered); a file that is not an image fails its own request only.

access token:
  Triton's admin endpoints (statistics, model repository, shared memory, trace, logging) need the header
  "triton-access-token: TOKEN"; inference and health do not. TOKEN is ${TOKEN_ENV} if set; otherwise a
  new random one, written to WORKSPACE/{TOKEN_FILE} (mode 0600, its path printed when ready).

The workspace (Triton's model store, sockets and the token file) is a new temporary directory, under
--workspace if given, removed at exit. Ctrl-C or SIGTERM stops the server: models unloaded after their in-flight
requests, within 30 s whatever clients stay connected (then Triton is killed); a second signal kills it at once.

bit-serve needs its own environment (PyTriton needs numpy < 2):
  {INSTALL}
"""


def parse_args(argv):
    from ..engine.classify_cli import add_backend_arguments  # --backend (auto by default), --precision, --threads

    p = argparse.ArgumentParser(
        prog=PROG,
        description="Serve a bit-trt bundle with NVIDIA Triton Inference Server (through PyTriton).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bundle", help="bundle directory written by bit-export")
    add_backend_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP/REST port (default 8000)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001)")
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port (default 8002)")
    p.add_argument("--name", default="", help="model name (default bit_<variant>); the image model adds _image")
    p.add_argument(
        "--max-batch", type=int, default=None, help="largest batch per call (default 8; trt: at most the plan's max)"
    )
    p.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=1000,
        help="how long the float model's dynamic batcher waits for more requests (default 1000)",
    )
    p.add_argument(
        "--image-workers", type=int, default=2, help="instances of the image model, decoding in parallel (default 2)"
    )
    p.add_argument("--workspace", default=None, help="directory for the temporary workspace (default: system temp)")
    p.add_argument("--log-verbose", type=int, default=0, help="Triton's verbose log level (default 0)")
    return p.parse_args(argv)


def check_arguments(args) -> None:
    for flag in ("http_port", "grpc_port", "metrics_port"):
        port = getattr(args, flag)
        if not 1 <= port <= 65535:
            raise BitError(f"--{flag.replace('_', '-')} {port}: not a port number (1-65535)")
    ports = [args.http_port, args.grpc_port, args.metrics_port]
    if len(set(ports)) != 3:
        raise BitError(f"--http-port, --grpc-port and --metrics-port must differ, got {ports}")
    if args.image_workers < 1:
        raise BitError(f"--image-workers must be at least 1, got {args.image_workers}")
    if args.max_queue_delay_us < 0:
        raise BitError(f"--max-queue-delay-us must be 0 or more, got {args.max_queue_delay_us}")
    if args.log_verbose < 0:
        raise BitError(f"--log-verbose must be 0 or more, got {args.log_verbose}")
    if args.workspace is not None and not os.path.isdir(args.workspace):
        raise BitError(f"--workspace {args.workspace!r} is not a directory")


def check_ports_free(host: str, ports: dict[str, int]) -> None:
    """Each port bound once here, so a taken one is one line naming its flag, not a Triton start that fails.

    SO_REUSEADDR as Triton's servers use it: a port left in TIME_WAIT is free, one with a listener is not."""
    try:
        family = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise BitError(f"--host {host!r}: cannot resolve ({exc.strerror})") from None
    for flag, port in ports.items():
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise BitError(f"{flag} {port}: port already in use on {host}; choose another") from None
                raise BitError(f"{flag} {port}: cannot listen on {host} ({exc.strerror})") from None


def access_token(workspace: str) -> tuple[str, str]:
    """(token, where it comes from): the environment's, or a new one written to a 0600 file in the workspace."""
    token = os.environ.get(TOKEN_ENV, "")
    if token:
        return token, f"${TOKEN_ENV}"
    token = secrets.token_urlsafe(32)
    path = os.path.join(workspace, TOKEN_FILE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, path


def import_server():
    """The PyTriton side, or a BitError saying how to build bit-serve's environment."""
    try:
        from . import pytriton_server
    except ImportError as exc:
        raise BitError(
            f"PyTriton is not importable here ({exc}); bit-serve needs its own environment "
            f"(PyTriton needs numpy < 2): {INSTALL}"
        ) from exc
    return pytriton_server


def ready_line(args, names: list[str], token_source: str) -> str:
    host = f"[{args.host}]" if ":" in args.host else args.host
    urls = (
        f"http://{host}:{args.http_port} grpc {host}:{args.grpc_port} metrics http://{host}:{args.metrics_port}/metrics"
    )
    return (
        f"{PROG}: ready: models {names[0]} (float) and {names[1]} (encoded images); {urls}; admin token: {token_source}"
    )


def run(args) -> int:
    check_arguments(args)
    check_ports_free(
        args.host, {"--http-port": args.http_port, "--grpc-port": args.grpc_port, "--metrics-port": args.metrics_port}
    )
    server = import_server()
    # The classifier is made and activated (a TensorRT plan checked against this host) before Triton starts:
    # a bundle that cannot run here is one line, not a server that fails its first request.
    clf = open_classifier(args, PROG)
    if clf is None:
        return 1
    try:
        name = server.check_model_name(args.name or default_model_name(clf.bundle.manifest))
        max_batch = server.max_batch_for(clf, args.max_batch)
        root = tempfile.mkdtemp(prefix="bit-serve-", dir=args.workspace)
        try:
            token, token_source = access_token(root)
            options = server.ServeOptions(
                host=args.host,
                http_port=args.http_port,
                grpc_port=args.grpc_port,
                metrics_port=args.metrics_port,
                name=name,
                max_batch=max_batch,
                max_queue_delay_us=args.max_queue_delay_us,
                image_workers=args.image_workers,
                log_verbose=args.log_verbose,
                workspace=os.path.join(root, "pytriton"),
                access_token=token,
                remove_at_exit=root,
            )
            server.check_socket_paths(options)
            return server.serve(clf, options, lambda names: print(ready_line(args, names, token_source), flush=True))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    finally:
        clf.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except BitError as exc:
        if args.debug:
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the server's own handlers are in place (loading the model)
        return 130


if __name__ == "__main__":
    sys.exit(main())
