"""File objects: :class:`NFSFile` (binary, pipelined); :class:`NFSTextFile` (text on top) is
in ``_textfile``.

Reads: a sequential reader keeps a *window* of READ calls outstanding ahead of its position
(read-ahead), and a large ``read(n)``/``pread`` sends its READs concurrently; the link stays
busy instead of waiting one round trip per call.

Writes: ``write()`` hands the bytes to a :class:`~trionfs._writeback.WriteBackTracker` and sends
full ``wsize`` WRITEs in the background, up to a window of them outstanding (backpressure: a
writer that outruns the server waits for a slot).  Writes are UNSTABLE; ``flush()``,
``fsync()`` and ``close()`` send the rest, COMMIT, and write again whatever a changed write
verifier says the server lost, so when they return the data is on the server's disk.  The
uncommitted data is bounded: past ``buffer_limit`` bytes a COMMIT releases it.  A WRITE error in
the background is raised by the next call on the file; the data stays held and is sent again
by the next ``flush()``.

Background READ/WRITE tasks run in the mount's nursery (they outlive a cancelled caller, who
finds the result in the cache next time) and are cancelled when the file is closed.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import trio

from ._writeback import PendingWrite, WriteBackTracker

if TYPE_CHECKING:
    from ._context import NFS

__all__ = ["BinaryMode", "NFSFile", "TextMode", "parse_mode"]

BinaryMode = Literal[
    "rb", "wb", "ab", "xb", "r+b", "w+b", "a+b", "x+b", "rb+", "wb+", "ab+", "xb+",
    "br", "bw", "ba", "bx",
]  # fmt: skip
"""Binary ``open()`` modes: the type checker knows they give an :class:`NFSFile`."""
TextMode = Literal[
    "r", "w", "a", "x", "r+", "w+", "a+", "x+", "rt", "wt", "at", "xt", "r+t", "w+t", "a+t",
    "x+t", "rt+", "wt+", "at+", "xt+",
]  # fmt: skip

MAX_FLUSH_ROUNDS = 16
"""A flush that sees the verifier change this many times in a row gives up with EIO."""


class OpenMode:
    """A Python ``open()`` mode string, decoded."""

    __slots__ = ("append", "binary", "create", "exclusive", "readable", "text", "truncate",
                 "writable")  # fmt: skip

    def __init__(self, mode: str) -> None:
        if not isinstance(mode, str):
            raise TypeError(f"mode must be str, not {type(mode).__name__}")
        chars = set(mode)
        if len(chars) != len(mode) or not chars <= set("rwaxbt+") or len(mode) == 0:
            raise ValueError(f"invalid mode: {mode!r}")
        kinds = chars & set("rwax")
        if len(kinds) != 1:
            raise ValueError("must have exactly one of create/read/write/append mode")
        if "b" in chars and "t" in chars:
            raise ValueError("can't have text and binary mode at once")
        kind = kinds.pop()
        plus = "+" in chars
        self.readable = kind == "r" or plus
        self.writable = kind != "r" or plus
        self.append = kind == "a"
        self.create = kind in "wax"
        self.exclusive = kind == "x"
        self.truncate = kind == "w"
        self.binary = "b" in chars
        self.text = not self.binary


def parse_mode(mode: str) -> OpenMode:
    return OpenMode(mode)


class _Chunk:
    """One READ's result, filled in by a background task."""

    __slots__ = ("data", "done", "eof", "error", "scope")

    def __init__(self) -> None:
        self.done = trio.Event()
        # A view into the reply record (pooled receive buffer): copied once, into what
        # ``read()`` returns or into the caller's buffer for ``readinto()``.
        self.data: memoryview | bytes = b""
        self.eof = False
        self.error: BaseException | None = None
        self.scope = trio.CancelScope()


