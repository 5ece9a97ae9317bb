"""A Trio-native async plugin: an NBD export backed by a remote block store over TCP.

Two halves in one file:

* **the block store** (a stand-in for some remote storage service): 4 KiB blocks in a dict,
  served over TCP with a tiny binary protocol.  Run it with
  ``python examples/async_remote.py [--port 10810] [--size 64M]``, or start
  :func:`serve_block_store` in a nursery (the tests do).
* **the plugin**: its ``open`` and ``pread`` are ``async def``, which is how trioblock tells an
  async plugin from an nbdkit one.  Each NBD connection opens its own TCP connection to the store;
  every callback is plain Trio code awaiting the network, no threads involved::

      trioblock -U - examples/async_remote.py server=localhost:10810 --run 'nbdinfo "$uri"'

The protocol: a request is ``op`` (1 byte) and a block number (u64, big endian), then, for ``P``,
the block's 4096 bytes.  A reply is a u32 status (0, or an errno), then 4096 bytes for ``G`` and
the store's size in bytes (u64) for ``S``.  Ops: ``S`` size, ``G`` get, ``P`` put, ``D`` delete
(the block reads back as zeros), ``F`` flush.  Blocks never written read as zeros.
"""

from __future__ import annotations

import argparse
import errno
import os
import struct
from dataclasses import dataclass, field
from functools import partial

import trio

from trioblock import nbdkit

BLOCK = 4096
REQUEST = struct.Struct(">cQ")
REPLY = struct.Struct(">I")
SIZE = struct.Struct(">Q")
ZERO_BLOCK = bytes(BLOCK)


class Reader:
    """Read exact amounts from a stream (one per stream: a small receive buffer)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def receive_exactly(self, n: int) -> bytes | None:
        """``n`` bytes, or None at a clean end of stream; EOF inside a message is an error."""
        if len(self.buffer) >= n:
            await trio.lowlevel.checkpoint()  # already buffered: still a checkpoint
        while len(self.buffer) < n:
            data = await self.stream.receive_some(max(n - len(self.buffer), 65536))
            if not data:
                if self.buffer:
                    raise OSError(errno.EIO, "connection closed in the middle of a message")
                return None
            self.buffer += data
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out


# -- the block store (the "remote service") ---------------------------------------------------


async def serve_block_store(
    size: int,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a ``size``-byte block store on ``host:port`` forever; reports the bound port."""
    blocks: dict[int, bytes] = {}
    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(partial(_store_client, blocks, size), listeners)


async def _store_client(blocks: dict[int, bytes], size: int, stream: trio.SocketStream) -> None:
    reader = Reader(stream)
    nblocks = -(-size // BLOCK)
    async with stream:
        while (header := await reader.receive_exactly(REQUEST.size)) is not None:
            op, index = REQUEST.unpack(header)
            payload = await reader.receive_exactly(BLOCK) if op == b"P" else b""
            if payload is None:
                return
            if op == b"S":
                await stream.send_all(REPLY.pack(0) + SIZE.pack(size))
            elif not (op == b"F" or (op in (b"G", b"P", b"D") and index < nblocks)):
                await stream.send_all(REPLY.pack(errno.EINVAL))
            elif op == b"G":
                await stream.send_all(REPLY.pack(0) + blocks.get(index, ZERO_BLOCK))
            else:
                if op == b"P" and payload != ZERO_BLOCK:
                    blocks[index] = payload
                elif op in (b"P", b"D"):
                    blocks.pop(index, None)  # all-zero blocks take no room
                await stream.send_all(REPLY.pack(0))


# -- the plugin: a client of the store ----------------------------------------------------------

store_host = ""
store_port = 0


def config(key: str, value: str) -> None:
    global store_host, store_port
    if key != "server":
        raise ValueError(f"unknown parameter {key!r} (this plugin takes server=HOST:PORT)")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"server={value}: expected HOST:PORT")
    store_host, store_port = host.strip("[]"), int(port)


def config_complete() -> None:
    if not store_host:
        raise ValueError("server=HOST:PORT is required (the block store to serve)")


def thread_model() -> int:
    # One request at a time per NBD connection: our protocol has no request ids to match replies.
    return nbdkit.THREAD_MODEL_SERIALIZE_REQUESTS


