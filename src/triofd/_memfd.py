"""memfd: anonymous memory files with seals (``memfd_create(2)``, ``F_ADD_SEALS``).

A memfd is a regular file: it is always ready, so it has nothing to wait for and no channel
shape; :class:`Memfd` is a plain owner of the fd with the seal operations and an ``mmap``.
Hand the fd to another process (``SCM_RIGHTS``, ``pidfd_getfd``) after sealing it and the
receiver can trust that the contents (``WRITE``) or size (``SHRINK``/``GROW``) won't change.
"""

from __future__ import annotations

import enum
import fcntl
import mmap
import os
from types import TracebackType

from ._errors import reraise_oserror
from ._fd import FdHolder

__all__ = [
    "MFD_ALLOW_SEALING",
    "MFD_CLOEXEC",
    "MFD_NOEXEC_SEAL",
    "Memfd",
    "Seal",
    "memfd_add_seals",
    "memfd_create",
    "memfd_get_seals",
]

MFD_CLOEXEC = os.MFD_CLOEXEC
MFD_ALLOW_SEALING = os.MFD_ALLOW_SEALING
MFD_NOEXEC_SEAL = 0x0008  # Linux 6.3; not in Python 3.11's os module


class Seal(enum.IntFlag):
    """``F_SEAL_*`` (``linux/fcntl.h``)."""

    SEAL = 0x0001  # no more seals may be added
    SHRINK = 0x0002
    GROW = 0x0004
    WRITE = 0x0008  # refused while a shared writable mapping exists (EBUSY)
    FUTURE_WRITE = 0x0010  # existing writable mappings keep working, new writes fail
    EXEC = 0x0020  # Linux 6.3: the exec bits can't change


def memfd_create(name: str, flags: int = MFD_CLOEXEC | MFD_ALLOW_SEALING) -> int:
    """``memfd_create(2)``; close-on-exec and sealable by default."""
    try:
        return os.memfd_create(name, flags)
    except OSError as exc:
        raise reraise_oserror(exc, "memfd_create") from None


def memfd_add_seals(fd: int, seals: int) -> None:
    """``fcntl(fd, F_ADD_SEALS, seals)``; ``EPERM`` once ``SEAL`` is set."""
    try:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, int(seals))
    except OSError as exc:
        raise reraise_oserror(exc, "fcntl(F_ADD_SEALS)") from None


def memfd_get_seals(fd: int) -> Seal:
    """``fcntl(fd, F_GET_SEALS)``."""
    try:
        return Seal(fcntl.fcntl(fd, fcntl.F_GET_SEALS))
    except OSError as exc:
        raise reraise_oserror(exc, "fcntl(F_GET_SEALS)") from None


class Memfd:
    """An anonymous in-memory file: ``with Memfd("name", size=4096) as m: m.mmap()[...]``."""

    def __init__(self, name: str = "triofd", size: int = 0, *, allow_sealing: bool = True) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        flags = MFD_CLOEXEC | (MFD_ALLOW_SEALING if allow_sealing else 0)
        self.name = name
        self._holder = FdHolder(memfd_create(name, flags))
        if size:
            self.truncate(size)

    def fileno(self) -> int:
        return self._holder.fileno()

    @property
    def closed(self) -> bool:
        return self._holder.closed

    @property
    def size(self) -> int:
        return os.fstat(self.fileno()).st_size

    def truncate(self, size: int) -> None:
        """Set the size (``EPERM`` if a SHRINK/GROW seal forbids it)."""
        try:
            os.ftruncate(self.fileno(), size)
        except OSError as exc:
            raise reraise_oserror(exc, "ftruncate") from None

    def write(self, data: bytes | bytearray | memoryview, offset: int = 0) -> int:
        """``pwrite`` at ``offset`` (``EPERM`` once WRITE-sealed)."""
        try:
            return os.pwrite(self.fileno(), data, offset)
        except OSError as exc:
            raise reraise_oserror(exc, "pwrite") from None

    def read(self, count: int | None = None, offset: int = 0) -> bytes:
        """``pread`` of ``count`` bytes (default: to the end) at ``offset``."""
        if count is None:
            count = max(self.size - offset, 0)
        return os.pread(self.fileno(), count, offset)

    def seal(self, *seals: Seal | int) -> Seal:
        """Add seals; returns the full set now in force."""
        combined = 0
        for s in seals:
            combined |= int(s)
        memfd_add_seals(self.fileno(), combined)
        return self.seals

    @property
    def seals(self) -> Seal:
        return memfd_get_seals(self.fileno())

    def mmap(self, *, writable: bool = True) -> mmap.mmap:
        """Map the whole file (shared).  A writable map blocks a later ``Seal.WRITE`` (EBUSY)."""
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        return mmap.mmap(self.fileno(), self.size, access=access)

    def close(self) -> None:
        self._holder.close()

    def __enter__(self) -> Memfd:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self._holder.fd}"
        return f"<triofd.Memfd {self.name!r} {state}>"
