"""fanotify: the two system calls, flag sets, and :class:`Fanotify` as a Trio channel.

Each :class:`FanotifyEvent` owns the fds the kernel put in it (the event's file, a pidfd) and
closes them in ``close()``; read events inside ``with event:`` or close them.  A permission
event closed without an answer is *allowed* first, so a forgotten event never freezes the
process that triggered it.
"""

from __future__ import annotations

import enum
import functools
import logging
import os
from typing import Literal

import trio

from ._channel import FdReceiveChannel
from ._errors import reraise_oserror
from ._fanotify_records import (
    FANOTIFY_RESPONSE,
    FidRecord,
    InfoRecord,
    InfoType,
    PidfdRecord,
    parse_fanotify_buffer,
)
from ._lib import check, fspath_bytes, lib

__all__ = [
    "FanEvent",
    "FanInit",
    "FanMark",
    "Fanotify",
    "FanotifyEvent",
    "FanotifyOverflowError",
    "fanotify_init",
    "fanotify_mark",
    "fanotify_supports",
]

logger = logging.getLogger("triofd.fanotify")

AT_FDCWD = -100
FAN_NOFD = -1
FAN_ALLOW = 0x01
FAN_DENY = 0x02
FAN_AUDIT = 0x10


class FanInit(enum.IntFlag):
    """``fanotify_init()`` flags: one notification class plus reporting options."""

    CLOEXEC = 0x00000001
    NONBLOCK = 0x00000002
    CLASS_NOTIF = 0x00000000
    CLASS_CONTENT = 0x00000004
    CLASS_PRE_CONTENT = 0x00000008
    UNLIMITED_QUEUE = 0x00000010
    UNLIMITED_MARKS = 0x00000020
    ENABLE_AUDIT = 0x00000040
    REPORT_PIDFD = 0x00000080
    REPORT_TID = 0x00000100
    REPORT_FID = 0x00000200
    REPORT_DIR_FID = 0x00000400
    REPORT_NAME = 0x00000800
    REPORT_TARGET_FID = 0x00001000
    # Newer than the 6.1 headers here; probe with fanotify_supports().
    REPORT_FD_ERROR = 0x00002000
    REPORT_MNT = 0x00004000
    REPORT_DFID_NAME = REPORT_DIR_FID | REPORT_NAME
    REPORT_DFID_NAME_TARGET = REPORT_DFID_NAME | REPORT_FID | REPORT_TARGET_FID


class FanMark(enum.IntFlag):
    """``fanotify_mark()`` flags: what to do, and on what kind of object."""

    ADD = 0x00000001
    REMOVE = 0x00000002
    DONT_FOLLOW = 0x00000004
    ONLYDIR = 0x00000008
    IGNORED_MASK = 0x00000020
    IGNORED_SURV_MODIFY = 0x00000040
    FLUSH = 0x00000080
    EVICTABLE = 0x00000200
    IGNORE = 0x00000400
    INODE = 0x00000000
    MOUNT = 0x00000010
    FILESYSTEM = 0x00000100


class FanEvent(enum.IntFlag):
    """Event mask bits (``FAN_*``)."""

    ACCESS = 0x00000001
    MODIFY = 0x00000002
    ATTRIB = 0x00000004
    CLOSE_WRITE = 0x00000008
    CLOSE_NOWRITE = 0x00000010
    OPEN = 0x00000020
    MOVED_FROM = 0x00000040
    MOVED_TO = 0x00000080
    CREATE = 0x00000100
    DELETE = 0x00000200
    DELETE_SELF = 0x00000400
    MOVE_SELF = 0x00000800
    OPEN_EXEC = 0x00001000
    Q_OVERFLOW = 0x00004000
    FS_ERROR = 0x00008000
    OPEN_PERM = 0x00010000
    ACCESS_PERM = 0x00020000
    OPEN_EXEC_PERM = 0x00040000
    EVENT_ON_CHILD = 0x08000000
    RENAME = 0x10000000
    ONDIR = 0x40000000
    CLOSE = CLOSE_WRITE | CLOSE_NOWRITE
    MOVE = MOVED_FROM | MOVED_TO


_PERM_EVENTS = (FanEvent.OPEN_PERM | FanEvent.ACCESS_PERM | FanEvent.OPEN_EXEC_PERM).value


# --- the system calls, 1:1 -----------------------------------------------------------------------


def fanotify_init(flags: int, event_f_flags: int = os.O_RDONLY | os.O_CLOEXEC) -> int:
    """``fanotify_init(2)``; ``FAN_CLOEXEC|FAN_NONBLOCK`` are *not* added here (1:1 call)."""
    return check(lib.fanotify_init(flags, event_f_flags), "fanotify_init")


