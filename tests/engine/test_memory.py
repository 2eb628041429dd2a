"""engine/memory.py: handing freed heap back to the OS while a long native call runs (trimmed_meanwhile)."""

import time

import pytest

from bit_trt.engine import memory


def _holes(count=400, size=100_000):
    """`count` freed blocks of `size` bytes, each below a small block still in use: glibc keeps them resident,
    because it returns memory by itself only from the top of the heap."""
    big, pins = [], []
    for _ in range(count):
        big.append(bytes(size))  # zero-filled: its pages are resident
        pins.append(bytes(2000))  # above the pymalloc limit: glibc's heap, between the big ones
    return big, pins


def _fell_by(start: int, nbytes: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if start - memory.current_rss_bytes() >= nbytes:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.skipif(not memory.glibc_trim_available(), reason="malloc_trim is glibc's")
def test_freed_blocks_go_back_while_the_block_runs():
    big, pins = _holes()
    with memory.trimmed_meanwhile(interval_s=0.05):
        start = memory.current_rss_bytes()
        big.clear()  # 40 MB freed, under pins still held: no trim, no return
        assert _fell_by(start, 20_000_000, within_s=3.0)
    assert len(pins) == 400


@pytest.mark.skipif(not memory.glibc_trim_available(), reason="malloc_trim is glibc's")
def test_without_a_trim_the_holes_stay_resident():
    """The control: the same holes, no trimmer; what the test above sees is the trimmer's doing."""
    big, pins = _holes()
    start = memory.current_rss_bytes()
    big.clear()
    assert not _fell_by(start, 20_000_000, within_s=0.5)
    memory.release_memory()
    assert start - memory.current_rss_bytes() >= 20_000_000
    assert len(pins) == 400


def test_the_trimmer_stops_with_the_block():
    import threading

    with memory.trimmed_meanwhile(interval_s=0.01):
        assert any(t.name == "bit-trt-trim" for t in threading.enumerate()) == memory.glibc_trim_available()
    assert not any(t.name == "bit-trt-trim" for t in threading.enumerate())
