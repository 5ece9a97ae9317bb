"""Pooled read buffers: lent for a pread, given back once the reply carrying them was sent."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import nbd
import pytest
import trio
import trio.testing

from conftest import ServeFactory
from trioblock._executors import _profile_of
from trioblock._plugins._backend import Buffer
from trioblock._plugins._buffers import PooledBuffer, ReadBufferPool, recycle
from trioblock._plugins._nbdkit_host import NbdkitPythonPlugin
from trioblock._writer import ReplyWriter

BIG = 256 * 1024
DISK_PLUGIN = Path(__file__).parent / "plugins" / "srv_disk.py"


def _owner(view: bytearray | memoryview) -> object:
    assert isinstance(view, memoryview)
    return view.obj


def test_small_reads_get_a_fresh_zeroed_bytearray() -> None:
    pool = ReadBufferPool()
    buf = pool.take(4096)
    assert type(buf) is bytearray
    assert buf == bytes(4096)
    recycle([memoryview(buf)])  # not pooled: ignored
    assert pool.take(4096) is not buf


def test_a_sent_buffer_is_lent_again() -> None:
    pool = ReadBufferPool()
    first = pool.take(BIG)
    assert len(first) == BIG
    assert isinstance(first, memoryview)
    assert not first.readonly
    owner = _owner(first)
    assert type(owner) is PooledBuffer
    assert _owner(pool.take(BIG)) is not owner  # still out: never lent twice
    recycle([b"header", first])
    assert _owner(pool.take(BIG)) is owner


def test_sizes_share_a_power_of_two_class() -> None:
    pool = ReadBufferPool()
    odd = pool.take(100_000)
    assert len(odd) == 100_000
    owner = _owner(odd)
    assert len(owner) == 128 * 1024  # type: ignore[arg-type]
    recycle([odd])
    again = pool.take(70_000)
    assert _owner(again) is owner
    assert len(again) == 70_000


def test_the_pool_keeps_at_most_its_limit() -> None:
    pool = ReadBufferPool()
    pool.MAX_FREE_BYTES = 2 * BIG
    views = [pool.take(BIG) for _ in range(4)]
    owners = {id(_owner(v)) for v in views}
    recycle(views)
    kept = {id(_owner(pool.take(BIG))) for _ in range(4)}
    assert len(kept & owners) == 2  # two were kept, the other two dropped


def test_threads_taking_at_once_never_share_a_buffer() -> None:
    pool = ReadBufferPool()
    lock = threading.Lock()
    held: set[int] = set()
    clashes: list[int] = []

    def worker() -> None:
        for _ in range(500):
            view = pool.take(BIG)
            owner = id(_owner(view))
            with lock:
                if owner in held:
                    clashes.append(owner)
                held.add(owner)
            view[0] = 1  # some work while holding it, so other threads run meanwhile
            with lock:
                held.discard(owner)
            recycle([view])

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clashes == []


async def test_the_writer_gives_buffers_back_once_sent_over_a_socket() -> None:
    pool = ReadBufferPool()
    a, b = trio.socket.socketpair()
    ours, theirs = trio.SocketStream(a), trio.SocketStream(b)
    views = [pool.take(BIG) for _ in range(3)]
    for i, view in enumerate(views):
        view[:] = bytes([i + 1]) * BIG
    writer = ReplyWriter(ours)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        replies: list[Buffer] = []
        for view in views:
            replies += [b"head", view]
        await writer.send(replies)
        received = bytearray()
        while len(received) < 3 * (BIG + 4):
            received += await theirs.receive_some()
        writer.close()
    await ours.aclose()
    await theirs.aclose()
    expected = b"".join(b"head" + bytes([i + 1]) * BIG for i in range(3))
    assert received == expected
    back = {id(_owner(pool.take(BIG))) for _ in range(3)}
    assert back == {id(_owner(v)) for v in views}


async def test_the_writer_gives_buffers_back_on_other_streams_too() -> None:
    pool = ReadBufferPool()
    ours, theirs = trio.testing.memory_stream_pair()
    view = pool.take(BIG)
    view[:] = b"x" * BIG
    writer = ReplyWriter(ours)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await writer.send([b"head", view])
        received = bytearray()
        while len(received) < BIG + 4:
            received += await theirs.receive_some()
        writer.close()
    assert received == b"head" + b"x" * BIG
    assert _owner(pool.take(BIG)) is _owner(view)


def _read_many(uri: str, reads: list[tuple[int, int]]) -> list[bytes]:
    h = nbd.NBD()
    h.connect_uri(uri)
    try:
        out: list[bytes] = []
        for start in range(0, len(reads), 16):  # 16 in flight: buffers are lent and reused
            bufs = [(nbd.Buffer(n), off) for n, off in reads[start : start + 16]]
            for buf, off in bufs:
                h.aio_pread(buf, off)
            while h.aio_in_flight():
                h.poll(-1)
            out += [buf.to_bytearray() for buf, _ in bufs]
        return [bytes(b) for b in out]
    finally:
        h.shutdown()


@pytest.mark.parametrize("inline", [False, True], ids=["worker-threads", "inline"])
async def test_reused_buffers_carry_each_reads_own_data(serve: ServeFactory, inline: bool) -> None:
    plugin = NbdkitPythonPlugin.from_script(DISK_PLUGIN, [])
    # Inline, large replies are also written to the socket as soon as they are made.
    _profile_of(plugin).inline = inline
    disk: bytearray = plugin.module.disk
    disk[:] = os.urandom(len(disk))
    server = await serve(plugin)
    sizes = [BIG, 100_000, 65536, 4096, BIG - 1]
    reads = [(n, (i * 40_000) % (len(disk) - n)) for i, n in enumerate(sizes * 40)]
    got = await trio.to_thread.run_sync(_read_many, server.uri(), reads)
    for (n, off), data in zip(reads, got, strict=True):
        assert data == disk[off : off + n]
