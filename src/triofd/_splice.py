"""splice / tee / vmsplice: move bytes between fds inside the kernel, driven by Trio.

``splice`` needs a pipe on one side, so file <-> socket transfers go through a :class:`SplicePipe`
(file -> pipe -> socket): the data never enters Python.  Waiting rules:

* A regular file (or block device) is never waited on: ``epoll`` refuses it (``EPERM``) and it
  is always "ready" -- a splice from or to it may block on disk I/O, never on readiness.
* A pipe or socket side that returns ``EAGAIN`` is waited on with ``wait_readable`` /
  ``wait_writable``.  ``SPLICE_F_NONBLOCK`` makes the pipe side non-blocking; the socket side is
  non-blocking because Trio sockets are.  Waiting on a Trio socket here must not overlap another
  task sending (or receiving) on it: Trio raises ``BusyResourceError`` for two waiters.

Offsets: with ``offset=None`` the file's own position is used and advanced (like ``read``);
with an explicit offset the file position is left alone (like ``pread``), so several transfers
may share one file.  butter passed the Python integers where the kernel wanted pointers, hence
``EFAULT``; here the offsets go through an ``int64_t`` cell.
"""

from __future__ import annotations

import array
import enum
import fcntl
import os
import select
import stat
import termios
from collections import deque
from collections.abc import Sequence
from typing import Protocol, TypeAlias

import trio

from ._errors import raise_errno, reraise_oserror
from ._fd import FdHolder
from ._lib import ffi, lib

__all__ = [
    "SpliceFlag",
    "SplicePipe",
    "splice",
    "splice_async",
    "splice_file_to_socket",
    "splice_socket_to_file",
    "tee",
    "vmsplice",
]


Buffer: TypeAlias = bytes | bytearray | memoryview


class SpliceFlag(enum.IntFlag):
    MOVE = 1
    NONBLOCK = 2
    MORE = 4
    GIFT = 8


_IOV_MAX = 1024
_MOVE_NONBLOCK = int(SpliceFlag.MOVE | SpliceFlag.NONBLOCK)
_MORE = int(SpliceFlag.MORE)
_YIELD_EVERY = 64  # transfer rounds between forced checkpoints when nothing blocks
F_SETPIPE_SZ = 1031  # fcntl constants Python 3.11 exposes only on some builds
F_GETPIPE_SZ = 1032


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


FdLike = int | _HasFileno | trio.SocketStream


def _fd(obj: FdLike) -> int:
    if isinstance(obj, trio.SocketStream):
        return obj.socket.fileno()
    if isinstance(obj, int) and not isinstance(obj, bool):
        return obj
    fileno = getattr(obj, "fileno", None)
    if fileno is None:
        raise TypeError(
            f"expected an fd, an object with fileno() or a trio.SocketStream, not {obj!r}"
        )
    return int(fileno())


def _check_count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"count must be an int, not {type(count).__name__}")
    if count < 0:
        raise ValueError(f"count must be >= 0, not {count}")
    return count


# --- the system calls, 1:1 -------------------------------------------------------------------


def _check_offset(offset: int | None) -> None:
    if offset is None:
        return
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(f"offset must be an int or None, not {type(offset).__name__}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, not {offset}")


def splice(
    fd_in: int,
    fd_out: int,
    count: int,
    *,
    offset_in: int | None = None,
    offset_out: int | None = None,
    flags: int = 0,
) -> int:
    """``splice(2)``: bytes moved (0 = end of input); ``BlockingIOError`` when it would block.

    ``os.splice`` underneath (a C call, several times cheaper than one through cffi's ABI
    mode), with the errors mapped like every other triofd call.
    """
    _check_offset(offset_in)
    _check_offset(offset_out)
    try:
        return os.splice(fd_in, fd_out, _check_count(count), offset_in, offset_out, flags)
    except BlockingIOError:
        raise
    except OSError as exc:
        raise reraise_oserror(exc, "splice") from None


def tee(fd_in: int, fd_out: int, count: int, flags: int = 0) -> int:
    """``tee(2)``: duplicate up to ``count`` bytes from pipe ``fd_in`` into pipe ``fd_out``."""
    n = lib.tee(int(fd_in), int(fd_out), _check_count(count), int(flags))
    if n == -1:
        raise_errno(ffi.errno, "tee")
    return int(n)


