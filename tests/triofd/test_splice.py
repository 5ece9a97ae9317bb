"""splice/tee/vmsplice between real files, pipes and Trio sockets, checked byte for byte."""

from __future__ import annotations

import errno
import gc
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from triofd._errors import InvalidArgumentError
from triofd._splice import (
    SpliceFlag,
    SplicePipe,
    splice,
    splice_async,
    splice_file_to_socket,
    splice_socket_to_file,
    tee,
    vmsplice,
)

DATA = random.Random(1234).randbytes(3 * 1024 * 1024 + 17)


@pytest.fixture
def data_file(tmp_path: Path) -> Iterator[int]:
    path = tmp_path / "data"
    path.write_bytes(DATA)
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    yield fd
    os.close(fd)


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    yield r, w
    os.close(r)
    os.close(w)


async def _tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    return client, server


async def _read_all(stream: trio.SocketStream, into: bytearray) -> None:
    while chunk := await stream.receive_some(1 << 16):
        into += chunk


def test_explicit_offset_leaves_file_position_alone(data_file: int, pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.lseek(data_file, 10, os.SEEK_SET)
    assert splice(data_file, w, 100, offset_in=5000) == 100
    assert os.read(r, 200) == DATA[5000:5100]
    assert os.lseek(data_file, 0, os.SEEK_CUR) == 10


def test_no_offset_reads_from_and_advances_file_position(
    data_file: int, pipe: tuple[int, int]
) -> None:
    r, w = pipe
    os.lseek(data_file, 10, os.SEEK_SET)
    assert splice(data_file, w, 100) == 100
    assert os.read(r, 200) == DATA[10:110]
    assert os.lseek(data_file, 0, os.SEEK_CUR) == 110


def test_splice_into_file_at_offset(data_file: int, pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, b"PATCHED")
    assert splice(r, data_file, 7, offset_out=100) == 7
    assert os.pread(data_file, 9, 99) == DATA[99:100] + b"PATCHED" + DATA[107:108]
    assert os.lseek(data_file, 0, os.SEEK_CUR) == 0


def test_splice_at_end_of_file_returns_zero(data_file: int, pipe: tuple[int, int]) -> None:
    assert splice(data_file, pipe[1], 100, offset_in=len(DATA)) == 0


def test_tee_duplicates_without_consuming(pipe: tuple[int, int]) -> None:
    r1, w1 = pipe
    r2, w2 = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.write(w1, b"hello tee")
        assert tee(r1, w2, 100, SpliceFlag.NONBLOCK) == 9
        assert os.read(r2, 100) == b"hello tee"
        assert os.read(r1, 100) == b"hello tee"
        with pytest.raises(BlockingIOError):
            tee(r1, w2, 100, SpliceFlag.NONBLOCK)
    finally:
        os.close(r2)
        os.close(w2)


def test_low_level_vmsplice_gathers_buffers(pipe: tuple[int, int]) -> None:
    r, w = pipe
    parts: list[bytes | bytearray | memoryview] = [
        b"abc",
        bytearray(b"def"),
        memoryview(b"xxghi")[2:],
    ]
    assert vmsplice(w, parts) == 9
    assert os.read(r, 100) == b"abcdefghi"


async def test_splice_pipe_vmsplice_keeps_buffers_alive_until_read() -> None:
    async with SplicePipe(65536) as p:
        expected = b""
        for i in range(8):
            chunk = bytearray(bytes([65 + i]) * 4096)
            expected += bytes(chunk)
            await p.vmsplice(chunk)
            del chunk  # the pipe may reference these pages: SplicePipe holds them
        gc.collect()
        _ = [bytearray(b"\xff" * 4096) for _ in range(64)]  # reuse freed memory if any
        assert p.buffered() == len(expected)
        got = b""
        while len(got) < len(expected):
            got += os.read(p.read_fd, 1 << 16)
        assert got == expected
        await p.vmsplice(b"z")  # releases the consumed buffers
        assert len(p._gifts) == 1


async def test_vmsplice_larger_than_pipe_waits_for_reader() -> None:
    payload = DATA[: 256 * 1024]
    got = bytearray()
    async with SplicePipe(65536) as p:

        async def reader() -> None:
            while len(got) < len(payload):
                await trio.lowlevel.wait_readable(p.read_fd)
                got.extend(os.read(p.read_fd, 1 << 16))

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await p.vmsplice(payload)
    assert bytes(got) == payload


@pytest.mark.parametrize(("offset", "count"), [(0, len(DATA)), (12345, 2_000_001)])
async def test_file_to_tcp_socket_is_byte_exact(data_file: int, offset: int, count: int) -> None:
    client, server = await _tcp_pair()
    received = bytearray()
    async with client, server:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_read_all, server, received)
                sent = await splice_file_to_socket(data_file, client, count, offset)
                await client.send_eof()
    assert sent == count
    assert received == DATA[offset : offset + count]
    assert os.lseek(data_file, 0, os.SEEK_CUR) == 0


