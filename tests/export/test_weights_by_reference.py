"""A graph read without its weights (export/weights_by_reference.py): each large initializer refers to its own bytes
in the file, through a link in a private folder, and ONNX Runtime answers as it does on the file itself."""

import errno
import os

import numpy as np
import onnx
import pytest

from bit_trt.engine.errors import BitError
from bit_trt.export import weights_by_reference
from bit_trt.export.ort_logits import ort_logits


def _arrays(model, folder=""):
    return {i.name: weights_by_reference.to_array(i, folder) for i in model.graph.initializer}


def _written(model, folder, name="graph.onnx"):
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


@pytest.mark.parametrize("writer", ["bundle", "onnx.save"])
def test_the_graph_refers_to_its_own_bytes_and_answers_the_same(tiny_bundle, tmp_path, writer):
    """The bundle writes one message per initializer (graph_cleanup.save_streamed); onnx.save writes one graph."""
    source = tiny_bundle / "model.fp32.onnx"
    if writer == "onnx.save":
        onnx.save(onnx.load(str(source)), str(tmp_path / "model.fp32.onnx"))
        source = tmp_path / "model.fp32.onnx"
    whole = onnx.load(str(source))
    images = np.load(tiny_bundle / "parity_inputs.npz")["images"][:2]
    with weights_by_reference.graph_by_reference(str(source)) as (model, folder):
        external = [i for i in model.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]
        inline = [i for i in model.graph.initializer if i.data_location != onnx.TensorProto.EXTERNAL]
        assert len(external) > 10 and all(len(i.raw_data) < weights_by_reference.REFER_FROM_BYTES for i in inline)
        assert model.graph.node == whole.graph.node and [i.name for i in model.graph.initializer] == [
            i.name for i in whole.graph.initializer
        ]
        got, want = _arrays(model, folder), _arrays(whole)
        assert all(np.array_equal(got[k], want[k]) and got[k].dtype == want[k].dtype for k in want)
        path = _written(model, folder)
        assert os.path.getsize(path) < os.path.getsize(source) / 20
        assert np.array_equal(ort_logits(path, images), ort_logits(str(source), images))
    assert not os.path.exists(folder) and os.stat(source).st_nlink == 1


def test_external_data_the_file_already_had_is_linked_beside_it(tiny_bundle, tmp_path):
    """Above 2 GB the bundle keeps its weights in a .data file beside the graph (bundle_writer)."""
    whole = onnx.load(str(tiny_bundle / "model.fp32.onnx"))
    onnx.save_model(
        whole, str(tmp_path / "model.fp32.onnx"), save_as_external_data=True, location="model.fp32.onnx.data"
    )
    images = np.load(tiny_bundle / "parity_inputs.npz")["images"][:1]
    with weights_by_reference.graph_by_reference(str(tmp_path / "model.fp32.onnx")) as (model, folder):
        assert {e.value for i in model.graph.initializer for e in i.external_data if e.key == "location"} == {
            "model.fp32.onnx.data"
        }
        path = _written(model, folder)
        assert np.array_equal(ort_logits(path, images), ort_logits(str(tiny_bundle / "model.fp32.onnx"), images))
    assert sorted(os.listdir(tmp_path)) == ["model.fp32.onnx", "model.fp32.onnx.data"]


def test_external_data_outside_the_folder_is_refused(tiny_bundle, tmp_path):
    model = onnx.load(str(tiny_bundle / "model.fp32.onnx"))
    (tmp_path / "inner").mkdir()
    onnx.save_model(model, str(tmp_path / "inner" / "m.onnx"), save_as_external_data=True, location="m.data")
    edited = onnx.load(str(tmp_path / "inner" / "m.onnx"), load_external_data=False)
    for init in edited.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = "../m.data"
    onnx.save(edited, str(tmp_path / "inner" / "m.onnx"))
    with pytest.raises(BitError, match=r"^m.onnx keeps external data outside its folder \('\.\./m\.data'\)$"):
        with weights_by_reference.graph_by_reference(str(tmp_path / "inner" / "m.onnx")):
            pass
    assert sorted(os.listdir(tmp_path / "inner")) == ["m.data", "m.onnx"]


def test_without_hard_links_the_file_is_copied(tiny_bundle, tmp_path, monkeypatch):
    """A file system that cannot link (os.link's EPERM/EXDEV): the folder holds a copy; the answers are the same."""

    def refuse(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)
    source = tiny_bundle / "model.fp32.onnx"
    with weights_by_reference.graph_by_reference(str(source)) as (model, folder):
        copy = os.path.join(folder, "model.fp32.onnx.weights")
        assert not os.path.samefile(copy, source) and os.path.getsize(copy) == os.path.getsize(source)
        got, want = _arrays(model, folder), _arrays(onnx.load(str(source)))
        assert all(np.array_equal(got[k], want[k]) for k in want)
    assert not os.path.exists(folder)


@pytest.mark.parametrize(
    "content, why",
    [
        (b"", "empty file"),
        (b"\x00not an onnx model" * 8, "field number 0"),
        (b"\x3a\xff\xff\x03abc", "a field runs past its message"),  # a graph claiming 65535 bytes
        (b"\x3a\x04\x2a\x02\x4a\x80", "a varint runs past its message"),  # raw_data length cut short
    ],
)
def test_a_file_that_is_not_an_onnx_model_is_one_line(tmp_path, content, why):
    (tmp_path / "model.fp16.onnx").write_bytes(content)
    with pytest.raises(BitError, match=rf"^model.fp16.onnx is not a readable ONNX model \({why}\)$"):
        weights_by_reference.read_by_reference(str(tmp_path / "model.fp16.onnx"), "w")


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(BitError, match=r"^cannot read model.fp32.onnx: No such file or directory$"):
        weights_by_reference.read_by_reference(str(tmp_path / "model.fp32.onnx"), "w")
