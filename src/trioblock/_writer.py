"""One reply writer per connection: replies never interleave, and ready ones leave together."""

from __future__ import annotations

import trio

from ._plugins._backend import Buffer

_IOV_MAX = 1024  # Linux's limit on buffers per sendmsg


class BrokenConnection(Exception):
    """The reply stream failed; the connection is over."""


class ReplyWriter:
    """Whoever finds the writer idle sends everything queued (with ``sendmsg`` on a plain socket,
    so read data is not copied); others only queue and return.  Queued bytes are bounded: senders
    wait while too much is waiting.  A failed or cancelled send raises BrokenConnection: the
    connection must end, since half a reply may be on the wire."""

    LIMIT = 32 * 1024 * 1024

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._queue: list[Buffer] = []
        self._queued = 0
        self._busy = False
        self._drained = trio.Event()

    async def send(self, parts: list[Buffer]) -> None:
        self._queue.extend(parts)
        self._queued += sum(len(p) for p in parts)
        if self._busy:
            while self._busy and self._queued > self.LIMIT:
                await self._drained.wait()
            await trio.lowlevel.checkpoint()
            return
        self._busy = True
        try:
            while self._queue:
                batch, self._queue, self._queued = self._queue, [], 0
                await self._send_batch(batch)
                self._drained.set()
                self._drained = trio.Event()
        finally:
            self._busy = False
            self._drained.set()

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
