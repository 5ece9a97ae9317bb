"""Raw SP-over-IPC peers for the dialer tests: a unix-socket listener that speaks whatever the
test writes, and exact reads."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator

import trio


@contextlib.asynccontextmanager
async def raw_listener(path: str) -> AsyncIterator[trio.socket.SocketType]:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(path)
        sock.listen()
        yield sock
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # so that the next peer can listen on the same path


async def recv_exactly(conn: trio.socket.SocketType, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await conn.recv(size - len(data))
        assert chunk, "the dialer hung up"
        data += chunk
    return data
