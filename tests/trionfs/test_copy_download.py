"""``copy_nfs_to_fd`` (``trionfs cp`` NFS → local) against nfs-ganesha: exact bytes, holes
(``sparse``), both ways of writing locally (READ data spliced into the file in the event loop,
and replies written in a worker thread after a slow write), local write errors, cancellation."""

from __future__ import annotations

import errno
import itertools
import os
from pathlib import Path

import pytest
import trio

import trionfs
from trionfs import _cli_copy, _payload_sink, _reserve, parse_url
from trionfs._cli_copy import HOLE_BLOCK, Sparse, copy_nfs_to_fd
from trionfs._file import NFSFile
from trionfs.testing import GaneshaServer

pytestmark = pytest.mark.interop

RSIZE = 64 << 10


@pytest.fixture(params=["inline", "worker-thread"])
def write_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "worker-thread":
        # Every local write counts as slow: after the first, the rest go to a worker thread
        # (and splicing stops after its first piece: the replies carry the rest).
        monkeypatch.setattr(_cli_copy, "SLOW_WRITE", -1.0)
        monkeypatch.setattr(_payload_sink, "SLOW_WRITE", -1.0)
    return str(request.param)


async def download(nfs_url: str, name: str, dst: Path, sparse: Sparse = "auto") -> int:
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        async with await trionfs.open(f"{nfs_url}/{name}?rsize={RSIZE}", "rb") as f:
            assert isinstance(f, NFSFile)
            n = await copy_nfs_to_fd(f, fd, sparse=sparse)
        os.ftruncate(fd, n)
        return n
    finally:
        os.close(fd)


@pytest.mark.parametrize("size", [0, 1, RSIZE - 1, 5 * RSIZE, 5 * RSIZE + 12345, (1 << 20) + 7])
async def test_download_of_random_data_is_exact(
    nfs_url: str, tmp_path: Path, write_mode: str, size: int
) -> None:
    data = os.urandom(size)
    (Path(parse_url(nfs_url).path) / "r.bin").write_bytes(data)
    back = tmp_path / "back.bin"
    assert await download(nfs_url, "r.bin", back) == size
    assert back.read_bytes() == data


def zeros_inside() -> bytearray:
    data = bytearray(os.urandom(3 << 20))
    data[HOLE_BLOCK : 17 * HOLE_BLOCK] = bytes(16 * HOLE_BLOCK)  # 1 MiB of zeros inside
    data[-100:] = bytes(100)  # a zero tail shorter than a block is still written
    return data


async def test_download_with_sparse_always_leaves_holes_for_zero_blocks_and_is_exact(
    nfs_url: str, tmp_path: Path, write_mode: str
) -> None:
    data = zeros_inside()
    (Path(parse_url(nfs_url).path) / "h.bin").write_bytes(data)
    back = tmp_path / "back.bin"
    assert await download(nfs_url, "h.bin", back, sparse="always") == len(data)
    assert back.read_bytes() == data
    assert back.stat().st_blocks * 512 <= len(data) - (1 << 20)


@pytest.mark.parametrize("sparse", ["auto", "never"])
async def test_download_of_a_dense_source_is_dense_and_exact(
    nfs_url: str, tmp_path: Path, write_mode: str, sparse: Sparse
) -> None:
    data = zeros_inside()  # written zeros: the source is not sparse
    (Path(parse_url(nfs_url).path) / "d.bin").write_bytes(data)
    back = tmp_path / "back.bin"
    assert await download(nfs_url, "d.bin", back, sparse=sparse) == len(data)
    assert back.read_bytes() == data
    assert back.stat().st_blocks * 512 >= len(data)


async def test_download_of_a_sparse_source_keeps_its_holes_with_auto(
    nfs_url: str, tmp_path: Path
) -> None:
    with (Path(parse_url(nfs_url).path) / "s.bin").open("wb") as src:
        src.write(b"head")
        src.seek(5 << 20)
        src.write(b"tail")
    back = tmp_path / "back.bin"
    assert await download(nfs_url, "s.bin", back) == (5 << 20) + 4
    assert back.read_bytes() == b"head" + bytes((5 << 20) - 4) + b"tail"
    assert back.stat().st_blocks * 512 < 1 << 20


