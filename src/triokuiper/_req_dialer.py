"""A function channel's Req side: SP Req dialing eKuiper's Rep listener, in Trio, without nng.

One call is in flight at a time (eKuiper holds a mutex per function), so a function's speed is
its round-trip time.  Through pynng each round trip crossed nng's threads twice on our side
(receive and send), plus two hops between Trio and the worker thread for an ``async def exec``;
here a call is one ``recv`` woken straight from Trio's epoll and one ``send``.

SP Req puts a 32-bit request id with the high bit set in front of each request; the Rep side
sends it back in front of the reply.  :meth:`ReqDialer.request` sends a new request and returns
the reply that carries its id, dropping stale replies to earlier requests as nng's Req does.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
from collections import deque
from typing import Final

import trio
import trio.lowlevel

from . import _sp_dial
from ._sp import REP0, REQ0, FrameDecoder, SPProtocolError, frame

log = logging.getLogger("triokuiper.req")

RECV_SIZE: Final = 64 * 1024
_ID_BIT: Final = 0x8000_0000


class ReqDialer:
    """Requests to the Rep listener at ``path``, one at a time, from one Trio task."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._sock: trio.socket.SocketType | None = None
        self._decoder = FrameDecoder()
        self._received: deque[bytes] = deque()
        self._buffer = bytearray(RECV_SIZE)
        self._next_id = secrets.randbits(31)  # like nng, start at a random id
        self._current_id = b""
        self._waiting = False
        self._closed = False
        self.last_request = -math.inf
        """When the last request went out (``trio.current_time()``)."""

    @property
    def connected(self) -> bool:
        return self._sock is not None

    async def connect(
        self,
        *,
        attempts: int = _sp_dial.CONNECT_ATTEMPTS,
        interval: float = _sp_dial.CONNECT_INTERVAL,
    ) -> None:
        """The first connection, which must succeed now: eKuiper listens before it starts us."""
        self._drop_connection()
        self._use(await _sp_dial.dial(self.path, self._open, attempts=attempts, interval=interval))

    async def redial(self) -> None:
        """Connect again, 100 ms apart doubling to 1 s (a function eKuiper has not asked for
        yet waits here), until it works; :class:`trio.ClosedResourceError` once closed."""
        self._drop_connection()
        self._use(await _sp_dial.redial(self.path, self._open, closed=lambda: self._closed))

    async def _open(self) -> _sp_dial.SPConnection:
        return await _sp_dial.open_sp(self.path, REQ0, REP0)

    def _use(self, conn: _sp_dial.SPConnection) -> None:
        if self._closed:
            conn.sock.close()
            raise trio.ClosedResourceError("the function channel was closed")
        self._sock, self._decoder = conn.sock, conn.decoder
        self._received = deque(conn.received)

    @property
    def waiting(self) -> bool:
        """A request is out and its reply awaited."""
        return self._waiting

    def _new_request(self, body: bytes) -> bytes:
        self._next_id = (self._next_id + 1) & 0x7FFF_FFFF
        self._current_id = (self._next_id | _ID_BIT).to_bytes(4, "big")
        self.last_request = trio.current_time()
        return frame(self._current_id + body)

    async def request(self, body: bytes) -> bytes:
        """Send ``body`` as a new request and return its reply (or the reply to a request that
        :meth:`resend_nowait` put in its place).

        Cancelling abandons the request (a later reply to it is dropped).  A broken connection
        raises ``OSError`` or :class:`SPProtocolError` (call :meth:`redial`); :meth:`close`
        raises :class:`trio.ClosedResourceError`."""
        sock = self._sock
        if sock is None:
            raise trio.ClosedResourceError("not connected")
        raw = sock.fileno()
        try:
            await _write_all(raw, self._new_request(body))
        except BaseException:
            self._drop_connection()  # maybe half a frame on the wire: the stream is unusable
            raise
        received, buffer = self._received, self._buffer
        self._waiting = True
        try:
            while True:
                while received:
                    reply = received.popleft()
                    if reply[:4] == self._current_id:
                        return reply[4:]
                    log.debug("%s: dropped a stale reply", self.path)
                # the reply cannot be there yet: wait first, then read (trio's recv_into would
                # try the read first, one more syscall per call)
                try:
                    await trio.lowlevel.wait_readable(raw)
                except trio.ClosedResourceError:
                    if self._closed:
                        raise
                    raise ConnectionResetError("the connection was dropped") from None
                try:
                    n = os.readv(raw, (buffer,))
                except BlockingIOError:
                    continue
                try:
                    if not n:
                        self._decoder.feed(b"")  # raises for half a frame
                        raise ConnectionResetError("eKuiper closed the function channel")
                    received.extend(self._decoder.feed(memoryview(buffer)[:n]))
                except SPProtocolError as exc:
                    # what came whole before the fault counts, as with nng; then the pipe goes
                    self._drop_connection()
                    for reply in exc.messages:
                        if reply[:4] == self._current_id:
                            return reply[4:]
                    raise
        finally:
            self._waiting = False

    def resend_nowait(self, body: bytes) -> None:
        """Put a new request in place of the one :meth:`request` is waiting on (SP Req's way
        to retry: the old one's reply will be dropped).  Written at once or not at all: if the
        socket has no room for it the connection is dropped and the waiting request raises."""
        sock = self._sock
        if sock is None or not self._waiting:
            return
        data = self._new_request(body)
        try:
            sent = os.write(sock.fileno(), data)  # the socket is non-blocking
        except OSError:
            sent = -1
        if sent != len(data):
            log.info("%s: could not re-send; dropping the connection", self.path)
            self._drop_connection()

    def disconnect(self) -> None:
        """Drop a broken connection (:meth:`redial` makes a new one)."""
        self._drop_connection()

    def _drop_connection(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._received.clear()

    def close(self) -> None:
        """Close the connection; a task inside :meth:`request` gets ClosedResourceError."""
        self._closed = True
        self._drop_connection()


async def _write_all(fd: int, data: bytes) -> None:
    """Write at once when the socket has room (the usual case: no scheduling pass before the
    wait for the reply, which is the caller's checkpoint); wait for room otherwise."""
    view = memoryview(data)
    sent = 0
    while True:
        try:
            sent += os.write(fd, view[sent:])
        except BlockingIOError:
            pass
        if sent == len(view):
            return
        await trio.lowlevel.wait_writable(fd)
