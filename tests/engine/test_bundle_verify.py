"""A bundle hashes each unchanged file once, and still notices a file changed after that."""

import os

import pytest

from bit_trt.engine.bundle import load_bundle
from bit_trt.engine.errors import BitError


def test_a_file_changed_after_its_first_check_is_refused(tiny_bundle, copy_bundle):
    bundle = load_bundle(str(copy_bundle(tiny_bundle)))
    art = bundle.artifacts()["fp32"]
    bundle.verify_file(art)
    bundle.verify_file(art)  # unchanged: served from the record of the first check
    path = os.path.join(bundle.path, art["file"])
    stat = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"\0\0\0\0")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a coarse clock still sees it
    with pytest.raises(BitError, match="does not match its manifest checksum"):
        bundle.verify_file(art)
