"""engine/user_cache.py: what is read back from a cache is taken only if this user alone may have written it."""

import os

import pytest

from bit_trt.engine import cuda_preprocess
from bit_trt.engine.errors import BitError
from bit_trt.engine.user_cache import own_tree, read_own, write_own


def test_a_file_is_read_back_only_if_this_user_alone_may_have_written_it(tmp_path):
    path = tmp_path / "kept" / "entry.bin"
    write_own(str(path), b"kept", "entry")
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert read_own(str(path)) == b"kept"
    assert read_own(str(path), limit=3) is None  # larger than the caller reads
    for mode in (0o620, 0o602, 0o666):
        path.chmod(mode)
        assert read_own(str(path)) is None, oct(mode)
    path.chmod(0o644)  # readable by others is no concern here: writable is
    assert read_own(str(path)) == b"kept"
    link = tmp_path / "kept" / "link.bin"
    link.symlink_to(path.name)
    assert read_own(str(link)) is None
    assert read_own(str(tmp_path / "kept")) is None and read_own(str(tmp_path / "missing")) is None
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
        assert read_own(str(path)) is None


def test_a_folder_is_taken_only_if_everything_in_it_is_this_users_alone(tmp_path):
    tree = tmp_path / "module"
    (tree / "variables").mkdir(parents=True, mode=0o755)
    tree.chmod(0o755)
    (tree / "saved_model.pb").write_bytes(b"graph")
    (tree / "variables" / "variables.index").write_bytes(b"index")
    for p in (tree / "saved_model.pb", tree / "variables" / "variables.index"):
        p.chmod(0o644)
    assert own_tree(str(tree))
    (tree / "variables").chmod(0o775)
    assert not own_tree(str(tree))
    (tree / "variables").chmod(0o755)
    (tree / "variables" / "variables.index").chmod(0o646)
    assert not own_tree(str(tree))
    (tree / "variables" / "variables.index").chmod(0o644)
    (tree / "assets").symlink_to("variables")
    assert not own_tree(str(tree))
    (tree / "assets").unlink()
    assert own_tree(str(tree)) and not own_tree(str(tree / "saved_model.pb")) and not own_tree(str(tmp_path / "no"))


def test_a_kept_kernel_runs_only_if_this_user_alone_may_have_written_it(tmp_path, monkeypatch):
    """compile_ptx's cache holds code the GPU runs: a planted PTX in a cache others can write is compiled afresh
    (here, without nvcc, that is the one-line error that asks for it)."""
    monkeypatch.setenv("BIT_TRT_CACHE", str(tmp_path))
    cached = tmp_path / "kernels" / f"preprocess-{cuda_preprocess.source_digest(cuda_preprocess.PTX_ARCH)[:20]}.ptx"
    write_own(str(cached), b"// planted PTX\n", "PTX")
    assert cuda_preprocess.compile_ptx() == b"// planted PTX\n"  # this user's own: the cache is used
    cached.chmod(0o602)
    if cuda_preprocess.find_nvcc() is None:
        with pytest.raises(BitError, match="compiling it needs nvcc"):
            cuda_preprocess.compile_ptx()
    else:
        assert b".entry bit_preprocess_u8" in cuda_preprocess.compile_ptx()
        assert cached.stat().st_mode & 0o777 == 0o600
