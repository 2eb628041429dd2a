"""Calibration sets: what is read, what is skipped, what is refused."""

import cv2
import numpy as np
import pytest

from bit_trt.engine.errors import BitError
from bit_trt.engine.preprocess import InputSpec
from bit_trt.export import calibration

SPEC = InputSpec(resolution=32)


def _images(d, n, start=0):
    d.mkdir(exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        cv2.imwrite(str(d / f"img{i:03d}.png"), rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8))
    return d


def test_reads_any_size_gray_and_rgba(tmp_path):
    d = _images(tmp_path / "c", 8)
    cv2.imwrite(str(d / "gray.png"), np.full((40, 40), 128, np.uint8))
    cv2.imwrite(str(d / "rgba.png"), np.zeros((12, 12, 4), np.uint8))
    batch, record = calibration.load(str(d), SPEC, count=10)
    assert batch.shape == (10, 32, 32, 3) and batch.dtype == np.uint8
    assert record["count"] == 10 and record["skipped_corrupt"] == 0 and len(record["sha256"]) == 64


def test_count_and_seed_pick_the_images(tmp_path):
    d = _images(tmp_path / "c", 20)
    a, ra = calibration.load(str(d), SPEC, count=8, seed=1)
    b, rb = calibration.load(str(d), SPEC, count=8, seed=1)
    c, rc = calibration.load(str(d), SPEC, count=8, seed=2)
    assert ra["sha256"] == rb["sha256"] != rc["sha256"]


def test_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BitError, match="holds no images"):
        calibration.load(str(tmp_path / "empty"), SPEC, count=8)


def test_missing_directory(tmp_path):
    with pytest.raises(BitError, match="does not exist"):
        calibration.load(str(tmp_path / "nope"), SPEC, count=8)


def test_too_few_images(tmp_path):
    d = _images(tmp_path / "c", 3)
    with pytest.raises(BitError, match="has 3 usable images; at least 8"):
        calibration.load(str(d), SPEC, count=64)


def test_a_few_corrupt_files_are_skipped_and_counted(tmp_path):
    d = _images(tmp_path / "c", 30)
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    batch, record = calibration.load(str(d), SPEC, count=31)
    assert len(batch) == 30 and record["skipped_corrupt"] == 1 and record["skipped_files"] == ["broken.jpg"]


def test_mostly_corrupt_set_is_refused(tmp_path):
    d = _images(tmp_path / "c", 10)
    for i in range(5):
        (d / f"bad{i}.png").write_bytes(b"garbage")
    with pytest.raises(BitError, match="5 of 15 files are not decodable images"):
        calibration.load(str(d), SPEC, count=64)


def test_synthetic_is_flagged():
    batch, record = calibration.synthetic(SPEC, 4)
    assert batch.shape == (4, 32, 32, 3) and record["kind"] == "synthetic" and "SYNTHETIC" in record["warning"]
