"""What a row's requests cost in CPU: this process's CPU seconds, the whole host's, and a local server's.

Neither trtexec nor perf_analyzer reports CPU use (perf_analyzer#326), yet on a CPU host it is the cost: a backend
that is 10% faster by burning twice the cores is no win for a server that shares them. A `CpuMeter` is started and
stopped around each measured stretch (a window, a LoadGen test, an open-loop run); its readings add up per row:

- process: user + system CPU seconds of this process (every thread: the backend's pools, the client threads);
- system: busy CPU seconds of the whole host (all processes; psutil's cpu_times, everything but idle and iowait);
- server: for a server backend on this host, the CPU seconds of the server's process tree, which the process figure
  cannot see. The tree's root is the process listening on the URL's port, or its topmost ancestor that is neither
  a shell nor an ancestor of bit-bench: the listener is often not where the model runs (bit-serve's Python process
  runs it and starts tritonserver as its child; Ray's HTTP proxy and its replicas are workers under one raylet).

Utilization is CPU seconds over (wall seconds x logical CPUs): 1.0 is every core busy for the whole stretch. A GPU
backend's meter also samples the GPU's utilization over the same stretches (bench/gpu_use.py).
"""

from __future__ import annotations

import os
import time
from urllib.parse import urlparse

from .gpu_use import GpuSampler

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
# Where the climb from the listener stops: a login's or a container's processes are not the server's.
NOT_SERVER = {"bash", "sh", "dash", "zsh", "fish", "ksh", "tcsh", "csh", "sshd", "systemd", "init", "login", "su"}
NOT_SERVER |= {"sudo", "tmux", "tmux: server", "screen", "tini", "dumb-init", "docker-init", "containerd-shim"}


def _psutil():
    try:
        import psutil
    except ImportError:  # the process figure needs only os.times(); host and server figures need psutil
        return None
    return psutil


def _process_s() -> float:
    t = os.times()
    return t.user + t.system


def _system_busy_s() -> float | None:
    psutil = _psutil()
    if psutil is None:
        return None
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _tree_s(pids: tuple[int, ...]) -> float | None:
    """CPU seconds of each pid and its children: the live ones' own, plus the children_* times in which the kernel
    keeps what each one's ended (and waited-for) children used (a worker that came and went within the stretch)."""
    psutil = _psutil()
    if psutil is None or not pids:
        return None
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                t = proc.cpu_times()
                total += t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)
        except psutil.Error:  # ended meanwhile: what it used is no longer readable
            continue
    return total


def server_pids(url: str | None) -> tuple[int, ...]:
    """The process listening on `url`'s port when the host is this one (bit-serve's tritonserver, Ray's proxy); ()
    when it is elsewhere or cannot be seen (another user's process without root)."""
    psutil = _psutil()
    if psutil is None or not url:
        return ()
    parsed = urlparse(url if "://" in url else f"grpc://{url}")
    if parsed.hostname not in LOCAL_HOSTS or not parsed.port:
        return ()
    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.Error, OSError):
        return ()
    listeners = {
        c.pid
        for c in connections
        if c.pid and c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == parsed.port
    }
    return tuple(sorted({_server_root(psutil, pid) for pid in listeners}))


def _server_root(psutil, pid: int) -> int:
    """The listener's topmost ancestor that is still the server's (see the module docstring)."""
    ours = {os.getpid()} | {p.pid for p in psutil.Process().parents()}
    root = psutil.Process(pid)
    try:
        for parent in root.parents():
            if parent.pid in ours or parent.pid == 1 or parent.name() in NOT_SERVER:
                break
            root = parent
    except psutil.Error:  # a parent ended meanwhile: the climb so far stands
        pass
    return root.pid


class CpuMeter:
    """Readings at start() and stop(); `add` keeps the sum over several stretches of one row."""

    def __init__(self, server: tuple[int, ...] = (), gpu: bool = False):
        self.server = server
        self.gpu = GpuSampler() if gpu else None
        self.totals = {"wall_s": 0.0, "process_cpu_s": 0.0, "system_cpu_s": 0.0, "server_cpu_s": 0.0}
        self._start = None

    def _read(self):
        return time.perf_counter(), _process_s(), _system_busy_s(), _tree_s(self.server)

    def start(self) -> None:
        if self.gpu is not None:
            self.gpu.start()
        self._start = self._read()

    def stop(self) -> None:
        end = self._read()
        if self.gpu is not None:
            self.gpu.stop()
        for key, a, b in zip(self.totals, self._start, end):
            if self.totals[key] is not None:
                self.totals[key] = None if a is None or b is None else self.totals[key] + (b - a)
        self._start = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def record(self, requests: int) -> dict:
        """The row's `cpu` field: seconds per request and utilization, for this process, the host and a server."""
        t, cores = self.totals, os.cpu_count() or 1
        wall = t["wall_s"] or float("nan")
        out = {"wall_s": round(t["wall_s"], 4), "logical_cpus": cores, "requests": requests}
        for name in ("process", "system", "server"):
            seconds = t[f"{name}_cpu_s"]
            if name == "server" and not self.server:
                seconds = None
            out[f"{name}_cpu_s"] = None if seconds is None else round(seconds, 4)
            out[f"{name}_cpu_s_per_request"] = None if seconds is None or not requests else round(seconds / requests, 6)
            out[f"{name}_utilization"] = None if seconds is None else round(seconds / (wall * cores), 4)
        out["server_pids"] = list(self.server)
        out["gpu"] = None if self.gpu is None else self.gpu.record()
        return out