@dataclass
class Remote:
    """One NBD connection's link to the store.  A request cut off half-way breaks it for good."""

    stream: trio.SocketStream
    size: int = 0
    reader: Reader = field(init=False)
    broken: bool = False

    def __post_init__(self) -> None:
        self.reader = Reader(self.stream)

    async def call(self, op: bytes, index: int, payload: bytes = b"", reply: int = 0) -> bytes:
        if self.broken:
            await trio.lowlevel.checkpoint()
            raise OSError(errno.EIO, "the connection to the block store is broken")
        try:
            await self.stream.send_all(REQUEST.pack(op, index) + payload)
            header = await self.reader.receive_exactly(REPLY.size)
            if header is None:
                raise OSError(errno.EIO, "the block store closed the connection")
            (status,) = REPLY.unpack(header)
            data = await self.reader.receive_exactly(reply) if reply and not status else b""
            if data is None:
                raise OSError(errno.EIO, "the block store closed the connection")
        except BaseException:  # failed or cancelled half-way: the next reply would be out of step
            self.broken = True
            raise
        if status:  # the store refused the request: the client gets this errno
            raise OSError(status, f"block store: {os.strerror(status)}")
        return data

    async def read_block(self, index: int) -> bytes:
        return await self.call(b"G", index, reply=BLOCK)

    async def write_part(self, index: int, start: int, data: bytes | memoryview) -> None:
        """Write ``data`` at ``start`` within block ``index`` (read-modify-write if partial)."""
        if start == 0 and len(data) == BLOCK:
            block = bytes(data)
        else:
            old = await self.read_block(index)
            block = old[:start] + bytes(data) + old[start + len(data) :]
        await self.call(b"P", index, block)


def _blocks(offset: int, count: int) -> list[tuple[int, int, int, int]]:
    """Split a byte range into (block, start in block, length, position in the range)."""
    parts = []
    pos = 0
    while pos < count:
        index, start = divmod(offset + pos, BLOCK)
        length = min(BLOCK - start, count - pos)
        parts.append((index, start, length, pos))
        pos += length
    return parts


async def open(readonly: bool) -> Remote:
    stream = await trio.open_tcp_stream(store_host, store_port)
    remote = Remote(stream)
    (remote.size,) = SIZE.unpack(await remote.call(b"S", 0, reply=SIZE.size))
    return remote


async def close(h: Remote) -> None:
    await h.stream.aclose()


async def get_size(h: Remote) -> int:
    await trio.lowlevel.checkpoint()
    return h.size


async def can_multi_conn(h: Remote) -> bool:
    await trio.lowlevel.checkpoint()
    return True  # the store applies each request before replying, and serves every client


async def pread(h: Remote, buf: memoryview, offset: int, flags: int) -> None:
    for index, start, length, pos in _blocks(offset, len(buf)):
        buf[pos : pos + length] = (await h.read_block(index))[start : start + length]
    await trio.lowlevel.checkpoint()


async def pwrite(h: Remote, buf: memoryview, offset: int, flags: int) -> None:
    for index, start, length, pos in _blocks(offset, len(buf)):
        await h.write_part(index, start, buf[pos : pos + length])
    await trio.lowlevel.checkpoint()


async def zero(h: Remote, count: int, offset: int, flags: int) -> None:
    for index, start, length, _ in _blocks(offset, count):
        if length == BLOCK:
            await h.call(b"D", index)  # a deleted block reads back as zeros
        else:
            await h.write_part(index, start, ZERO_BLOCK[:length])
    await trio.lowlevel.checkpoint()


async def trim(h: Remote, count: int, offset: int, flags: int) -> None:
    await zero(h, count, offset, flags)


async def flush(h: Remote, flags: int) -> None:
    await h.call(b"F", 0)


# -- running the store on its own ---------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the example block store.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=10810)
    parser.add_argument("--size", default="64M", help="size, nbdkit syntax (default 64M)")
    ns = parser.parse_args()
    print(f"block store on {ns.host}:{ns.port}; plugin argument: server={ns.host}:{ns.port}")
    trio.run(partial(serve_block_store, nbdkit.parse_size(ns.size), host=ns.host, port=ns.port))


if __name__ == "__main__":
    main()
