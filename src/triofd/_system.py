"""System calls for containers and sandboxes that Python 3.11's stdlib lacks (butter's ``system``).

``mount``/``umount2``/``pivot_root``/``unshare``/``setns``/``sethostname`` change the state of the
whole process (or its namespaces): run them in a child process when experimenting -- the tests
do, inside ``unshare(CLONE_NEWNS | CLONE_NEWUTS)`` with ``/`` made recursively private.

``getpid``/``getppid`` go straight to the kernel: glibc no longer caches the pid, but Python or
a library might, and after ``clone`` tricks the raw value is the one that counts.
"""

from __future__ import annotations

import enum
import platform

from ._lib import check, ffi, fspath_bytes, lib

__all__ = [
    "CloneFlags",
    "MountFlags",
    "UmountFlags",
    "gethostname",
    "getpid",
    "getppid",
    "mount",
    "pivot_root",
    "sethostname",
    "setns",
    "umount",
    "umount2",
    "unshare",
]

PathArg = str | bytes


class CloneFlags(enum.IntFlag):
    """``CLONE_*`` for :func:`unshare` and :func:`setns` (``linux/sched.h``)."""

    FS = 0x00000200
    FILES = 0x00000400
    SYSVSEM = 0x00040000
    NEWTIME = 0x00000080
    NEWNS = 0x00020000
    NEWCGROUP = 0x02000000
    NEWUTS = 0x04000000
    NEWIPC = 0x08000000
    NEWUSER = 0x10000000
    NEWPID = 0x20000000
    NEWNET = 0x40000000


class MountFlags(enum.IntFlag):
    """``MS_*`` (``linux/mount.h``)."""

    RDONLY = 1
    NOSUID = 2
    NODEV = 4
    NOEXEC = 8
    SYNCHRONOUS = 16
    REMOUNT = 32
    MANDLOCK = 64
    DIRSYNC = 128
    NOSYMFOLLOW = 256
    NOATIME = 1024
    NODIRATIME = 2048
    BIND = 4096
    MOVE = 8192
    REC = 16384
    SILENT = 32768
    POSIXACL = 1 << 16
    UNBINDABLE = 1 << 17
    PRIVATE = 1 << 18
    SLAVE = 1 << 19
    SHARED = 1 << 20
    RELATIME = 1 << 21
    KERNMOUNT = 1 << 22
    I_VERSION = 1 << 23
    STRICTATIME = 1 << 24
    LAZYTIME = 1 << 25


class UmountFlags(enum.IntFlag):
    """``MNT_*`` / ``UMOUNT_NOFOLLOW`` for :func:`umount2`."""

    FORCE = 1
    DETACH = 2
    EXPIRE = 4
    NOFOLLOW = 8


# Raw system call numbers: (getpid, getppid, pivot_root) per architecture.
_SYSCALLS = {
    "x86_64": (39, 110, 155),
    "aarch64": (172, 173, 41),
}


def _nr(index: int) -> int:
    machine = platform.machine()
    try:
        return _SYSCALLS[machine][index]
    except KeyError:
        raise NotImplementedError(f"raw system call numbers unknown for {machine}") from None


def _syscall(name: str, nr: int, *args: object) -> int:
    result = lib.syscall(ffi.cast("long", nr), *args)
    return check(int(result), name)


def getpid() -> int:
    """The caller's pid, straight from the kernel (``syscall(SYS_getpid)``)."""
    return _syscall("getpid", _nr(0))


def getppid() -> int:
    """The parent's pid, straight from the kernel (``syscall(SYS_getppid)``)."""
    return _syscall("getppid", _nr(1))


def gethostname() -> str:
    """``gethostname(2)`` (the UTS namespace's nodename)."""
    buf = ffi.new("char[]", 257)
    check(lib.gethostname(buf, 257), "gethostname")
    return bytes(ffi.string(buf)).decode("utf-8", "surrogateescape")


def sethostname(name: str | bytes) -> None:
    """``sethostname(2)``: needs ``CAP_SYS_ADMIN`` in the UTS namespace (else PermissionError)."""
    raw = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else bytes(name)
    check(lib.sethostname(raw, len(raw)), "sethostname")


def _opt_path(path: PathArg | None) -> object:
    return ffi.NULL if path is None else fspath_bytes(path)


def mount(
    source: PathArg | None,
    target: PathArg,
    fstype: str | bytes | None = None,
    flags: int = 0,
    data: str | bytes | None = None,
) -> None:
    """``mount(2)``.  ``source``/``fstype``/``data`` may be ``None`` (remount, propagation)."""
    ftype = ffi.NULL if fstype is None else fspath_bytes(fstype)
    cdata = ffi.NULL if data is None else (data.encode() if isinstance(data, str) else data)
    tgt = fspath_bytes(target)
    check(lib.mount(_opt_path(source), tgt, ftype, int(flags), cdata), "mount", tgt)


def umount2(target: PathArg, flags: int = 0) -> None:
    """``umount2(2)``; ``EBUSY`` (a plain ``OSError``) while in use -- try ``DETACH``."""
    tgt = fspath_bytes(target)
    check(lib.umount2(tgt, int(flags)), "umount2", tgt)


umount = umount2


def pivot_root(new_root: PathArg, put_old: PathArg) -> None:
    """``pivot_root(2)`` (no glibc wrapper: raw system call)."""
    new, old = fspath_bytes(new_root), fspath_bytes(put_old)
    _syscall("pivot_root", _nr(2), ffi.new("char[]", new), ffi.new("char[]", old))


def _int_flags(flags: int) -> int:
    if isinstance(flags, bool) or not isinstance(flags, int):
        raise TypeError(f"flags must be an int, not {type(flags).__name__}")
    if not 0 <= flags < 1 << 31:
        raise ValueError(f"flags out of range: {flags:#x}")
    return int(flags)


def unshare(flags: int) -> None:
    """``unshare(2)``: move the calling thread into new namespaces."""
    check(lib.unshare(_int_flags(flags)), "unshare")


def setns(fd: int | object, nstype: int = 0) -> None:
    """``setns(2)``: join the namespace ``fd`` (an int or an object with ``fileno()``).

    ``nstype=0`` accepts any kind.  Returns ``None`` (butter returned the fd by mistake).
    """
    if isinstance(fd, int) and not isinstance(fd, bool):
        number = fd
    elif hasattr(fd, "fileno"):
        number = fd.fileno()
    else:
        raise TypeError(f"expected an fd or an object with fileno(), not {type(fd).__name__}")
    check(lib.setns(number, _int_flags(nstype)), "setns")
