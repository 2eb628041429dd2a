"""A /dev/shm of bit-serve's own, which no other local user's process can see.

Triton's Python backend creates its shared-memory regions (/dev/shm/pytrtion<pid>-*, the tensors on their way
between Triton and its stub processes) through Boost.Interprocess, which sets their mode to 0644 whatever the
umask: any local user could open them and read every request. No setting of Triton's or PyTriton's changes that.
So bit-serve mounts a private tmpfs on /dev/shm in a mount namespace of its own before anything runs: Triton, its
stubs and this process share it, and it disappears with them. That needs the kernel's permission: as root
(CAP_SYS_ADMIN) a mount namespace; otherwise a user namespace too, where the kernel allows unprivileged ones.
The namespace must be made while the process has one thread (unshare(2) refuses CLONE_NEWNS otherwise), so
serve_cli calls this before it loads a model.
"""

from __future__ import annotations

import ctypes
import errno
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x4000, 0x40000
SHM = "/dev/shm"


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _call(what: str, result: int) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _enter_namespace(libc) -> str:
    """A mount namespace (root), else a user and mount namespace mapping this user to itself; returns which."""
    if libc.unshare(CLONE_NEWNS) == 0:
        return "a mount namespace"
    first = ctypes.get_errno()
    if first not in (errno.EPERM, errno.EACCES):
        raise OSError(first, f"unshare(CLONE_NEWNS): {os.strerror(first)}")
    uid, gid = os.getuid(), os.getgid()
    _call("unshare(CLONE_NEWUSER | CLONE_NEWNS)", libc.unshare(CLONE_NEWUSER | CLONE_NEWNS))
    try:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    except OSError as exc:  # in a user namespace without our own uid: no going back, and nothing would work
        raise SystemExit(f"bit-serve: error: cannot map this user into its new namespace ({exc.strerror})") from None
    return "a user and mount namespace"


def make_private() -> str:
    """Mount a private tmpfs on /dev/shm for this process and its children. Returns how ("a mount namespace");
    raises OSError saying why not (the caller warns and goes on with the shared /dev/shm)."""
    if len(os.listdir("/proc/self/task")) > 1:
        raise OSError(errno.EINVAL, "the process already runs threads (unshare needs one)")
    libc = _libc()
    how = _enter_namespace(libc)
    try:
        # our mounts stay ours: nothing propagates back to the host's mount namespace
        _call("mount --make-rprivate /", libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None))
        _call(f"mount tmpfs {SHM}", libc.mount(b"tmpfs", SHM.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=0700"))
    except OSError as exc:  # in a namespace already, half made: no going back to the host's /dev/shm either
        raise SystemExit(f"bit-serve: error: cannot mount a private {SHM} in its new namespace ({exc})") from None
    return how
