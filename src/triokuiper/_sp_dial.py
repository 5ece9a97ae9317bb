"""Dialling an SP-over-IPC listener from Trio: the connection, its header exchange, retries.

Shared by the Push dialer (a source's rows) and the Req dialer (a function's calls).  The
first dial retries as the official SDK does (50 x 100 ms) and then fails with
``ConnectionRefusedError``; a redial after a break backs off from 100 ms to 1 s and keeps
going until it works or the channel is closed (a connect to a missing path costs microseconds).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import trio

from ._sp import FrameDecoder, SPProtocolError, connection_header

log = logging.getLogger("triokuiper.sp")

NEGOTIATION_TIMEOUT: Final = 10.0  # nng's
CONNECT_ATTEMPTS: Final = 50  # the official SDK's first dial: 50 x 100 ms
CONNECT_INTERVAL: Final = 0.1
REDIAL_MIN: Final = 0.1
REDIAL_MAX: Final = 1.0
RECV_SIZE: Final = 64 * 1024

T = TypeVar("T")
_DIAL_ERRORS: Final = (OSError, trio.TooSlowError, SPProtocolError)


@dataclass(slots=True)
class SPConnection:
    """A connected socket whose peer has sent its header; ``received`` are whole messages
    that came in the same reads, ``decoder`` holds the rest."""

    sock: trio.socket.SocketType
    decoder: FrameDecoder
    received: list[bytes]


async def open_sp(path: str, protocol: int, peer: int) -> SPConnection:
    """Connect to ``path`` and exchange headers; :class:`SPProtocolError` if the peer does not
    speak ``peer``, ``OSError``/``trio.TooSlowError`` if it is gone or silent."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    decoder = FrameDecoder()
    received: list[bytes] = []
    try:
        await sock.connect(path)
        await sock.send(connection_header(protocol))
        with trio.fail_after(NEGOTIATION_TIMEOUT):
            while decoder.peer is None:
                data = await sock.recv(RECV_SIZE)
                if not data:
                    raise ConnectionResetError("the peer closed during the SP handshake")
                received = decoder.feed(data)
        if decoder.peer != peer:  # nng drops such a pipe too
            raise SPProtocolError(f"peer speaks protocol {decoder.peer:#x}, expected {peer:#x}")
    except BaseException:
        sock.close()
        raise
    return SPConnection(sock, decoder, received)


async def dial(
    path: str,
    connect_once: Callable[[], Awaitable[T]],
    *,
    attempts: int = CONNECT_ATTEMPTS,
    interval: float = CONNECT_INTERVAL,
) -> T:
    """The first connection, which must succeed now (eKuiper listens before it starts us)."""
    for attempt in range(attempts):
        try:
            return await connect_once()
        except _DIAL_ERRORS as exc:
            if attempt >= attempts - 1:
                raise ConnectionRefusedError(f"cannot dial ipc://{path}: {exc}") from exc
            log.debug("dial %s failed (%s), retrying", path, exc)
        await trio.sleep(interval)
    raise ConnectionRefusedError(f"cannot dial ipc://{path}: no attempt made")


async def redial(
    path: str, connect_once: Callable[[], Awaitable[T]], *, closed: Callable[[], bool]
) -> T:
    """Connect again until it works; :class:`trio.ClosedResourceError` once ``closed()``."""
    delay = REDIAL_MIN
    while True:
        if closed():
            raise trio.ClosedResourceError("the channel was closed")
        try:
            return await connect_once()
        except _DIAL_ERRORS as exc:
            log.debug("redial %s failed (%s)", path, exc)
        await trio.sleep(delay)
        delay = min(delay * 2, REDIAL_MAX)
