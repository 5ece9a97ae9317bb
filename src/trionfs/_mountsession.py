"""Connecting a mount: portmapper lookups, MOUNT (with export discovery), the NFS connection,
FSINFO.  :func:`open_session` is what :func:`trionfs.mount` enters first."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from ._clients import MountClient, NFS3Client, getport
from ._errors import MountError, RPCError, RPCTimeoutError
from ._mount3 import MOUNT_PROGRAM, MOUNT_V3, ExportEntry
from ._nfs3 import FSInfoResult
from ._nfs3_types import NFS_PROGRAM, NFS_V3, FType3
from ._pathcache import PathCache
from ._rpc import AuthSys
from ._rpcclient import RPCOptions
from ._url import NFSURL, normalize_path, parse_url

__all__ = ["Session", "list_exports", "open_session", "rpc_options"]


@dataclass
class Session:
    """A connected NFS program client and the root handle of what was mounted."""

    url: NFSURL
    export: str
    root_fh: bytes
    fsinfo: FSInfoResult
    nfs: NFS3Client

    async def aclose(self) -> None:
        await self.nfs.aclose()


def rpc_options(url: NFSURL) -> RPCOptions:
    uid = os.getuid() if url.uid is None else url.uid
    gid = os.getgid() if url.gid is None else url.gid
    auth = AuthSys(uid=uid, gid=gid, gids=url.auxgids, machinename=_machine_name())
    return RPCOptions(
        auth=auth,
        timeo=url.timeout,
        retrans=url.retrans,
        autoreconnect=url.autoreconnect,
        privileged_port=True if url.privport else None,
        connect_timeout=url.timeout,
    )


def _machine_name() -> str:
    return socket.gethostname().encode()[:255].decode(errors="ignore") or "trionfs"


async def _port_of(url: NFSURL, prog: int, vers: int, options: RPCOptions) -> int:
    port = await getport(url.host, prog, vers, options=options)
    if port == 0:
        name = "NFS" if prog == NFS_PROGRAM else "MOUNT"
        raise OSError(errno.EPROTONOSUPPORT,
                      f"{url.host}: {name} version {vers} over TCP is not registered "
                      "with the portmapper")  # fmt: skip
    return port


async def list_exports(url: str | NFSURL) -> tuple[ExportEntry, ...]:
    """The server's export list (MOUNT EXPORT), as ``showmount -e`` shows it."""
    parsed = url if isinstance(url, NFSURL) else parse_url(url)
    options = rpc_options(parsed)
    port = parsed.mountport or await _port_of(parsed, MOUNT_PROGRAM, MOUNT_V3, options)
    async with MountClient.connect(parsed.host, port, options) as mnt:
        return await mnt.export()


async def _mount_root(url: NFSURL, options: RPCOptions, path: str) -> tuple[str, bytes, str]:
    """MNT ``path``; if the server does not export it as such, MNT the longest export that
    contains it.  Returns (export, root handle, the rest of ``path`` inside the export)."""
    port = url.mountport or await _port_of(url, MOUNT_PROGRAM, MOUNT_V3, options)
    async with MountClient.connect(url.host, port, options) as mnt:
        try:
            return path, (await mnt.mnt(path)).fh, "/"
        except MountError as first:
            try:
                exports = await mnt.export()
            except (MountError, RPCError):
                raise first from None
            for entry in sorted(exports, key=lambda e: len(e.directory), reverse=True):
                export = normalize_path(entry.directory)
                if path == export or path.startswith(export.rstrip("/") + "/"):
                    rest = path[len(export) :] or "/"
                    return export, (await mnt.mnt(export)).fh, rest
            raise MountError(first.status, None, path) from None


@asynccontextmanager
async def open_session(url: NFSURL) -> AsyncIterator[Session]:
    """Portmapper (unless ``nfsport``/``mountport`` say), MNT, connect to NFS, FSINFO."""
    if url.version != 3:
        raise ValueError("trionfs speaks NFSv3 only")
    options = rpc_options(url)
    path = normalize_path(url.path)
    try:
        # Each call has its own timeout; this bounds the whole sequence (connects included).
        with trio.fail_after(max(url.total_timeout, 1.0) * 2):
            export, root, rest = await _mount_root(url, options, path)
            nfs_port = url.nfsport or await _port_of(url, NFS_PROGRAM, NFS_V3, options)
    except trio.TooSlowError:
        raise RPCTimeoutError(f"mounting {url.host}:{path} timed out") from None
    async with NFS3Client.connect(url.host, nfs_port, options) as client:
        if rest != "/":
            cache = PathCache(root)

            async def lookup(d: bytes, n: str) -> tuple[bytes, FType3]:
                res = await client.lookup(d, n)
                attrs = res.attributes or await client.getattr(res.fh)
                return res.fh, attrs.type

            async def readlink(fh: bytes) -> str:
                return (await client.readlink(fh)).target

            resolved = await cache.resolve(rest, lookup, readlink)
            if resolved.type is not FType3.DIR:
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), url.path)
            root = resolved.fh
        fsinfo = await client.fsinfo(root)
        yield Session(url, export, root, fsinfo, client)
