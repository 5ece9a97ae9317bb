"""pynng under Trio: dial/listen with retries, non-blocking fast paths, threaded data channels.

pynng's ``asend``/``arecv`` wake Trio through an nng callback thread for every message, which
measured 4-7x slower than a blocking thread.  :class:`FastChannel` (control and ack channels)
tries ``send(block=False)`` / ``recv(block=False)`` first and falls back to the awaitable call
on ``TryAgain``; each op checks for cancellation first (so a cancelled op never happened) and
every :data:`YIELD_EVERY` ops yields to the scheduler.  Even a non-blocking nng call costs an
aio round trip inside nng (~40 us), so the busy data channels use a worker thread with blocking
calls instead (:class:`ThreadedSender`, :class:`ThreadedReceiver`), handing messages to and from
Trio without a blocking round trip.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
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


def ipc_url(directory: str, stem: str) -> str:
    return f"ipc://{directory}/{stem}.ipc"


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
    nng), but in a worker thread it runs beside the Trio thread with the GIL released.  ``send``
    queues without waiting while fewer than :data:`BUFFER` messages are pending; when the
    queue is full it waits in a worker thread (backpressure).  Run :meth:`run` in a task.
    """

    def __init__(self, sock: Any, *, on_timeout: Any = None) -> None:
        self.sock = sock
        self._queue: queue.Queue[bytes | None] = queue.Queue(BUFFER)
        self._on_timeout = on_timeout
        self._ops = 0

    async def send(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._queue.put_nowait(data)
        except queue.Full:
            await trio.to_thread.run_sync(self._queue.put, data, abandon_on_cancel=True)
            return
        self._ops += 1
        if self._ops >= YIELD_EVERY:
            self._ops = 0
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def finish(self) -> None:
        """Queue the end: :meth:`run` returns once everything queued before was sent."""
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            await trio.to_thread.run_sync(self._queue.put, None, abandon_on_cancel=True)
            return
        await trio.lowlevel.checkpoint()

    async def run(self) -> None:
        """Send until :meth:`finish` or cancelled; closes the socket on the way out."""
        try:
            await trio.to_thread.run_sync(self._send_loop, abandon_on_cancel=True)
        finally:
            self.sock.close()
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass

    def _send_loop(self) -> None:
        get, send = self._queue.get, self.sock.send
        stalled = False
        while (data := get()) is not None:
            while True:
                try:
                    send(data)
                    break
                except pynng.Timeout:
                    if not stalled and self._on_timeout is not None:
                        self._on_timeout()
                    stalled = True
                except pynng.Closed:
                    return
            stalled = False


class ThreadedReceiver:
    """A data-channel receiver: a worker thread receives blocking, Trio takes the messages.

    The thread hands messages over through a deque and wakes a waiting Trio task with
    ``run_sync_soon`` (no round trip); when :data:`BUFFER` messages wait in the deque the
    thread pauses until Trio has taken half of them.
    """

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self._items: collections.deque[bytes] = collections.deque()
        self._lock = threading.Lock()
        self._drained = threading.Event()  # set while the deque has room
        self._drained.set()
        self._sleeping: trio.Event | None = None
        self._closed = False
        self._token = trio.lowlevel.current_trio_token()
        self._ops = 0

    async def run(self) -> None:
        try:
            await trio.to_thread.run_sync(self._receive_loop, abandon_on_cancel=True)
        finally:
            self.sock.close()
            self._drained.set()  # unblock the thread if it waits for room
            self._wake_from_thread(closing=True)

    def _receive_loop(self) -> None:
        recv, items, drained = self.sock.recv, self._items, self._drained
        while True:
            if len(items) >= BUFFER:  # Trio is behind: stop taking messages from nng
                drained.clear()
                if len(items) >= BUFFER:
                    drained.wait()
            try:
                data = recv()
            except pynng.Closed:
                self._wake_from_thread(closing=True)
                return
            with self._lock:
                self._items.append(data)
                sleeping, self._sleeping = self._sleeping, None
            if sleeping is not None:
                self._call_soon(sleeping.set)

    def _call_soon(self, fn: Any) -> None:
        try:
            self._token.run_sync_soon(fn)
        except trio.RunFinishedError:
            pass

    def _wake_from_thread(self, *, closing: bool) -> None:
        with self._lock:
            self._closed = self._closed or closing
            sleeping, self._sleeping = self._sleeping, None
        if sleeping is not None:
            self._call_soon(sleeping.set)

    async def receive(self) -> bytes:
        """The next message; raises ``pynng.Closed`` once the socket is closed and drained."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            with self._lock:
                if self._items:
                    data = self._items.popleft()
                    break
                if self._closed:
                    raise pynng.Closed("the socket was closed", 7)  # NNG_ECLOSED
                event = self._sleeping = trio.Event()
            await event.wait()
        if not self._drained.is_set() and len(self._items) <= BUFFER // 2:
            self._drained.set()
        self._ops += 1
        if self._ops >= YIELD_EVERY:
            self._ops = 0
            await trio.lowlevel.cancel_shielded_checkpoint()
        return data