def fanotify_mark(
    fanotify_fd: int,
    flags: int,
    mask: int,
    dirfd: int = AT_FDCWD,
    path: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None = None,
) -> None:
    """``fanotify_mark(2)``; ``path=None`` marks ``dirfd`` itself."""
    if not 0 <= mask < 2**64:
        raise ValueError(f"mask must fit in 64 unsigned bits, not {mask:#x}")
    raw = None if path is None else fspath_bytes(path)
    pathname = lib.NULL if raw is None else raw
    filename = None if raw is None else os.fsdecode(raw)
    check(lib.fanotify_mark(fanotify_fd, flags, mask, dirfd, pathname), "fanotify_mark", filename)


@functools.cache
def fanotify_supports(flags: int) -> bool:
    """Whether this kernel (and our privileges) accept ``fanotify_init(flags)``.

    Probed, not read from headers: the headers here (6.1) are older than the kernel.
    """
    try:
        fd = fanotify_init(flags | FanInit.CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


# --- events -------------------------------------------------------------------------------------


class FanotifyOverflowError(Exception):
    """The fanotify queue overflowed (``FAN_Q_OVERFLOW``): later events were dropped."""


class FanotifyEvent:
    """One fanotify event; owns ``fd`` and any pidfd (``close()`` them, or use ``with``)."""

    __slots__ = ("_answer", "_fds", "fd", "mask", "pid", "pidfd", "records")

    def __init__(
        self, mask: int, fd: int, pid: int, records: tuple[InfoRecord, ...], answer: Fanotify | None
    ) -> None:
        self.mask = mask
        self.fd = fd
        self.pid = pid
        self.records = records
        self.pidfd = -1
        for record in records:
            if isinstance(record, PidfdRecord) and record.pidfd >= 0:
                self.pidfd = record.pidfd
        self._fds = [f for f in (fd, self.pidfd) if f >= 0]
        self._answer = answer if mask & _PERM_EVENTS else None

    @property
    def flags(self) -> FanEvent:
        return FanEvent(self.mask)

    @property
    def path(self) -> str | None:
        """The event's file, from ``/proc/self/fd/N`` (``None`` in FID mode or once closed)."""
        if self.fd < 0 or self.fd not in self._fds:
            return None
        return os.readlink(f"/proc/self/fd/{self.fd}")

    def _fid(self, *types: InfoType) -> FidRecord | None:
        for record in self.records:
            if isinstance(record, FidRecord) and record.info_type in types:
                return record
        return None

    @property
    def fid(self) -> FidRecord | None:
        """The object's own file handle (``FAN_REPORT_FID``)."""
        return self._fid(InfoType.FID)

    @property
    def dfid_name(self) -> FidRecord | None:
        """The parent directory handle and the entry name (``FAN_REPORT_DFID_NAME``)."""
        return self._fid(InfoType.DFID_NAME, InfoType.DFID)

    @property
    def name(self) -> bytes | None:
        record = self._fid(InfoType.DFID_NAME)
        return None if record is None else record.name

    @property
    def old_name(self) -> bytes | None:
        """``FAN_RENAME``: the name before (info type 10)."""
        record = self._fid(InfoType.OLD_DFID_NAME)
        return None if record is None else record.name

    @property
    def new_name(self) -> bytes | None:
        """``FAN_RENAME``: the name after (info type 12)."""
        record = self._fid(InfoType.NEW_DFID_NAME)
        return None if record is None else record.name

    @property
    def is_permission(self) -> bool:
        return bool(self.mask & _PERM_EVENTS)

    # butter's property names
    @property
    def access(self) -> bool:
        return bool(self.mask & FanEvent.ACCESS)

    @property
    def access_perm(self) -> bool:
        return bool(self.mask & FanEvent.ACCESS_PERM)

    @property
    def modify(self) -> bool:
        return bool(self.mask & FanEvent.MODIFY)

    @property
    def close_write(self) -> bool:
        return bool(self.mask & FanEvent.CLOSE_WRITE)

    @property
    def close_nowrite(self) -> bool:
        return bool(self.mask & FanEvent.CLOSE_NOWRITE)

    @property
    def close_event(self) -> bool:
        return bool(self.mask & FanEvent.CLOSE)

    @property
    def open(self) -> bool:
        return bool(self.mask & FanEvent.OPEN)

    @property
    def open_perm(self) -> bool:
        return bool(self.mask & FanEvent.OPEN_PERM)

    @property
    def queue_overflow(self) -> bool:
        return bool(self.mask & FanEvent.Q_OVERFLOW)

    @property
    def on_dir(self) -> bool:
        return bool(self.mask & FanEvent.ONDIR)

    @property
    def on_child(self) -> bool:
        return bool(self.mask & FanEvent.EVENT_ON_CHILD)

    def respond(self, allow: bool, *, audit: bool = False) -> None:
        """Answer a permission event: the opener proceeds, or gets ``EPERM``."""
        answer = self._answer
        if answer is None:
            raise ValueError("not a permission event, or already answered")
        if self.fd < 0 or self.fd not in self._fds:
            raise ValueError("the event's fd is closed; it can no longer be answered")
        answer._write_response(
            self.fd, (FAN_ALLOW if allow else FAN_DENY) | (FAN_AUDIT if audit else 0)
        )
        self._answer = None

    def allow(self) -> None:
        self.respond(True)

    def deny(self) -> None:
        self.respond(False)

    def close(self) -> None:
        if self._answer is not None:
            logger.warning("permission event for pid %d closed unanswered: allowing it", self.pid)
            try:
                self.respond(True)
            except (OSError, trio.ClosedResourceError):
                pass  # the group is gone, and with it the wait
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)

    def __enter__(self) -> FanotifyEvent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fds", None):
            try:
                self.close()
            except Exception:  # a finaliser must not raise
                pass

    def __repr__(self) -> str:
        return f"<FanotifyEvent mask={FanEvent(self.mask)!r} fd={self.fd} pid={self.pid}>"


