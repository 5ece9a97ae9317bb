"""A source's data channel: SP Push dialing eKuiper's Pull listener, in Trio, without nng.

Rows are framed (:mod:`triokuiper._sp`) into a pending list as they are emitted; one writer
task sends everything pending with one ``send`` when it gets the CPU, so a busy source pays a
syscall per batch, not per row, and no nng thread handoff at all (nng's Push, driven from a
worker thread, cost ~8 us of CPU per row plus the handoff).  At most :data:`BUFFER` rows wait;
beyond that ``send`` waits (backpressure).  A wait longer than ``send_timeout`` is reported
once per stall through ``on_stall`` and never drops the row: eKuiper may pause a rule for long.

If eKuiper's reader goes away the writer redials (100 ms, doubling to 1 s) and carries on; the
batch that was being written when the connection broke may be partly delivered and is not sent
again (nng's Push loses it too), and the count is logged.

Sources written for the official SDK emit from their own thread: :meth:`PushDialer.send_blocking`
is their blocking ``send``, raising ``pynng.Timeout`` after ``send_timeout`` and ``pynng.Closed``
once closed, like the pynng socket it replaces.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

import pynng
import trio
import trio.lowlevel

from . import _sp_dial
from ._sp import PULL0, PUSH0, frame

log = logging.getLogger("triokuiper.push")

BUFFER: Final = 256
"""Rows emitted and not yet handed to the kernel before ``send`` waits."""
YIELD_EVERY: Final = 32


class PushDialer:
    """Push rows to a Pull listener at ``path``; :meth:`connect` first, :meth:`run` in a task."""

    def __init__(
        self,
        path: str,
        *,
        send_timeout: float | None = None,
        on_stall: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self._send_timeout = send_timeout
        self._on_stall = on_stall
        self._sock: trio.socket.SocketType | None = None
        self._lock = threading.Lock()
        self._room_for_threads = threading.Condition(self._lock)
        self._pending: list[bytes] = []
        self._writer_idle: trio.Event | None = None
        self._room: trio.Event | None = None  # Trio emitters waiting for room
        self._finishing = False
        self._closed = False
        self._ops = 0
        self._token = trio.lowlevel.current_trio_token()

    # -- connecting ---------------------------------------------------------------------------

    async def connect(
        self,
        *,
        attempts: int = _sp_dial.CONNECT_ATTEMPTS,
        interval: float = _sp_dial.CONNECT_INTERVAL,
    ) -> None:
        """The first connection, which must succeed now: eKuiper listens before it starts us."""
        self._sock = await _sp_dial.dial(
            self.path, self._connect_once, attempts=attempts, interval=interval
        )

    async def _connect_once(self) -> trio.socket.SocketType:
        return (await _sp_dial.open_sp(self.path, PUSH0, PULL0)).sock  # Pull sends nothing more

    async def _redial(self) -> None:
        try:
            sock = await _sp_dial.redial(self.path, self._connect_once, closed=lambda: self._closed)
        except trio.ClosedResourceError:
            return
        if self._closed:
            sock.close()
            return
        self._sock = sock
        log.info("%s: eKuiper's reader is back", self.path)

    # -- sending ------------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """Queue one row (from the Trio thread); waits while :data:`BUFFER` rows are pending."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if len(self._pending) >= BUFFER or self._closed:
            await self._wait_for_room()
        message = frame(data)
        with self._lock:
            self._pending.append(message)
            idle, self._writer_idle = self._writer_idle, None
        if idle is not None:
            idle.set()
        self._ops += 1
        if self._ops >= YIELD_EVERY:
            self._ops = 0
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def _wait_for_room(self) -> None:
        self._ops = 0
        stalled = False
        while True:
            if self._closed:
                # closed by the cancellation of our own scope: let the Cancelled through, so the
                # source ends as cancelled, not as failed
                await trio.lowlevel.checkpoint_if_cancelled()
                raise pynng.Closed("the data channel was closed", 7)  # NNG_ECLOSED
            if len(self._pending) < BUFFER:
                return
            if self._room is None:
                self._room = trio.Event()
            room = self._room
            if stalled or self._send_timeout is None:
                await room.wait()
                continue
            with trio.move_on_after(self._send_timeout):
                await room.wait()
                continue
            stalled = True
            if self._on_stall is not None:
                self._on_stall()

    def send_blocking(self, data: bytes) -> None:
        """Queue one row from a worker thread: ``pynng.Timeout`` after ``send_timeout`` without
        room (the row is not queued), ``pynng.Closed`` once closed."""
        message = frame(data)
        with self._lock:
            while len(self._pending) >= BUFFER and not self._closed:
                if not self._room_for_threads.wait(self._send_timeout):
                    raise pynng.Timeout("eKuiper is not reading", 5)  # NNG_ETIMEDOUT
            if self._closed:
                raise pynng.Closed("the data channel was closed", 7)
            self._pending.append(message)
            idle, self._writer_idle = self._writer_idle, None
        if idle is not None:
            try:
                self._token.run_sync_soon(idle.set)
            except trio.RunFinishedError:
                pass

    async def finish(self) -> None:
        """Let :meth:`run` return once every row queued so far is in the kernel's hands."""
        self._finishing = True
        idle, self._writer_idle = self._writer_idle, None
        if idle is not None:
            idle.set()
        await trio.lowlevel.checkpoint()

    # -- the writer ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Write pending rows until :meth:`finish` (or cancelled); closes on the way out."""
        try:
            while True:
                with self._lock:
                    if self._closed:
                        return
                    batch, self._pending = self._pending, []
                    if not batch:
                        if self._finishing:
                            return
                        idle = self._writer_idle = trio.Event()
                    else:
                        self._room_for_threads.notify_all()
                if not batch:
                    await idle.wait()
                    continue
                room, self._room = self._room, None
                if room is not None:
                    room.set()
                await self._write(b"".join(batch), len(batch))
        except trio.ClosedResourceError:
            if not self._closed:
                raise
        finally:
            self.close()

    async def _write(self, data: bytes, rows: int) -> None:
        view = memoryview(data)
        done = 0
        while done < len(data):
            sock = self._sock
            if sock is None:
                raise trio.ClosedResourceError("the data channel was closed")
            try:
                done += await sock.send(view[done:])
            except OSError as exc:
                log.warning(
                    "%s: eKuiper's reader went away (%s); up to %d rows may be lost; redialling",
                    self.path,
                    exc,
                    rows,
                )
                sock.close()
                self._sock = None
                await self._redial()
                return

    def close(self) -> None:
        """Close the connection and wake every waiting sender (synchronous, idempotent)."""
        with self._lock:
            self._closed = True
            self._room_for_threads.notify_all()
            idle, self._writer_idle = self._writer_idle, None
        if self._sock is not None:
            self._sock.close()
        for event in (idle, self._room):
            if event is not None:
                event.set()
        self._room = None
