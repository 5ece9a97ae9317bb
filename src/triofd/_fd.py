"""Ownership of one kernel fd, closed the way Trio needs it closed."""

from __future__ import annotations

import os

import trio

__all__ = ["FdHolder"]


class FdHolder:
    """Owns ``fd``: closing wakes any task blocked in ``wait_readable``/``wait_writable`` on it.

    The order matters: mark closed first (so nothing new starts), ``notify_closing`` (waiters get
    ``trio.ClosedResourceError``), then ``os.close``.  ``fd`` becomes -1 so a number the kernel
    reuses for another file is never touched through this holder.
    """

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        if not isinstance(fd, int) or isinstance(fd, bool):
            raise TypeError(f"fd must be an int, not {type(fd).__name__}")
        if fd < 0:
            raise ValueError(f"fd must be >= 0, not {fd}")
        self.fd = fd

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def fileno(self) -> int:
        if self.fd < 0:
            raise trio.ClosedResourceError("file descriptor already closed")
        return self.fd

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        try:
            trio.lowlevel.notify_closing(fd)
        except RuntimeError:
            # Outside a Trio run nobody can be waiting on it.
            pass
        os.close(fd)

    def __del__(self) -> None:
        # A last resort for objects dropped without close(); never raise from a finaliser.
        fd, self.fd = getattr(self, "fd", -1), -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def __repr__(self) -> str:
        return f"<FdHolder fd={self.fd}>" if self.fd >= 0 else "<FdHolder closed>"