async def test_a_local_write_error_ends_the_download_with_it_and_the_mount_works_on(
    nfs_url: str, tmp_path: Path
) -> None:
    data = os.urandom(5 * RSIZE + 7)
    (Path(parse_url(nfs_url).path) / "e.bin").write_bytes(data)
    (tmp_path / "ro.bin").write_bytes(b"")
    fd = os.open(tmp_path / "ro.bin", os.O_RDONLY)  # splice into it fails: EBADF
    try:
        async with await trionfs.open(f"{nfs_url}/e.bin?rsize={RSIZE}", "rb") as f:
            assert isinstance(f, NFSFile)
            with pytest.raises(OSError, match="Bad file descriptor") as caught:
                await copy_nfs_to_fd(f, fd)
            assert caught.value.errno == errno.EBADF
            assert await f.pread(len(data), 0) == data  # the same connection reads on
    finally:
        os.close(fd)


async def copy_cancelled_once(f: NFSFile, fd: int, *, at: int) -> int:
    """``copy_nfs_to_fd`` cancelled once its progress reaches ``at`` bytes: the last progress
    count (the local file holds exactly that prefix)."""
    seen: list[int] = []
    with trio.CancelScope() as scope:

        def progress(done: int) -> None:
            seen.append(done)
            if done >= at:
                scope.cancel()

        await copy_nfs_to_fd(f, fd, progress)
    assert scope.cancelled_caught
    return seen[-1]


