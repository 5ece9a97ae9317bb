"""pynng under Trio: dial/listen with retries, non-blocking fast paths, a threaded sender.

pynng's ``asend``/``arecv`` wake Trio through an nng callback thread for every message, which
measured 4-7x slower than a blocking thread.  :class:`FastChannel` (control and ack channels)
tries ``send(block=False)`` / ``recv(block=False)`` first and falls back to the awaitable call
on ``TryAgain``; each op checks for cancellation first (so a cancelled op never happened) and
every :data:`YIELD_EVERY` ops yields to the scheduler.  A source's rows go out through a worker
thread with blocking sends instead (:class:`ThreadedSender`), handed over through a deque with
one wakeup per batch rather than per message.  A sink's data channel does not use nng at all
(:mod:`triokuiper._pull_listener`).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from typing import Any, Final

import pynng
import trio
import trio.lowlevel

log = logging.getLogger("triokuiper.nng")

YIELD_EVERY: Final = 32
"""Fast-path ops between two full scheduling points."""

BUFFER: Final = 256
"""Messages a data socket queues (nng's default 0 makes most non-blocking ops fail)."""

DIAL_ATTEMPTS: Final = 50  # the official SDK's values: 50 x 100 ms
DIAL_INTERVAL: Final = 0.1
LISTEN_ATTEMPTS: Final = 10  # 10 x 50 ms, as the SDK's sink
LISTEN_INTERVAL: Final = 0.05


def ipc_dir() -> str:
    """Where the ipc files live: ``$TRIOKUIPER_IPC_DIR``, else eKuiper's hard-coded /tmp."""
    return os.environ.get("TRIOKUIPER_IPC_DIR") or "/tmp"


def ipc_path(directory: str, stem: str) -> str:
    return f"{directory}/{stem}.ipc"


def ipc_url(directory: str, stem: str) -> str:
    return f"ipc://{ipc_path(directory, stem)}"


def new_socket(cls: Any, **options: Any) -> Any:
    """A pynng socket with no receive size limit (nng's default 1 MB would drop big rows)."""
    sock = cls(**options)
    sock.recv_max_size = 0
    return sock


async def dial(
    sock: Any, url: str, *, attempts: int = DIAL_ATTEMPTS, interval: float = DIAL_INTERVAL
) -> None:
    """Dial synchronously (the peer must be listening), retrying as the official SDK does."""
    for attempt in range(attempts):
        try:
            # dial(block=True) waits for the SP handshake: keep it off the Trio thread
            await trio.to_thread.run_sync(_dial_blocking, sock, url, abandon_on_cancel=True)
            return
        except pynng.NNGException as exc:
            if attempt == attempts - 1 or isinstance(exc, pynng.Closed):
                raise ConnectionRefusedError(f"cannot dial {url}: {exc}") from exc
            log.debug("dial %s failed (%s), retrying", url, exc)
        await trio.sleep(interval)


def _dial_blocking(sock: Any, url: str) -> None:
    sock.dial(url, block=True)


async def listen(
    sock: Any, url: str, *, attempts: int = LISTEN_ATTEMPTS, interval: float = LISTEN_INTERVAL
) -> None:
    for attempt in range(attempts):
        try:
            sock.listen(url)
            await trio.lowlevel.checkpoint()
            return
        except pynng.NNGException as exc:
            if attempt == attempts - 1 or isinstance(exc, pynng.Closed):
                raise OSError(f"cannot listen on {url}: {exc}") from exc
        await trio.sleep(interval)


class FastChannel:
    """One pynng socket driven from one Trio task at a time, with non-blocking fast paths."""

    __slots__ = ("_ops", "sock")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self._ops = 0

    async def _after_fast_op(self) -> None:
        self._ops += 1
        if self._ops >= YIELD_EVERY:
            self._ops = 0
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def send(self, data: bytes) -> None:
        """Send one message; on ``TryAgain`` wait with ``asend`` (honours send_timeout)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.sock.send(data, block=False)
        except pynng.TryAgain:
            self._ops = 0
            await self.sock.asend(data)
            return
        await self._after_fast_op()

    async def receive(self) -> bytes:
        """Receive one message; on ``TryAgain`` wait with ``arecv`` (honours recv_timeout)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            data: bytes = self.sock.recv(block=False)
        except pynng.TryAgain:
            self._ops = 0
            received: bytes = await self.sock.arecv()
            return received
        await self._after_fast_op()
        return data

    def close(self) -> None:
        self.sock.close()


class ThreadedSender:
    """A data-channel sender: Trio queues messages, a worker thread sends them blocking.

    A non-blocking nng send costs about as much as a blocking one (an aio round trip inside
    nng), but in a worker thread it runs beside the Trio thread with the GIL released.
    ``send`` appends to a deque without waiting while fewer than :data:`BUFFER` messages are
    pending; a full deque makes it sleep until the thread has sent half of them (one wakeup
    per :data:`BUFFER` // 2 messages, not one thread round trip per message).  Run :meth:`run`
    in a task.
    """

    def __init__(self, sock: Any, *, on_timeout: Any = None) -> None:
        self.sock = sock
        self._items: collections.deque[bytes | None] = collections.deque()
        self._lock = threading.Lock()
        self._ready = threading.Event()  # set while the thread may have work
        self._room: trio.Event | None = None  # a Trio task waiting for room
        self._closed = False
        self._token = trio.lowlevel.current_trio_token()
        self._on_timeout = on_timeout
        self._ops = 0

    async def send(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        items = self._items
        if len(items) >= BUFFER:
            await self._wait_for_room()
        items.append(data)
        if not self._ready.is_set():
            self._ready.set()
        self._ops += 1
        if self._ops >= YIELD_EVERY:
            self._ops = 0
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def _wait_for_room(self) -> None:
        while True:
            with self._lock:
                closed = self._closed
                if not closed:
                    if len(self._items) < BUFFER:
                        return
                    event = self._room = trio.Event()
            if closed:
                # A sender closed by the cancellation of our own scope is not an error of ours:
                # let the Cancelled through, so the source ends as cancelled, not as failed.
                await trio.lowlevel.checkpoint_if_cancelled()
                raise pynng.Closed("the socket was closed", 7)  # NNG_ECLOSED
            self._ops = 0
            await event.wait()

    async def finish(self) -> None:
        """Queue the end: :meth:`run` returns once everything queued before was sent."""
        self._items.append(None)
        self._ready.set()
        await trio.lowlevel.checkpoint()

    async def run(self) -> None:
        """Send until :meth:`finish` or cancelled; closes the socket on the way out."""
        try:
            await trio.to_thread.run_sync(self._send_loop, abandon_on_cancel=True)
        finally:
            self.sock.close()
            self._items.append(None)
            self._ready.set()
            self._wake_sender(closing=True)

    def _wake_sender(self, *, closing: bool = False) -> None:
        with self._lock:
            self._closed = self._closed or closing
            room, self._room = self._room, None
        if room is not None:
            try:
                self._token.run_sync_soon(room.set)
            except trio.RunFinishedError:
                pass

    def _send_loop(self) -> None:
        items, ready, send = self._items, self._ready, self.sock.send
        half = BUFFER // 2
        try:
            while True:
                if not items:
                    ready.clear()
                    if not items:  # Trio appends, then sets: re-check after clearing
                        ready.wait()
                    continue
                data = items.popleft()
                if data is None:
                    return
                self._send_one(send, data)
                if self._room is not None and len(items) <= half:
                    self._wake_sender()
        except pynng.Closed:
            return
        finally:
            self._wake_sender(closing=True)

    def _send_one(self, send: Any, data: bytes) -> None:
        stalled = False
        while True:
            try:
                send(data)
                return
            except pynng.Timeout:
                if not stalled and self._on_timeout is not None:
                    self._on_timeout()
                stalled = True
