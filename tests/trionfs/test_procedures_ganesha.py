"""Every portmapper, MOUNT v3 and NFSv3 procedure against a real nfs-ganesha, results checked
on the server's export directory on disk (read only: changes go through NFS)."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from trionfs._clients import MountClient, NFS3Client, PortmapClient
from trionfs._errors import MountError, MountStat3, NFSError, NFSStat3
from trionfs._mount3 import MOUNT_PROGRAM
from trionfs._nfs3 import Proc
from trionfs._nfs3_types import (
    NFS_PROGRAM,
    Access3,
    CreateMode,
    FType3,
    NFSTime3,
    Sattr3,
    StableHow,
)
from trionfs._portmap import parse_universal_address
from trionfs._rpc import AuthSys
from trionfs._rpcclient import RPCOptions
from trionfs.testing import GaneshaServer

pytestmark = pytest.mark.interop

UNREGISTERED = 0x20000777
ROOT = RPCOptions(auth=AuthSys(uid=0, gid=0, machinename="trionfs-test"))


@dataclass
class Env:
    server: GaneshaServer
    nfs: NFS3Client
    dir_fh: bytes
    disk: Path  # the test's directory on the server's disk


@pytest.fixture
async def env(nfs_server_shared: GaneshaServer, nfs_url: str) -> AsyncIterator[Env]:
    server = nfs_server_shared
    name = nfs_url.rsplit("/", 1)[1]
    async with MountClient.connect(server.host, server.mount_port, ROOT) as mount:
        root = (await mount.mnt(server.export_path)).fh
    async with NFS3Client.connect(server.host, server.nfs_port, ROOT) as nfs:
        dir_fh = (await nfs.lookup(root, name)).fh
        yield Env(server, nfs, dir_fh, server.export_dir / name)


# -- portmapper / rpcbind --------------------------------------------------------------------


async def test_portmapper_null_getport_and_dump(nfs_server_shared: GaneshaServer) -> None:
    server = nfs_server_shared
    with server.netns():
        async with PortmapClient.connect(server.host, 111) as pmap:
            await pmap.null()
            assert await pmap.getport(NFS_PROGRAM, 3) == server.nfs_port
            assert await pmap.getport(MOUNT_PROGRAM, 3) == server.mount_port
            assert await pmap.getport(UNREGISTERED, 1) == 0
            mappings = await pmap.dump()
    assert (NFS_PROGRAM, 3, 6, server.nfs_port) in {
        (m.prog, m.vers, m.prot, m.port) for m in mappings
    }


@pytest.mark.parametrize("version", [3, 4])
async def test_rpcbind_getaddr_gives_the_nfs_address(
    nfs_server_shared: GaneshaServer, version: int
) -> None:
    server = nfs_server_shared
    with server.netns():
        async with PortmapClient.connect(server.host, 111, version=version) as rpcb:
            uaddr = await rpcb.getaddr(NFS_PROGRAM, 3, "tcp")
            assert await rpcb.getaddr(UNREGISTERED, 1, "tcp") == ""
    _host, port = parse_universal_address(uaddr)
    assert port == server.nfs_port


# -- MOUNT -----------------------------------------------------------------------------------


async def test_mount_procedures(nfs_server_shared: GaneshaServer) -> None:
    server = nfs_server_shared
    with server.netns():
        async with MountClient.connect(server.host, server.mount_port, ROOT) as mount:
            await mount.null()
            result = await mount.mnt(server.export_path)
            assert 1 in result.auth_flavors  # AUTH_SYS
            assert 0 < len(result.fh) <= 64
            exports = await mount.export()
            assert server.export_path in {e.directory for e in exports}
            for entry in await mount.dump():
                assert entry.directory.startswith(server.export_path)
            with pytest.raises(MountError) as info:
                await mount.mnt(server.export_path + "/no/such/dir")
            assert info.value.status is MountStat3.ACCES
            assert isinstance(info.value, PermissionError)
            await mount.umnt(server.export_path)
            await mount.umntall()
        async with NFS3Client.connect(server.host, server.nfs_port, ROOT) as nfs:
            attrs = await nfs.getattr(result.fh)
    assert attrs.fileid == server.export_dir.stat().st_ino


# -- NFSv3 -----------------------------------------------------------------------------------


async def test_null_getattr_and_fsinfo_fsstat_pathconf(env: Env) -> None:
    await env.nfs.null()
    attrs = await env.nfs.getattr(env.dir_fh)
    st = env.disk.stat()
    assert attrs.type is FType3.DIR
    assert (attrs.fileid, attrs.st_mode, attrs.nlink) == (st.st_ino, st.st_mode, st.st_nlink)
    assert attrs.mtime.ns == st.st_mtime_ns
    info = await env.nfs.fsinfo(env.dir_fh)
    assert info.rtmax >= 1 << 20
    assert info.wtmax >= 1 << 20
    assert info.dtpref > 0
    fs = await env.nfs.fsstat(env.dir_fh)
    vfs = os.statvfs(env.disk)
    assert fs.tbytes == vfs.f_blocks * vfs.f_frsize
    assert 0 < fs.fbytes <= fs.tbytes
    pc = await env.nfs.pathconf(env.dir_fh)
    # ganesha reports its own limits, not the disk's.
    assert pc.name_max >= os.pathconf(env.disk, "PC_NAME_MAX")
    assert pc.no_trunc
    assert pc.case_preserving
    assert not pc.case_insensitive
    assert pc.linkmax > 1


async def test_create_write_commit_read_round_trip(env: Env) -> None:
    nfs = env.nfs
    created = await nfs.create(env.dir_fh, "data.bin", attrs=Sattr3(mode=0o640))
    assert created.fh is not None
    data = os.urandom(300_001)
    verfs = set()
    for offset, stable in ((0, StableHow.UNSTABLE), (100_000, StableHow.DATA_SYNC)):
        w = await nfs.write(created.fh, offset, memoryview(data)[offset : offset + 100_000], stable)
        assert w.count == 100_000
        assert w.committed >= stable
        verfs.add(w.verf)
    w = await nfs.write(created.fh, 200_000, data[200_000:], StableHow.FILE_SYNC)
    assert w.committed is StableHow.FILE_SYNC
    verfs.add(w.verf)
    commit = await nfs.commit(created.fh)
    assert verfs == {commit.verf}  # no restart in between: one verifier
    assert len(commit.verf) == 8
    assert (env.disk / "data.bin").read_bytes() == data
    assert stat.S_IMODE((env.disk / "data.bin").stat().st_mode) == 0o640
    head = await nfs.read(created.fh, 0, 1000)
    assert (bytes(head.data), head.eof) == (data[:1000], False)
    tail = await nfs.read(created.fh, 300_000, 1000)
    assert (bytes(tail.data), tail.count, tail.eof) == (data[300_000:], 1, True)
    assert tail.attributes is not None
    assert tail.attributes.size == len(data)


async def test_a_64_mib_read_and_pipelined_reads_return_the_file(env: Env) -> None:
    nfs = env.nfs
    size = 64 * 1024 * 1024  # ganesha's rtmax: the largest reply record we accept by default
    data = os.urandom(size)
    fh = (await nfs.create(env.dir_fh, "big.bin")).fh
    assert fh is not None
    chunk = 16 << 20
    async with trio.open_nursery() as writers:
        for off in range(0, size, chunk):
            writers.start_soon(nfs.write, fh, off, memoryview(data)[off : off + chunk])
    await nfs.commit(fh)
    whole = await nfs.read(fh, 0, size)  # one record, received in place
    assert whole.count == size
    assert bytes(whole.data) == data
    del whole
    parts: dict[int, bytes] = {}

    async def read_one(off: int) -> None:
        result = await nfs.read(fh, off, 4 << 20)
        parts[off] = bytes(result.data)

    async with trio.open_nursery() as readers:
        for off in range(0, size, 4 << 20):
            readers.start_soon(read_one, off)
    assert b"".join(parts[o] for o in sorted(parts)) == data
    assert (env.disk / "big.bin").stat().st_size == size


async def test_create_modes(env: Env) -> None:
    nfs = env.nfs
    await nfs.create(env.dir_fh, "f", CreateMode.GUARDED)
    with pytest.raises(FileExistsError) as info:
        await nfs.create(env.dir_fh, "f", CreateMode.GUARDED)
    assert isinstance(info.value, NFSError)
    assert info.value.status is NFSStat3.EXIST
    fh = (await nfs.lookup(env.dir_fh, "f")).fh
    await nfs.write(fh, 0, b"12345", StableHow.FILE_SYNC)
    await nfs.create(env.dir_fh, "f", CreateMode.UNCHECKED, Sattr3(size=0))
    assert (env.disk / "f").stat().st_size == 0
    verf = b"trionfs!"
    first = await nfs.create(env.dir_fh, "x", CreateMode.EXCLUSIVE, verf=verf)
    again = await nfs.create(env.dir_fh, "x", CreateMode.EXCLUSIVE, verf=verf)  # a retry
    assert first.fh == again.fh or again.fh is None
    with pytest.raises(FileExistsError):
        await nfs.create(env.dir_fh, "x", CreateMode.EXCLUSIVE, verf=b"another!")
    assert (env.disk / "x").is_file()


async def test_setattr_with_and_without_guard(env: Env) -> None:
    nfs = env.nfs
    fh = (await nfs.create(env.dir_fh, "s")).fh
    assert fh is not None
    before = await nfs.getattr(fh)
    wcc = await nfs.setattr(
        fh, Sattr3(mode=0o600, size=4096, mtime=NFSTime3(1_000_000_000, 5)), guard=before.ctime
    )
    assert wcc.after is not None
    assert wcc.after.size == 4096
    st = (env.disk / "s").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns) == (0o600, 4096, 10**18 + 5)
    with pytest.raises(NFSError) as info:
        await nfs.setattr(fh, Sattr3(mode=0o644), guard=before.ctime)  # ctime has moved on
    assert info.value.status is NFSStat3.NOT_SYNC
    assert stat.S_IMODE((env.disk / "s").stat().st_mode) == 0o600


async def test_lookup_and_access(env: Env) -> None:
    nfs = env.nfs
    fh = (await nfs.create(env.dir_fh, "a", attrs=Sattr3(mode=0o644))).fh
    found = await nfs.lookup(env.dir_fh, "a")
    assert found.fh == fh
    assert found.attributes is not None
    assert found.attributes.fileid == (env.disk / "a").stat().st_ino
    with pytest.raises(FileNotFoundError) as info:
        await nfs.lookup(env.dir_fh, "missing")
    assert info.value.errno == 2
    wanted = Access3.READ | Access3.MODIFY | Access3.EXECUTE
    granted = await nfs.access(found.fh, wanted)
    assert granted.access & Access3.READ
    assert granted.access & Access3.MODIFY


async def test_mkdir_symlink_readlink_mknod(env: Env) -> None:
    nfs = env.nfs
    sub = await nfs.mkdir(env.dir_fh, "sub", Sattr3(mode=0o755))
    assert sub.fh is not None
    assert (env.disk / "sub").is_dir()
    link = await nfs.symlink(env.dir_fh, "ln", "sub/target")
    assert os.readlink(env.disk / "ln") == "sub/target"
    assert link.fh is not None
    assert (await nfs.readlink(link.fh)).target == "sub/target"
    await nfs.mknod(env.dir_fh, "fifo", FType3.FIFO, Sattr3(mode=0o600))
    assert stat.S_ISFIFO((env.disk / "fifo").lstat().st_mode)
    await nfs.mknod(env.dir_fh, "null", FType3.CHR, Sattr3(mode=0o600), rdev=(1, 3))
    st = (env.disk / "null").lstat()
    assert stat.S_ISCHR(st.st_mode)
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)


async def test_remove_rmdir_rename_link(env: Env) -> None:
    nfs = env.nfs
    fh = (await nfs.create(env.dir_fh, "one")).fh
    assert fh is not None
    sub = (await nfs.mkdir(env.dir_fh, "d")).fh
    assert sub is not None
    linked = await nfs.link(fh, sub, "hard")
    assert linked.attributes is not None
    assert linked.attributes.nlink == 2
    assert (env.disk / "d" / "hard").stat().st_ino == (env.disk / "one").stat().st_ino
    renamed = await nfs.rename(env.dir_fh, "one", sub, "two")
    assert renamed.to_dir_wcc.after is not None
    assert not (env.disk / "one").exists()
    assert (env.disk / "d" / "two").exists()
    with pytest.raises(NFSError) as info:
        await nfs.rmdir(env.dir_fh, "d")
    assert info.value.status is NFSStat3.NOTEMPTY
    await nfs.remove(sub, "two")
    await nfs.remove(sub, "hard")
    await nfs.rmdir(env.dir_fh, "d")
    assert os.listdir(env.disk) == []
    with pytest.raises(FileNotFoundError):
        await nfs.remove(env.dir_fh, "one")


async def test_readdir_and_readdirplus_page_through_every_name(env: Env) -> None:
    nfs = env.nfs
    names = {f"entry-{i:03d}-{'x' * 40}" for i in range(120)}
    async with trio.open_nursery() as creators:
        for name in names:
            creators.start_soon(nfs.create, env.dir_fh, name)
    assert set(os.listdir(env.disk)) == names

    seen: list[str] = []
    cookie, verf, pages = 0, bytes(8), 0
    while True:
        page = await nfs.readdir(env.dir_fh, cookie, verf, count=1024)  # several pages
        pages += 1
        seen += [e.name for e in page.entries]
        if page.eof:
            break
        cookie, verf = page.entries[-1].cookie, page.cookieverf
    assert pages > 1
    assert set(seen) - {".", ".."} == names

    plus_seen: dict[str, int] = {}
    cookie, verf = 0, bytes(8)
    while True:
        plus = await nfs.readdirplus(env.dir_fh, cookie, verf, dircount=512, maxcount=8192)
        for e in plus.entries:
            if e.attributes is not None:
                plus_seen[e.name] = e.attributes.fileid
        if plus.eof:
            break
        cookie, verf = plus.entries[-1].cookie, plus.cookieverf
    for name in names:
        assert plus_seen[name] == (env.disk / name).stat().st_ino


async def test_bad_handle_and_wrong_type_statuses(env: Env) -> None:
    nfs = env.nfs
    fh = (await nfs.create(env.dir_fh, "file")).fh
    assert fh is not None
    with pytest.raises(NotADirectoryError):
        await nfs.lookup(fh, "x")
    with pytest.raises(NFSError) as info:
        await nfs.readlink(fh)
    assert info.value.status is NFSStat3.INVAL
    with pytest.raises(NFSError) as info:
        await nfs.getattr(b"\x01" * 20)
    assert info.value.status in (NFSStat3.BADHANDLE, NFSStat3.STALE)


def test_every_nfs3_procedure_is_exercised() -> None:
    # A guard against this file silently dropping a procedure.
    text = Path(__file__).read_text()
    for proc in Proc:
        assert f"nfs.{proc.name.lower()}(" in text, proc


# -- a real restart ----------------------------------------------------------------------------


async def test_client_reconnects_after_a_server_restart_and_sees_a_new_verifier(
    nfs_server: GaneshaServer,
) -> None:
    server = nfs_server
    async with MountClient.connect(server.host, server.mount_port, ROOT) as mount:
        root = (await mount.mnt(server.export_path)).fh
    async with NFS3Client.connect(server.host, server.nfs_port, ROOT) as nfs:
        fh = (await nfs.create(root, "r")).fh
        assert fh is not None
        before = await nfs.write(fh, 0, b"unstable", StableHow.UNSTABLE)
        await trio.to_thread.run_sync(server.restart)
        after = await nfs.commit(fh)  # the connection dropped: reconnected, same handle
        assert nfs.rpc.reconnects >= 1
        assert after.verf != before.verf
