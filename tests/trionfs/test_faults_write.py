"""Faults against a private nfs-ganesha: a restart (new write verifier) in the middle of a
write, a server that stops answering, cancellation in the middle of a pipelined read."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest
import trio

import trionfs
from trionfs import NFSFile, RPCTimeoutError
from trionfs._cli_copy import copy_fd_to_nfs
from trionfs.testing import GaneshaServer, libnfs_cat

pytestmark = pytest.mark.interop


async def open_bin(nfs: trionfs.NFS, path: str, mode: str) -> NFSFile:
    f = await nfs.open(path, mode)
    assert isinstance(f, NFSFile)
    return f


async def test_restart_with_new_epoch_mid_write_rewrites_everything_uncommitted(
    nfs_server: GaneshaServer,
) -> None:
    data = os.urandom(256 * 1024)
    half = len(data) // 2
    async with trionfs.mount(nfs_server.url + "?wsize=8192&timeo=50&retrans=4") as nfs:
        f = await open_bin(nfs, "/big.bin", "wb")
        await f.write(data[:half])
        await f._send_dirty(min_size=1)
        await f._wait_writes()  # the first half is acknowledged UNSTABLE, not committed
        assert f.tracker.needs_commit
        assert not f.tracker.has_dirty
        before = f.tracker.verifier
        nfs_server.restart(new_epoch=True)  # blocks the loop: the connection drops meanwhile
        await f.write(data[half:])
        await f.aclose()
        assert f.tracker.verifier != before
        assert f.tracker.verifier_changes >= 1
        assert f.tracker.rewritten_bytes >= half  # the first half went out again
        assert f.tracker.clean
    assert (nfs_server.export_dir / "big.bin").read_bytes() == data
    assert libnfs_cat(nfs_server.url_for("big.bin"), server=nfs_server) == data


async def test_restart_between_write_and_commit_is_caught_by_commit(
    nfs_server: GaneshaServer,
) -> None:
    data = os.urandom(40_000)
    async with trionfs.mount(nfs_server.url + "?wsize=4096&timeo=50&retrans=4") as nfs:
        f = await open_bin(nfs, "/c.bin", "wb")
        await f.write(data)
        await f._send_dirty(min_size=1)
        await f._wait_writes()
        nfs_server.restart(new_epoch=True)
        await f.flush()  # COMMIT shows the new verifier: everything is written again
        assert f.tracker.rewritten_bytes == len(data)
        await f.aclose()
    assert (nfs_server.export_dir / "c.bin").read_bytes() == data


async def test_restart_with_same_epoch_needs_no_rewrite(nfs_server: GaneshaServer) -> None:
    data = os.urandom(20_000)
    async with trionfs.mount(nfs_server.url + "?wsize=4096&timeo=50&retrans=4") as nfs:
        f = await open_bin(nfs, "/s.bin", "wb")
        await f.write(data)
        await f._send_dirty(min_size=1)
        await f._wait_writes()
        nfs_server.restart(new_epoch=False)
        await f.aclose()
        assert f.tracker.rewritten_bytes == 0
    assert (nfs_server.export_dir / "s.bin").read_bytes() == data


async def test_paused_server_gives_a_timeout_error_not_a_hang(nfs_server: GaneshaServer) -> None:
    async with trionfs.mount(nfs_server.url + "?timeo=3&retrans=1") as nfs:
        await nfs.mkdir("/d")
        nfs_server.pause()
        try:
            with trio.fail_after(30):  # a guard against a hang, not a timing assertion
                with pytest.raises(RPCTimeoutError):
                    await nfs.stat("/d")
                with pytest.raises(TimeoutError):
                    await nfs.listdir("/d")
        finally:
            nfs_server.resume()
        assert await nfs.listdir("/d") == []  # usable again once the server answers


async def test_stopped_server_gives_a_timeout_error_and_recovers(
    nfs_server: GaneshaServer,
) -> None:
    async with trionfs.mount(nfs_server.url + "?timeo=3&retrans=1") as nfs:
        await nfs.mkdir("/d")
        nfs_server.stop_ganesha()
        try:
            with trio.fail_after(30), pytest.raises(TimeoutError):
                await nfs.stat("/d")
        finally:
            nfs_server.start_ganesha(new_epoch=False)
        with trio.fail_after(30):
            assert await nfs.isdir("/d")


async def test_write_error_at_close_is_raised_and_the_file_is_still_closed(
    nfs_server: GaneshaServer,
) -> None:
    async with trionfs.mount(nfs_server.url + "?timeo=3&retrans=0&autoreconnect=0") as nfs:
        f = await open_bin(nfs, "/lost.bin", "wb")
        await f.write(b"x" * 1000)
        nfs_server.pause()
        try:
            with trio.fail_after(30), pytest.raises(TimeoutError):
                await f.aclose()  # never reported as written
            assert f.closed
        finally:
            nfs_server.resume()


async def test_cancelled_pipelined_read_leaves_the_client_usable(
    nfs_server: GaneshaServer,
) -> None:
    data = os.urandom(512 * 1024)
    async with trionfs.mount(nfs_server.url + "?rsize=4096&wsize=65536&window=8") as nfs:
        async with await open_bin(nfs, "/r.bin", "wb") as f:
            await f.write(data)
        f = await open_bin(nfs, "/r.bin", "rb")
        inner = nfs._read_rpc
        calls = 0
        with trio.CancelScope() as scope:

            async def read_then_cancel(
                fh: bytes, offset: int, count: int
            ) -> tuple[memoryview, bool]:
                nonlocal calls
                calls += 1
                if calls == 20:  # in the middle: READs before and after this one are in flight
                    scope.cancel()
                return await inner(fh, offset, count)

            nfs._read_rpc = read_then_cancel  # type: ignore[method-assign]
            await f.read(len(data))
        nfs._read_rpc = inner  # type: ignore[method-assign]
        assert scope.cancelled_caught
        assert await f.tell() == 0  # nothing consumed
        assert await f.read() == data  # the same file object still works
        await f.aclose()
        async with await open_bin(nfs, "/r.bin", "rb") as g:
            assert await g.pread(100, 1000) == data[1000:1100]


async def test_cancelled_mount_exit_does_not_wait_for_a_frozen_server(
    nfs_server: GaneshaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trionfs._mount as context

    monkeypatch.setattr(context, "EXIT_FLUSH", 0.5)
    try:
        with trio.fail_after(20):  # timeo is the default 60 s: only the exit cap ends this
            with trio.CancelScope() as scope:
                async with trionfs.mount(nfs_server.url) as nfs:
                    f = await open_bin(nfs, "/pending.bin", "wb")
                    await f.write(b"never stored")
                    nfs_server.pause()
                    scope.cancel()
                    await trio.sleep_forever()
            assert scope.cancelled_caught
    finally:
        nfs_server.resume()


async def test_normal_mount_exit_raises_a_flush_error(nfs_server: GaneshaServer) -> None:
    with pytest.raises(TimeoutError):  # noqa: PT012
        async with trionfs.mount(nfs_server.url + "?timeo=3&retrans=0&autoreconnect=0") as nfs:
            f = await open_bin(nfs, "/unflushed.bin", "wb")
            await f.write(b"data")
            nfs_server.pause()
    nfs_server.resume()


async def test_mmap_backed_copy_survives_a_restart_with_a_new_epoch(
    nfs_server: GaneshaServer, tmp_path: Path
) -> None:
    data = b"\x01" + os.urandom(3 * 65536 + 1234)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    async with trionfs.mount(nfs_server.url + "?wsize=65536&timeo=50&retrans=4") as nfs:
        f = await open_bin(nfs, "/m.bin", "wb")
        fd = os.open(src, os.O_RDONLY)
        try:
            n = await copy_fd_to_nfs(fd, f)
        finally:
            os.close(fd)  # the mapping outlives the descriptor
        await f._wait_writes()
        assert f.tracker.needs_commit
        # Held by reference: slices of the read-only mapping, not copies.
        assert all(isinstance(e.data.obj, mmap.mmap) for e in f.tracker._extents)
        nfs_server.restart(new_epoch=True)  # the server loses what it has not committed
        await f.truncate(n)
        await f.aclose()
        assert f.tracker.verifier_changes >= 1
        assert f.tracker.rewritten_bytes >= 3 * 65536  # rewritten from the mapping
        assert f.tracker.clean
    assert (nfs_server.export_dir / "m.bin").read_bytes() == data