async def test_cancelled_download_leaves_the_file_usable(nfs_url: str, tmp_path: Path) -> None:
    data = os.urandom(2 << 20)
    (Path(parse_url(nfs_url).path) / "c.bin").write_bytes(data)
    fd = os.open(tmp_path / "back.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        async with await trionfs.open(f"{nfs_url}/c.bin?rsize={RSIZE}", "rb") as f:
            assert isinstance(f, NFSFile)
            # cancelled after the first piece, with READs ahead in flight
            done = await copy_cancelled_once(f, fd, at=1)
            assert 0 < done < len(data)
            assert await f.pread(1000, len(data) - 1000) == data[-1000:]
            assert await f.read(100) == data[done : done + 100]
    finally:
        os.close(fd)
    assert (tmp_path / "back.bin").read_bytes()[:done] == data[:done]


async def test_download_survives_a_server_crash_in_the_middle(
    nfs_server: GaneshaServer, tmp_path: Path
) -> None:
    # ganesha freezes with READ replies half sent, is killed and started again: the calls are
    # sent again on a new connection and their replies spliced again from the start.
    data = os.urandom(24 << 20)
    (nfs_server.export_dir / "big.bin").write_bytes(data)
    fd = os.open(tmp_path / "back.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    crashed: list[int] = []

    def crash_and_restart() -> None:
        nfs_server.kill()
        nfs_server.start_ganesha(new_epoch=False)

    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:

                def progress(done: int) -> None:
                    if not crashed and done >= 4 << 20:
                        crashed.append(done)
                        nfs_server.pause()  # now, with READs in flight
                        nursery.start_soon(trio.to_thread.run_sync, crash_and_restart)

                url = nfs_server.url_for("big.bin") + "?rsize=1048576"
                async with await trionfs.open(url, "rb") as f:
                    assert isinstance(f, NFSFile)
                    n = await copy_nfs_to_fd(f, fd, progress)
                    reconnects = f._nfs._session.nfs.rpc.reconnects
            os.ftruncate(fd, n)
    finally:
        os.close(fd)
    assert crashed
    assert reconnects >= 1
    assert n == len(data)
    assert (tmp_path / "back.bin").read_bytes() == data


async def test_without_a_pipe_the_download_goes_the_ordinary_way(
    nfs_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pipe(flags: int) -> tuple[int, int]:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "pipe2", no_pipe)  # what _payload_sink calls
    data = os.urandom(5 * RSIZE + 99)
    (Path(parse_url(nfs_url).path) / "p.bin").write_bytes(data)
    back = tmp_path / "back.bin"
    assert await download(nfs_url, "p.bin", back) == len(data)
    assert back.read_bytes() == data


@pytest.fixture
def reserve_spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Small reservation steps, so that test-sized copies reserve; the calls made."""
    monkeypatch.setattr(_reserve, "RESERVE_STEP", 4 * RSIZE)
    monkeypatch.setattr(_reserve, "RESERVE_AHEAD", 8 * RSIZE)
    calls: list[tuple[int, int]] = []
    real = _reserve.reserve

    def spy(fd: int, offset: int, length: int) -> None:
        calls.append((offset, length))
        real(fd, offset, length)

    monkeypatch.setattr(_reserve, "reserve", spy)
    return calls


SLACK = 16 << 10
"""ext4 counts its extent-tree blocks in ``st_blocks`` too (one 4 KiB block seen here); a
reservation left behind would be at least a ``RESERVE_STEP`` (256 KiB here)."""


def no_blocks_past_the_end(path: Path) -> bool:
    st = path.stat()
    return st.st_blocks * 512 <= -(-st.st_size // 4096) * 4096 + SLACK


@pytest.mark.parametrize("local", ["tmpfs", "disk"])
async def test_a_big_download_reserves_ahead_is_exact_and_keeps_no_reservation(
    nfs_url: str, tmp_path: Path, reserve_spy: list[tuple[int, int]], local: str
) -> None:
    data = os.urandom(40 * RSIZE + 123)
    (Path(parse_url(nfs_url).path) / "big.bin").write_bytes(data)
    directory = Path("/dev/shm") if local == "tmpfs" else tmp_path
    back = directory / f"trionfs-reserve-{os.getpid()}.bin"
    try:
        assert await download(nfs_url, "big.bin", back) == len(data)
        assert back.read_bytes() == data
        assert no_blocks_past_the_end(back)
    finally:
        back.unlink()
    # contiguous steps from 0, never past the source's end
    assert reserve_spy[0][0] == 0
    assert all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(reserve_spy))
    assert reserve_spy[-1][0] + reserve_spy[-1][1] <= len(data)
    assert len(reserve_spy) >= 2


async def test_a_cancelled_reserved_download_keeps_no_reservation(
    nfs_url: str, tmp_path: Path, reserve_spy: list[tuple[int, int]]
) -> None:
    data = os.urandom(40 * RSIZE)
    (Path(parse_url(nfs_url).path) / "cr.bin").write_bytes(data)
    back = tmp_path / "back.bin"
    fd = os.open(back, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        async with await trionfs.open(f"{nfs_url}/cr.bin?rsize={RSIZE}", "rb") as f:
            assert isinstance(f, NFSFile)
            done = await copy_cancelled_once(f, fd, at=4 * RSIZE)
    finally:
        os.close(fd)
    assert reserve_spy
    assert no_blocks_past_the_end(back)
    assert back.read_bytes()[:done] == data[:done]


async def test_a_failing_reserved_download_keeps_no_reservation(
    nfs_url: str,
    tmp_path: Path,
    reserve_spy: list[tuple[int, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = os.urandom(40 * RSIZE)
    (Path(parse_url(nfs_url).path) / "fr.bin").write_bytes(data)
    back = tmp_path / "back.bin"
    real_splice = os.splice
    spliced: list[int] = []

    def failing_splice(src: int, dst: int, count: int, *args: object, **kwargs: object) -> int:
        if kwargs.get("offset_dst") is not None:  # pipe -> file
            spliced.append(count)
            if len(spliced) > 8:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_splice(src, dst, count, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "splice", failing_splice)
    with pytest.raises(OSError, match="No space left") as caught:
        await download(nfs_url, "fr.bin", back)
    assert caught.value.errno == errno.ENOSPC
    assert reserve_spy
    assert no_blocks_past_the_end(back)
