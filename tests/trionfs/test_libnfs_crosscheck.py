"""The libnfs cross-check helpers against the shared ganesha: tools, async forms, ctypes mount."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from trionfs.testing import (
    GaneshaServer,
    LibnfsError,
    LibnfsMount,
    libnfs_cat,
    libnfs_cat_async,
    libnfs_cp,
    libnfs_cp_async,
    libnfs_ls,
    libnfs_ls_async,
    libnfs_mkdir,
)

pytestmark = pytest.mark.interop


def _on_disk(server: GaneshaServer, url: str) -> Path:
    return server.export_dir / url.removeprefix(server.url + "/")


def test_cp_in_and_cat_back_returns_the_same_bytes_beyond_one_rpc(
    nfs_url: str, nfs_server_shared: GaneshaServer, tmp_path: Path
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 123)  # more than one 1 MiB libnfs transfer
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    libnfs_cp(str(src), nfs_url + "/blob.bin")
    assert libnfs_cat(nfs_url + "/blob.bin") == data
    assert (_on_disk(nfs_server_shared, nfs_url) / "blob.bin").read_bytes() == data
    out = tmp_path / "out.bin"
    libnfs_cp(nfs_url + "/blob.bin", str(out))
    assert out.read_bytes() == data


def test_ls_reports_names_sizes_owners_and_directories(nfs_url: str, tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.write_bytes(b"12345")
    libnfs_cp(str(src), nfs_url + "/with space.txt?uid=1234&gid=99")
    libnfs_mkdir(nfs_url.rsplit("/", 1)[1] + "/sub")
    entries = {e.name: e for e in libnfs_ls(nfs_url)}
    assert set(entries) == {"with space.txt", "sub"}
    f, d = entries["with space.txt"], entries["sub"]
    assert (f.size, f.uid, f.gid, f.is_dir) == (5, 1234, 99, False)
    assert d.is_dir
    assert d.mode == "drwxrwxrwx"


def test_cat_of_a_missing_file_raises_with_libnfs_message(nfs_url: str) -> None:
    with pytest.raises(LibnfsError, match="NFS3ERR_NOENT"):
        libnfs_cat(nfs_url + "/missing")


def test_ls_of_a_missing_directory_raises(nfs_url: str) -> None:
    with pytest.raises(LibnfsError, match="MNT3ERR_ACCES"):
        libnfs_ls(nfs_url + "/missing")


def test_cp_of_a_missing_local_file_raises(nfs_url: str, tmp_path: Path) -> None:
    with pytest.raises(LibnfsError, match="Failed to open"):
        libnfs_cp(str(tmp_path / "missing"), nfs_url + "/x")


def test_helpers_find_the_server_from_any_thread_when_given_explicitly(
    nfs_server_shared: GaneshaServer, tmp_path: Path
) -> None:
    # Not entered: the helpers still run the tools in the server's namespace.
    url = libnfs_mkdir("explicit-server-dir", server=nfs_server_shared)
    src = tmp_path / "e"
    src.write_bytes(b"e")
    libnfs_cp(str(src), url + "/e", server=nfs_server_shared)
    assert libnfs_cat(url + "/e", server=nfs_server_shared) == b"e"


def test_helpers_refuse_to_guess_between_several_servers(
    nfs_server_shared: GaneshaServer,
) -> None:
    with GaneshaServer() as other:
        assert other.running
        with pytest.raises(RuntimeError, match="no GaneshaServer for this thread"):
            libnfs_ls(nfs_server_shared.url)


async def test_async_helpers_do_not_block_and_agree_with_the_sync_ones(
    nfs_url: str, tmp_path: Path
) -> None:
    src = tmp_path / "a"
    src.write_bytes(b"async bytes")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await libnfs_cp_async(str(src), nfs_url + "/a")
        assert await libnfs_cat_async(nfs_url + "/a") == b"async bytes"
        assert [e.name for e in await libnfs_ls_async(nfs_url)] == ["a"]
        nursery.cancel_scope.cancel()
    assert ticks > 0
    assert libnfs_cat(nfs_url + "/a") == b"async bytes"


def test_libnfs_mount_writes_reads_and_removes_through_one_mount(
    nfs_url: str, nfs_server_shared: GaneshaServer
) -> None:
    sub = nfs_url.rsplit("/", 1)[1]
    data = os.urandom(2 * 1024 * 1024 + 7)
    with LibnfsMount(nfs_server_shared.host, nfs_server_shared.export_path) as nfs:
        nfs.mkdir(f"{sub}/d")
        nfs.write_file(f"{sub}/d/big", data, mode=0o600)
        assert nfs.read_file(f"{sub}/d/big") == data
        on_disk = _on_disk(nfs_server_shared, nfs_url) / "d" / "big"
        assert on_disk.read_bytes() == data
        assert on_disk.stat().st_mode & 0o777 == 0o600
        nfs.unlink(f"{sub}/d/big")
        nfs.rmdir(f"{sub}/d")
    assert libnfs_ls(nfs_url) == []


def test_libnfs_mount_reports_errors_with_the_nfs_status(
    nfs_url: str, nfs_server_shared: GaneshaServer
) -> None:
    sub = nfs_url.rsplit("/", 1)[1]
    with LibnfsMount(nfs_server_shared.host, nfs_server_shared.export_path) as nfs:
        with pytest.raises(LibnfsError, match="NOENT"):
            nfs.read_file(f"{sub}/nothing")
        nfs.mkdir(f"{sub}/twice")
        with pytest.raises(LibnfsError, match="EXIST"):
            nfs.mkdir(f"{sub}/twice")


def test_libnfs_mount_of_an_unexported_path_fails(nfs_url: str) -> None:
    with pytest.raises(LibnfsError, match="mount"):
        LibnfsMount("127.0.0.1", "/not/exported")
