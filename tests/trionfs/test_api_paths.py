"""Path operations of :class:`trionfs.NFS` against a real nfs-ganesha, checked on disk and with
libnfs's nfs-ls."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
import trio

import trionfs
from trionfs import NFSFile, parse_url
from trionfs.testing import libnfs_cat, libnfs_ls

pytestmark = pytest.mark.interop


def on_disk(nfs_url: str) -> Path:
    return Path(parse_url(nfs_url).path)


async def put(nfs: trionfs.NFS, path: str, data: bytes) -> None:
    f = await nfs.open(path, "wb")
    assert isinstance(f, NFSFile)
    async with f:
        await f.write(data)


async def test_stat_matches_the_file_on_disk(nfs_url: str) -> None:
    async with trionfs.mount(nfs_url) as nfs:
        await put(nfs, "/f", b"x" * 1234)
        await nfs.chmod("/f", 0o640)
        st = await nfs.stat("/f")
    disk = os.stat(on_disk(nfs_url) / "f")
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_size, st.st_ino, st.st_nlink) == (disk.st_size, disk.st_ino, disk.st_nlink)
    assert (st.st_uid, st.st_gid) == (disk.st_uid, disk.st_gid)
    assert st.st_mtime_ns == disk.st_mtime_ns


async def test_directories_mkdir_makedirs_listdir_scandir_rmdir(nfs_url: str) -> None:
    disk = on_disk(nfs_url)
    async with trionfs.mount(nfs_url) as nfs:
        await nfs.mkdir("/d", 0o750)
        await nfs.makedirs("/a/b/c")
        await nfs.makedirs("/a/b/c", exist_ok=True)
        with pytest.raises(FileExistsError):
            await nfs.makedirs("/a/b/c")
        with pytest.raises(FileExistsError):
            await nfs.mkdir("/d")
        await put(nfs, "/a/file", b"12345")
        await nfs.symlink("b", "/a/link")
        assert sorted(await nfs.listdir("/a")) == ["b", "file", "link"]
        entries = {e.name: e for e in await nfs.scandir("/a")}
        assert entries["b"].is_dir()
        assert not entries["b"].is_file()
        assert entries["file"].is_file()
        assert entries["file"].stat().st_size == 5
        assert entries["file"].path == "/a/file"
        assert entries["link"].is_symlink()
        assert entries["link"].is_dir()
        assert not entries["link"].is_dir(follow_symlinks=False)
        assert entries["file"].inode() == os.stat(disk / "a" / "file").st_ino
        assert await nfs.isdir("/a/b")
        assert await nfs.isfile("/a/file")
        assert await nfs.islink("/a/link")
        assert await nfs.exists("/a/link/c")
        assert not await nfs.exists("/nope")
        assert not await nfs.isdir("/a/file")
        with pytest.raises(OSError, match="not empty") as info:
            await nfs.rmdir("/a")
        assert info.value.errno == errno.ENOTEMPTY
        with pytest.raises(NotADirectoryError):
            await nfs.listdir("/a/file")
        await nfs.rmdir("/a/b/c")
        assert not (disk / "a" / "b" / "c").exists()
    assert stat.S_IMODE(os.stat(disk / "d").st_mode) == 0o750
    names = sorted(e.name for e in libnfs_ls(nfs_url + "/a"))
    assert [n for n in names if n not in (".", "..")] == ["b", "file", "link"]


async def test_walk_top_down_with_pruning_and_bottom_up(nfs_url: str) -> None:
    async with trionfs.mount(nfs_url) as nfs:
        await nfs.makedirs("/t/x/deep")
        await nfs.makedirs("/t/y")
        await put(nfs, "/t/x/f1", b"")
        await put(nfs, "/t/y/f2", b"")
        await nfs.symlink("x", "/t/lx")
        seen = []
        async for top, dirs, files in nfs.walk("/t"):
            seen.append((top, sorted(dirs), sorted(files)))
            if "y" in dirs:
                dirs.remove("y")
        assert seen[0] == ("/t", ["lx", "x", "y"], [])
        assert [s[0] for s in seen] == ["/t", "/t/x", "/t/x/deep"]  # lx not followed, y pruned
        bottom = [top async for top, _, _ in nfs.walk("/t", topdown=False)]
        assert bottom.index("/t/x/deep") < bottom.index("/t/x") < bottom.index("/t")
        assert "/t/y" in bottom


async def test_rename_unlink_and_the_path_cache(nfs_url: str) -> None:
    disk = on_disk(nfs_url)
    async with trionfs.mount(nfs_url) as nfs:
        await nfs.makedirs("/src/sub")
        await put(nfs, "/src/sub/f", b"data")
        assert await nfs.isfile("/src/sub/f")  # now cached
        await nfs.rename("/src", "/dst")
        assert not await nfs.exists("/src/sub/f")
        assert await nfs.isfile("/dst/sub/f")
        await put(nfs, "/other", b"other")
        await nfs.rename("/other", "/dst/sub/f")  # replaces
        await nfs.unlink("/dst/sub/f")
        assert not await nfs.exists("/dst/sub/f")
        with pytest.raises(FileNotFoundError):
            await nfs.unlink("/dst/sub/f")
        with pytest.raises(IsADirectoryError):
            await nfs.unlink("/dst/sub")
    assert not (disk / "src").exists()
    assert sorted(os.listdir(disk / "dst" / "sub")) == []


async def test_symlinks_and_hard_links(nfs_url: str) -> None:
    disk = on_disk(nfs_url)
    async with trionfs.mount(nfs_url) as nfs:
        await nfs.makedirs("/d/e")
        await put(nfs, "/d/e/target", b"payload")
        await nfs.symlink("e/target", "/d/rel")
        await nfs.symlink("/d/e", "/abs")  # absolute: from the mount's root
        await nfs.symlink("../../d/./e/../e/target", "/d/e/dots")
        await nfs.symlink("missing", "/dangling")
        await nfs.symlink("loop2", "/loop1")
        await nfs.symlink("loop1", "/loop2")
        assert await nfs.readlink("/d/rel") == "e/target"
        assert (await nfs.stat("/d/rel")).st_size == 7
        assert stat.S_ISLNK((await nfs.lstat("/d/rel")).st_mode)
        assert (await nfs.stat("/abs/target")).st_size == 7
        assert (await nfs.stat("/d/e/dots")).st_size == 7
        with pytest.raises(FileNotFoundError):
            await nfs.stat("/dangling")
        with pytest.raises(OSError, match="symbolic links") as info:
            await nfs.stat("/loop1")
        assert info.value.errno == errno.ELOOP
        with pytest.raises(OSError, match="Invalid argument") as info:
            await nfs.readlink("/d/e/target")
        assert info.value.errno == errno.EINVAL
        await nfs.link("/d/e/target", "/hard")
        assert (await nfs.stat("/hard")).st_nlink == 2
        f = await nfs.open("/abs/target", "rb")
        assert isinstance(f, NFSFile)
        async with f:
            assert await f.read() == b"payload"
    assert os.readlink(disk / "d" / "rel") == "e/target"
    assert os.stat(disk / "hard").st_ino == os.stat(disk / "d" / "e" / "target").st_ino
    assert libnfs_cat(nfs_url + "/hard") == b"payload"


async def test_chmod_chown_utime_truncate_access_statvfs(nfs_url: str) -> None:
    disk = on_disk(nfs_url)
    async with trionfs.mount(nfs_url) as nfs:
        await put(nfs, "/f", b"0123456789")
        await nfs.chmod("/f", 0o604)
        await nfs.chown("/f", 1234, 5678)
        await nfs.utime("/f", ns=(1_000_000_000_123, 2_000_000_000_456))
        st_ns = await nfs.stat("/f")
        assert (st_ns.st_atime_ns, st_ns.st_mtime_ns) == (1_000_000_000_123, 2_000_000_000_456)
        assert os.stat(disk / "f").st_mtime_ns == 2_000_000_000_456
        await nfs.truncate("/f", 4)
        assert await nfs.access("/f", os.R_OK | os.W_OK)
        assert not await nfs.access("/nope", os.F_OK)
        sv = await nfs.statvfs()
        assert sv.f_blocks > 0
        assert sv.f_frsize == 4096
        assert sv.f_namemax > 0
        await nfs.utime("/f")  # server time
        assert (await nfs.stat("/f")).st_mtime > 2_000_000
    st = os.stat(disk / "f")
    assert stat.S_IMODE(st.st_mode) == 0o604
    assert (st.st_uid, st.st_gid, st.st_size) == (1234, 5678, 4)
    assert (disk / "f").read_bytes() == b"0123"


async def test_permissions_as_a_non_root_uid(nfs_url: str) -> None:
    disk = on_disk(nfs_url)
    async with trionfs.mount(nfs_url) as root:
        await root.mkdir("/private", 0o700)
        await root.mkdir("/open", 0o777)
        await put(root, "/open/roots", b"r")
        await root.chmod("/open/roots", 0o600)
    async with trionfs.mount(nfs_url + "?uid=1000&gid=1000") as user:
        await put(user, "/open/mine", b"mine")
        with pytest.raises(PermissionError):
            await user.open("/private/f", "wb")
        with pytest.raises(PermissionError):
            await user.open("/open/roots", "rb")
        assert not await user.access("/open/roots", os.R_OK)
        assert await user.access("/open/mine", os.R_OK | os.W_OK)
        assert (await user.stat("/open/mine")).st_uid == 1000
    st = os.stat(disk / "open" / "mine")
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    assert not (disk / "private" / "f").exists()


async def test_ten_thousand_entry_listing(nfs_url: str) -> None:
    count = 10_000
    async with trionfs.mount(nfs_url) as nfs:
        await nfs.mkdir("/many")
        limiter = trio.CapacityLimiter(64)

        async def create(i: int) -> None:
            async with limiter:
                f = await nfs.open(f"/many/n{i:05d}", "xb")
                await f.aclose()

        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(create, i)
        names = await nfs.listdir("/many")
    assert sorted(names) == [f"n{i:05d}" for i in range(count)]
    assert len(os.listdir(on_disk(nfs_url) / "many")) == count


async def test_mount_of_a_missing_path_fails_clearly(nfs_url: str) -> None:
    with pytest.raises(FileNotFoundError):
        async with trionfs.mount(nfs_url + "/no/such/dir"):
            pass
    async with trionfs.mount(nfs_url) as nfs:
        await nfs.makedirs("/sub/dir")
        await put(nfs, "/sub/dir/f", b"inside")
    async with trionfs.mount(nfs_url + "/sub") as sub:  # a directory inside the export
        assert await sub.listdir("/") == ["dir"]
        assert (await sub.stat("/dir/f")).st_size == 6
        assert await sub.listdir("/..") == ["dir"]  # never above the mount's root


async def test_exports_list(nfs_url: str) -> None:
    exports = await trionfs.list_exports(nfs_url)
    assert any(parse_url(nfs_url).path.startswith(e.directory) for e in exports)
