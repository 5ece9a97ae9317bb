"""The plumbing under :class:`trionfs.NFS`: the mount's state and every call to the server
that files and path operations share.

Transient server states are handled here, once for every call: ``NFS3ERR_JUKEBOX`` is retried
with a growing delay, a handle the server says is stale empties the path cache and the call is
retried once with freshly looked-up handles.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from ._errors import NFSError, NFSStat3
from ._mountsession import Session
from ._nfs3_types import Fattr3, FType3, Sattr3, StableHow, fattr3_to_stat
from ._pathcache import PathCache
from ._payload_sink import PayloadSink
from ._url import NFSURL

if TYPE_CHECKING:
    from ._file import NFSFile

log = logging.getLogger("trionfs")

T = TypeVar("T")

JUKEBOX_FIRST_DELAY = 0.1
JUKEBOX_MAX_DELAY = 5.0
JUKEBOX_TRIES = 12


class MountBase:
    """State and shared calls of one mount (see :class:`trionfs.NFS`)."""

    def __init__(self, session: Session, nursery: trio.Nursery) -> None:
        self._session = session
        self._nursery = nursery
        self.url: NFSURL = session.url
        self.export: str = session.export
        self._cache = PathCache(session.root_fh)
        fsinfo = session.fsinfo
        self.rsize = max(512, min(self.url.rsize, fsinfo.rtmax or self.url.rsize))
        self.wsize = max(512, min(self.url.wsize, fsinfo.wtmax or self.url.wsize))
        # READDIRPLUS "dircount" (bytes of names and cookies per reply), as the server prefers.
        self.dtpref = max(1024, min(fsinfo.dtpref or 16384, self.url.readdir_buffer))
        self.window = self.url.window
        self.readonly = self.url.readonly
        self._files: set[NFSFile] = set()
        self._closed = False

    # -- plumbing used by files and directory operations ------------------------------------

    @property
    def root_fh(self) -> bytes:
        return self._cache.root

    @property
    def path_cache(self) -> PathCache:
        return self._cache

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the NFS mount is closed")

    def _check_writable(self, path: str) -> None:
        self._check_open()
        if self.readonly:
            raise OSError(errno.EROFS, "mounted read-only (readonly in the URL)", path)

    def _spawn(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        self._nursery.start_soon(fn, *args)

    def _file_closed(self, f: NFSFile) -> None:
        self._files.discard(f)

    @staticmethod
    def _to_stat(attrs: Fattr3) -> os.stat_result:
        return fattr3_to_stat(attrs)

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """One NFS call, with JUKEBOX ("try again later") retried with backoff."""
        delay = JUKEBOX_FIRST_DELAY
        for attempt in range(JUKEBOX_TRIES):
            try:
                return await fn(*args)
            except NFSError as exc:
                if exc.status != NFSStat3.JUKEBOX or attempt == JUKEBOX_TRIES - 1:
                    raise
                log.debug("NFS3ERR_JUKEBOX from %s; retrying in %.1fs", fn.__name__, delay)
                await trio.sleep(delay)
                delay = min(delay * 2, JUKEBOX_MAX_DELAY)
        raise AssertionError("unreachable")

    async def _with_path(self, path: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run ``op`` (which resolves ``path`` itself); on a stale handle, empty the path cache
        and try once more.  NFS errors get ``path`` as their filename."""
        self._check_open()
        try:
            try:
                return await op()
            except NFSError as exc:
                if exc.status not in (NFSStat3.STALE, NFSStat3.BADHANDLE) or not len(self._cache):
                    raise
                self._cache.clear()
                return await op()
        except OSError as exc:
            if exc.filename is None and isinstance(exc, NFSError):
                raise type(exc)(exc.status, None, path) from None
            raise

    async def _lookup(self, dir_fh: bytes, name: str) -> tuple[bytes, FType3]:
        res = await self._call(self._session.nfs.lookup, dir_fh, name)
        attrs = res.attributes
        if attrs is None:
            attrs = await self._call(self._session.nfs.getattr, res.fh)
        return res.fh, attrs.type

    async def _readlink_fh(self, fh: bytes) -> str:
        res = await self._call(self._session.nfs.readlink, fh)
        return res.target

    async def _resolve(self, path: str, *, follow: bool = True) -> bytes:
        return (await self._cache.resolve(path, self._lookup, self._readlink_fh, follow=follow)).fh

    async def _resolve_parent(self, path: str) -> tuple[bytes, str]:
        return await self._cache.resolve_parent(path, self._lookup, self._readlink_fh)

    async def _getattr_fh(self, fh: bytes) -> Fattr3:
        return await self._call(self._session.nfs.getattr, fh)

    async def _setattr_fh(self, fh: bytes, attrs: Sattr3) -> None:
        await self._call(self._session.nfs.setattr, fh, attrs)

    async def _truncate_fh(self, fh: bytes, size: int) -> None:
        await self._setattr_fh(fh, Sattr3(size=size))

    async def _read_rpc(self, fh: bytes, offset: int, count: int) -> tuple[memoryview, bool]:
        # A view into the reply (a pooled receive buffer, reused only once no view is left).
        res = await self._call(self._session.nfs.read, fh, offset, count)
        return res.data, res.eof

    async def _read_rpc_to_file(
        self, fh: bytes, offset: int, count: int, sink: PayloadSink
    ) -> tuple[memoryview, bool]:
        res = await self._call(self._session.nfs.read_to_file, fh, offset, count, sink)
        return res.data, res.eof

    async def _write_rpc(
        self, fh: bytes, offset: int, data: Sequence[memoryview], sync: bool
    ) -> tuple[int, bool, bytes]:
        how = StableHow.FILE_SYNC if sync else StableHow.UNSTABLE
        res = await self._call(self._session.nfs.write, fh, offset, data, how)
        return res.count, res.committed != StableHow.UNSTABLE, res.verf

    async def _commit_rpc(self, fh: bytes) -> bytes:
        res = await self._call(self._session.nfs.commit, fh)
        return res.verf
