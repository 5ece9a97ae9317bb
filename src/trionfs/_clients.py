"""Typed async clients, one per RPC program: portmapper/rpcbind, MOUNT v3, NFSv3.

Each wraps an ``RPCClient`` (one TCP connection) and has one method per procedure.  Use them as
``async with NFS3Client.connect(host, port, options) as nfs: ...`` or wrap an existing
``RPCClient`` (``NFS3Client(rpc)``).  Every method checkpoints; every failure is typed: see
``RPCClient.call`` for transport/RPC errors; NFS/MOUNT statuses raise ``NFSError``/
``MountError`` (``OSError`` subclasses with ``.status`` and ``.errno``).

Retry policy is the caller's: NFS3ERR_JUKEBOX (``BlockingIOError``, ``status ==
NFSStat3.JUKEBOX``) is raised, not retried; NFS3ERR_BAD_COOKIE from READDIR(PLUS) is raised
so the caller can restart the listing from cookie 0.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Self

from ._errors import LocalProtocolError
from ._mount3 import (
    MOUNT_PROGRAM,
    MOUNT_V3,
    ExportEntry,
    MountEntry,
    MountProc,
    MountResult,
    decode_exports,
    decode_mnt,
    decode_mountlist,
    encode_dirpath,
)
from ._nfs3 import (
    NO_ATTRS,
    ZERO_VERF,
    AccessArgs,
    AccessResult,
    CommitArgs,
    CommitResult,
    CreateArgs,
    CreateResult,
    DirOpArgs,
    FSInfoResult,
    FSStatResult,
    LinkArgs,
    LinkResult,
    LookupResult,
    MkdirArgs,
    MknodArgs,
    PathConfResult,
    Proc,
    ReadArgs,
    ReaddirArgs,
    ReaddirplusArgs,
    ReaddirplusResult,
    ReaddirResult,
    ReadlinkResult,
    ReadResult,
    RenameArgs,
    RenameResult,
    SetattrArgs,
    SymlinkArgs,
    WriteArgs,
    WriteResult,
    decode_result,
    encode_write_head,
)
from ._nfs3_types import (
    NFS_PROGRAM,
    NFS_V3,
    CreateMode,
    Fattr3,
    FType3,
    NFSTime3,
    Sattr3,
    StableHow,
    WccData,
    encode_fh,
)
from ._payload_sink import PayloadSink
from ._portmap import (
    IPPROTO_TCP,
    PMAP_PORT,
    PMAP_PROGRAM,
    PMAP_V2,
    Mapping,
    PmapProc,
    Rpcb,
    RpcbProc,
    decode_getport,
    decode_pmaplist,
    decode_uaddr,
)
from ._rpcclient import RPCClient, RPCOptions
from ._xdr import Buffer, Packer

NFS_PORT = 2049


class _ProgramClient:
    PROGRAM: ClassVar[int]
    VERSION: ClassVar[int]

    def __init__(self, rpc: RPCClient) -> None:
        if rpc.prog != self.PROGRAM:
            raise ValueError(f"{type(self).__name__} needs an RPCClient for program {self.PROGRAM}")
        self.rpc = rpc

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, host: str, port: int, options: RPCOptions | None = None, *, version: int | None = None
    ) -> AsyncIterator[Self]:
        """Open a connection to ``host:port`` for this program (see ``RPCClient.connect``)."""
        vers = cls.VERSION if version is None else version
        async with RPCClient.connect(host, port, cls.PROGRAM, vers, options) as rpc:
            yield cls(rpc)

    async def aclose(self) -> None:
        await self.rpc.aclose()

    async def null(self) -> None:
        """Procedure 0: a round trip that does nothing (liveness check)."""
        await self.rpc.call(0)


# -- portmapper / rpcbind ---------------------------------------------------------------------


class PortmapClient(_ProgramClient):
    """Portmapper v2 (``connect(..., version=3 or 4)`` for rpcbind ``getaddr``)."""

    PROGRAM = PMAP_PROGRAM
    VERSION = PMAP_V2

    async def getport(self, prog: int, vers: int, prot: int = IPPROTO_TCP) -> int:
        """The port ``prog``/``vers`` is registered on (0: not registered).  Version 2 only."""
        self._need_version(2)
        p = Packer()
        Mapping(prog, vers, prot, 0).encode(p)
        return decode_getport(await self.rpc.call(PmapProc.GETPORT, p.view()))

    async def dump(self) -> tuple[Mapping, ...]:
        """Every registration (version 2)."""
        self._need_version(2)
        return decode_pmaplist(await self.rpc.call(PmapProc.DUMP))

    async def getaddr(self, prog: int, vers: int, netid: str = "tcp") -> str:
        """rpcbind v3/v4 GETADDR: the universal address (``"h1.h2.h3.h4.p1.p2"``) of
        ``prog``/``vers`` over ``netid``, or "" if unregistered; see
        ``parse_universal_address``."""
        if self.rpc.vers not in (3, 4):
            raise LocalProtocolError("GETADDR needs rpcbind version 3 or 4")
        p = Packer()
        Rpcb(prog, vers, netid).encode(p)
        return decode_uaddr(await self.rpc.call(RpcbProc.GETADDR, p.view()))

    def _need_version(self, vers: int) -> None:
        if self.rpc.vers != vers:
            raise LocalProtocolError(f"this procedure needs portmapper version {vers}")


async def getport(
    host: str,
    prog: int,
    vers: int,
    *,
    prot: int = IPPROTO_TCP,
    port: int = PMAP_PORT,
    options: RPCOptions | None = None,
) -> int:
    """One-shot GETPORT on a temporary connection to the portmapper at ``host:port``."""
    async with PortmapClient.connect(host, port, options) as pmap:
        return await pmap.getport(prog, vers, prot)


# -- MOUNT v3 -----------------------------------------------------------------------------------


class MountClient(_ProgramClient):
    """MOUNT v3: turns an export path into the root file handle."""

    PROGRAM = MOUNT_PROGRAM
    VERSION = MOUNT_V3

    async def mnt(self, path: str | bytes) -> MountResult:
        """The export's root handle and accepted auth flavors; ``MountError`` otherwise
        (ganesha answers MNT3ERR_ACCES for a path it does not export)."""
        p = Packer()
        encode_dirpath(p, path)
        return decode_mnt(await self.rpc.call(MountProc.MNT, p.view()))

    async def umnt(self, path: str | bytes) -> None:
        p = Packer()
        encode_dirpath(p, path)
        await self.rpc.call(MountProc.UMNT, p.view())

    async def umntall(self) -> None:
        await self.rpc.call(MountProc.UMNTALL)

    async def dump(self) -> tuple[MountEntry, ...]:
        return decode_mountlist(await self.rpc.call(MountProc.DUMP))

    async def export(self) -> tuple[ExportEntry, ...]:
        return decode_exports(await self.rpc.call(MountProc.EXPORT))


# -- NFSv3 --------------------------------------------------------------------------------------


def _args(encodable: Any) -> bytearray:
    p = Packer()
    encodable.encode(p)
    return p.view()


class NFS3Client(_ProgramClient):
    """NFSv3, one method per procedure (RFC 1813 section 3.3).  File handles are ``bytes``."""

    PROGRAM = NFS_PROGRAM
    VERSION = NFS_V3

    async def _call(self, proc: Proc, args: Buffer | list[Buffer]) -> Any:
        return decode_result(proc, await self.rpc.call(proc, args))

    async def getattr(self, fh: bytes) -> Fattr3:
        p = Packer()
        encode_fh(p, fh)
        result: Fattr3 = await self._call(Proc.GETATTR, p.view())
        return result

    async def setattr(self, fh: bytes, attrs: Sattr3, guard: NFSTime3 | None = None) -> WccData:
        """Set ``attrs``; with ``guard``, only if the object's ctime still equals it
        (else NFS3ERR_NOT_SYNC)."""
        result: WccData = await self._call(Proc.SETATTR, _args(SetattrArgs(fh, attrs, guard)))
        return result

    async def lookup(self, dir_fh: bytes, name: str | bytes) -> LookupResult:
        result: LookupResult = await self._call(Proc.LOOKUP, _args(DirOpArgs(dir_fh, name)))
        return result

    async def access(self, fh: bytes, access: int) -> AccessResult:
        """Which of the ``Access3`` bits in ``access`` the server grants."""
        result: AccessResult = await self._call(Proc.ACCESS, _args(AccessArgs(fh, access)))
        return result

    async def readlink(self, fh: bytes) -> ReadlinkResult:
        p = Packer()
        encode_fh(p, fh)
        result: ReadlinkResult = await self._call(Proc.READLINK, p.view())
        return result

    async def read(self, fh: bytes, offset: int, count: int) -> ReadResult:
        """Up to ``count`` bytes at ``offset``.  ``result.data`` is a view into the reply
        (no copy); short reads happen without ``eof`` (ask again from the new offset)."""
        result: ReadResult = await self._call(Proc.READ, _args(ReadArgs(fh, offset, count)))
        return result

    async def read_to_file(
        self, fh: bytes, offset: int, count: int, sink: PayloadSink
    ) -> ReadResult:
        """``read``, with the data spliced into ``sink``'s local file as it arrives where
        possible: only ``result.data``'s ranges ``sink.in_record_ranges(result.count)`` are
        valid (the caller writes those); ``sink.error`` is a failed local write."""
        raw = await self.rpc.call(Proc.READ, _args(ReadArgs(fh, offset, count)), sink=sink)
        result: ReadResult = decode_result(Proc.READ, raw)
        return result

    async def write(
        self,
        fh: bytes,
        offset: int,
        data: Buffer | Sequence[Buffer],
        stable: StableHow = StableHow.UNSTABLE,
    ) -> WriteResult:
        """Write ``data`` at ``offset`` (sent without copying; do not modify it until this
        returns).  ``data`` may be a sequence of buffers: they are sent one after the other
        (scatter/gather), never joined.  The server may write fewer bytes (``result.count``)
        and may commit more strongly than asked (``result.committed``).  Keep
        ``result.verf``: if COMMIT returns another verifier, the server restarted and
        UNSTABLE data must be written again."""
        p = Packer()
        if isinstance(data, bytes | bytearray | memoryview):
            tail = WriteArgs(fh, offset, data, stable).encode_pieces(p)
        else:
            tail = encode_write_head(p, fh, offset, data, stable)
        result: WriteResult = await self._call(Proc.WRITE, [p.view(), *tail])
        return result

    async def create(
        self,
        dir_fh: bytes,
        name: str | bytes,
        mode: CreateMode = CreateMode.UNCHECKED,
        attrs: Sattr3 = NO_ATTRS,
        verf: bytes = ZERO_VERF,
    ) -> CreateResult:
        """CREATE a regular file.  UNCHECKED truncates an existing one per ``attrs``;
        GUARDED fails with ``FileExistsError``; EXCLUSIVE uses the 8-byte ``verf`` (retries
        with the same verifier succeed) and ignores ``attrs`` -- follow with SETATTR."""
        args = CreateArgs(dir_fh, name, mode, attrs, verf)
        result: CreateResult = await self._call(Proc.CREATE, _args(args))
        return result

    async def mkdir(
        self, dir_fh: bytes, name: str | bytes, attrs: Sattr3 = NO_ATTRS
    ) -> CreateResult:
        result: CreateResult = await self._call(Proc.MKDIR, _args(MkdirArgs(dir_fh, name, attrs)))
        return result

    async def symlink(
        self, dir_fh: bytes, name: str | bytes, target: str | bytes, attrs: Sattr3 = NO_ATTRS
    ) -> CreateResult:
        args = SymlinkArgs(dir_fh, name, target, attrs)
        result: CreateResult = await self._call(Proc.SYMLINK, _args(args))
        return result

    async def mknod(
        self,
        dir_fh: bytes,
        name: str | bytes,
        type: FType3,
        attrs: Sattr3 = NO_ATTRS,
        rdev: tuple[int, int] = (0, 0),
    ) -> CreateResult:
        """A FIFO, socket, or (``rdev`` = (major, minor)) character/block device."""
        args = MknodArgs(dir_fh, name, type, attrs, rdev)
        result: CreateResult = await self._call(Proc.MKNOD, _args(args))
        return result

    async def remove(self, dir_fh: bytes, name: str | bytes) -> WccData:
        result: WccData = await self._call(Proc.REMOVE, _args(DirOpArgs(dir_fh, name)))
        return result

    async def rmdir(self, dir_fh: bytes, name: str | bytes) -> WccData:
        result: WccData = await self._call(Proc.RMDIR, _args(DirOpArgs(dir_fh, name)))
        return result

    async def rename(
        self, from_dir: bytes, from_name: str | bytes, to_dir: bytes, to_name: str | bytes
    ) -> RenameResult:
        args = RenameArgs(from_dir, from_name, to_dir, to_name)
        result: RenameResult = await self._call(Proc.RENAME, _args(args))
        return result

    async def link(self, fh: bytes, dir_fh: bytes, name: str | bytes) -> LinkResult:
        """A hard link to ``fh`` named ``name`` in ``dir_fh``."""
        result: LinkResult = await self._call(Proc.LINK, _args(LinkArgs(fh, dir_fh, name)))
        return result

    async def readdir(
        self,
        dir_fh: bytes,
        cookie: int = 0,
        cookieverf: bytes = ZERO_VERF,
        count: int = 65536,
    ) -> ReaddirResult:
        """One page of names (``.`` and ``..`` included, as the server sends them).  Continue
        with the last entry's cookie and ``result.cookieverf`` until ``result.eof``."""
        args = ReaddirArgs(dir_fh, cookie, cookieverf, count)
        result: ReaddirResult = await self._call(Proc.READDIR, _args(args))
        return result

    async def readdirplus(
        self,
        dir_fh: bytes,
        cookie: int = 0,
        cookieverf: bytes = ZERO_VERF,
        dircount: int = 16384,
        maxcount: int = 65536,
    ) -> ReaddirplusResult:
        """Like ``readdir`` with each entry's attributes and handle (either may be None)."""
        args = ReaddirplusArgs(dir_fh, cookie, cookieverf, dircount, maxcount)
        result: ReaddirplusResult = await self._call(Proc.READDIRPLUS, _args(args))
        return result

    async def fsstat(self, fh: bytes) -> FSStatResult:
        p = Packer()
        encode_fh(p, fh)
        result: FSStatResult = await self._call(Proc.FSSTAT, p.view())
        return result

    async def fsinfo(self, fh: bytes) -> FSInfoResult:
        """Transfer sizes (``rtmax``/``rtpref``/``wtmax``/``wtpref``/``dtpref``) and limits."""
        p = Packer()
        encode_fh(p, fh)
        result: FSInfoResult = await self._call(Proc.FSINFO, p.view())
        return result

    async def pathconf(self, fh: bytes) -> PathConfResult:
        p = Packer()
        encode_fh(p, fh)
        result: PathConfResult = await self._call(Proc.PATHCONF, p.view())
        return result

    async def commit(self, fh: bytes, offset: int = 0, count: int = 0) -> CommitResult:
        """Make UNSTABLE writes in [offset, offset+count) durable (count 0: to the end).
        Compare ``result.verf`` with the verifiers of the WRITEs it covers."""
        result: CommitResult = await self._call(Proc.COMMIT, _args(CommitArgs(fh, offset, count)))
        return result
