"""`bit-serve BUNDLE --ray ADDRESS`: the Ray Serve application (scale/serve_app.py) deployed onto a Ray cluster.

bit-serve hands its command line here when it holds --ray (serve/serve_cli.py): Triton and PyTriton play no part.
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
import threading
import time

from ..engine.errors import BitError
from ..engine.options import field_defaults, options_from
from .ray_cluster import LOCAL, connect, first_line
from .serve_options import APP_NAME, PROXY_LOCATIONS, RayServeOptions, check

PROG = "bit-serve --ray"
READY_TIMEOUT_S = 300.0

EPILOG = f"""\
ADDRESS: host:port of the cluster's GCS (`ray start --head` prints it), ray://host:port (Ray Client), auto (the
cluster this machine belongs to) or {LOCAL} (a one-node Ray started here).

The bundle must be at the same path on every node (a shared volume; docs/scaling.md): each replica compares the
bundle's manifest sha256 with the deployed one and verifies the model file it runs, before it takes traffic.

security (docs/scaling.md, "Security"): Ray Serve's HTTP has no authentication, so it listens on 127.0.0.1 unless
--host says otherwise. Anyone who reaches a Ray cluster's GCS, dashboard or raylets can run code on it: start the
cluster with RAY_AUTH_MODE=token (Ray's token authentication) and firewall its ports from everything but its
nodes.
"""


def build_parser() -> argparse.ArgumentParser:
    from ..engine.backends import BACKEND_CHOICES
    from ..engine.classify_cli import add_static_shapes_argument, positive_int

    d = field_defaults(RayServeOptions)
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Serve a bit-trt bundle on a Ray cluster with Ray Serve: replicas across nodes, autoscaled.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bundle", help="bundle directory written by bit-export (the same path on every node)")
    p.add_argument("--ray", required=True, metavar="ADDRESS", help=f"the Ray cluster: host:port, auto or {LOCAL}")
    p.add_argument("--backend", default=d["backend"], choices=BACKEND_CHOICES, help=f"default {d['backend']}")
    p.add_argument("--precision", default=d["precision"], help=f"default {d['precision']}")
    add_static_shapes_argument(p)
    p.add_argument("--expected-sha256", default=d["expected_sha256"], help="the manifest's sha256 (default: read here)")
    p.add_argument("--host", default=d["host"], help=f"Ray Serve's HTTP address (default {d['host']})")
    p.add_argument("--http-port", type=int, default=d["http_port"], help=f"default {d['http_port']}")
    p.add_argument("--proxy-location", default=d["proxy_location"], choices=PROXY_LOCATIONS, help="HTTP proxies")
    p.add_argument("--min-replicas", type=int, default=d["min_replicas"], help=f"default {d['min_replicas']}")
    p.add_argument("--max-replicas", type=int, default=d["max_replicas"], help=f"default {d['max_replicas']}")
    p.add_argument(
        "--target-ongoing-requests",
        type=float,
        default=d["target_ongoing_requests"],
        help=f"requests in flight per replica the autoscaler aims at (default {d['target_ongoing_requests']})",
    )
    p.add_argument("--upscale-delay-s", type=float, default=d["upscale_delay_s"], help="default %(default)s")
    p.add_argument("--downscale-delay-s", type=float, default=d["downscale_delay_s"], help="default %(default)s")
    p.add_argument("--look-back-period-s", type=float, default=d["look_back_period_s"], help="default %(default)s")
    p.add_argument("--max-batch", type=int, default=d["max_batch"], help="largest batch a replica forms (default 8)")
    p.add_argument(
        "--batch-wait-timeout-s",
        type=float,
        default=d["batch_wait_timeout_s"],
        help="how long a lone request waits for company (default %(default)s)",
    )
    p.add_argument("--replica-cpus", type=float, default=d["replica_cpus"], help="CPUs per replica (default 1)")
    p.add_argument(
        "--replica-gpus",
        type=float,
        default=d["replica_gpus"],
        help="GPUs per replica (default: 1 for trt, ort-trt and ort-cuda, else 0; give 1 for auto to use a GPU)",
    )
    p.add_argument("--max-replicas-per-node", type=int, default=d["max_replicas_per_node"], help="default: no cap")
    p.add_argument("--max-image-pixels", type=positive_int, default=d["max_image_pixels"], help="%(default)s")
    p.add_argument("--max-decode-mb", type=positive_int, default=d["max_decode_mb"], help="%(default)s")
    p.add_argument("--max-body-mb", type=positive_int, default=d["max_body_mb"], help="%(default)s")
    p.add_argument("--ready-timeout-s", type=float, default=READY_TIMEOUT_S, help="default %(default)s")
    p.add_argument("--detach", action="store_true", help="leave the application running on the cluster and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def exposure_warning(host: str) -> str | None:
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        if host == "localhost":
            return None
    return (
        f"{PROG}: warning: --host {host}: Ray Serve's HTTP has no authentication; anyone who reaches port it can "
        "classify with your replicas: firewall it or put an authenticating proxy in front"
    )


def wait_running(serve, timeout_s: float) -> None:
    """Until the application is RUNNING (every replica has verified its bundle and started its runner), or a
    one-line BitError with the replicas' own reason once it failed or the time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        app = serve.status().applications.get(APP_NAME)
        status = str(getattr(app, "status", "NOT_STARTED"))
        if status.endswith("RUNNING"):
            return
        if status.endswith(("DEPLOY_FAILED", "UNHEALTHY")):
            messages = [app.message] + [d.message for d in app.deployments.values()]
            raise BitError(f"the application failed to start: {first_line(' '.join(m for m in messages if m))}")
        if time.monotonic() > deadline:
            raise BitError(
                f"the application was not ready within {timeout_s:.0f} s (status {status}); are there nodes with "
                "the CPUs and GPUs each replica asks for?"
            )
        time.sleep(0.5)


def deploy(options: RayServeOptions, timeout_s: float = READY_TIMEOUT_S) -> str:
    """Deploy the application on the connected cluster and wait until it serves; returns its base URL."""
    from ray import serve

    from .serve_app import application

    app = application(options)
    serve.start(http_options={"host": options.host, "port": options.http_port}, proxy_location=options.proxy_location)
    serve._run(app, name=APP_NAME, route_prefix="/", _blocking=False)
    try:
        wait_running(serve, timeout_s)
    except BitError:
        serve.delete(APP_NAME)
        raise
    host = f"[{options.host}]" if ":" in options.host else options.host
    return f"http://{host}:{options.http_port}"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        options = check(options_from(RayServeOptions, args))
        warning = exposure_warning(options.host)
        if warning:
            print(warning, file=sys.stderr)
        ray = connect(args.ray)
        from ray import serve

        from .serve_app import describe_ready

        url = deploy(options, args.ready_timeout_s)
        print(describe_ready(url, options), flush=True)
        if args.detach:
            return 0
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        serve.delete(APP_NAME)
        ray.shutdown()
        return 0
    except BitError as exc:
        if args.debug:
            raise
        print(f"bit-serve: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
