"""``copy_nfs_to_fd`` (``trionfs cp`` NFS → local) against nfs-ganesha: exact bytes, holes,
both ways of writing locally (in the event loop, and in a worker thread after a slow write),
cancellation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

import trionfs
from trionfs import _cli_copy, parse_url
from trionfs._cli_copy import HOLE_BLOCK, copy_nfs_to_fd
from trionfs._file import NFSFile

pytestmark = pytest.mark.interop

RSIZE = 64 << 10


@pytest.fixture(params=["inline", "worker-thread"])
def write_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "worker-thread":
        # Every local write counts as slow: after the first, the rest go to a worker thread.
        monkeypatch.setattr(_cli_copy, "SLOW_WRITE", -1.0)
    return str(request.param)


async def download(nfs_url: str, name: str, dst: Path) -> int:
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        async with await trionfs.open(f"{nfs_url}/{name}?rsize={RSIZE}", "rb") as f:
            assert isinstance(f, NFSFile)
            n = await copy_nfs_to_fd(f, fd)
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


async def test_download_leaves_holes_for_zero_blocks_and_is_exact(
    nfs_url: str, tmp_path: Path, write_mode: str
) -> None:
    data = bytearray(os.urandom(3 << 20))
    data[HOLE_BLOCK : 17 * HOLE_BLOCK] = bytes(16 * HOLE_BLOCK)  # 1 MiB of zeros inside
    data[-100:] = bytes(100)  # a zero tail shorter than a block is still written
    (Path(parse_url(nfs_url).path) / "h.bin").write_bytes(data)
    back = tmp_path / "back.bin"
    assert await download(nfs_url, "h.bin", back) == len(data)
    assert back.read_bytes() == data
    assert back.stat().st_blocks * 512 <= len(data) - (1 << 20)


async def test_cancelled_download_leaves_the_file_usable(nfs_url: str, tmp_path: Path) -> None:
    data = os.urandom(2 << 20)
    (Path(parse_url(nfs_url).path) / "c.bin").write_bytes(data)
    fd = os.open(tmp_path / "back.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        async with await trionfs.open(f"{nfs_url}/c.bin?rsize={RSIZE}", "rb") as f:
            assert isinstance(f, NFSFile)
            seen: list[int] = []
            with trio.CancelScope() as scope:

                def progress(done: int) -> None:
                    seen.append(done)
                    scope.cancel()  # after the first piece, with READs ahead in flight

                await copy_nfs_to_fd(f, fd, progress)
            assert scope.cancelled_caught
            assert 0 < seen[-1] < len(data)
            assert await f.pread(1000, len(data) - 1000) == data[-1000:]
            assert await f.read(100) == data[seen[-1] : seen[-1] + 100]
    finally:
        os.close(fd)
    assert (tmp_path / "back.bin").read_bytes()[: seen[-1]] == data[: seen[-1]]
