"""READ payloads spliced from the socket straight into a local file.

Copying an NFS file to a local one, the client's CPU goes to two copies of every byte: the
kernel's copy from the socket into the reply buffer, and ``pwrite``'s copy into the page cache
(each ~0.25 ms per MiB here, most of the client's 0.8-0.9 ms/MiB).  ``splice(2)`` moves the
socket's pages into a pipe without copying, and from the pipe into the file, which leaves one
copy.  The reader task does this for READ calls made with a :class:`PayloadSink`: when such a
reply's head (RPC header, status, attributes, count, eof, length) has arrived, the rest of its
data goes socket → pipe → file at the right offset, and only the head and whatever came
before splicing began (one small read's worth) land in the reply record.  The caller writes
those few bytes itself (:meth:`PayloadSink.in_record_ranges`).

Safety: the reader checks before every splice that the call is still waiting (a cancelled
caller may close its file at once), and drains the pipe completely before it awaits anything,
so no byte is ever left between socket and file.  A file error stops splicing for that reply
(the rest arrives in the record) and is raised to the caller.  A write that blocks longer than
:data:`SLOW_WRITE` (a disk throttling dirty pages) turns splicing off for the whole copy, since
it runs in the event loop.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable
from typing import Final

log = logging.getLogger("trionfs.splice")

PIPE_SIZE: Final = 1 << 20
"""Bytes per socket → pipe → file round; the pipe is grown to this (Linux's default limit)."""
SLOW_WRITE: Final = 0.05
_F_SETPIPE_SZ: Final = 1031
WOULD_BLOCK: Final = -1

Locate = Callable[[memoryview], "tuple[int, int] | None"]


class SpliceTarget:
    """The local file of one copy, shared by its READ calls."""

    __slots__ = ("enabled", "fd")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.enabled = True


class PayloadSink:
    """One READ call's data destination: ``target.fd`` at ``fd_offset``.

    ``locate(record_head)`` gives ``(start, length)`` of the data in the reply record once the
    head is in, or None.  After the call, :meth:`in_record_ranges` says which parts of the data
    are in the record (the rest is in the file); :attr:`error` is a file error, if any.
    """

    __slots__ = ("error", "fd_offset", "locate", "record_key", "span", "spliced", "target")

    def __init__(self, target: SpliceTarget, fd_offset: int, locate: Locate) -> None:
        self.target = target
        self.fd_offset = fd_offset
        self.locate = locate
        self.error: OSError | None = None
        self.record_key: tuple[object, int] | None = None
        self.span: tuple[int, int] | None = None  # (start, end) of the data in the record
        self.spliced: tuple[int, int] | None = None  # record positions that went to the file

    def in_record_ranges(self, length: int) -> list[tuple[int, int]]:
        """``(start, end)`` ranges of the data (0-based, ``length`` bytes) that are in the
        reply record, not in the file."""
        if self.span is None or self.spliced is None:
            return [(0, length)] if length else []
        start = self.span[0]
        first, last = self.spliced[0] - start, self.spliced[1] - start
        return [(a, b) for a, b in ((0, first), (last, length)) if b > a]


class Splicer:
    """The reader task's side: one pipe per connection's reader, created on first use."""

    __slots__ = ("_r", "_w")

    def __init__(self) -> None:
        self._r = self._w = -1

    def _pipe(self) -> tuple[int, int]:
        if self._r < 0:
            r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            try:
                fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:  # a lower pipe-max-size: the default 64 KiB works too, slower
                pass
            self._r, self._w = r, w
        return self._r, self._w

    def close(self) -> None:
        for fd in (self._r, self._w):
            if fd >= 0:
                os.close(fd)
        self._r = self._w = -1

    def step(self, sock: int, sink: PayloadSink, position: int, available: int) -> int | None:
        """Splice the next piece of ``sink``'s data, which starts at record ``position`` with
        ``available`` bytes left in the fragment: the bytes moved, :data:`WOULD_BLOCK`, 0 at
        the end of the stream, or None when this piece is not for splicing."""
        span = sink.span
        if span is None or not span[0] <= position < span[1] or not sink.target.enabled:
            return None
        if sink.error is not None:
            return None
        try:
            r, w = self._pipe()
        except OSError as exc:  # out of fds: this copy goes the ordinary way
            log.debug("no pipe for splicing (%s)", exc)
            sink.target.enabled = False
            return None
        want = min(span[1] - position, available, PIPE_SIZE)
        try:
            moved = os.splice(sock, w, want, flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
        except BlockingIOError:
            return WOULD_BLOCK
        if moved == 0:
            return 0
        at = sink.fd_offset + (position - span[0])
        began = time.monotonic()
        left = moved
        try:
            while left:
                left -= os.splice(r, sink.target.fd, left, offset_dst=at + moved - left,
                                  flags=os.SPLICE_F_MOVE)  # fmt: skip
        except OSError as exc:
            sink.error = exc
            self._discard(r, left)
        if time.monotonic() - began > SLOW_WRITE and sink.target.enabled:
            log.debug("a local write took over %ss: no more splicing for this copy", SLOW_WRITE)
            sink.target.enabled = False
        first = position if sink.spliced is None else sink.spliced[0]
        sink.spliced = (first, position + moved)
        return moved

    @staticmethod
    def _discard(r: int, left: int) -> None:
        """Empty the pipe after a failed file write: these bytes belong to a failed reply."""
        while left:
            try:
                left -= len(os.read(r, min(left, PIPE_SIZE)))
            except BlockingIOError:  # pragma: no cover - the pipe holds exactly ``left``
                return
