"""One reply writer task per connection: replies never interleave, and ready ones leave together.

Executors hand their replies to :meth:`ReplyWriter.send` and go straight back to work while the
writer task sends (so a plugin's next batch overlaps the sending of the last one); everything that
queued up meanwhile leaves in one ``sendmsg`` (scatter-gather on a plain socket: read data is not
copied).  Queued bytes are bounded: senders wait while too much is waiting.  A failed or cancelled
send ends the connection, since half a reply may be on the wire.  Executors that call a plugin
inline use :meth:`ReplyWriter.send_nowait`, which writes a large reply at once when nothing waits
before it.
"""

from __future__ import annotations

import os

import trio

from ._plugins._backend import Buffer
from ._plugins._buffers import recycle

_IOV_MAX = 1024  # Linux's limit on buffers per sendmsg
# Replies this large are written as soon as they are made (see ReplyWriter.send_nowait); smaller
# ones wait for the task, which sends all that queued up in one call: a system call per 4 KiB
# reply would cost more than the cache saves.
WRITE_AT_ONCE = 64 * 1024


class BrokenConnection(Exception):
    """The reply stream failed; the connection is over."""


class ReplyWriter:
    LIMIT = 32 * 1024 * 1024

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._queue: list[Buffer] = []
        self._queued = 0
        self._closed = False
        self._broken: BrokenConnection | None = None
        self._wake = trio.Event()
        self._room = trio.Event()
        self._sending = False  # the task is in the middle of a batch
        # Replies may be written at once, without the task, only on a plain socket.
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1

    def send_nowait(self, parts: list[Buffer]) -> bool:
        """Queue a reply without waiting (callers then ``await send([])`` for room); return
        whether it was written to the socket (wholly or in part) rather than only queued.

        A large reply (:data:`WRITE_AT_ONCE`) is written at once when nothing is queued or being
        sent: the caller has just run the plugin, so its data is still in the CPU cache, and
        the kernel's copy into the socket is cheaper than in a later batch.  What the socket
        does not take now is queued for the task, in order.
        """
        if self._broken is not None:
            raise BrokenConnection(str(self._broken))
        if self._closed:
            raise trio.ClosedResourceError("reply writer closed")
        size = sum(len(p) for p in parts)
        wrote = False
        if size >= WRITE_AT_ONCE and self._fd >= 0 and not self._queue and not self._sending:
            wrote = True
            parts = _write_now(self._fd, parts)
            if not parts:
                return wrote
            size = sum(len(p) for p in parts)
        self._queue.extend(parts)
        self._queued += size
        self._wake.set()
        return wrote

    async def send(self, parts: list[Buffer]) -> None:
        """Queue a reply; wait only while more than LIMIT bytes are queued."""
        if self._broken is not None:
            raise BrokenConnection(str(self._broken))
        if self._closed:
            raise trio.ClosedResourceError("reply writer closed")
        if parts:
            self._queue.extend(parts)
            self._queued += sum(len(p) for p in parts)
            self._wake.set()
        if self._queued <= self.LIMIT:
            await trio.lowlevel.checkpoint()
            return
        while self._queued > self.LIMIT and self._broken is None:
            await self._room.wait()  # only the writer task replaces this event, after setting it
        if self._broken is not None:
            raise BrokenConnection(str(self._broken))

    def close(self) -> None:
        """No more replies: the task sends what is queued and returns."""
        self._closed = True
        self._wake.set()

    async def run(self) -> None:
        while True:
            while not self._queue:
                if self._closed:
                    return
                self._wake = trio.Event()
                await self._wake.wait()
            batch, self._queue, self._queued = self._queue, [], 0
            self._room.set()
            self._room = trio.Event()
            self._sending = True
            try:
                await self._send_batch(batch)
            except BrokenConnection as exc:
                self._broken = exc
                self._room.set()
                raise
            finally:
                self._sending = False

    async def _send_batch(self, batch: list[Buffer]) -> None:
        try:
            stream = self.stream
            if isinstance(stream, trio.SocketStream):
                await _sendmsg_all(stream.socket, batch)
            else:
                data = b"".join(batch)
                recycle(batch)  # copied: the pooled read buffers are free again
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise BrokenConnection(str(exc)) from exc


async def _sendmsg_all(sock: trio.socket.SocketType, buffers: list[Buffer]) -> None:
    """Send ``buffers`` in as few ``sendmsg`` calls as the socket allows.

    Each buffer the kernel has taken whole goes back to its pool, if pooled, at once: a large
    batch leaves in several calls, and the client sends new requests as the first replies arrive.
    """
    views = [memoryview(b).cast("B") for b in buffers if len(b)]
    first = 0
    while first < len(views):
        sent = await sock.sendmsg(views[first : first + _IOV_MAX])
        taken = first
        while sent:
            n = len(views[first])
            if sent >= n:
                sent -= n
                first += 1
            else:
                views[first] = views[first][sent:]
                sent = 0
        recycle(views[taken:first])


def _write_now(fd: int, parts: list[Buffer]) -> list[Buffer]:
    """Write what the (non-blocking) socket takes now; return the rest, pooled buffers that
    left whole given back.  Errors are left for the writer task to meet and report."""
    views = [memoryview(b).cast("B") for b in parts if len(b)]
    try:
        sent = os.writev(fd, views)
    except OSError:  # full (BlockingIOError), or broken: the task finds out
        return parts
    first = 0
    while first < len(views) and sent >= len(views[first]):
        sent -= len(views[first])
        first += 1
    recycle(views[:first])
    if first < len(views) and sent:
        views[first] = views[first][sent:]
    return list(views[first:])
