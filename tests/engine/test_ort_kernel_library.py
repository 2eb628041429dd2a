"""Building and keeping bit-trt's ONNX Runtime kernels (engine/ort_kernel_library.py): what it needs, said in one line
where it is missing; one build per source, compiler and CPU; loaded only from a folder this user alone may write to."""

import os
import shutil

import pytest

from bit_trt.engine import ort_kernel_library
from bit_trt.engine.errors import BitError

from .ort_kernel import kernel_library


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BIT_TRT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_missing_header_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    with pytest.raises(BitError, match=f"{ort_kernel_library.INCLUDE_ENV}=.* holds no onnxruntime_c_api.h"):
        ort_kernel_library.header_folder({ort_kernel_library.INCLUDE_ENV: str(tmp_path)})
    monkeypatch.setattr(ort_kernel_library, "INCLUDE_FOLDERS", (str(tmp_path / "none"),))
    with pytest.raises(BitError, match="no onnxruntime_c_api.h .* libonnxruntime-dev"):
        ort_kernel_library.header_folder({})


def test_a_missing_compiler_is_one_line(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BitError, match="no C compiler"):
        ort_kernel_library.compiler({})


def test_built_once_kept_0700_and_rebuilt_for_another_source(own_cache, tmp_path, monkeypatch):
    kernel_library()  # skips where this host can't build it
    first = ort_kernel_library.library()
    assert first.startswith(str(own_cache)) and oct(os.stat(first).st_mode & 0o777) == "0o700"
    assert oct(os.stat(os.path.dirname(first)).st_mode & 0o777) == "0o700"
    built = os.stat(first).st_mtime_ns
    assert ort_kernel_library.library() == first and os.stat(first).st_mtime_ns == built  # kept, not rebuilt
    edited = tmp_path / "edited.c"
    edited.write_text(open(ort_kernel_library.SOURCE).read() + "\n/* a developer's edit */\n")
    monkeypatch.setattr(ort_kernel_library, "SOURCE", str(edited))
    second = ort_kernel_library.library()
    assert second != first and os.path.isfile(second)
    assert [f for f in os.listdir(os.path.dirname(second)) if f.startswith(".build-")] == []  # no leftovers


def test_a_source_that_does_not_compile_is_one_line_and_leaves_nothing(own_cache, tmp_path, monkeypatch):
    kernel_library()
    broken = tmp_path / "broken.c"
    broken.write_text("int f( {\n")
    monkeypatch.setattr(ort_kernel_library, "SOURCE", str(broken))
    with pytest.raises(BitError, match="could not build .*broken.c") as caught:
        ort_kernel_library.library()
    assert "\n" not in str(caught.value)
    (folder,) = (own_cache / "ort-kernels").iterdir()
    assert list(folder.iterdir()) == []


def test_a_library_folder_others_may_write_to_is_refused(own_cache):
    kernel_library()
    path = ort_kernel_library.library()
    folder = os.path.dirname(path)
    os.chmod(folder, 0o777)  # another local user could swap the library for their own code
    try:
        with pytest.raises(BitError, match="can't be kept: .*writable by others"):
            ort_kernel_library.library()
    finally:
        os.chmod(folder, 0o700)
    shutil.rmtree(folder)
    assert ort_kernel_library.library() == path  # built again where it is safe
