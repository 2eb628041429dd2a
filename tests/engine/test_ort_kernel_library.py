"""Building and keeping bit-trt's ONNX Runtime kernels (engine/ort_kernel_library.py): what it needs, said in one line
where it is missing; one build per source, compiler and CPU; loaded only from a folder this user alone may write to.
For hosts without a compiler or the header: prebuilt for each x86-64 level, the best one this CPU runs loaded from a
folder no one but root or this user may write to."""

import json
import os
import platform
import shutil

import pytest

from bit_trt.engine import ort_kernel_library
from bit_trt.engine.cpu_host import X86_64_LEVELS, CpuHost, this_host
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
    with pytest.raises(BitError, match="no C compiler .*; or set BIT_TRT_ORT_KERNELS to a set prebuilt elsewhere"):
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


# ---- a prebuilt set (python -m bit_trt.engine.ort_kernel_library DIR), for hosts without a compiler or the header ----


@pytest.fixture
def prebuilt_set(tmp_path):
    kernel_library()  # skips where this host can't build it
    folder = tmp_path / "kernels"
    manifest = ort_kernel_library.build_prebuilt(str(folder))
    return folder, manifest


def _cpu(*levels: str) -> CpuHost:
    """A CPU with exactly the flags of these x86-64 levels."""
    return CpuHost(flags=frozenset(flag for level in levels for flag in X86_64_LEVELS[level]))


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 levels: an x86-64 host")
def test_a_prebuilt_set_holds_each_level_and_loads_the_best_one_this_cpu_runs(prebuilt_set, monkeypatch):
    folder, manifest = prebuilt_set
    assert list(manifest["builds"]) == ["x86-64-v4", "x86-64-v3", "x86-64-v2"]
    assert manifest["source_sha256"] == ort_kernel_library._digest(ort_kernel_library.SOURCE)
    for level, name in manifest["builds"].items():
        assert name.startswith(f"{level}-") and f"-march={level}" in manifest["flags"][level]
        assert oct(os.stat(folder / name / ort_kernel_library.LIBRARY_NAME).st_mode & 0o777) == "0o755"
    assert oct(os.stat(folder).st_mode & 0o777) == "0o755"
    assert [p.name for p in folder.parent.iterdir()] == ["kernels"]  # the staging folder is gone
    # What CPU runs what: the best level whose flags, and every lower level's, it has.
    best = ort_kernel_library.prebuilt(str(folder), _cpu("x86-64-v4", "x86-64-v3", "x86-64-v2"))
    assert best == str(folder / manifest["builds"]["x86-64-v4"] / ort_kernel_library.LIBRARY_NAME)
    assert manifest["builds"]["x86-64-v3"] in ort_kernel_library.prebuilt(str(folder), _cpu("x86-64-v3", "x86-64-v2"))
    assert manifest["builds"]["x86-64-v2"] in ort_kernel_library.prebuilt(str(folder), _cpu("x86-64-v4", "x86-64-v2"))
    with pytest.raises(BitError, match=r"has no build this CPU runs .*: this CPU lacks cx16, lahf_lm, pni"):
        ort_kernel_library.prebuilt(str(folder), _cpu("x86-64-v3"))
    # library() takes it from $BIT_TRT_ORT_KERNELS, with neither a compiler nor the header: this host's own level.
    monkeypatch.setenv("PATH", "/nonexistent")
    chosen = ort_kernel_library.library({ort_kernel_library.PREBUILT_ENV: str(folder)})
    best = next(level for level in X86_64_LEVELS if not this_host().lacks_for(level))
    assert chosen == str(folder / manifest["builds"][best] / ort_kernel_library.LIBRARY_NAME)


def test_a_prebuilt_set_others_may_write_to_or_with_a_link_is_refused(prebuilt_set):
    folder, manifest = prebuilt_set
    build = folder / next(iter(manifest["builds"].values()))
    for target, mode in ((folder, 0o775), (build, 0o757), (build / ort_kernel_library.LIBRARY_NAME, 0o775)):
        os.chmod(target, mode)  # another local user could swap the library for their own code
        try:
            with pytest.raises(BitError, match="can't be trusted: .*writable by others"):
                ort_kernel_library.prebuilt(str(folder))
        finally:
            os.chmod(target, 0o755)
    os.chmod(folder.parent, 0o777)  # the folder above: the whole set could be swapped
    try:
        with pytest.raises(BitError, match="can't be trusted: .*writable by others"):
            ort_kernel_library.prebuilt(str(folder))
    finally:
        os.chmod(folder.parent, 0o700)
    (folder / "elsewhere").symlink_to("/tmp")
    with pytest.raises(BitError, match="can't be trusted: .*a link"):
        ort_kernel_library.prebuilt(str(folder))
    (folder / "elsewhere").unlink()
    assert ort_kernel_library.prebuilt(str(folder))  # as built, it is fit


def test_a_prebuilt_set_of_another_source_missing_or_unreadable_is_one_line(prebuilt_set, tmp_path, monkeypatch):
    folder, _ = prebuilt_set
    edited = tmp_path / "edited.c"
    edited.write_text(open(ort_kernel_library.SOURCE).read() + "\n/* another bit-trt version */\n")
    monkeypatch.setattr(ort_kernel_library, "SOURCE", str(edited))
    with pytest.raises(BitError, match="built from another source of bit-trt's kernel .* build it again with python"):
        ort_kernel_library.prebuilt(str(folder))
    monkeypatch.undo()
    with pytest.raises(BitError, match=f"{ort_kernel_library.PREBUILT_ENV}=.*none is not a folder; build one with"):
        ort_kernel_library.library({ort_kernel_library.PREBUILT_ENV: str(tmp_path / "none")})
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o755)
    with pytest.raises(BitError, match="holds no readable kernels.json") as caught:
        ort_kernel_library.prebuilt(str(empty))
    manifest = json.loads((folder / "kernels.json").read_text())
    best = next(iter(manifest["builds"]))
    for name in ("../../elsewhere", f"{best}-{'0' * 23}/..", 7):  # a path out of the vetted folder; not a name
        (folder / "kernels.json").write_text(json.dumps({**manifest, "builds": {best: name}}))
        with pytest.raises(BitError, match="not a build folder of its own"):
            ort_kernel_library.prebuilt(str(folder), _cpu(*X86_64_LEVELS))
    (folder / "kernels.json").write_text('{"schema": 1, "builds": ')  # cut short
    with pytest.raises(BitError, match="holds no readable kernels.json"):
        ort_kernel_library.prebuilt(str(folder))
    assert "\n" not in str(caught.value)


def test_a_prebuild_that_fails_leaves_nothing_and_never_overwrites(tmp_path, monkeypatch):
    kernel_library()
    broken = tmp_path / "broken.c"
    broken.write_text("int f( {\n")
    monkeypatch.setattr(ort_kernel_library, "SOURCE", str(broken))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BitError, match="could not build .*broken.c"):
        ort_kernel_library.build_prebuilt(str(out / "kernels"))
    assert list(out.iterdir()) == []  # no staging folder, no half set
    monkeypatch.undo()
    (out / "kernels").mkdir()
    assert ort_kernel_library.main([str(out / "kernels")]) == 1  # exists: refused, one line (the CLI's exit)
    assert list((out / "kernels").iterdir()) == []
    with pytest.raises(BitError, match="no level x86-64-v9 on"):
        ort_kernel_library.build_prebuilt(str(out / "other"), ["x86-64-v9"])
