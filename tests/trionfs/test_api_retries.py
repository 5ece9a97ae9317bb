"""Transient server answers handled by the mount: NFS3ERR_JUKEBOX is retried with backoff,
NFS3ERR_BAD_COOKIE restarts a directory listing, a stale handle empties the path cache.

A fresh v3-only ganesha cannot be made to answer JUKEBOX (or STALE) on demand, so there the
first replies are replaced by the exact error the protocol client raises for them; every other
call goes to the real server.  BAD_COOKIE is tested both ways: injected, and from ganesha
itself (``UseCookieVerifier``) when the directory changes between two pages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import trionfs
from trionfs import NFSError, NFSStat3

pytestmark = pytest.mark.interop


def fail_first(
    client: Any,
    name: str,
    status: NFSStat3,
    times: int,
    when: Callable[..., bool] = lambda *a: True,
) -> list[int]:
    """Make ``client.<name>`` raise ``NFSError(status)`` the first ``times`` calls that match."""
    inner: Callable[..., Awaitable[Any]] = getattr(client, name)
    failed = [0]

    async def wrapper(*args: Any) -> Any:
        if failed[0] < times and when(*args):
            failed[0] += 1
            raise NFSError(status)
        return await inner(*args)

    setattr(client, name, wrapper)
    return failed


async def test_jukebox_is_retried_until_the_server_is_ready(nfs_url: str) -> None:
    async with trionfs.mount(nfs_url) as nfs:
        await nfs.mkdir("/d")
        failed = fail_first(nfs._session.nfs, "getattr", NFSStat3.JUKEBOX, 3)
        st = await nfs.stat("/d")
        assert failed == [3]
        assert st.st_mode & 0o040000


async def test_jukebox_forever_gives_up_with_eagain(
    nfs_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trionfs._mountbase as context

    monkeypatch.setattr(context, "JUKEBOX_FIRST_DELAY", 0.001)
    monkeypatch.setattr(context, "JUKEBOX_MAX_DELAY", 0.002)
    async with trionfs.mount(nfs_url) as nfs:
        fail_first(nfs._session.nfs, "getattr", NFSStat3.JUKEBOX, 10**6)
        with pytest.raises(BlockingIOError):
            await nfs.stat("/")


async def test_bad_cookie_restarts_the_listing(nfs_url: str) -> None:
    async with trionfs.mount(nfs_url + "?readdir-buffer=4096") as nfs:
        await nfs.mkdir("/big")
        for i in range(300):  # many READDIRPLUS replies of 4 KiB
            f = await nfs.open(f"/big/entry-with-a-long-name-{i:04d}", "xb")
            await f.aclose()
        calls = fail_first(
            nfs._session.nfs, "readdirplus", NFSStat3.BAD_COOKIE, 1,
            when=lambda fh, cookie, *rest: cookie != 0,  # a continuation
        )  # fmt: skip
        names = await nfs.listdir("/big")
        assert calls == [1]
        assert sorted(names) == [f"entry-with-a-long-name-{i:04d}" for i in range(300)]


async def test_stale_handle_empties_the_path_cache_and_retries(nfs_url: str) -> None:
    async with trionfs.mount(nfs_url) as nfs:
        await nfs.makedirs("/a/b")
        await nfs.stat("/a/b")
        assert len(nfs.path_cache) >= 2
        misses = nfs.path_cache.misses
        fail_first(nfs._session.nfs, "getattr", NFSStat3.STALE, 1)
        assert (await nfs.stat("/a/b")).st_mode & 0o040000
        assert nfs.path_cache.misses == misses + 2  # "a" and "b" looked up again


async def test_real_bad_cookie_from_ganesha_restarts_the_listing() -> None:
    """ganesha with ``UseCookieVerifier`` answers NFS3ERR_BAD_COOKIE itself when the directory
    changes between two READDIRPLUS pages."""
    from trionfs.testing import GaneshaServer, ganesha_unavailable_reason

    if ganesha_unavailable_reason() is not None:
        pytest.skip(ganesha_unavailable_reason() or "")
    with GaneshaServer(export_params={"UseCookieVerifier": True}) as server, server.netns():
        async with trionfs.mount(server.url + "?readdir-buffer=4096") as nfs:
            await nfs.mkdir("/big")
            for i in range(200):
                f = await nfs.open(f"/big/entry-with-a-long-name-{i:04d}", "xb")
                await f.aclose()
            client = nfs._session.nfs
            inner = client.readdirplus
            seen: list[int] = []

            async def change_between_pages(fh: bytes, cookie: int, *rest: Any) -> Any:
                if cookie != 0 and len(seen) == 1:  # after the first page: change the dir
                    g = await nfs.open("/big/added-meanwhile", "xb")
                    await g.aclose()
                seen.append(cookie)
                return await inner(fh, cookie, *rest)

            client.readdirplus = change_between_pages  # type: ignore[method-assign,assignment]
            names = await nfs.listdir("/big")
            assert seen.count(0) == 2  # the server refused the stale cookie: started over
            assert len(names) == 201
            assert "added-meanwhile" in names
