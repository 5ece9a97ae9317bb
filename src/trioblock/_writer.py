"""One reply writer task per connection: replies never interleave, and ready ones leave together.

Executors hand their replies to :meth:`ReplyWriter.send` and go straight back to work while the
writer task sends (so a plugin's next batch overlaps the sending of the last one); everything that
queued up meanwhile leaves in one ``sendmsg`` (scatter-gather on a plain socket: read data is not
copied).  Queued bytes are bounded: senders wait while too much is waiting.  A failed or cancelled
send ends the connection, since half a reply may be on the wire.
"""

from __future__ import annotations

import trio

from ._plugins._backend import Buffer

_IOV_MAX = 1024  # Linux's limit on buffers per sendmsg


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

    async def send(self, parts: list[Buffer]) -> None:
        """Queue a reply; wait only while more than LIMIT bytes are queued."""
        if self._broken is not None:
            raise BrokenConnection(str(self._broken))
        if self._closed:
            raise trio.ClosedResourceError("reply writer closed")
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
            try:
                await self._send_batch(batch)
            except BrokenConnection as exc:
                self._broken = exc
                self._room.set()
                raise

    async def _send_batch(self, batch: list[Buffer]) -> None:
        try:
            stream = self.stream
            if isinstance(stream, trio.SocketStream):
                await _sendmsg_all(stream.socket, batch)
            else:
                await stream.send_all(b"".join(batch))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise BrokenConnection(str(exc)) from exc


async def _sendmsg_all(sock: trio.socket.SocketType, buffers: list[Buffer]) -> None:
    views = [memoryview(b).cast("B") for b in buffers if len(b)]
    first = 0
    while first < len(views):
        sent = await sock.sendmsg(views[first : first + _IOV_MAX])
        while sent:
            n = len(views[first])
            if sent >= n:
                sent -= n
                first += 1
            else:
                views[first] = views[first][sent:]
                sent = 0
