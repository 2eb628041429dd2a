"""bit-serve's options: its flags read their defaults from ServeOptions, and what is settled against the classifier
(the model name, the max batch within a TensorRT plan's profile) is checked as bit-triton checks it. No server
starts here, and no PyTriton is needed."""

from types import SimpleNamespace

import pytest

from bit_trt.engine.errors import BitError
from bit_trt.serve.batching import DEFAULT_MAX_BATCH
from bit_trt.serve.serve_cli import SHARED_SHM_ENV, build_parser, options_from_args
from bit_trt.serve.serve_options import ServeOptions, settled


def test_cli_defaults_are_the_options_defaults(monkeypatch):
    """bit-serve with only BUNDLE asks for exactly ServeOptions(bundle=...): no default is written twice."""
    monkeypatch.delenv(SHARED_SHM_ENV, raising=False)
    assert options_from_args(build_parser().parse_args(["b"])) == ServeOptions(bundle="b")


def test_cli_flags_reach_the_options(monkeypatch):
    monkeypatch.delenv(SHARED_SHM_ENV, raising=False)
    args = ["b", "--backend", "ort-cpu", "--precision", "fp16", "--threads", "3", "--host", "0.0.0.0"]
    args += ["--http-port", "1", "--no-http", "--grpc-port", "2", "--metrics-port", "3", "--name", "m"]
    args += ["--max-batch", "4", "--max-queue-delay-us", "5", "--image-workers", "6", "--max-image-pixels", "7"]
    args += ["--max-decode-mb", "8", "--allow-shared-dev-shm", "--workspace", "/w", "--log-verbose", "9"]
    assert options_from_args(build_parser().parse_args(args)) == ServeOptions(
        bundle="b",
        backend="ort-cpu",
        precision="fp16",
        threads=3,
        host="0.0.0.0",
        http_port=1,
        http=False,
        grpc_port=2,
        metrics_port=3,
        name="m",
        max_batch=4,
        max_queue_delay_us=5,
        image_workers=6,
        max_image_pixels=7,
        max_decode_mb=8,
        allow_shared_dev_shm=True,
        workspace="/w",
        log_verbose=9,
    )
    monkeypatch.setenv(SHARED_SHM_ENV, "1")  # the CPU image's way to say --allow-shared-dev-shm
    assert options_from_args(build_parser().parse_args(["b"])).allow_shared_dev_shm


def test_help_shows_the_options_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps at the terminal's width, hyphens included
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    d = ServeOptions(bundle="b")
    for shown in (
        f"(default {d.http_port})",
        f"(default {d.grpc_port})",
        f"(default {d.metrics_port})",
        f"(default {DEFAULT_MAX_BATCH}; trt: at most the plan's max)",
        f"waits for more requests (default {d.max_queue_delay_us})",
        f"decoding in parallel (default {d.image_workers})",
    ):
        assert shown in text


def _classifier(max_batch):
    """What settled reads of a Classifier: its bundle's manifest and the most one native call takes."""
    return SimpleNamespace(bundle=SimpleNamespace(manifest={"model": {"variant": "r50x1"}}), max_batch=max_batch)


def test_the_name_and_max_batch_are_settled_against_the_classifier():
    default = settled(ServeOptions(bundle="b"), _classifier(None))
    assert (default.name, default.max_batch) == ("bit_r50x1", DEFAULT_MAX_BATCH)
    assert settled(ServeOptions(bundle="b"), _classifier(4)).max_batch == 4  # a profile below the default
    assert settled(ServeOptions(bundle="b"), _classifier(32)).max_batch == DEFAULT_MAX_BATCH
    asked = settled(ServeOptions(bundle="b", name="mine", max_batch=16), _classifier(16))
    assert (asked.name, asked.max_batch) == ("mine", 16)
    assert settled(ServeOptions(bundle="b", max_batch=16), _classifier(None)).max_batch == 16  # no profile, no limit


@pytest.mark.parametrize(
    "max_batch, profile_max, message",
    [
        (
            16,
            8,
            "--max-batch 16 is above the plan's profile max 8; rebuild with bit-engine --max-batch 16, "
            "or ask for at most 8",
        ),
        (0, None, "--max-batch must be at least 1, got 0"),
        (-1, 8, "--max-batch must be at least 1, got -1"),
    ],
)
def test_a_max_batch_the_classifier_cannot_take_is_one_line(max_batch, profile_max, message):
    with pytest.raises(BitError) as exc:
        settled(ServeOptions(bundle="b", max_batch=max_batch), _classifier(profile_max))
    assert str(exc.value) == message


def test_a_bad_model_name_is_refused():
    with pytest.raises(BitError, match="model name 'a b': use letters"):
        settled(ServeOptions(bundle="b", name="a b"), _classifier(None))
