"""File objects against a real nfs-ganesha: every result checked on the export directory on disk
and, where it matters, with libnfs's nfs-cat."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import trio
import trio.testing

import trionfs
from trionfs import NFSFile, NFSTextFile, parse_url
from trionfs._cli_copy import copy_nfs_to_fd
from trionfs.testing import libnfs_cat

pytestmark = pytest.mark.interop

ALL_BYTES = bytes(range(256))


def on_disk(nfs_url: str) -> Path:
    """The test's directory on the server's disk (export paths are on-disk paths)."""
    return Path(parse_url(nfs_url).path)


async def open_bin(nfs: trionfs.NFS, path: str, mode: str) -> NFSFile:
    f = await nfs.open(path, mode)
    assert isinstance(f, NFSFile)
    return f


async def test_binary_round_trip_of_all_256_byte_values(nfs_url: str) -> None:
    data = ALL_BYTES * 64 + ALL_BYTES[::-1]
    async with trionfs.mount(nfs_url) as nfs:
        async with await open_bin(nfs, "/all.bin", "wb") as f:
            assert await f.write(data) == len(data)
        async with await open_bin(nfs, "/all.bin", "rb") as f:
            assert await f.read() == data
    assert (on_disk(nfs_url) / "all.bin").read_bytes() == data
    assert libnfs_cat(f"{nfs_url}/all.bin") == data


async def test_file_larger_than_one_read_takes_many_pipelined_reads(nfs_url: str) -> None:
    data = os.urandom(200_000)
    async with trionfs.mount(nfs_url + "?rsize=4096&wsize=4096&window=6") as nfs:
        assert (nfs.rsize, nfs.wsize) == (4096, 4096)
        async with await open_bin(nfs, "/big.bin", "wb") as f:
            for i in range(0, len(data), 10_000):  # unaligned pieces, joined into full WRITEs
                await f.write(data[i : i + 10_000])
        assert (on_disk(nfs_url) / "big.bin").read_bytes() == data
        async with await open_bin(nfs, "/big.bin", "rb") as f:
            parts = []
            while chunk := await f.read(3000):  # sequential: read-ahead fills the window
                parts.append(chunk)
            assert b"".join(parts) == data
            assert await f.pread(5000, 123_456) == data[123_456:128_456]
            assert await f.pread(10, len(data) - 4) == data[-4:]
            assert await f.pread(10, len(data) + 100) == b""
    assert libnfs_cat(f"{nfs_url}/big.bin") == data


class Concurrency:
    """Wraps an NFS method to record how many calls were outstanding at once."""

    def __init__(self, nfs: trionfs.NFS, name: str) -> None:
        self.now = self.peak = self.calls = 0
        inner = getattr(nfs, name)

        async def wrapper(*args: object) -> object:
            self.now += 1
            self.calls += 1
            self.peak = max(self.peak, self.now)
            try:
                return await inner(*args)
            finally:
                self.now -= 1

        setattr(nfs, name, wrapper)


async def test_large_write_and_read_keep_a_window_of_calls_outstanding(nfs_url: str) -> None:
    data = os.urandom(64 * 1024)
    async with trionfs.mount(nfs_url + "?wsize=4096&rsize=4096&window=8") as nfs:
        writes = Concurrency(nfs, "_write_rpc")
        async with await open_bin(nfs, "/w.bin", "wb") as f:
            await f.write(data)
        assert writes.calls == 16
        assert writes.peak == 8
        reads = Concurrency(nfs, "_read_rpc")
        async with await open_bin(nfs, "/w.bin", "rb") as f:
            assert await f.read(len(data)) == data
        assert reads.peak > 1
        assert reads.calls >= 16
    assert (on_disk(nfs_url) / "w.bin").read_bytes() == data


async def test_sequential_small_reads_read_ahead(nfs_url: str) -> None:
    data = os.urandom(32 * 1024)
    async with trionfs.mount(nfs_url + "?rsize=4096&window=4") as nfs:
        async with await open_bin(nfs, "/ra2.bin", "wb") as f:
            await f.write(data)
        reads = Concurrency(nfs, "_read_rpc")
        async with await open_bin(nfs, "/ra2.bin", "rb") as f:
            await f.read(100)
            await f.read(100)  # sequential: the window of READs ahead goes out
            await trio.testing.wait_all_tasks_blocked()
            assert reads.peak == 4
            rest = await f.read()
        assert len(rest) == len(data) - 200


async def test_seek_tell_truncate_readinto_and_read_your_writes(nfs_url: str) -> None:
    async with (
        trionfs.mount(nfs_url + "?rsize=1024&wsize=1024") as nfs,
        await open_bin(nfs, "/rw.bin", "w+b") as f,
    ):
        await f.write(b"0123456789" * 300)
        assert await f.tell() == 3000
        assert await f.seek(-10, os.SEEK_END) == 2990
        await f.write(b"ABCDEFGHIJ")
        await f.seek(0)
        assert await f.read(12) == b"012345678901"  # before any flush: read-your-writes
        buf = bytearray(5)
        await f.seek(2995)
        assert await f.readinto(buf) == 5
        assert bytes(buf) == b"FGHIJ"
        assert await f.truncate(100) == 100
        assert await f.tell() == 3000  # truncate leaves the position alone
        await f.seek(0, os.SEEK_END)
        assert await f.tell() == 100
        await f.flush()
        assert (await f.stat()).st_size == 100
    assert (on_disk(nfs_url) / "rw.bin").read_bytes() == (b"0123456789" * 10)


async def test_readinto_fills_a_large_buffer_across_reads_up_to_eof(nfs_url: str) -> None:
    data = os.urandom(50_000)
    async with trionfs.mount(nfs_url + "?rsize=4096&window=3") as nfs:
        async with await open_bin(nfs, "/ri.bin", "wb") as f:
            await f.write(data)
        async with await open_bin(nfs, "/ri.bin", "r+b") as f:
            await f.seek(1000)
            buf = bytearray(30_000)  # spans 8 READs, starting inside the first
            assert await f.readinto(buf) == 30_000
            assert bytes(buf) == data[1000:31_000]
            assert await f.tell() == 31_000
            await f.pwrite(b"new!", 40_000)  # not sent yet: readinto must still see it
            view = memoryview(bytearray(25_000))
            assert await f.readinto(view) == 19_000  # short at EOF
            assert bytes(view[:19_000]) == data[31_000:40_000] + b"new!" + data[40_004:]
            assert await f.readinto(bytearray(10)) == 0


async def test_read_views_are_read_only_reply_views_with_unsent_writes_on_top(
    nfs_url: str,
) -> None:
    data = os.urandom(50_000)
    async with trionfs.mount(nfs_url + "?rsize=4096&window=3") as nfs:
        async with await open_bin(nfs, "/rv.bin", "wb") as f:
            await f.write(data)
        async with await open_bin(nfs, "/rv.bin", "r+b") as f:
            await f.seek(1000)
            views = await f.read_views(30_000)  # spans 8 READs: one view per reply
            assert len(views) > 1
            assert all(v.readonly for v in views)
            assert b"".join(views) == data[1000:31_000]
            assert await f.tell() == 31_000
            await f.pwrite(b"new!", 40_000)  # not sent yet: the views must still show it
            rest = b"".join(await f.read_views(25_000))
            assert rest == data[31_000:40_000] + b"new!" + data[40_004:]
            assert await f.read_views(10) == []
            with pytest.raises(ValueError, match="negative"):
                await f.read_views(-1)


async def test_pwrite_does_not_move_the_position(nfs_url: str) -> None:
    async with trionfs.mount(nfs_url) as nfs, await open_bin(nfs, "/p.bin", "w+b") as f:
        await f.write(b"hello")
        await f.pwrite(b"XY", 1)
        assert await f.tell() == 5
        await f.write(b"!")
    assert (on_disk(nfs_url) / "p.bin").read_bytes() == b"hXYlo!"


async def test_sparse_file_reads_back_zeros(nfs_url: str) -> None:
    async with trionfs.mount(nfs_url + "?rsize=4096") as nfs:
        async with await open_bin(nfs, "/sparse.bin", "wb") as f:
            await f.seek(1_000_000)
            await f.write(b"end")
        async with await open_bin(nfs, "/sparse.bin", "rb") as f:
            data = await f.read()
    assert len(data) == 1_000_003
    assert data[:1_000_000] == bytes(1_000_000)
    assert data[-3:] == b"end"
    st = (on_disk(nfs_url) / "sparse.bin").stat()
    assert st.st_size == 1_000_003
    assert st.st_blocks * 512 < 1_000_000  # a hole on the server, not written zeros


async def test_modes_follow_python_open(nfs_url: str) -> None:
    disk = on_disk(nfs_url)
    async with trionfs.mount(nfs_url) as nfs:
        with pytest.raises(FileNotFoundError):
            await nfs.open("/missing", "rb")
        async with await open_bin(nfs, "/m.bin", "xb") as f:
            await f.write(b"one")
        with pytest.raises(FileExistsError):
            await nfs.open("/m.bin", "xb")
        async with await open_bin(nfs, "/m.bin", "ab") as f:
            await f.write(b"two")
        assert disk.joinpath("m.bin").read_bytes() == b"onetwo"
        async with await open_bin(nfs, "/m.bin", "r+b") as f:
            await f.write(b"ON")
        assert disk.joinpath("m.bin").read_bytes() == b"ONetwo"
        async with await open_bin(nfs, "/m.bin", "rb") as f:
            with pytest.raises(io.UnsupportedOperation):
                await f.write(b"x")
        async with await open_bin(nfs, "/m.bin", "wb") as f:  # truncates
            with pytest.raises(io.UnsupportedOperation):
                await f.read()
        assert disk.joinpath("m.bin").read_bytes() == b""
        with pytest.raises(IsADirectoryError):
            await nfs.open("/", "rb")
        with pytest.raises(ValueError, match="mode"):
            await nfs.open("/m.bin", "rw")
        f = await open_bin(nfs, "/m.bin", "rb")
        await f.aclose()
        with pytest.raises(ValueError, match="closed file"):
            await f.read()


async def test_text_mode_with_encoding_and_line_iteration(nfs_url: str) -> None:
    async with trionfs.mount(nfs_url) as nfs:
        f = await nfs.open("/t.txt", "w", encoding="latin-1")
        assert isinstance(f, NFSTextFile)
        async with f:
            await f.write("caf\xe9\nline two\r\nlast")
        assert on_disk(nfs_url).joinpath("t.txt").read_bytes() == b"caf\xe9\nline two\r\nlast"
        g = await nfs.open("/t.txt", encoding="latin-1")
        assert isinstance(g, NFSTextFile)
        async with g:
            lines = [line async for line in g]
        assert lines == ["caf\xe9\n", "line two\n", "last"]
        h = await nfs.open("/t.txt", "rb")
        assert isinstance(h, NFSFile)
        async with h:
            assert [line async for line in h] == [b"caf\xe9\n", b"line two\r\n", b"last"]


async def test_many_tasks_share_one_mount(nfs_url: str) -> None:
    async with trionfs.mount(nfs_url + "?wsize=4096&rsize=4096") as nfs:

        async def worker(i: int) -> None:
            data = bytes([i]) * (5000 + i)
            async with await open_bin(nfs, f"/f{i}", "wb") as f:
                await f.write(data)
            async with await open_bin(nfs, f"/f{i}", "rb") as f:
                assert await f.read() == data

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(worker, i)
    for i in range(20):
        assert on_disk(nfs_url).joinpath(f"f{i}").read_bytes() == bytes([i]) * (5000 + i)


async def test_one_file_shared_by_tasks_keeps_every_write(nfs_url: str) -> None:
    async with (
        trionfs.mount(nfs_url + "?wsize=1024") as nfs,
        await open_bin(nfs, "/shared.bin", "wb") as f,
    ):

        async def put(i: int) -> None:
            await f.pwrite(bytes([65 + i]) * 1000, i * 1000)

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(put, i)
    expected = b"".join(bytes([65 + i]) * 1000 for i in range(10))
    assert on_disk(nfs_url).joinpath("shared.bin").read_bytes() == expected


async def test_context_free_open_mounts_and_unmounts(nfs_url: str) -> None:
    async with await trionfs.open(nfs_url + "/cf.bin", "wb") as f:
        assert isinstance(f, NFSFile)
        await f.write(ALL_BYTES)
    async with await trionfs.open(nfs_url + "/cf.bin", "rb") as g:
        assert isinstance(g, NFSFile)
        assert await g.read() == ALL_BYTES
    with pytest.raises(FileNotFoundError):
        await trionfs.open(nfs_url + "/nope.bin", "rb")
    async with await trionfs.open(nfs_url + "/cf.txt", "w") as t:
        assert isinstance(t, NFSTextFile)
        await t.write("text\n")
    assert on_disk(nfs_url).joinpath("cf.txt").read_text() == "text\n"


async def test_sync_option_writes_file_sync(nfs_url: str) -> None:
    async with trionfs.mount(nfs_url + "?sync=1&wsize=4096") as nfs:
        f = await open_bin(nfs, "/s.bin", "wb")
        await f.write(b"z" * 10_000)
        await f._send_dirty(min_size=1)
        await f._wait_writes()
        assert f.tracker.clean  # FILE_SYNC replies release the data without a COMMIT
        await f.aclose()
    assert on_disk(nfs_url).joinpath("s.bin").read_bytes() == b"z" * 10_000


async def test_readonly_mount_refuses_writes(nfs_url: str) -> None:
    async with trionfs.mount(nfs_url + "?readonly=1") as nfs:
        with pytest.raises(OSError, match="read-only") as info:
            await nfs.open("/ro.bin", "wb")
        assert info.value.errno == 30
        with pytest.raises(OSError, match="read-only"):
            await nfs.mkdir("/d")


async def test_copy_to_a_local_file_cancelled_midway_leaves_the_file_usable(
    nfs_url: str, tmp_path: Path
) -> None:
    # Larger than one piece of the copy (1 MiB): the first piece is written locally before
    # the progress callback cancels, the rest is not.
    data = os.urandom(3 << 20)
    out = tmp_path / "out.bin"
    async with trionfs.mount(nfs_url + "?rsize=16384&window=3") as nfs:
        async with await open_bin(nfs, "/cc.bin", "wb") as f:
            await f.write(data)
        async with await open_bin(nfs, "/cc.bin", "rb") as f:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                with trio.CancelScope() as scope:
                    await copy_nfs_to_fd(f, fd, lambda done: scope.cancel())
                assert scope.cancelled_caught
                await f.seek(0)  # the file object still works, read-ahead included
                assert os.fstat(fd).st_size < len(data)
                os.ftruncate(fd, await copy_nfs_to_fd(f, fd))
            finally:
                os.close(fd)
    assert out.read_bytes() == data
