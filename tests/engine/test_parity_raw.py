"""The raw parity file (engine/parity_raw.py): the npz's arrays, located by the manifest alone."""

import numpy as np
import pytest

from bit_trt.engine.bundle import load_bundle
from bit_trt.engine.errors import BitError
from bit_trt.engine.parity_raw import RAW_FILE, read_parity_raw
from bit_trt.engine.parity_set import load_parity_set


def test_the_raw_file_holds_the_npz_arrays_where_the_manifest_says(tiny_bundle):
    bundle = load_bundle(str(tiny_bundle))
    images, _, tf_logits = load_parity_set(bundle)
    record = bundle.manifest["reference"]["raw"]
    assert record["file"] == RAW_FILE
    assert record["images"] == {"offset": 0, "dtype": "uint8", "shape": list(images.shape)}
    assert record["logits"] == {"offset": images.nbytes, "dtype": "float32-le", "shape": list(tf_logits.shape)}
    assert record["bytes"] == images.nbytes + tf_logits.astype(np.float32).nbytes
    raw_images, raw_logits = read_parity_raw(bundle)
    np.testing.assert_array_equal(raw_images, images)
    np.testing.assert_array_equal(raw_logits, tf_logits)


def test_a_changed_raw_file_is_refused(tiny_bundle, copy_bundle):
    bundle_dir = copy_bundle(tiny_bundle)
    with open(bundle_dir / RAW_FILE, "r+b") as f:
        f.seek(10)
        f.write(b"\x01\x02")
    with pytest.raises(BitError, match="does not match its manifest checksum"):
        read_parity_raw(load_bundle(str(bundle_dir)))
