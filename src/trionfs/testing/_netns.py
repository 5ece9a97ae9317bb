"""Move the calling thread between network namespaces (``setns(2)`` through ctypes).

Python 3.11 has no ``os.setns``, and this module must not depend on the rest of trionfs, so
the one system call is bound here with ctypes.  ``setns(fd, CLONE_NEWNET)`` changes the
namespace of the *calling thread* only: sockets it creates afterwards live in the new
namespace, sockets created before keep theirs, and threads or processes it starts inherit it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["CLONE_NEWNET", "current_netns_id", "entered_netns", "setns"]

CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling thread into the namespace that ``fd`` (an ``ns/*`` file) refers to."""
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def current_netns_id() -> tuple[int, int]:
    """``(st_dev, st_ino)`` of the calling thread's network namespace: equal ids, same namespace."""
    st = os.stat("/proc/thread-self/ns/net")
    return (st.st_dev, st.st_ino)


@contextmanager
def entered_netns(netns_fd: int) -> Iterator[None]:
    """Run the block with the calling thread in the namespace of ``netns_fd``, then go back.

    The thread returns to the namespace it was in on entry, even if the block raises, so these
    blocks nest.
    """
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(netns_fd)
        try:
            yield
        finally:
            setns(original)
    finally:
        os.close(original)
