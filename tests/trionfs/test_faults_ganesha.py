"""trionfs against a ganesha that restarts, stops, dies or freezes under it (real peer faults).

The restart in the middle of a large write (write verifier change) is covered with the file
API's tests; these check the connection-level behaviour every call relies on.
"""

from __future__ import annotations

import pytest
import trio

import trionfs
from trionfs.testing import GaneshaServer, libnfs_cat

pytestmark = pytest.mark.interop


async def test_mount_keeps_working_across_a_server_restart(nfs_server: GaneshaServer) -> None:
    async with trionfs.mount(nfs_server.url) as nfs:
        async with await nfs.open("before.txt", "wb") as f:
            await f.write(b"written before the restart")
        epoch = nfs_server.epoch
        await trio.to_thread.run_sync(nfs_server.restart)
        assert nfs_server.epoch != epoch
        # Same port, same file handles (VFS): the client reconnects and carries on.
        async with await nfs.open("before.txt", "rb") as f:
            assert await f.read() == b"written before the restart"
        async with await nfs.open("after.txt", "wb") as f:
            await f.write(b"written after")
        assert sorted(await nfs.listdir("/")) == ["after.txt", "before.txt"]
    assert libnfs_cat(nfs_server.url_for("after.txt")) == b"written after"


async def test_call_to_a_frozen_server_times_out_and_the_mount_recovers(
    nfs_server: GaneshaServer,
) -> None:
    async with trionfs.mount(nfs_server.url + "?timeo=3&retrans=1") as nfs:
        await nfs.stat("/")
        await trio.to_thread.run_sync(nfs_server.pause)
        try:
            with trio.fail_after(10):  # 2 x 0.3 s expected; never hang
                with pytest.raises(TimeoutError):
                    await nfs.stat("/")
        finally:
            nfs_server.resume()
        assert (await nfs.stat("/")).st_mode & 0o777 == 0o777


async def test_cancelling_a_call_to_a_frozen_server_returns_promptly(
    nfs_server: GaneshaServer,
) -> None:
    async with trionfs.mount(nfs_server.url) as nfs:
        await trio.to_thread.run_sync(nfs_server.pause)
        try:
            with trio.move_on_after(0.3) as scope:
                await nfs.stat("/")
            assert scope.cancelled_caught
        finally:
            nfs_server.resume()
        # The late reply to the cancelled call is dropped; the next call gets its own.
        assert (await nfs.stat("/")).st_mode & 0o777 == 0o777


async def test_call_made_while_the_server_is_down_completes_once_it_is_back(
    nfs_server: GaneshaServer,
) -> None:
    async with trionfs.mount(nfs_server.url) as nfs:
        await nfs.stat("/")
        await trio.to_thread.run_sync(nfs_server.stop_ganesha)
        results: list[object] = []

        async def stat_root() -> None:
            results.append(await nfs.stat("/"))

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stat_root)
                await trio.sleep(0.3)  # the call is waiting for a connection
                assert results == []
                await trio.to_thread.run_sync(nfs_server.start_ganesha)
        assert len(results) == 1


async def test_without_autoreconnect_a_crash_fails_calls_instead_of_hanging(
    nfs_server: GaneshaServer,
) -> None:
    async with trionfs.mount(nfs_server.url + "?autoreconnect=0") as nfs:
        await nfs.stat("/")
        await trio.to_thread.run_sync(nfs_server.kill)
        with trio.fail_after(10), pytest.raises((trio.BrokenResourceError, OSError)):
            await nfs.stat("/")


async def test_call_to_a_stopped_server_times_out_after_its_retransmissions(
    nfs_server: GaneshaServer,
) -> None:
    async with trionfs.mount(nfs_server.url + "?timeo=3&retrans=1") as nfs:
        await nfs.stat("/")
        await trio.to_thread.run_sync(nfs_server.stop_ganesha)
        try:
            with trio.fail_after(10), pytest.raises(TimeoutError):
                await nfs.stat("/")
        finally:
            await trio.to_thread.run_sync(nfs_server.start_ganesha)
        assert (await nfs.stat("/")).st_mode & 0o777 == 0o777