def vmsplice(fd: int, buffers: Sequence[Buffer], flags: int = 0) -> int:
    """``vmsplice(2)`` of Python buffers into pipe ``fd``; returns the bytes queued.

    Without ``SPLICE_F_GIFT`` (never used here) the pipe may reference the buffers' pages
    rather than copy them: keep the buffers alive and unmodified until the reader has consumed
    the data (:meth:`SplicePipe.vmsplice` does that bookkeeping for you).
    """
    if not 0 < len(buffers) <= _IOV_MAX:
        raise ValueError(f"give 1..{_IOV_MAX} buffers, not {len(buffers)}")
    iov = ffi.new("struct iovec[]", len(buffers))
    keep = []
    for i, buf in enumerate(buffers):
        cbuf = ffi.from_buffer(buf)
        keep.append(cbuf)
        iov[i].iov_base = cbuf
        iov[i].iov_len = len(cbuf)
    n = lib.vmsplice(int(fd), iov, len(buffers), int(flags))
    if n == -1:
        raise_errno(ffi.errno, "vmsplice")
    return int(n)


# --- waiting ---------------------------------------------------------------------------------


def _waitable(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return not (stat.S_ISREG(mode) or stat.S_ISBLK(mode))


def _ready(fd: int, event: int) -> bool:
    poller = select.poll()
    poller.register(fd, event)
    return bool(poller.poll(0))


async def _wait_either(fd_in: int, fd_out: int) -> None:
    """Wait on whichever side made splice return EAGAIN (a full output is checked first)."""
    if _waitable(fd_out) and not _ready(fd_out, select.POLLOUT):
        await trio.lowlevel.wait_writable(fd_out)
    elif _waitable(fd_in):
        await trio.lowlevel.wait_readable(fd_in)
    else:  # pragma: no cover - two regular files never return EAGAIN
        await trio.lowlevel.checkpoint()


async def splice_async(
    fd_in: FdLike,
    fd_out: FdLike,
    count: int,
    *,
    offset_in: int | None = None,
    offset_out: int | None = None,
    flags: int = SpliceFlag.MOVE,
) -> int:
    """One ``splice`` of up to ``count`` bytes, waiting while the pipe/socket side is not ready.

    Returns the bytes moved (possibly fewer than ``count``; 0 = end of input).
    """
    src, dst = _fd(fd_in), _fd(fd_out)
    await trio.lowlevel.checkpoint_if_cancelled()
    while True:
        try:
            n = splice(
                src,
                dst,
                count,
                offset_in=offset_in,
                offset_out=offset_out,
                flags=flags | SpliceFlag.NONBLOCK,
            )
        except BlockingIOError:
            await _wait_either(src, dst)
            continue
        await trio.lowlevel.cancel_shielded_checkpoint()
        return n


# --- a pipe to splice through ----------------------------------------------------------------


class SplicePipe(trio.abc.AsyncResource):
    """A non-blocking, close-on-exec pipe sized for splicing (1 MiB if the system allows).

    Reuse one across many transfers to save three system calls each.  ``read_fd``/``write_fd``
    are the two ends.
    """

    def __init__(self, size: int = 1 << 20) -> None:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._r, self._w = FdHolder(r), FdHolder(w)
        try:
            fcntl.fcntl(w, F_SETPIPE_SZ, size)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size for this user: keep the default
        self.size: int = fcntl.fcntl(w, F_GETPIPE_SZ)
        # vmsplice'd buffers still referenced by the pipe: (end position, buffer)
        self._gifts: deque[tuple[int, Buffer]] = deque()
        self._written = 0

    @property
    def read_fd(self) -> int:
        return self._r.fileno()

    @property
    def write_fd(self) -> int:
        return self._w.fileno()

    def buffered(self) -> int:
        """Bytes in the pipe not yet read (``FIONREAD``)."""
        out = array.array("i", [0])
        fcntl.ioctl(self.read_fd, termios.FIONREAD, out, True)
        return out[0]

    def _release_consumed(self) -> None:
        consumed = self._written - self.buffered()
        while self._gifts and self._gifts[0][0] <= consumed:
            self._gifts.popleft()

    async def vmsplice(self, data: Buffer) -> None:
        """Queue all of ``data`` into the pipe without copying, keeping it alive until read."""
        view = memoryview(data).cast("B")
        await trio.lowlevel.checkpoint_if_cancelled()
        done = 0
        while done < len(view):
            self._release_consumed()
            try:
                n = vmsplice(self.write_fd, [view[done:]], SpliceFlag.NONBLOCK)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.write_fd)
                continue
            done += n
            self._written += n
        self._gifts.append((self._written, data))
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        self._r.close()
        self._w.close()
        self._gifts.clear()

    def __repr__(self) -> str:
        if self._r.closed:
            return "<triofd.SplicePipe closed>"
        return f"<triofd.SplicePipe r={self._r.fd} w={self._w.fd} size={self.size}>"


