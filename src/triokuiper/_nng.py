"""pynng under Trio: dial/listen with retries, non-blocking fast paths (control, acks, calls).

pynng's ``asend``/``arecv`` wake Trio through an nng callback thread for every message, which
measured 4-7x slower than a blocking thread.  :class:`FastChannel` (control and ack channels)
tries ``send(block=False)`` / ``recv(block=False)`` first and falls back to the awaitable call
on ``TryAgain``; each op checks for cancellation first (so a cancelled op never happened) and
every :data:`YIELD_EVERY` ops yields to the scheduler.  The data channels of sources and sinks
do not use nng at all (:mod:`triokuiper._push_dialer`, :mod:`triokuiper._pull_listener`).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Final

import pynng
import trio
import trio.lowlevel

log = logging.getLogger("triokuiper.nng")

YIELD_EVERY: Final = 32
"""Fast-path ops between two full scheduling points."""

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
