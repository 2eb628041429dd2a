"""engine/user_cache.py: what is read back from a cache is taken only if this user alone may have written it."""

import os

import pytest

from bit_trt.engine import cuda_preprocess
from bit_trt.engine.errors import BitError
from bit_trt.engine.user_cache import (
    cache_dir,
    in_user_cache,
    library_folder,
    make_root,
    own_tree,
    read_kept,
    read_own,
    write_kept,
    write_own,
)


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


def test_a_kept_file_in_the_user_cache_follows_its_rule_and_a_named_one_is_read_as_it_is(tmp_path, monkeypatch):
    """read_kept/write_kept serve the calibration ranges and TensorRT's timing cache: where bit-trt chose the place
    (the user cache) only this user's own file is read; a path the user named is theirs to vouch for."""
    monkeypatch.setenv("BIT_TRT_CACHE", str(tmp_path / "cache"))
    kept = tmp_path / "cache" / "timing" / "tensorrt.cache"
    write_kept(str(kept), b"tactics", "timing cache")
    assert kept.stat().st_mode & 0o777 == 0o600 and kept.parent.stat().st_mode & 0o777 == 0o700
    assert read_kept(str(kept)) == b"tactics"
    kept.chmod(0o666)
    assert read_kept(str(kept)) is None  # planted, as far as anyone can tell: made again
    named = tmp_path / "team" / "shared.cache"
    write_kept(str(named), b"team tactics", "timing cache")
    named.chmod(0o666)
    assert read_kept(str(named)) == b"team tactics" and read_kept(str(tmp_path / "team" / "none")) is None


def test_a_library_keeps_its_files_only_in_a_folder_that_is_this_users_alone(tmp_path):
    """library_folder vets the folder ORT's TensorRT provider keeps its engines in (code the GPU runs)."""
    root = tmp_path / "root"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    engines = root / "ort-trt" / "key"
    assert library_folder(str(engines), str(root)) is None
    assert engines.stat().st_mode & 0o777 == 0o700 and engines.parent.stat().st_mode & 0o777 == 0o700
    engine = engines / "graph.engine"
    engine.write_bytes(b"engine")
    engine.chmod(0o664)  # as a library writes it under a umask of 002: no one else could reach it, so it is kept
    assert library_folder(str(engines), str(root)) is None and engine.stat().st_mode & 0o777 == 0o644
    for folder in (root, engines.parent, engines):
        folder.chmod(0o775)
        assert "writable by others" in library_folder(str(engines), str(root)), folder
        folder.chmod(0o700)
    assert engine.stat().st_mode & 0o777 == 0o644
    engines.chmod(0o755)  # others may enter: a group-writable file in it could have been replaced
    engine.chmod(0o664)
    assert "something in" in library_folder(str(engines), str(root))
    engine.chmod(0o644)
    (engines / "link.engine").symlink_to(engine)
    assert "something in" in library_folder(str(engines), str(root))
    (engines / "link.engine").unlink()
    os.rename(engines, root / "real")
    engines.symlink_to(root / "real")
    assert "is a link" in library_folder(str(engines), str(root))
    engines.unlink()
    os.rename(root / "real", engines)
    linked_root = tmp_path / "deployed"
    linked_root.symlink_to(root)  # the root may be reached through a link (a "current" release)
    assert library_folder(str(linked_root / "ort-trt" / "key"), str(linked_root)) is None
    engines.chmod(0o755)  # nothing in it others may write: taken, and left 0700
    assert library_folder(str(engines), str(root)) is None and engines.stat().st_mode & 0o777 == 0o700
    if os.geteuid() == 0:
        os.chown(engine, 65534, 65534)
        assert "something in" in library_folder(str(engines), str(root))
        os.chown(engines.parent, 65534, 65534)
        assert "another user's" in library_folder(str(engines), str(root))
    with pytest.raises(ValueError):
        library_folder(str(tmp_path / "elsewhere"), str(root))


def test_a_library_folder_is_refused_where_someone_else_could_swap_a_folder_above_it(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone may rename what is in it: the root could be swapped after the check
    root = shared / "bundle"
    root.mkdir()
    assert "shared is another user's or writable by others" in library_folder(str(root / "cache"), str(root))
    shared.chmod(0o1777)  # sticky, as /tmp: only an entry's owner may rename it
    assert library_folder(str(root / "cache"), str(root)) is None
    linked = tmp_path / "current"
    linked.symlink_to(root)  # named through a link: the folders above what it resolves to count too
    shared.chmod(0o777)
    assert "shared is another user's" in library_folder(str(linked / "cache"), str(linked))


def test_the_cache_root_is_made_for_this_user_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("BIT_TRT_CACHE", str(tmp_path / "cache"))
    old = os.umask(0o002)
    try:
        write_own(cache_dir("compute-gate", "verdict.json"), b"{}", "verdict")
    finally:
        os.umask(old)
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700
    (tmp_path / "cache").chmod(0o775)  # left so by an earlier version under a umask of 002: tightened
    assert make_root() == str(tmp_path / "cache") and (tmp_path / "cache").stat().st_mode & 0o777 == 0o755
    assert in_user_cache(str(tmp_path / "cache" / "x")) and not in_user_cache(str(tmp_path / "cache2" / "x"))
    assert not in_user_cache(str(tmp_path / "cache" / ".." / "cache2"))
    monkeypatch.setenv("BIT_TRT_CACHE", "")  # empty is unset, not the working folder
    assert cache_dir() == os.path.join(os.path.expanduser("~"), ".cache", "bit-trt")
