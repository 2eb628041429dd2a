"""engine/atomic_write.py: the one write-then-rename helper every published file goes through."""

import os
import stat
import threading

import numpy as np
import pytest

from bit_trt.engine.atomic_write import atomic_path, write_atomic, write_json_atomic
from bit_trt.engine.errors import BitError


def _entries(directory) -> list[str]:
    return sorted(os.listdir(directory))


def test_a_writer_failing_midway_leaves_the_target_and_no_temporary_file(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_path(str(target)) as tmp:
            with open(tmp, "w") as f:
                f.write("half of the new")
            assert os.path.exists(tmp) and os.path.dirname(tmp) == str(tmp_path)
            raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert _entries(tmp_path) == ["report.json"]


def test_an_os_error_midway_is_a_one_line_bit_error_and_changes_nothing(tmp_path):
    target = tmp_path / "cache.bin"
    target.write_bytes(b"old")
    with pytest.raises(BitError) as info:
        with atomic_path(str(target), "timing cache") as tmp:
            with open(tmp, "wb") as f:
                f.write(b"new, but")
            raise OSError(28, "No space left on device")
    assert str(info.value) == f"cannot write timing cache {target}: No space left on device"
    assert target.read_bytes() == b"old"
    assert _entries(tmp_path) == ["cache.bin"]


def test_a_new_file_appears_whole_or_not_at_all(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(str(tmp_path / "new.png")) as tmp:
            open(tmp, "wb").close()
            raise RuntimeError
    assert _entries(tmp_path) == []
    assert write_atomic(str(tmp_path / "new.png"), b"\x89PNG") == str(tmp_path / "new.png")
    assert (tmp_path / "new.png").read_bytes() == b"\x89PNG" and _entries(tmp_path) == ["new.png"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077], ids=oct)
def test_the_mode_follows_the_umask_as_open_would(tmp_path, umask):
    old = os.umask(umask)
    try:
        with open(tmp_path / "by_open", "w"):
            pass
        write_atomic(str(tmp_path / "by_write_atomic"), "x")
        write_atomic(str(tmp_path / "by_write_atomic_bytes"), b"x")
        write_json_atomic(str(tmp_path / "by_write_json_atomic"), {})
        with atomic_path(str(tmp_path / "by_atomic_path.npy")) as tmp:
            np.save(tmp, np.zeros(1))
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    for name in ("by_open", "by_write_atomic", "by_write_atomic_bytes", "by_write_json_atomic", "by_atomic_path.npy"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_text_is_utf8_without_newline_translation(tmp_path):
    text = "a,b\r\nc\nd\re é ✓\n"
    write_atomic(str(tmp_path / "t.csv"), text)
    assert (tmp_path / "t.csv").read_bytes() == text.encode("utf-8")
    write_json_atomic(str(tmp_path / "t.json"), {"name": "é"}, indent=None)
    assert (tmp_path / "t.json").read_bytes() == b'{"name": "\\u00e9"}\n'


def test_bytes_like_data_is_written_as_is(tmp_path):
    blob = bytes(range(256))
    write_atomic(str(tmp_path / "a"), bytearray(blob))
    write_atomic(str(tmp_path / "b"), memoryview(blob))
    assert (tmp_path / "a").read_bytes() == blob and (tmp_path / "b").read_bytes() == blob


def test_the_temporary_name_keeps_the_extension(tmp_path):
    """np.save appends .npy and cv2.imwrite picks its encoder by extension: both must write the temporary name."""
    target = tmp_path / "arrays.npy"
    with atomic_path(str(target)) as tmp:
        assert tmp.endswith(".npy") and os.path.basename(tmp).startswith(".")
        np.save(tmp, np.arange(3))
    assert np.load(target).tolist() == [0, 1, 2] and _entries(tmp_path) == ["arrays.npy"]


def test_threads_writing_one_target_do_not_take_each_others_temporary_file(tmp_path):
    target = str(tmp_path / "shared.txt")
    errors = []

    def writer(n: int) -> None:
        try:
            for _ in range(100):
                write_atomic(target, f"writer {n}\n" * 200)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    lines = set(open(target).read().splitlines())
    assert len(lines) == 1 and lines.pop().startswith("writer ")
    assert _entries(tmp_path) == ["shared.txt"]


def _read_only_dir(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


@pytest.mark.parametrize("where", ["read-only folder", "/proc", "/sys"])
def test_an_unwritable_directory_is_a_one_line_bit_error(tmp_path, where):
    if where == "read-only folder":
        if os.geteuid() == 0:
            pytest.skip("root writes in a read-only folder; /proc and /sys stand in for it")
        folder = str(_read_only_dir(tmp_path))
    else:
        if not os.path.isdir(where):
            pytest.skip(f"no {where} here")
        folder = where
    target = os.path.join(folder, "bit-trt-report.json")
    try:
        with pytest.raises(BitError) as info:
            write_json_atomic(target, {"a": 1}, "JSON report")
        message = str(info.value)
        assert message.startswith(f"cannot write JSON report {target}: ") and "\n" not in message, message
        assert not os.path.lexists(target)
        assert not [name for name in os.listdir(folder) if name.startswith(".bit-trt-report.")]
    finally:
        if where == "read-only folder":
            os.chmod(folder, 0o755)
