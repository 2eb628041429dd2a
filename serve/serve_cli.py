"""`bit-serve BUNDLE`: a real Triton Inference Server on this host, in front of a Classifier on any backend."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import ipaddress
import os
import socket
import sys
from typing import TYPE_CHECKING

from ..engine.classify_cli import add_image_limit_arguments, open_classifier
from ..engine.errors import BitError
from ..engine.options import field_defaults, options_from
from .batching import DEFAULT_MAX_BATCH

if TYPE_CHECKING:
    from .serve_options import ServeOptions

PROG = "bit-serve"
OLD_TOKEN_ENV = "BIT_SERVE_ACCESS_TOKEN"
# A container's /dev/shm is its own, so there the host's other users cannot see Triton's regions anyway, and the
# kernel refuses the namespaces: docker/Dockerfile.cpu sets this, which --allow-shared-dev-shm also says.
SHARED_SHM_ENV = "BIT_SERVE_ALLOW_SHARED_DEV_SHM"  # bit-serve before its admin APIs were closed read a token from here
# What anyone who reaches the ports can do: no endpoint of Triton asks for credentials.
OPEN_ENDPOINTS = "inference, health, server and model metadata, model configs, statistics and metrics"
INSTALL = "python3 -m venv .venv-serve && .venv-serve/bin/pip install -c constraints-serve.txt -e '.[serve]'"

EPILOG = f"""\
models:
  <name>        float NHWC images in [0, 1] ("images", FP32 [R, R, 3], dynamically batched) -> logits FP32 [C]
  <name>_image  encoded images ("image", BYTES [1]: JPEG, PNG, ...) -> logits FP32 [C] and
                classes BYTES [5] ("probability:index:label")
  <name> defaults to bit_<variant> (e.g. bit_r50x3). A float image that is not finite or not in [0, 1] gets
  NaN logits (the rest of its batch is answered); a file that is not an image fails its own request only,
  as does one whose header declares more than --max-image-pixels.

