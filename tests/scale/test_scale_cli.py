"""bit-serve --ray and bit-classify --ray before any cluster: every bad input is one line, and nothing is left
behind. (The cluster itself: tests/scale/test_ray_cluster.py.)"""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from tests.conftest import run_cli

UNREACHABLE = "127.0.0.1:9"  # discard: nothing listens there on a test host


def _one_error_line(done, prog: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), done.stderr
    return lines[0]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--min-replicas", "3", "--max-replicas", "2"], "--max-replicas must be at least 1 and at least --min"),
        (["--target-ongoing-requests", "0"], "--target-ongoing-requests must be a number above 0"),
        (["--upscale-delay-s", "-1"], "--upscale-delay-s must be a number of at least 0"),
        (["--max-batch", "0"], "--max-batch must be an integer of at least 1"),
        (["--http-port", "70000"], "--http-port 70000: not a port number"),
        (["--expected-sha256", "abc"], "--expected-sha256 'abc': not a sha256"),
    ],
)
def test_bad_serving_numbers_are_one_line_before_anything_starts(tiny_bundle, flags, message):
    done = run_cli("bit_trt.serve.serve_cli", tiny_bundle, "--ray", UNREACHABLE, *flags)
    assert message in _one_error_line(done, "bit-serve")


def test_an_unreachable_ray_address_is_one_line(tiny_bundle):
    done = run_cli("bit_trt.serve.serve_cli", tiny_bundle, "--ray", UNREACHABLE)
    assert f"--ray {UNREACHABLE}: no Ray cluster answers there" in _one_error_line(done, "bit-serve")
    done = run_cli("bit_trt.serve.serve_cli", tiny_bundle, "--ray", "nonsense")
    assert "expected host:port" in _one_error_line(done, "bit-serve")


def _images(folder, count=3):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((20, 20, 3), i * 40, np.uint8))
    return folder


def test_bulk_refuses_an_unreachable_cluster_and_leaves_nothing(tiny_bundle, tmp_path):
    images = _images(tmp_path / "in")
    out = tmp_path / "results.parquet"
    done = run_cli("bit_trt.engine.classify_cli", tiny_bundle, images, "--ray", UNREACHABLE, "--out", out)
    assert "no Ray cluster answers there" in _one_error_line(done, "bit-classify")
    assert not out.exists()


def test_bulk_refuses_an_out_of_another_bundle(tiny_bundle, copy_bundle, tmp_path):
    from bit_trt.scale import bulk

    images = _images(tmp_path / "in")
    paths = bulk.collect_inputs([str(images)])
    out = tmp_path / "results.parquet"
    bulk.prepare_out(str(out), bulk.plan_job(str(tiny_bundle), paths, "auto", "fp32", 5, False, 64))
    other = copy_bundle(tiny_bundle)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["created"] = "2000-01-01T00:00:00+00:00"
    (other / "manifest.json").write_text(json.dumps(manifest))
    done = run_cli("bit_trt.engine.classify_cli", other, images, "--ray", UNREACHABLE, "--out", out)
    line = _one_error_line(done, "bit-classify")
    assert "holds the results of another bundle (differs in bundle_sha256)" in line
    # the same bundle with another top-k is another job
    done = run_cli("bit_trt.engine.classify_cli", tiny_bundle, images, "--ray", UNREACHABLE, "--out", out, "--top", "3")
    assert "holds the results of another job (differs in top)" in _one_error_line(done, "bit-classify")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x").write_text("x")
    done = run_cli("bit_trt.engine.classify_cli", tiny_bundle, images, "--ray", UNREACHABLE, "--out", tmp_path / "junk")
    assert "non-empty directory that holds no bulk job" in _one_error_line(done, "bit-classify")


def test_inputs_are_files_directories_globs_and_lists(tmp_path):
    from bit_trt.engine.errors import BitError
    from bit_trt.scale.bulk import collect_inputs

    a = _images(tmp_path / "a", 2)
    b = _images(tmp_path / "b" / "deep", 2)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    listed = tmp_path / "list.txt"
    listed.write_text(f"{b / '0.png'}\n\n# a comment\n{b / '1.png'}\n")
    found = collect_inputs([str(a), str(tmp_path / "b" / "**" / "*.png"), f"@{listed}", str(a / "0.png")])
    assert found == sorted({str(a / "0.png"), str(a / "1.png"), str(b / "0.png"), str(b / "1.png")})
    for bad, message in [
        (str(tmp_path / "missing.png"), "no such file, directory or pattern"),
        (str(tmp_path / "*.jpg"), "the pattern matches no file"),
        (f"@{tmp_path / 'nolist'}", "cannot read the file list"),
    ]:
        with pytest.raises(BitError, match=message):
            collect_inputs([bad])
    listed.write_text(f"{tmp_path / 'gone.png'}\n")
    with pytest.raises(BitError, match="1 listed file"):
        collect_inputs([f"@{listed}"])


def test_application_arguments_are_checked_like_the_flags(tiny_bundle):
    from bit_trt.engine.errors import BitError
    from bit_trt.scale.serve_options import options_from_mapping

    options = options_from_mapping(
        {"bundle": str(tiny_bundle), "max_replicas": "3", "replica_cpus": "2", "max_replicas_per_node": "1"}
    )
    assert (options.max_replicas, options.replica_cpus, options.max_replicas_per_node, options.threads) == (3, 2, 1, 2)
    # GPU replicas ask Ray for a GPU unless told otherwise; CPU replicas for none, and for their threads in CPUs
    assert options_from_mapping({"bundle": "x", "backend": "trt"}).gpus == 1.0
    assert options_from_mapping({"bundle": "x", "backend": "ort-cpu"}).gpus == 0.0
    assert options_from_mapping({"bundle": "x", "backend": "auto", "replica_gpus": "1"}).gpus == 1.0
    with pytest.raises(BitError, match="--replica-gpus must be a number of at least 0"):
        options_from_mapping({"bundle": "x", "replica_gpus": "-1"})
    with pytest.raises(BitError, match="unknown application argument"):
        options_from_mapping({"bundle": "x", "replicas": "2"})
    with pytest.raises(BitError, match="--max-replicas 'two': not a int"):
        options_from_mapping({"bundle": "x", "max_replicas": "two"})
    with pytest.raises(BitError, match="needs `bundle`"):
        options_from_mapping({})


def test_a_replica_refuses_a_bundle_that_is_missing_or_differs(tiny_bundle, copy_bundle):
    from bit_trt.engine.bundle import manifest_sha256
    from bit_trt.engine.errors import BitError
    from bit_trt.scale.verified_classifier import open_verified

    args = ("ort-cpu", "fp32", 1, 1 << 20, 64)
    clf = open_verified(str(tiny_bundle), manifest_sha256(str(tiny_bundle)), *args)
    clf.close()
    with pytest.raises(BitError, match="is missing on this node"):
        open_verified(str(tiny_bundle) + "-nowhere", "0" * 64, *args)
    with pytest.raises(BitError, match="differs from the deployed one"):
        open_verified(str(tiny_bundle), "0" * 64, *args)
    # same manifest, a model file changed on this node: the manifest's sha256 of the file catches it
    other = copy_bundle(tiny_bundle)
    with open(os.path.join(other, "model.fp32.onnx"), "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(BitError, match="does not match its manifest checksum"):
        open_verified(str(other), manifest_sha256(str(tiny_bundle)), *args)