# --- the channel ---------------------------------------------------------------------------


class Fanotify(FdReceiveChannel[FanotifyEvent]):
    """A fanotify group as a ``trio.abc.ReceiveChannel[FanotifyEvent]``.

    ``flags`` are ``FanInit`` bits (the class and ``REPORT_*``); ``CLOEXEC``/``NONBLOCK`` are
    always added.  Most modes need ``CAP_SYS_ADMIN``; ``REPORT_FID`` works unprivileged.
    """

    def __init__(
        self,
        flags: int = FanInit.CLASS_NOTIF,
        event_flags: int = os.O_RDONLY | os.O_CLOEXEC,
        *,
        overflow: Literal["raise", "event"] = "raise",
        read_size: int = 64 * 1024,
    ) -> None:
        if overflow not in ("raise", "event"):
            raise ValueError(f"overflow must be 'raise' or 'event', not {overflow!r}")
        super().__init__(fanotify_init(flags | FanInit.CLOEXEC | FanInit.NONBLOCK, event_flags))
        self._overflow_raises = overflow == "raise"
        self._read_size = read_size

    def mark(
        self,
        path: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None,
        mask: int,
        flags: int = FanMark.ADD,
        *,
        dirfd: int = AT_FDCWD,
    ) -> None:
        """``fanotify_mark`` on this group (``FanMark.MOUNT``/``FILESYSTEM`` in ``flags``)."""
        fanotify_mark(self.fileno(), flags, mask, dirfd, path)

    def add_mark(
        self, path: str | bytes | os.PathLike[str], mask: int, kind: int = FanMark.INODE
    ) -> None:
        self.mark(path, mask, FanMark.ADD | kind)

    def remove_mark(
        self, path: str | bytes | os.PathLike[str], mask: int, kind: int = FanMark.INODE
    ) -> None:
        self.mark(path, mask, FanMark.REMOVE | kind)

    def _write_response(self, fd: int, response: int) -> None:
        try:
            os.write(self.fileno(), FANOTIFY_RESPONSE.pack(fd, response))
        except OSError as exc:
            raise reraise_oserror(exc, "write") from None

    def receive_nowait(self) -> FanotifyEvent:
        event = super().receive_nowait()
        if event.mask & FanEvent.Q_OVERFLOW and self._overflow_raises:
            event.close()
            raise FanotifyOverflowError("fanotify queue overflowed: the kernel dropped events")
        return event

    def _read_batch(self) -> list[FanotifyEvent]:
        try:
            data = os.read(self._holder.fileno(), self._read_size)
        except BlockingIOError:
            raise
        except OSError as exc:
            raise reraise_oserror(exc, "read") from None
        return [
            FanotifyEvent(e.mask, e.fd, e.pid, e.records, self) for e in parse_fanotify_buffer(data)
        ]

    def close(self) -> None:
        # Queued events own fds: close them (unanswered permission events are allowed first).
        for event in self._pending:
            event.close()
        super().close()
