"""bench/cpu_use.py: CPU seconds of this process, the host, and a server's process tree found by its port."""

import subprocess
import sys
import time

import pytest

from bit_trt.bench.cpu_use import CpuMeter, server_pids

psutil = pytest.importorskip("psutil")


def _busy(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_the_process_and_the_host_are_counted():
    meter = CpuMeter()
    with meter:
        _busy(0.2)
    record = meter.record(4)
    # the busy loop's CPU time is this process's: a lower bound that no load on the host can break
    assert record["process_cpu_s"] >= 0.19 and record["process_cpu_s_per_request"] >= 0.19 / 4
    assert record["system_cpu_s"] is not None and record["server_cpu_s"] is None and record["server_pids"] == []


def test_a_local_server_s_process_tree_is_found_by_its_port_and_counted():
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket, time\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); print(s.getsockname()[1], flush=True)\n"
            "end = time.process_time() + 0.3\n"
            "input()\n"
            "while time.process_time() < end: pass\n"
            "print('done', flush=True)\n"
            "input()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(server.stdout.readline())
        pids = server_pids(f"grpc://127.0.0.1:{port}")
        assert pids == (server.pid,)
        assert server_pids(f"grpc://example.invalid:{port}") == ()  # elsewhere: nothing to count here
        meter = CpuMeter(pids)
        with meter:
            server.stdin.write("go\n")
            server.stdin.flush()
            assert server.stdout.readline().strip() == "done"
        assert meter.record(1)["server_cpu_s"] >= 0.29  # its busy loop, seen from outside
    finally:
        server.kill()
        server.wait()


def test_the_tree_is_rooted_where_the_server_runs_not_at_its_listener():
    """A parent that works and a child that listens (bit-serve's Python and its tritonserver): both are counted."""
    child = (
        "import socket, sys; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
        "print(s.getsockname()[1], flush=True); sys.stdin.read()"
    )
    parent = (
        "import subprocess, sys, time\n"
        f"c = subprocess.Popen([sys.executable, '-c', {child!r}], stdin=subprocess.PIPE, text=True)\n"
        "input()\n"
        "end = time.process_time() + 0.3\n"
        "while time.process_time() < end: pass\n"
        "print('done', flush=True)\n"
        "input()\n"
        "c.stdin.close(); c.wait()\n"
    )
    assert _server_cpu_of_one_request(parent, "http://localhost:{port}", expect_pid=True) >= 0.29


def test_a_worker_that_came_and_went_within_the_stretch_is_counted():
    """A server that runs a request in a short-lived child process: the child is never seen alive by the meter,
    yet its CPU is the server's (the kernel adds it to its parent's children_* times once it is waited for)."""
    busy = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    parent = (
        "import socket, subprocess, sys\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); print(s.getsockname()[1], flush=True)\n"
        "input()\n"
        f"subprocess.run([sys.executable, '-c', {busy!r}], check=True)\n"
        "print('done', flush=True)\n"
        "input()\n"
    )
    assert _server_cpu_of_one_request(parent, "grpc://127.0.0.1:{port}") >= 0.29


def _server_cpu_of_one_request(parent: str, url: str, expect_pid: bool = False) -> float:
    """Run `parent` (it prints its port, waits for a line, works, prints 'done', waits), find it by `url` (with
    {port}) as bit-bench finds a server, and return the server CPU seconds the meter counted over the work."""
    server = subprocess.Popen([sys.executable, "-c", parent], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())  # a child's line too, on the stdout it shares with its parent
        pids = server_pids(url.format(port=port))
        if expect_pid:
            assert pids == (server.pid,)
        meter = CpuMeter(pids)
        with meter:
            server.stdin.write("go\n")
            server.stdin.flush()
            assert server.stdout.readline().strip() == "done"
        return meter.record(1)["server_cpu_s"]
    finally:
        server.kill()
        server.wait()