async def _through_pipe(
    src: int,
    dst: int,
    count: int,
    pipe: SplicePipe,
    *,
    offset_in: int | None,
    offset_out: int | None,
) -> int:
    """src -> pipe -> dst, refilling the pipe as it drains; waits only on a pipe/socket side.

    A tight loop of raw non-blocking splices: the waits are the checkpoints (plus one every
    ``_YIELD_EVERY`` rounds that never had to wait), which is what keeps this at sendfile speed.
    """
    src_waits, dst_waits = _waitable(src), _waitable(dst)
    r, w = pipe.read_fd, pipe.write_fd
    moved = in_pipe = rounds = 0
    eof = False
    await trio.lowlevel.checkpoint_if_cancelled()
    while moved < count:
        rounds += 1
        if rounds % _YIELD_EVERY == 0:
            await trio.lowlevel.checkpoint()
        room = min(pipe.size - in_pipe, count - moved - in_pipe)
        # Top up only a half-empty pipe: fewer system calls per byte forwarded.
        if not eof and room > 0 and in_pipe <= pipe.size // 2:
            try:
                got = os.splice(
                    src,
                    w,
                    room,
                    None if offset_in is None else offset_in + moved + in_pipe,
                    None,
                    _MOVE_NONBLOCK,
                )
            except BlockingIOError:
                if in_pipe == 0:  # nothing to forward: the source isn't ready
                    if src_waits:
                        await trio.lowlevel.wait_readable(src)
                    else:  # pragma: no cover - we drain the pipe ourselves, so never full
                        await trio.lowlevel.wait_writable(w)
                    continue
            except OSError as exc:
                raise reraise_oserror(exc, "splice") from None
            else:
                eof = got == 0
                in_pipe += got
        if in_pipe == 0:
            break  # end of input
        more = _MORE if not eof and moved + in_pipe < count else 0
        try:
            sent = os.splice(
                r,
                dst,
                in_pipe,
                None,
                None if offset_out is None else offset_out + moved,
                _MOVE_NONBLOCK | more,
            )
        except BlockingIOError:
            if dst_waits:
                await trio.lowlevel.wait_writable(dst)
            else:  # pragma: no cover - a regular file never says EAGAIN
                await trio.lowlevel.checkpoint()
            continue
        except OSError as exc:
            raise reraise_oserror(exc, "splice") from None
        moved += sent
        in_pipe -= sent
    await trio.lowlevel.cancel_shielded_checkpoint()
    return moved


async def splice_file_to_socket(
    file: FdLike,
    sock: FdLike,
    count: int,
    offset: int | None = 0,
    *,
    pipe: SplicePipe | None = None,
) -> int:
    """Send ``count`` bytes of ``file`` from ``offset`` to ``sock`` without copying to Python.

    ``offset=None`` reads from (and advances) the file position.  Returns the bytes sent: fewer
    than ``count`` only if the file ended.  If cancelled, an unknown prefix has been sent (as with
    a cancelled ``send_all``): don't use the connection for framed data afterwards.
    """
    _check_count(count)
    if pipe is not None:
        return await _through_pipe(
            _fd(file), _fd(sock), count, pipe, offset_in=offset, offset_out=None
        )
    async with SplicePipe() as own:
        return await _through_pipe(
            _fd(file), _fd(sock), count, own, offset_in=offset, offset_out=None
        )


async def splice_socket_to_file(
    sock: FdLike,
    file: FdLike,
    count: int,
    offset: int | None = 0,
    *,
    pipe: SplicePipe | None = None,
) -> int:
    """Receive up to ``count`` bytes from ``sock`` into ``file`` at ``offset``; stops at EOF."""
    _check_count(count)
    if pipe is not None:
        return await _through_pipe(
            _fd(sock), _fd(file), count, pipe, offset_in=None, offset_out=offset
        )
    async with SplicePipe() as own:
        return await _through_pipe(
            _fd(sock), _fd(file), count, own, offset_in=None, offset_out=offset
        )
