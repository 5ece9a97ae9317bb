"""Copy an NFS file into a local regular file with READ data spliced from the socket.

What ``trionfs cp`` runs from NFS to a local file (when the source is not sparse: spliced data
cannot be checked for all-zero blocks, so a sparse source takes the hole-keeping path).  A
window of READs is kept outstanding, each with a :class:`PayloadSink` aiming its data at the
right offset of the local file; see ``_payload_sink`` for what the reader task does with it.
The few bytes of each reply that arrive before splicing begins are written with ``pwrite``
(in a worker thread once local writes proved slow).  A big copy also reserves the local file's
blocks ahead of its READs in a worker thread (``_reserve``), so that the writes in the event
loop only copy.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ._nfs3 import read3_payload_span
from ._payload_sink import PayloadSink, SpliceTarget
from ._reserve import Reserver

if TYPE_CHECKING:
    from ._file import NFSFile

Progress = Callable[[int], None]


class _Copy:
    __slots__ = ("done_to", "eof_at", "finished", "progress", "start", "target")

    def __init__(self, start: int, target: SpliceTarget, progress: Progress | None) -> None:
        self.start = start
        self.target = target
        self.progress = progress
        self.eof_at = math.inf
        self.done_to = start  # everything before this offset is in the local file
        self.finished: dict[int, int] = {}  # chunks done out of order: start -> end

    def chunk_done(self, start: int, end: int) -> None:
        self.finished[start] = end
        advanced = False
        while self.done_to in self.finished:
            self.done_to = self.finished.pop(self.done_to)
            advanced = True
        if advanced and self.progress is not None:
            self.progress(self.done_to - self.start)


async def splice_copy(f: NFSFile, fd: int, progress: Progress | None = None) -> int:
    """Copy ``f`` from its position to its end into ``fd`` from offset 0; the bytes copied.
    ``fd`` must be a regular file open for writing.  ``f``'s position moves past what is in
    the local file, also when the copy fails or is cancelled (``progress`` gets the same
    count: the local file holds exactly that prefix, whatever else arrived out of order)."""
    f._check_readable()
    async with f._lock:
        f._raise_write_error()
        copy = _Copy(f._pos, SpliceTarget(fd), progress)
        window = trio.Semaphore(f._window)
        # Reserve the local blocks ahead of the data (see ``_reserve``); local offsets are
        # NFS offsets minus ``copy.start``.
        reserver = Reserver.for_copy(fd, 0, f._size - copy.start)
        try:
            async with trio.open_nursery() as nursery:
                if reserver is not None:
                    nursery.start_soon(reserver.run)
                offset = copy.start
                while offset < copy.eof_at:
                    await window.acquire()
                    if offset >= copy.eof_at:
                        window.release()
                        break
                    if reserver is not None:
                        reserver.want(offset - copy.start + f._rsize)
                    nursery.start_soon(_read_chunk, f, copy, offset, window)
                    offset += f._rsize
                if reserver is not None:
                    reserver.finish()
        except BaseExceptionGroup as group:
            # the first failure cancels the other READs; several may fail alike (one local
            # file, one server): the caller gets the first, as from a sequential copy
            first = group.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        finally:
            f._pos = copy.done_to
            if reserver is not None:
                reserver.release()
        return copy.done_to - copy.start


async def _read_chunk(f: NFSFile, copy: _Copy, offset: int, window: trio.Semaphore) -> None:
    try:
        pos, end = offset, offset + f._rsize
        while pos < end:
            sink = PayloadSink(copy.target, pos - copy.start, read3_payload_span)
            data, eof = await f._nfs._read_rpc_to_file(f._fh, pos, end - pos, sink)
            if sink.error is not None:
                raise sink.error
            ranges = sink.in_record_ranges(len(data))
            if ranges:
                await _write_ranges(copy, data, ranges, pos - copy.start)
            pos += len(data)
            if eof or not data:  # a READ of nothing without eof would loop: take it as the end
                copy.eof_at = min(copy.eof_at, pos)
                break
        copy.chunk_done(offset, pos)
    finally:
        window.release()


async def _write_ranges(
    copy: _Copy, data: memoryview, ranges: list[tuple[int, int]], at: int
) -> None:
    if copy.target.enabled:  # local writes are fast: no thread hop for a few bytes
        pwrite_ranges(copy.target.fd, data, ranges, at)
        await trio.lowlevel.checkpoint()
    else:
        await trio.to_thread.run_sync(pwrite_ranges, copy.target.fd, data, ranges, at)


def pwrite_ranges(fd: int, data: memoryview, ranges: list[tuple[int, int]], at: int) -> None:
    """Write ``data[start:end]`` at ``at + start`` for each range (blocking; short writes
    continued)."""
    for start, end in ranges:
        done = start
        while done < end:
            done += os.pwrite(fd, data[done:end], at + done)
