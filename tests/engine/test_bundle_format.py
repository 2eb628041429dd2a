"""Bundle format 2 (artifact records name their `flavour`; the manifest carries the `flavours` table) and the
version-1 bundles written before it: read as they are, or upgraded in place by `bit-engine --upgrade-manifest`."""

import json

import numpy as np
import pytest

from bit_trt.engine import Classifier, load_bundle
from bit_trt.engine.bundle import FORMAT_VERSION
from bit_trt.engine.errors import BitError
from bit_trt.export import engine_cli


def as_format_1(manifest: dict) -> dict:
    """A manifest as bit-trt wrote it before format 2: `variant` only where it differed from the precision."""
    old = {k: v for k, v in manifest.items() if k != "flavours"}
    old["format_version"] = 1
    old["artifacts"] = []
    for art in manifest["artifacts"]:
        art = dict(art)
        flavour = art.pop("flavour")
        if flavour != art["precision"]:
            art["variant"] = flavour
        old["artifacts"].append(art)
    return old


@pytest.fixture
def format_1_bundle(tiny_full_bundle, copy_bundle):
    bundle = copy_bundle(tiny_full_bundle)
    path = bundle / "manifest.json"
    path.write_text(json.dumps(as_format_1(json.loads(path.read_text())), indent=1))
    return bundle


def test_format_1_is_read_as_format_2(tiny_full_bundle, format_1_bundle):
    new, old = load_bundle(str(tiny_full_bundle)), load_bundle(str(format_1_bundle))
    assert old.manifest["format_version"] == FORMAT_VERSION == 2
    assert old.manifest["flavours"] == new.manifest["flavours"]
    for kind in ("onnx", "engine"):
        assert {f: a["file"] for f, a in old.artifacts(kind).items()} == {
            f: a["file"] for f, a in new.artifacts(kind).items()
        }
    assert set(old.artifacts("onnx")) == {"fp32", "fp16", "int8-trt", "int8-ort"}
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), np.uint8)
    with (
        Classifier(str(tiny_full_bundle), "ort-cpu", "int8") as a,
        Classifier(str(format_1_bundle), "ort-cpu", "int8") as b,
    ):
        np.testing.assert_array_equal(a.predict(image).logits, b.predict(image).logits)


def test_upgrade_manifest_rewrites_format_1_in_place(tiny_full_bundle, format_1_bundle, capsys):
    assert engine_cli.main([str(format_1_bundle), "--upgrade-manifest"]) == 0
    assert "upgraded from bundle format version 1 to 2" in capsys.readouterr().out
    upgraded = json.loads((format_1_bundle / "manifest.json").read_text())
    original = json.loads((tiny_full_bundle / "manifest.json").read_text())
    assert upgraded == original
    assert sorted(p.name for p in format_1_bundle.iterdir()) == sorted(p.name for p in tiny_full_bundle.iterdir())
    assert engine_cli.main([str(format_1_bundle), "--upgrade-manifest"]) == 0
    assert "already bundle format version 2" in capsys.readouterr().out


def test_upgrade_of_no_bundle_is_one_line(tmp_path, capsys):
    assert engine_cli.main([str(tmp_path / "nothing"), "--upgrade-manifest"]) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"bit-engine: error: bundle {str(tmp_path / 'nothing')!r} does not exist or is not a directory"
    )


def test_a_record_without_its_flavour_is_one_line(tiny_bundle, copy_bundle):
    bundle = copy_bundle(tiny_bundle)
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["artifacts"][1]["flavour"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(BitError, match=r"manifest.json: artifacts\[1\] has no 'flavour'; re-export the bundle"):
        load_bundle(str(bundle))


def test_unknown_format_is_one_line(format_1_bundle):
    path = format_1_bundle / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "format_version": 3}))
    with pytest.raises(BitError, match=r"format version 3 is not supported \(this bit-trt reads versions 1, 2\)"):
        load_bundle(str(format_1_bundle))