security (docs/serving.md, "Security"):
  The models are fixed at start: no client can load, unload or replace one. Triton's admin APIs (model
  repository, shared memory, trace, logging) are refused to every client over HTTP and gRPC, whatever
  headers it sends (HTTP 403 / gRPC UNAVAILABLE "This API is restricted"): there is no access token, so
  there is none to leak. Open to whoever reaches the ports, as on any Triton:
  {OPEN_ENDPOINTS}.
  It listens on 127.0.0.1 unless --host says otherwise. Triton's shared memory is in a /dev/shm of
  bit-serve's own (a mount namespace; where the kernel refuses one, bit-serve refuses to serve unless
  --allow-shared-dev-shm), and its files are private to this user.
  Known hole, in Triton 2.51 itself (fixed upstream after it, triton-inference-server/server#8676): an HTTP
  request with JSON data allocates what its shape declares before checking it, so one request can crash
  Triton or exhaust memory. Binary HTTP (tritonclient's default) and gRPC are not affected. Where untrusted
  clients can connect, serve with --no-http.

The workspace (Triton's model store and sockets) is a new private temporary directory, under --workspace if
given, removed at exit. Ctrl-C or SIGTERM stops the server within 15 s whatever clients do: Triton stops taking
connections, answers what is in flight, then finalizes the models (it kills them after 8 s of open
connections); a second signal kills it at once.

bit-serve needs its own environment (PyTriton needs numpy < 2):
  {INSTALL}

On a Ray cluster instead (Ray Serve, replicas across nodes, autoscaled; no Triton; the main environment):
  bit-serve BUNDLE --ray ADDRESS [...]      (bit-serve BUNDLE --ray ADDRESS --help; docs/scaling.md)
"""


def build_parser() -> argparse.ArgumentParser:
    from ..engine.classify_cli import add_backend_arguments  # --backend (auto by default), --precision, --threads
    from .serve_options import ServeOptions  # imports numpy: after private_shared_memory (see main)

    d = field_defaults(ServeOptions)
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Serve a bit-trt bundle with NVIDIA Triton Inference Server (through PyTriton).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bundle", help="bundle directory written by bit-export")
    add_backend_arguments(p)
    p.add_argument("--host", default=d["host"], help=f"address to listen on (default {d['host']}; 0.0.0.0: all)")
    p.add_argument("--http-port", type=int, default=d["http_port"], help=f"HTTP/REST port (default {d['http_port']})")
    p.add_argument(
        "--no-http",
        action="store_false",
        dest="http",
        default=d["http"],
        help="serve gRPC (and metrics) only: Triton 2.51's HTTP JSON inputs can crash it (see --help's security)",
    )
    p.add_argument("--grpc-port", type=int, default=d["grpc_port"], help=f"gRPC port (default {d['grpc_port']})")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=d["metrics_port"],
        help=f"Prometheus metrics port (default {d['metrics_port']})",
    )
    p.add_argument("--name", default=d["name"], help="model name (default bit_<variant>); the image model adds _image")
    p.add_argument(
        "--max-batch",
        type=int,
        default=d["max_batch"],
        help=f"largest batch per call (default {DEFAULT_MAX_BATCH}; trt: at most the plan's max)",
    )
    p.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=d["max_queue_delay_us"],
        help=f"how long the float model's dynamic batcher waits for more requests (default {d['max_queue_delay_us']})",
    )
    p.add_argument(
        "--image-workers",
        type=int,
        default=d["image_workers"],
        help=f"instances of the image model, decoding in parallel (default {d['image_workers']})",
    )
    p.add_argument(
        "--throughput",
        action="store_true",
        default=d["throughput"],
        help="set the backend up for many requests at once (one per image worker, plus the float model): "
        "OpenVINO's THROUGHPUT streams, ONNX Runtime's threads split between them; default: one request's latency",
    )
    add_image_limit_arguments(p, d["max_image_pixels"], d["max_decode_mb"])
    p.add_argument(
        "--allow-shared-dev-shm",
        action="store_true",
        default=d["allow_shared_dev_shm"] or os.environ.get(SHARED_SHM_ENV) == "1",
        help="start even where no private /dev/shm can be made: Triton's 0644 regions then sit in this /dev/shm, "
        f"which a container has to itself (${SHARED_SHM_ENV}=1 says the same; the CPU image sets it)",
    )
    p.add_argument(
        "--workspace", default=d["workspace"], help="directory for the temporary workspace (default: system temp)"
    )
    p.add_argument(
        "--log-verbose",
        type=int,
        default=d["log_verbose"],
        help=f"Triton's verbose log level (default {d['log_verbose']})",
    )
    return p


def options_from_args(args: argparse.Namespace) -> ServeOptions:
    """The parsed flags as ServeOptions: every flag but --debug, each under its field's name."""
    from .serve_options import ServeOptions

    return options_from(ServeOptions, args)


def check_options(options: ServeOptions) -> None:
    for flag in ("http_port", "grpc_port", "metrics_port"):
        port = getattr(options, flag)
        if not 1 <= port <= 65535:
            raise BitError(f"--{flag.replace('_', '-')} {port}: not a port number (1-65535)")
    ports = [options.http_port, options.grpc_port, options.metrics_port]
    if len(set(ports)) != 3:
        raise BitError(f"--http-port, --grpc-port and --metrics-port must differ, got {ports}")
    if options.image_workers < 1:
        raise BitError(f"--image-workers must be at least 1, got {options.image_workers}")
    if options.max_queue_delay_us < 0:
        raise BitError(f"--max-queue-delay-us must be 0 or more, got {options.max_queue_delay_us}")
    if options.log_verbose < 0:
        raise BitError(f"--log-verbose must be 0 or more, got {options.log_verbose}")
    if options.workspace is not None and not os.path.isdir(options.workspace):
        raise BitError(f"--workspace {options.workspace!r} is not a directory")


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


def exposure_warning(host: str) -> str | None:
    """A warning when the server listens beyond loopback: what becomes reachable from the network."""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:  # a host name
        if host == "localhost":
            return None
    return (
        f"{PROG}: warning: --host {host} listens beyond this machine: anyone who can reach its ports can use "
        f"{OPEN_ENDPOINTS}, without credentials (admin APIs stay refused); put a firewall or an authenticating "
        "proxy in front"
    )


def import_server():
    """The PyTriton side, or a BitError saying how to build bit-serve's environment."""
    try:
        from . import pytriton_lifecycle
    except ImportError as exc:
        raise BitError(
            f"PyTriton is not importable here ({exc}); bit-serve needs its own environment "
            f"(PyTriton needs numpy < 2): {INSTALL}"
        ) from exc
    return pytriton_lifecycle


def ready_line(options: ServeOptions, names: list[str]) -> str:
    host = f"[{options.host}]" if ":" in options.host else options.host
    http = f"http://{host}:{options.http_port}" if options.http else "http off"
    urls = f"{http} grpc {host}:{options.grpc_port} metrics http://{host}:{options.metrics_port}/metrics"
    return f"{PROG}: ready: models {names[0]} (float) and {names[1]} (encoded images); {urls}"


def run(options: ServeOptions, debug: bool = False, shared_memory_warning: str | None = None) -> int:
    check_options(options)
    if shared_memory_warning and not options.allow_shared_dev_shm:
        raise BitError(f"{shared_memory_warning}; refusing to serve (--allow-shared-dev-shm serves anyway)")
    if shared_memory_warning:
        shared_memory_warning = f"{PROG}: warning: {shared_memory_warning}"
    for warning in (exposure_warning(options.host), shared_memory_warning, _old_token_notice()):
        if warning:
            print(warning, file=sys.stderr, flush=True)
    ports = {"--http-port": options.http_port} if options.http else {}
    check_ports_free(options.host, ports | {"--grpc-port": options.grpc_port, "--metrics-port": options.metrics_port})
    server = import_server()
    # The classifier is made and activated (a TensorRT plan checked against this host) before Triton starts:
    # a bundle that cannot run here is one line, not a server that fails its first request. bit-classify's
    # open_classifier reads the same names from ServeOptions as from its own flags.
    clf = open_classifier(argparse.Namespace(**dataclasses.asdict(options), debug=debug), PROG)
    if clf is None:
        return 1
    try:
        return server.serve(clf, options, lambda names: ready_line(options, names))
    finally:
        clf.close()


def private_shared_memory() -> str | None:
    """None when Triton's shared memory is private to this server (serve/private_shm.py), else the warning."""
    from . import private_shm

    try:
        private_shm.make_private()
        return None
    except OSError as exc:
        return (
            f"Triton's Python backend keeps requests in /dev/shm with mode 0644, readable by other local users, and "
            f"no private /dev/shm could be made ({exc.strerror}): run as root, or where the kernel allows "
            "unprivileged user namespaces (docs/serving.md, Security)"
        )


def _old_token_notice() -> str | None:
    if os.environ.get(OLD_TOKEN_ENV):
        return f"{PROG}: note: ${OLD_TOKEN_ENV} is ignored: bit-serve has no admin API left to guard (see --help)"
    return None


def main(argv=None) -> int:
    args_given = sys.argv[1:] if argv is None else argv
    if any(a == "--ray" or a.startswith("--ray=") for a in args_given):  # Ray Serve: no Triton, no PyTriton
        from ..scale import serve_cli as ray_serve_cli

        return ray_serve_cli.main(args_given)
    shared_memory_warning = private_shared_memory()  # before anything starts a thread (numpy's BLAS does)
    args = build_parser().parse_args(argv)
    try:
        return run(options_from_args(args), args.debug, shared_memory_warning)
    except BitError as exc:
        if args.debug:
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the server's own handlers are in place (loading the model)
        return 130


if __name__ == "__main__":
    sys.exit(main())