async def test_file_to_socket_past_end_sends_what_exists(data_file: int) -> None:
    a, b = trio.socket.socketpair()
    with a, b:
        sent = await splice_file_to_socket(data_file, a, 1000, len(DATA) - 10)
        assert sent == 10
        assert await b.recv(100) == DATA[-10:]


async def test_file_to_socket_with_none_offset_advances_the_file(data_file: int) -> None:
    a, b = trio.socket.socketpair()
    with a, b:
        async with SplicePipe() as p:
            assert await splice_file_to_socket(data_file, a, 5, None, pipe=p) == 5
            assert await splice_file_to_socket(data_file, a, 5, None, pipe=p) == 5
        assert await b.recv(100) == DATA[:10]
    assert os.lseek(data_file, 0, os.SEEK_CUR) == 10


async def test_socket_to_file_at_offset(tmp_path: Path) -> None:
    client, server = await _tcp_pair()
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    try:
        async with client, server:
            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:

                    async def send() -> None:
                        await client.send_all(DATA)
                        await client.send_eof()

                    nursery.start_soon(send)
                    got = await splice_socket_to_file(server, fd, len(DATA) + 100, 4096)
        assert got == len(DATA)
        assert os.pread(fd, 4096, 0) == bytes(4096)
        assert os.pread(fd, len(DATA) + 1, 4096) == DATA
    finally:
        os.close(fd)


async def test_cancelled_transfer_to_stalled_peer_does_not_hang_or_leak(data_file: int) -> None:
    before = len(os.listdir("/proc/self/fd"))
    a, b = trio.socket.socketpair()
    with a, b:
        with trio.move_on_after(0.2) as scope:
            await splice_file_to_socket(data_file, a, len(DATA))  # nobody reads b
        assert scope.cancelled_caught
    assert len(os.listdir("/proc/self/fd")) == before


async def test_splice_async_waits_for_pipe_data(pipe: tuple[int, int], data_file: int) -> None:
    r, w = pipe
    async with trio.open_nursery() as nursery:

        async def write_later() -> None:
            await trio.testing.wait_all_tasks_blocked()
            os.write(w, b"late data")

        nursery.start_soon(write_later)
        with trio.fail_after(10):
            n = await splice_async(r, data_file, 100, offset_out=0)
    assert n == 9
    assert os.pread(data_file, 9, 0) == b"late data"


def test_splice_errors_keep_errno(data_file: int, pipe: tuple[int, int], tmp_path: Path) -> None:
    w = pipe[1]
    other = os.open(tmp_path / "other", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    try:
        with pytest.raises(InvalidArgumentError) as info:
            splice(data_file, other, 10)  # neither side is a pipe
        assert info.value.errno == errno.EINVAL
        with pytest.raises(InvalidArgumentError) as info:
            splice(987654, w, 10)
        assert info.value.errno == errno.EBADF
        with pytest.raises(OSError, match="Illegal seek") as oserr:
            splice(data_file, w, 10, offset_out=0)  # a pipe has no offset
        assert oserr.value.errno == errno.ESPIPE
        with pytest.raises(InvalidArgumentError) as info:
            tee(data_file, w, 10)
        assert info.value.errno == errno.EINVAL
        with pytest.raises(InvalidArgumentError) as info:
            vmsplice(other, [b"x"])
        assert info.value.errno == errno.EBADF
    finally:
        os.close(other)
    with pytest.raises(ValueError, match="offset must be >= 0"):
        splice(data_file, w, 10, offset_in=-1)
    with pytest.raises(ValueError, match="count must be >= 0"):
        splice(data_file, w, -1)
    with pytest.raises(TypeError):
        splice(data_file, w, 10, offset_in=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="buffers"):
        vmsplice(w, [])


def test_splice_pipes_leak_no_fd_over_10000_cycles() -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(10_000):
        SplicePipe(4096).close()
    assert len(os.listdir("/proc/self/fd")) == before