class NFSFile:
    """A binary file on an NFS mount; get one from :meth:`trionfs.NFS.open`.

    Methods mirror :class:`io.BufferedRandom`, as coroutines.  One file object may be shared by
    tasks: calls that move the position are serialized; ``pread``/``pwrite`` are not.
    """

    def __init__(
        self,
        nfs: NFS,
        fh: bytes,
        path: str,
        mode: str,
        *,
        size: int,
        sync: bool = False,
        buffer_limit: int | None = None,
        opened: OpenMode | None = None,
    ) -> None:
        self._nfs = nfs
        self._fh = fh
        self.name = path
        self.mode = mode
        self._mode = OpenMode(mode) if opened is None else opened
        self._sync = sync
        self._pos = 0
        self._size = size  # the server's size as last seen, raised by our own writes
        self._rsize = nfs.rsize
        self._wsize = nfs.wsize
        self._window = nfs.window
        self.buffer_limit = buffer_limit or max(32 << 20, 2 * self._window * self._wsize)
        self._tracker = WriteBackTracker()
        self._write_error: BaseException | None = None
        self._writes_changed = trio.lowlevel.ParkingLot()
        self._chunks: dict[int, _Chunk] = {}
        self._last_read_start = self._last_read_end = -1
        self._lock = trio.Lock()
        self._closed = False
        self._on_close: Callable[[], Awaitable[object]] | None = None  # unmount, if we own it

    # -- properties --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def fh(self) -> bytes:
        """The NFS file handle."""
        return self._fh

    @property
    def rsize(self) -> int:
        """Bytes per READ (a ``readinto`` buffer of this size takes one READ's data)."""
        return self._rsize

    @property
    def wsize(self) -> int:
        """Bytes per WRITE."""
        return self._wsize

    @property
    def tracker(self) -> WriteBackTracker:
        """The write-back state (bytes held, verifier changes seen) — for tests and the curious."""
        return self._tracker

    def readable(self) -> bool:
        return self._mode.readable

    def writable(self) -> bool:
        return self._mode.writable

    def seekable(self) -> bool:
        return True

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("I/O operation on closed file")

    def _check_readable(self) -> None:
        self._check_open()
        if not self._mode.readable:
            raise io.UnsupportedOperation("not readable")

    def _check_writable(self) -> None:
        self._check_open()
        if not self._mode.writable:
            raise io.UnsupportedOperation("not writable")

    def _raise_write_error(self) -> None:
        if self._write_error is not None:
            error, self._write_error = self._write_error, None
            raise error

    # -- context manager ---------------------------------------------------------------------

    async def __aenter__(self) -> NFSFile:
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        await self.aclose()

    def __aiter__(self) -> NFSFile:
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    # -- position ------------------------------------------------------------------------------

    async def tell(self) -> int:
        self._check_open()
        await trio.lowlevel.checkpoint()
        return self._pos

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._check_open()
        async with self._lock:
            if whence == os.SEEK_SET:
                pos = offset
            elif whence == os.SEEK_CUR:
                pos = self._pos + offset
            elif whence == os.SEEK_END:
                pos = await self._current_size() + offset
            else:
                raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
            if pos < 0:
                raise OSError(errno.EINVAL, f"negative seek position {pos}")
            self._pos = pos
            return pos

    async def _current_size(self) -> int:
        attrs = await self._nfs._getattr_fh(self._fh)
        self._size = max(attrs.size, self._tracker.end)
        return self._size

    # -- reading ---------------------------------------------------------------------------

    async def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes from the position (all the rest if negative); b"" at EOF."""
        self._check_readable()
        async with self._lock:
            self._raise_write_error()
            if size is None or size < 0:
                size = max(await self._current_size() - self._pos, 0)
                data = await self._read_at(self._pos, size, sequential=True)
                # The file may have grown meanwhile; read on until a READ says EOF.
                while len(data) == size and size:
                    more = await self._read_at(self._pos + len(data), self._rsize, True)
                    if not more:
                        break
                    data += more
            else:
                data = await self._read_at(self._pos, size, sequential=True)
            self._pos += len(data)
            return data

    async def read1(self, size: int = -1) -> bytes:
        return await self.read(size if size >= 0 else self._rsize)

    async def readinto(self, buffer: bytearray | memoryview) -> int:
        """Read into ``buffer``; the data is copied once, from the READ replies."""
        view = memoryview(buffer).cast("B")
        self._check_readable()
        async with self._lock:
            self._raise_write_error()
            pieces = await self._read_pieces(self._pos, len(view), sequential=True)
            n = 0
            for piece in pieces:
                k = len(piece)
                view[n : n + k] = piece
                n += k
            self._pos += n
            return n

    async def read_views(self, size: int) -> list[memoryview]:
        """Up to ``size`` bytes from the position, like :meth:`read`, but as read-only views
        into the READ replies: no copy at all (a copy tool writes them straight to a local
        file).  ``[]`` at EOF.  A view keeps its reply buffer alive (it is not reused while
        any view of it exists), so hold them only as long as needed."""
        self._check_readable()
        if size < 0:
            raise ValueError("size must not be negative")
        async with self._lock:
            self._raise_write_error()
            pieces = await self._read_pieces(self._pos, size, sequential=True)
            self._pos += sum(len(p) for p in pieces)
            return [p.toreadonly() for p in pieces if p]

    async def readline(self, size: int = -1) -> bytes:
        self._check_readable()
        async with self._lock:
            self._raise_write_error()
            out = bytearray()
            step = 8192
            while size < 0 or len(out) < size:
                want = step if size < 0 else min(step, size - len(out))
                data = await self._read_at(self._pos, want, sequential=True)
                if not data:
                    break
                nl = data.find(b"\n")
                if nl >= 0:
                    data = data[: nl + 1]
                out += data
                self._pos += len(data)
                if nl >= 0:
                    break
            return bytes(out)

    async def readlines(self) -> list[bytes]:
        return [line async for line in self]

    async def pread(self, size: int, offset: int) -> bytes:
        """``size`` bytes at ``offset`` (fewer at EOF) without moving the position."""
        self._check_readable()
        if offset < 0 or size < 0:
            raise OSError(errno.EINVAL, "negative offset or size")
        self._raise_write_error()
        return await self._read_at(offset, size, sequential=False)

    async def _read_at(self, offset: int, size: int, sequential: bool) -> bytes:
        """Read from the server (through the read-ahead cache), with our unsent writes on top."""
        pieces = await self._read_pieces(offset, size, sequential)
        # One copy out of the reply buffers (join of one view = bytes(view)).
        return b"".join(pieces)

    async def _read_pieces(self, offset: int, size: int, sequential: bool) -> list[memoryview]:
        """The bytes at ``[offset, offset+size)`` (fewer at EOF) as views into READ replies,
        with our unsent writes on top."""
        if size == 0:
            await trio.lowlevel.checkpoint()
            return []
        if not self._tracker.clean:
            await self._send_dirty(min_size=1)  # the server should see what it returns
        pieces: list[memoryview] = []
        got = 0
        rsize = self._rsize
        first = offset - offset % rsize
        end = offset + size
        # Sequential: starting where the last read ended, or inside what it returned (readline
        # reads past the newline and comes back).
        readahead = sequential and self._last_read_start <= offset <= self._last_read_end
        # How far ahead READs may go: the request, plus a window beyond it when sequential.
        horizon = end + self._window * rsize if readahead else end
        self._schedule(first, horizon)
        chunk_off = first
        eof = False
        while chunk_off < end:
            chunk = self._chunks.get(chunk_off) or self._start_chunk(chunk_off)
            await chunk.done.wait()
            if chunk.error is not None:
                self._chunks.pop(chunk_off, None)
                raise chunk.error
            while len(chunk.data) < rsize and not chunk.eof:
                # A short READ that is not at EOF: ask for the rest directly.
                rest, more_eof = await self._nfs._read_rpc(
                    self._fh, chunk_off + len(chunk.data), rsize - len(chunk.data)
                )
                chunk.data = bytes(chunk.data) + bytes(rest)
                chunk.eof = more_eof or not rest  # no progress: treat as the end
            data = memoryview(chunk.data)
            lo = max(offset - chunk_off, 0)
            piece = data[lo : end - chunk_off]
            pieces.append(piece)
            got += len(piece)
            if chunk.eof and chunk_off + len(data) <= end:
                eof = True
                break
            chunk_off += rsize
            self._schedule(chunk_off, horizon)  # keep the window full as chunks are consumed
        if readahead:
            # Forget chunks behind the reader: the window moves on.
            for key in [k for k in self._chunks if k + rsize <= offset]:
                self._chunks.pop(key)
        # Bytes we wrote but the server may not show (held in the tracker) win; they can also
        # extend the file past the server's EOF.
        held_end = self._tracker.end
        if held_end > offset:
            out = bytearray(b"".join(pieces))
            if held_end > offset + got and (eof or got < size):
                out += bytes(min(held_end, end) - offset - got)
            self._tracker.read_overlay(offset, out)
            pieces = [memoryview(out)]
            got = len(out)
        if sequential:
            self._last_read_start, self._last_read_end = offset, offset + got
        return pieces

    def _schedule(self, start: int, end: int) -> None:
        """Start READs for missing chunks in ``[start, end)``, keeping at most ``window``
        outstanding for this file."""
        rsize = self._rsize
        outstanding = sum(1 for c in self._chunks.values() if not c.done.is_set())
        key = start - start % rsize
        while key < end and outstanding < self._window:
            if key not in self._chunks:
                if self._known_eof(key):
                    break
                self._start_chunk(key)
                outstanding += 1
            key += rsize

    def _known_eof(self, offset: int) -> bool:
        return any(c.eof and k + len(c.data) <= offset for k, c in self._chunks.items()
                   if c.done.is_set())  # fmt: skip

    def _start_chunk(self, offset: int) -> _Chunk:
        chunk = _Chunk()
        self._chunks[offset] = chunk
        self._nfs._spawn(self._fetch_chunk, chunk, offset)
        return chunk

    async def _fetch_chunk(self, chunk: _Chunk, offset: int) -> None:
        try:
            with chunk.scope:
                chunk.data, chunk.eof = await self._nfs._read_rpc(self._fh, offset, self._rsize)
            if chunk.scope.cancelled_caught:
                chunk.error = trio.ClosedResourceError("the file was closed")
        except Exception as exc:
            chunk.error = exc
        finally:
            chunk.done.set()

    def _drop_read_cache(self) -> None:
        for chunk in self._chunks.values():
            chunk.scope.cancel()
        self._chunks.clear()
        self._last_read_start = self._last_read_end = -1

    # -- writing ---------------------------------------------------------------------------

    async def write(self, data: bytes | bytearray | memoryview) -> int:
        """Write at the position (at the end in append mode); returns ``len(data)``.

        Returns once the bytes are held and full WRITEs are on their way; ``flush()`` or
        ``close()`` make them durable.
        """
        self._check_writable()
        await self._acquire()
        try:
            self._raise_write_error()
            if self._mode.append:
                # The end as we know it (the size at open, grown by our writes), like the
                # Linux client's cached size: no GETATTR per write.
                self._pos = max(self._size, self._tracker.end)
            n = await self._write_at(self._pos, data)
            self._pos += n
            return n
        finally:
            self._lock.release()

    async def _acquire(self) -> None:
        """Take the position lock without the scheduler round ``trio.Lock`` spends when it
        is free: for callers that checkpoint anyway (a small file's write and close each
        cost one round less)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    async def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> int:
        """Write at ``offset`` without moving the position; returns ``len(data)``."""
        self._check_writable()
        if offset < 0:
            raise OSError(errno.EINVAL, "negative offset")
        self._raise_write_error()
        return await self._write_at(offset, data)

    async def writelines(self, lines: Any) -> None:
        for line in lines:
            await self.write(line)

    async def _write_at(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        if n == 0:
            await trio.lowlevel.checkpoint()
            return 0
        self._tracker.add(offset, view)
        self._size = max(self._size, offset + n)
        if self._chunks:
            self._drop_read_cache()
        await self._send_dirty(min_size=self._wsize)
        if self._tracker.buffered > self.buffer_limit:
            await self._commit_round()
        return n

    async def _send_dirty(self, *, min_size: int, sync: bool = False) -> None:
        """Start WRITEs for dirty data (only full ``wsize`` ones unless ``min_size`` is 1),
        waiting for window slots as needed.  ``sync``: ask for FILE_SYNC."""
        if min_size > 1 and self._tracker.dirty_bytes < min_size:
            await trio.lowlevel.checkpoint()  # nothing can be sent yet (a small write)
            return
        while True:
            while self._tracker.inflight >= self._window:
                await self._writes_changed.park()
            w = self._tracker.next_write(self._wsize, min_size=min_size)
            if w is None:
                break
            self._nfs._spawn(self._write_task, w, sync or self._sync)
        await trio.lowlevel.checkpoint()

    async def _write_task(self, w: PendingWrite, sync: bool) -> None:
        try:
            count, stable, verf = await self._nfs._write_rpc(self._fh, w.offset, w.pieces, sync)
        except BaseException as exc:
            self._tracker.write_failed(w.id)
            if isinstance(exc, Exception) and self._write_error is None:
                self._write_error = exc
            if not isinstance(exc, Exception):
                raise
        else:
            try:
                self._tracker.write_done(w.id, count, stable, verf)
            except ValueError as exc:
                self._write_error = OSError(errno.EIO, f"bad WRITE reply: {exc}")
        finally:
            self._writes_changed.unpark_all()

    async def _wait_writes(self) -> None:
        while self._tracker.inflight:
            await self._writes_changed.park()

    async def _commit_round(self) -> None:
        """Send everything, wait for the replies, COMMIT; repeat until nothing is held."""
        for _ in range(MAX_FLUSH_ROUNDS):
            # What is left fits one WRITE and nothing awaits a COMMIT: one FILE_SYNC WRITE is
            # one round trip instead of two (WRITE + COMMIT), as the Linux client does.
            ranges = self._tracker.held_ranges()
            one_write = (
                not self._tracker.inflight
                and not self._tracker.needs_commit
                and len(ranges) == 1
                and ranges[0][1] - ranges[0][0] <= self._wsize
            )
            if one_write:
                # Inline, in this task: no background task to spawn and wait for (this is
                # the whole cost of closing a small new file after its CREATE).
                w = self._tracker.next_write(self._wsize, min_size=1)
                if w is not None:
                    await self._write_task(w, True)
            else:
                await self._send_dirty(min_size=1)
            await self._wait_writes()
            self._raise_write_error()
            if self._tracker.clean:
                return
            if not self._tracker.has_dirty:  # else: a short write, or a WRITE saw a new verifier
                token = self._tracker.begin_commit()
                verf = await self._nfs._commit_rpc(self._fh)
                self._tracker.commit_done(token, verf)
        changes = self._tracker.verifier_changes
        raise OSError(errno.EIO, f"{self.name}: the server kept losing written data "
                                 f"(write verifier changed {changes} times)")  # fmt: skip

    async def flush(self) -> None:
        """Make every byte written so far durable on the server (WRITE + COMMIT, rewriting
        whatever a server restart lost).  On error the data stays held for the next try."""
        self._check_open()
        async with self._lock:
            await self._commit_round()

    async def fsync(self) -> None:
        await self.flush()

    async def truncate(self, size: int | None = None) -> int:
        """Resize the file to ``size`` (default: the position); the position is unchanged."""
        self._check_writable()
        async with self._lock:
            if size is None:
                size = self._pos
            if size < 0:
                raise OSError(errno.EINVAL, "negative size")
            self._raise_write_error()
            # Outstanding WRITEs past the new end would land after the SETATTR.
            await self._wait_writes()
            self._tracker.truncate(size)
            self._drop_read_cache()
            await self._nfs._truncate_fh(self._fh, size)
            self._size = size
            return size

    async def stat(self) -> os.stat_result:
        """The file's attributes (GETATTR); the size includes bytes not yet sent."""
        self._check_open()
        attrs = await self._nfs._getattr_fh(self._fh)
        st = self._nfs._to_stat(attrs)
        held_end = self._tracker.end
        if held_end > st.st_size:
            values = list(st)
            values[6] = held_end
            return os.stat_result(values)
        return st

    async def aclose(self) -> None:
        """Flush (WRITE + COMMIT) and close.  The file is closed even if the flush fails, and
        the error is raised: the data was not stored."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        try:
            if self._mode.writable and not self._tracker.clean:
                await self._acquire()
                try:
                    await self._commit_round()  # sends a call, or raises: a checkpoint
                finally:
                    self._lock.release()
            else:
                await trio.lowlevel.checkpoint()
        finally:
            self._closed = True
            self._drop_read_cache()
            self._nfs._file_closed(self)
            if self._on_close is not None:
                on_close, self._on_close = self._on_close, None
                await on_close()

    close = aclose
