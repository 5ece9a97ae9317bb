"""The ``IN_*`` constants of ``<linux/inotify.h>`` as one ``IntFlag``.

Values are hard-coded (cffi ABI mode has no headers at run time);
``tests/triofd/test_layouts_inotify_fanotify.py`` checks them against the kernel's real events.
"""

from __future__ import annotations

import enum
import os

__all__ = ["IN_CLOEXEC", "IN_NONBLOCK", "InotifyMask", "mask_names", "parse_mask"]


class InotifyMask(enum.IntFlag):
    """Every inotify mask bit: event bits, the bits only the kernel reports, and watch flags."""

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
    # Reported by the kernel whatever the watch mask says:
    UNMOUNT = 0x00002000
    Q_OVERFLOW = 0x00004000
    IGNORED = 0x00008000
    # Flags for inotify_add_watch():
    ONLYDIR = 0x01000000
    DONT_FOLLOW = 0x02000000
    EXCL_UNLINK = 0x04000000
    MASK_CREATE = 0x10000000
    MASK_ADD = 0x20000000
    ISDIR = 0x40000000
    ONESHOT = 0x80000000
    # Combinations from the header:
    CLOSE = CLOSE_WRITE | CLOSE_NOWRITE
    MOVE = MOVED_FROM | MOVED_TO
    ALL_EVENTS = (
        ACCESS
        | MODIFY
        | ATTRIB
        | CLOSE_WRITE
        | CLOSE_NOWRITE
        | OPEN
        | MOVED_FROM
        | MOVED_TO
        | CREATE
        | DELETE
        | DELETE_SELF
        | MOVE_SELF
    )


# inotify_init1() flags are the O_ flags of the same name.
IN_CLOEXEC = os.O_CLOEXEC
IN_NONBLOCK = os.O_NONBLOCK


def parse_mask(text: str) -> InotifyMask:
    """``"create,modify"`` / ``"CREATE|IN_MODIFY"`` / ``"all_events"`` → :class:`InotifyMask`.

    Raises ``ValueError`` naming the unknown word (the CLI's ``-e`` uses this).
    """
    mask = InotifyMask(0)
    for word in text.replace("|", ",").split(","):
        key = word.strip().upper().removeprefix("IN_")
        if not key:
            continue
        try:
            mask |= InotifyMask[key]
        except KeyError:
            known = ", ".join(m.name.lower() for m in InotifyMask if m.name)
            raise ValueError(f"unknown inotify event {word.strip()!r} (known: {known})") from None
    if not mask:
        raise ValueError(f"no inotify events in {text!r}")
    return mask


def mask_names(mask: int) -> list[str]:
    """The names of the single bits set in ``mask``, lowest first (``["CREATE", "ISDIR"]``)."""
    return [m.name for m in _SINGLE_BITS if mask & m.value and m.name]


_SINGLE_BITS = [m for m in InotifyMask if m.value & (m.value - 1) == 0]
