"""Memory of a bit-serve under image bombs, with its default limits: the peak RSS of its process tree (bit-serve,
Triton and its stubs) over its RSS before each attack, from VmHWM after clear_refs.

    python -m tools.serve_attack_bench BUNDLE --out bench/results/serve_attack_tiny.json

BUNDLE is served on ort-cpu from bit-serve's environment (--serve-python, default .venv-serve/bin/python). The
attacks are all-black 1-bit PNGs (a few KB that decode to 3 bytes a pixel), over HTTP to the image model.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np

ATTACKS = {
    "one 12000^2 (144 MP, under the default limit)": [(12000, 1)],
    "four 12000^2 in one request": [(12000, 4)],
    "eight 16000^2 in one request (256 MP each)": [(16000, 8)],
    "one 17000^2 (289 MP, over the default limit)": [(17000, 1)],
    "eight concurrent requests of one 12000^2": [(12000, 1)] * 8,
}


def zero_png(side: int) -> bytes:
    """A complete side x side all-black 1-bit PNG: a few KB that decode to side**2 * 3 bytes (tests use it too)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress((b"\0" * (1 + (side + 7) // 8)) * side, 9)
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(root: int) -> list[int]:
    """root and every process under it, root first (tests use it too)."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [root]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def _bytes(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)[1]) * 1024


def tree_peak_excess(root: int, send):
    """(the peak RSS in bytes of root's process tree during send() over its RSS before, send's result): each
    process's peak is reset first (clear_refs 5), then the peaks are summed (tests use it too)."""
    pids = process_tree(root)
    for pid in pids:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    before = sum(_bytes(pid, "VmRSS") for pid in pids)
    result = send()
    return sum(_bytes(pid, "VmHWM") for pid in pids) - before, result


def _send(url: str, model: str, images: list[bytes]) -> str:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url, network_timeout=600)
    try:
        tensor = httpclient.InferInput("image", [len(images), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[image] for image in images], dtype=np.object_))
        client.infer(model, [tensor])
        return "answered"
    except Exception as exc:  # noqa: BLE001 - the answer is what we record
        return str(exc).splitlines()[0][:160]
    finally:
        client.close()


def measure(bundle: str, serve_python: str) -> dict:
    ports = [_free_port() for _ in range(3)]
    workspace = tempfile.mkdtemp(prefix="attack-")
    command = [serve_python, "-m", "bit_trt.serve.serve_cli", bundle, "--backend", "ort-cpu", "--workspace", workspace]
    command += ["--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])]
    log = open(os.path.join(workspace, "serve.log"), "w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url, rows = f"127.0.0.1:{ports[0]}", {}
    try:
        deadline = time.monotonic() + 300
        while "bit-serve: ready:" not in open(log.name).read():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bit-serve did not start:\n{open(log.name).read()[-3000:]}")
            time.sleep(0.5)
        model = "bit_" + json.load(open(os.path.join(bundle, "manifest.json")))["model"]["variant"] + "_image"
        for name, requests in ATTACKS.items():
            start = time.perf_counter()

            def attack(requests=requests):
                with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
                    return list(pool.map(lambda r: _send(url, model, [zero_png(r[0])] * r[1]), requests))

            excess, answers = tree_peak_excess(proc.pid, attack)
            rows[name] = {
                "encoded_bytes": sum(len(zero_png(side)) * n for side, n in requests),
                "peak_rss_excess_mib": round(excess / 2**20, 1),
                "seconds": round(time.perf_counter() - start, 2),
                "answers": sorted(set(answers)),
            }
            print(name, rows[name], flush=True)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)
    return rows


def main(argv=None) -> int:
    from bit_trt.engine.atomic_write import write_json_atomic
    from bit_trt.engine.preprocess import DEFAULT_DECODE_BUDGET, DEFAULT_MAX_IMAGE_PIXELS

    p = argparse.ArgumentParser(prog="python -m tools.serve_attack_bench", description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--serve-python", default=os.path.join(".venv-serve", "bin", "python"))
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    result = {
        "command": "python -m tools.serve_attack_bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d"),
        "host": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "os": platform.platform()},
        "limits": {"max_image_pixels": DEFAULT_MAX_IMAGE_PIXELS, "max_decode_mb": DEFAULT_DECODE_BUDGET >> 20},
        "attacks": measure(os.path.abspath(args.bundle), args.serve_python),
    }
    write_json_atomic(args.out, result, "attack measurements", indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
