"""Memory: this process's resident set now and at peak, what the host still has available, and handing freed heap
back to the OS. The exporter records its steps' costs in the manifest; bit-bench sizes how many engines it holds at
once by them; the tools record them in their results."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import resource
import threading


def peak_rss_bytes() -> int:
    """This process's own peak resident set, in bytes.

    Linux's VmHWM first: ru_maxrss of a process started by fork+exec is at least its parent's RSS at the fork
    (the kernel carries the old address space's high-water mark over exec), so a small child of a large
    parent would report the parent's size. ru_maxrss (KiB on Linux) where /proc is absent.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # "VmHWM:  123456 kB"
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        return 0


def available_bytes() -> int | None:
    """What the host can still give without swapping (Linux's MemAvailable); None where /proc/meminfo is absent."""
    return _meminfo("MemAvailable")


def total_bytes() -> int | None:
    """The host's memory (Linux's MemTotal); None where /proc/meminfo is absent."""
    return _meminfo("MemTotal")


def _meminfo(field: str) -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # "MemAvailable:  123456 kB"
    except (OSError, ValueError, IndexError):
        pass
    return None


def gigabytes(n_bytes: int) -> float:
    return round(n_bytes / 1e9, 2)


def glibc_trim_available() -> bool:
    return _malloc_trim() is not None


def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


def release_memory() -> None:
    """Collect, then hand freed heap back to the OS: TF and protobuf leave GBs in glibc's free lists,
    which would otherwise stack under the next step's peak."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@contextlib.contextmanager
def trimmed_meanwhile(interval_s: float = 0.1):
    """Hand freed heap back to the OS every `interval_s` seconds while the block runs, from a thread of its own.
    For a native library that allocates and frees GBs in one call (TensorRT's builder): glibc returns freed memory
    by itself only from the top of a heap, and after ONNX Runtime ran in the same process the builder's freed
    blocks sit below blocks still in use. R50x3's plan build after an ORT session peaked at 3.50 GB without, 2.82 GB
    with a trim every 0.1 s (bench/results/export_r50x3_480.json, session8). malloc_trim locks each arena while it
    walks it, a few ms a call."""
    trim = _malloc_trim()
    if trim is None:
        yield
        return
    stop = threading.Event()

    def trimmer():
        while not stop.wait(interval_s):
            trim(0)

    thread = threading.Thread(target=trimmer, name="bit-trt-trim", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
