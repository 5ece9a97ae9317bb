"""The mount: :func:`mount` and the :class:`NFS` object (libnfs's ``nfs_context``, on Trio).

One :class:`NFS` holds one TCP connection to the NFS service and the root file handle of one
export.  Every method may be called by many tasks at once: the RPC client matches replies by
xid, so calls from different tasks are pipelined on the connection; the path cache needs no
lock (one Trio thread).  Background READ/WRITE tasks of open files run in the mount's nursery.

Transient server states are handled here, once for every call: ``NFS3ERR_JUKEBOX`` is retried
with a growing delay, a handle the server says is stale empties the path cache and the call is
retried once with freshly looked-up handles.
"""

from __future__ import annotations

import errno
import logging
import os
import stat as stat_module
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar, overload

import trio

from ._dirent import NFSDirEntry, Walk
from ._errors import NFSError, NFSStat3
from ._file import BinaryMode, NFSFile, NFSTextFile, OpenMode, TextMode
from ._mountsession import Session, open_session
from ._nfs3 import ZERO_VERF, DirEntryPlus
from ._nfs3_types import (
    SERVER_TIME,
    Access3,
    Fattr3,
    FType3,
    NFSTime3,
    Sattr3,
    fattr3_to_stat,
)
from ._pathcache import PathCache
from ._url import NFSURL, normalize_path, parse_url, split_components

__all__ = ["NFS", "mount", "open"]

log = logging.getLogger("trionfs")

T = TypeVar("T")

JUKEBOX_FIRST_DELAY = 0.1
JUKEBOX_MAX_DELAY = 5.0
JUKEBOX_TRIES = 12
BAD_COOKIE_RESTARTS = 5
EXIT_FLUSH = 10.0
"""Seconds the mount's exit may spend flushing open files when leaving on an exception."""
_NOT_THERE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES, errno.EPERM,
              errno.ENAMETOOLONG)  # fmt: skip


class NFS:
    """An NFSv3 mount: path operations, and :meth:`open` for file objects.

    Paths are relative to the mounted directory (a leading ``/`` is the same directory).
    Errors are :class:`trionfs.NFSError` (an ``OSError``: ``except FileNotFoundError`` works)
    with the path in ``filename``; a server that does not answer raises
    :class:`trionfs.RPCTimeoutError` (a ``TimeoutError``) after ``timeo`` x (``retrans`` + 1).
    """

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

    async def _read_rpc(self, fh: bytes, offset: int, count: int) -> tuple[bytes, bool]:
        res = await self._call(self._session.nfs.read, fh, offset, count)
        return bytes(res.data), res.eof

    async def _write_rpc(
        self, fh: bytes, offset: int, data: memoryview, sync: bool
    ) -> tuple[int, bool, bytes]:
        from ._nfs3_types import StableHow

        how = StableHow.FILE_SYNC if sync else StableHow.UNSTABLE
        res = await self._call(self._session.nfs.write, fh, offset, data, how)
        return res.count, res.committed != StableHow.UNSTABLE, res.verf

    async def _commit_rpc(self, fh: bytes) -> bytes:
        res = await self._call(self._session.nfs.commit, fh)
        return res.verf

    # -- files ---------------------------------------------------------------------------

    @overload
    async def open(
        self,
        path: str,
        mode: BinaryMode,
        *,
        encoding: None = None,
        errors: None = None,
        newline: None = None,
        perms: int = 0o666,
        sync: bool | None = None,
    ) -> NFSFile: ...

    @overload
    async def open(
        self,
        path: str,
        mode: TextMode = "r",
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        perms: int = 0o666,
        sync: bool | None = None,
    ) -> NFSTextFile: ...

    @overload
    async def open(
        self,
        path: str,
        mode: str,
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        perms: int = 0o666,
        sync: bool | None = None,
    ) -> NFSFile | NFSTextFile: ...

    async def open(
        self,
        path: str,
        mode: str = "r",
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        perms: int = 0o666,
        sync: bool | None = None,
    ) -> NFSFile | NFSTextFile:
        """Open ``path`` like Python's ``open()``: modes r, w, a, x with + and b/t.

        ``perms`` is the mode of a file created (no umask is applied: the server applies its
        own policy).  ``sync=True`` writes FILE_SYNC (durable on each reply; slower); by
        default writes are UNSTABLE and made durable by ``flush()``/``close()``.
        """
        m = OpenMode(mode)
        if m.binary and (encoding is not None or errors is not None or newline is not None):
            raise ValueError("binary mode doesn't take an encoding, errors or newline argument")
        if m.writable:
            self._check_writable(path)
        else:
            self._check_open()

        async def op() -> tuple[bytes, Fattr3]:
            if m.create:
                return await self._open_create(path, m, perms)
            fh = await self._resolve(path)
            attrs = await self._getattr_fh(fh)
            await self._check_access(fh, attrs, m, path)
            return fh, attrs

        fh, attrs = await self._with_path(path, op)
        if attrs.type is FType3.DIR:
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if m.truncate and attrs.size:
            await self._truncate_fh(fh, 0)
            attrs = await self._getattr_fh(fh)
        f = NFSFile(self, fh, path, mode, size=attrs.size,
                    sync=self.url.sync if sync is None else sync)  # fmt: skip
        self._files.add(f)
        if m.append:
            f._pos = attrs.size
        if m.binary:
            return f
        return NFSTextFile(f, encoding, errors, newline)

    async def _check_access(self, fh: bytes, attrs: Fattr3, m: OpenMode, path: str) -> None:
        """Permission errors at open time, as a local open() (and the Linux NFS client) give
        them, rather than at the first READ or WRITE."""
        if attrs.type is not FType3.REG:
            return
        want = (Access3.READ if m.readable else 0) | (Access3.MODIFY if m.writable else 0)
        res = await self._call(self._session.nfs.access, fh, want)
        if res.access & want != want:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

    async def _open_create(self, path: str, m: OpenMode, perms: int) -> tuple[bytes, Fattr3]:
        from ._nfs3_types import CreateMode

        dir_fh, name = await self._resolve_parent(path)
        if not m.exclusive and self._cache.get(dir_fh, name) is not None:
            # Known to exist: open it as it is (following a symlink).
            fh = await self._resolve(path)
            attrs = await self._getattr_fh(fh)
            await self._check_access(fh, attrs, m, path)
            return fh, attrs
        # GUARDED first: one round trip for a new file.  If the name exists, open the existing
        # file (or what a symlink points to) as Python's open() would.
        try:
            res = await self._call(
                self._session.nfs.create, dir_fh, name, CreateMode.GUARDED,
                Sattr3(mode=perms & 0o7777),
            )  # fmt: skip
        except FileExistsError:
            if m.exclusive:
                raise
            fh = await self._resolve(path)
            attrs = await self._getattr_fh(fh)
            await self._check_access(fh, attrs, m, path)
            return fh, attrs
        if res.fh is None:
            fh, _ = await self._lookup(dir_fh, name)
        else:
            fh = res.fh
        self._cache.put(dir_fh, name, fh, FType3.REG)
        attrs = res.attributes or await self._getattr_fh(fh)
        return fh, attrs

    # -- attributes ------------------------------------------------------------------------

    async def stat(self, path: str, *, follow_symlinks: bool = True) -> os.stat_result:
        """``os.stat`` on the server (GETATTR); ``st_dev`` is the server's fsid."""

        async def op() -> os.stat_result:
            fh = await self._resolve(path, follow=follow_symlinks)
            return self._to_stat(await self._getattr_fh(fh))

        return await self._with_path(path, op)

    async def lstat(self, path: str) -> os.stat_result:
        return await self.stat(path, follow_symlinks=False)

    async def exists(self, path: str) -> bool:
        """Like ``os.path.exists``: False for a path that cannot be reached (missing, not a
        directory on the way, a symlink loop, no permission); a timeout is still raised."""
        return await self._is(path, lambda mode: True)

    async def _is(self, path: str, test: Callable[[int], bool], follow: bool = True) -> bool:
        try:
            st = await self.stat(path, follow_symlinks=follow)
        except OSError as exc:
            if isinstance(exc, TimeoutError) or exc.errno not in _NOT_THERE:
                raise
            return False
        return test(st.st_mode)

    async def isdir(self, path: str) -> bool:
        return await self._is(path, stat_module.S_ISDIR)

    async def isfile(self, path: str) -> bool:
        return await self._is(path, stat_module.S_ISREG)

    async def islink(self, path: str) -> bool:
        return await self._is(path, stat_module.S_ISLNK, follow=False)

    async def _setattr_path(self, path: str, attrs: Sattr3, follow: bool) -> None:
        self._check_writable(path)

        async def op() -> None:
            await self._setattr_fh(await self._resolve(path, follow=follow), attrs)

        await self._with_path(path, op)

    async def chmod(self, path: str, mode: int, *, follow_symlinks: bool = True) -> None:
        await self._setattr_path(path, Sattr3(mode=mode & 0o7777), follow_symlinks)

    async def chown(self, path: str, uid: int, gid: int, *, follow_symlinks: bool = True) -> None:
        """Like ``os.chown``: -1 leaves that id unchanged."""
        attrs = Sattr3(uid=None if uid == -1 else uid, gid=None if gid == -1 else gid)
        await self._setattr_path(path, attrs, follow_symlinks)

    async def utime(
        self,
        path: str,
        times: tuple[float, float] | None = None,
        *,
        ns: tuple[int, int] | None = None,
        follow_symlinks: bool = True,
    ) -> None:
        """Like ``os.utime``: ``times`` in seconds or ``ns`` in nanoseconds; neither sets both
        to the server's current time."""
        if times is not None and ns is not None:
            raise ValueError("utime: you may specify either 'times' or 'ns' but not both")
        if times is not None:
            ns = (round(times[0] * 1e9), round(times[1] * 1e9))
        if ns is None:
            attrs = Sattr3(atime=SERVER_TIME, mtime=SERVER_TIME)
        else:
            attrs = Sattr3(atime=NFSTime3.from_ns(ns[0]), mtime=NFSTime3.from_ns(ns[1]))
        await self._setattr_path(path, attrs, follow_symlinks)

    async def truncate(self, path: str, length: int) -> None:
        if length < 0:
            raise OSError(errno.EINVAL, "negative length", path)
        await self._setattr_path(path, Sattr3(size=length), True)

    async def access(self, path: str, mode: int) -> bool:
        """Like ``os.access`` (F_OK, R_OK, W_OK, X_OK), answered by the server (ACCESS)."""

        async def op() -> bool:
            fh = await self._resolve(path)
            if mode == os.F_OK:
                return True
            attrs = await self._getattr_fh(fh)
            is_dir = attrs.type is FType3.DIR
            want = 0
            if mode & os.R_OK:
                want |= Access3.READ
            if mode & os.W_OK:
                want |= Access3.MODIFY | (Access3.EXTEND if not is_dir else Access3.DELETE)
            if mode & os.X_OK:
                want |= Access3.LOOKUP if is_dir else Access3.EXECUTE
            res = await self._call(self._session.nfs.access, fh, want)
            return res.access & want == want

        try:
            return await self._with_path(path, op)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return False

    async def statvfs(self, path: str = "/") -> os.statvfs_result:
        """``os.statvfs`` from FSSTAT (sizes in units of ``f_frsize`` = 4096 bytes)."""

        async def op() -> os.statvfs_result:
            fh = await self._resolve(path)
            res = await self._call(self._session.nfs.fsstat, fh)
            try:
                pc = await self._call(self._session.nfs.pathconf, fh)
                namemax = pc.name_max
            except NFSError:
                namemax = 255
            block = 4096
            flag = os.ST_RDONLY if self.readonly else 0
            return os.statvfs_result((
                block, block, res.tbytes // block, res.fbytes // block, res.abytes // block,
                res.tfiles, res.ffiles, res.afiles, flag, namemax,
            ))  # fmt: skip

        return await self._with_path(path, op)

    # -- directories -----------------------------------------------------------------------

    async def _readdirplus(self, dir_fh: bytes) -> list[DirEntryPlus]:
        """Every entry of a directory; a listing the server invalidates (BAD_COOKIE, the
        directory changed under us) starts over."""
        for _ in range(BAD_COOKIE_RESTARTS):
            entries: list[DirEntryPlus] = []
            cookie, verf = 0, ZERO_VERF
            try:
                while True:
                    res = await self._call(self._session.nfs.readdirplus, dir_fh, cookie, verf,
                                           self.dtpref, self.url.readdir_buffer)  # fmt: skip
                    entries.extend(res.entries)
                    verf = res.cookieverf
                    if res.eof:
                        return entries
                    if not res.entries:
                        raise NFSError(NFSStat3.TOOSMALL, "READDIRPLUS made no progress")
                    cookie = res.entries[-1].cookie
            except NFSError as exc:
                if exc.status != NFSStat3.BAD_COOKIE:
                    raise
                log.debug("NFS3ERR_BAD_COOKIE: restarting the listing")
        raise NFSError(NFSStat3.BAD_COOKIE, "the directory kept changing during the listing")

    async def scandir(self, path: str = "/") -> list[NFSDirEntry]:
        """The entries of a directory with their attributes (one READDIRPLUS walk), without
        ``.`` and ``..``; like ``os.scandir``, but a list."""
        prefix = path.rstrip("/") or ("/" if path.startswith("/") else "")

        async def op() -> list[NFSDirEntry]:
            dir_fh = await self._resolve(path)
            raw = await self._readdirplus(dir_fh)
            out: list[NFSDirEntry] = []
            for e in raw:
                if e.name in (".", ".."):
                    continue
                attrs, fh = e.attributes, e.fh
                if fh is None or attrs is None:
                    fh, _ = await self._lookup(dir_fh, e.name)
                    attrs = await self._getattr_fh(fh)
                self._cache.put(dir_fh, e.name, fh, attrs.type)
                full = f"{prefix}/{e.name}" if prefix not in ("", "/") else f"{prefix}{e.name}"
                out.append(NFSDirEntry(e.name, full, fh, attrs))
            links = [d for d in out if d.is_symlink()]
            if links:
                async with trio.open_nursery() as nursery:
                    for d in links:
                        nursery.start_soon(self._resolve_link_target, d)
            return out

        return await self._with_path(path, op)

    async def _resolve_link_target(self, entry: NFSDirEntry) -> None:
        try:
            fh = await self._resolve(entry.path)
            entry._target = await self._getattr_fh(fh)
        except OSError as exc:
            entry._target_error = exc

    async def listdir(self, path: str = "/") -> list[str]:
        """Names in a directory, without ``.`` and ``..`` (libnfs-python includes them)."""
        return [e.name for e in await self.scandir(path)]

    def walk(
        self, top: str = "/", *, topdown: bool = True, followlinks: bool = False,
        onerror: Callable[[OSError], object] | None = None,
    ) -> Walk:  # fmt: skip
        """``async for dirpath, dirnames, filenames in nfs.walk(top)`` — like ``os.walk``
        (with ``topdown`` the caller may prune ``dirnames`` in place)."""
        return Walk(self, top, topdown, followlinks, onerror)

    async def mkdir(self, path: str, mode: int = 0o777) -> None:
        self._check_writable(path)

        async def op() -> None:
            dir_fh, name = await self._resolve_parent(path)
            res = await self._call(self._session.nfs.mkdir, dir_fh, name, Sattr3(mode=mode))
            self._cache.forget(dir_fh, name)
            if res.fh is not None:
                self._cache.put(dir_fh, name, res.fh, FType3.DIR)

        await self._with_path(path, op)

    async def makedirs(self, path: str, mode: int = 0o777, exist_ok: bool = False) -> None:
        """Like ``os.makedirs``."""
        parts = split_components(path)
        for i in range(1, len(parts) + 1):
            sub = "/" + "/".join(parts[:i])
            try:
                await self.mkdir(sub, mode)
            except FileExistsError:
                if i == len(parts) and not (exist_ok and await self.isdir(sub)):
                    raise
                if i < len(parts) and not await self.isdir(sub):
                    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR),
                                             sub) from None  # fmt: skip

    async def _remove(self, path: str, proc: str) -> None:
        self._check_writable(path)

        async def op() -> None:
            dir_fh, name = await self._resolve_parent(path)
            try:
                await self._call(getattr(self._session.nfs, proc), dir_fh, name)
            finally:
                self._cache.forget(dir_fh, name)

        await self._with_path(path, op)

    async def rmdir(self, path: str) -> None:
        await self._remove(path, "rmdir")

    async def unlink(self, path: str) -> None:
        """Remove a file (or a symlink itself)."""
        await self._remove(path, "remove")

    remove = unlink

    async def rename(self, src: str, dst: str) -> None:
        """Like ``os.rename`` (POSIX: replaces ``dst`` if it is a file or an empty directory)."""
        self._check_writable(src)

        async def op() -> None:
            from_dir, from_name = await self._resolve_parent(src)
            to_dir, to_name = await self._resolve_parent(dst)
            try:
                await self._call(self._session.nfs.rename, from_dir, from_name, to_dir, to_name)
            finally:
                self._cache.forget(from_dir, from_name)
                self._cache.forget(to_dir, to_name)

        await self._with_path(src, op)

    replace = rename

    async def link(self, src: str, dst: str, *, follow_symlinks: bool = True) -> None:
        """A hard link ``dst`` to ``src``."""
        self._check_writable(dst)

        async def op() -> None:
            fh = await self._resolve(src, follow=follow_symlinks)
            dir_fh, name = await self._resolve_parent(dst)
            await self._call(self._session.nfs.link, fh, dir_fh, name)
            self._cache.forget(dir_fh, name)

        await self._with_path(dst, op)

    async def symlink(self, target: str, path: str) -> None:
        """A symlink at ``path`` pointing to ``target`` (as ``os.symlink(target, path)``)."""
        self._check_writable(path)

        async def op() -> None:
            dir_fh, name = await self._resolve_parent(path)
            await self._call(self._session.nfs.symlink, dir_fh, name, target, Sattr3())
            self._cache.forget(dir_fh, name)

        await self._with_path(path, op)

    async def readlink(self, path: str) -> str:
        async def op() -> str:
            fh = await self._resolve(path, follow=False)
            attrs = await self._getattr_fh(fh)
            if attrs.type is not FType3.LNK:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), path)
            return await self._readlink_fh(fh)

        return await self._with_path(path, op)

    async def aclose(self) -> None:
        """Flush and close every open file (raising the first error), then unmount."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        first: BaseException | None = None
        for f in list(self._files):
            try:
                await f.aclose()
            except Exception as exc:
                log.warning("closing %s at unmount failed: %s", f.name, exc)
                first = first or exc
        self._closed = True
        await self._session.aclose()
        if first is not None:
            raise first

    @property
    def closed(self) -> bool:
        return self._closed


def _unwrap_group(exc: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception inside a one-leaf group (our background tasks never raise, so a group
    from the mount's nursery only wraps the body's own exception)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]  # type: ignore[assignment]
    return exc


@asynccontextmanager
async def mount(url: str | NFSURL, **options: Any) -> AsyncIterator[NFS]:
    """``async with trionfs.mount("nfs://server/export?uid=1000") as nfs:`` — mount, yield an
    :class:`NFS`, flush open files and unmount at the end.

    Keyword ``options`` override URL arguments (``timeo=50``, ``rsize=65536``, ...).  The URL
    path is the export, or a directory inside one (it becomes the mount's root).
    """
    parsed = url if isinstance(url, NFSURL) else parse_url(url)
    if options:
        parsed = parse_url(parsed.geturl() + ("&" if "?" in parsed.geturl() else "?")
                           + "&".join(f"{k}={_fmt(v)}" for k, v in options.items()))  # fmt: skip
    try:
        async with open_session(parsed) as session, trio.open_nursery() as nursery:
            nfs = NFS(session, nursery)
            try:
                yield nfs
            except BaseException:
                # Leaving on an error or a cancellation: still try to store what open files
                # hold, but briefly (a dead server must not hold up the exit), and let the
                # original exception through.
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + min(parsed.total_timeout, EXIT_FLUSH)
                    try:
                        await nfs.aclose()
                    except Exception as exc:
                        log.warning("flushing files at unmount failed: %s", exc)
                if scope.cancelled_caught:
                    log.warning("flushing files at unmount gave up after %ss", EXIT_FLUSH)
                raise
            else:
                await nfs.aclose()  # a normal exit: flush errors are raised
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise _unwrap_group(group) from None


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ",".join(map(str, value))
    return str(value)


@overload
async def open(
    url: str | NFSURL,
    mode: BinaryMode,
    *,
    encoding: None = None,
    errors: None = None,
    newline: None = None,
    perms: int = 0o666,
    sync: bool | None = None,
) -> NFSFile: ...


@overload
async def open(
    url: str | NFSURL,
    mode: TextMode = "r",
    *,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    perms: int = 0o666,
    sync: bool | None = None,
) -> NFSTextFile: ...


@overload
async def open(
    url: str | NFSURL,
    mode: str,
    *,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    perms: int = 0o666,
    sync: bool | None = None,
) -> NFSFile | NFSTextFile: ...


async def open(
    url: str | NFSURL,
    mode: str = "r",
    *,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    perms: int = 0o666,
    sync: bool | None = None,
) -> NFSFile | NFSTextFile:
    """Context-free ``open``: ``async with await trionfs.open("nfs://h/export/f.txt") as f``.

    The URL's path is an export (or a directory in one) followed by the file's name: the
    file's directory is mounted, and closing the file unmounts.  The mount's connection lives
    in the calling task: close the file in that task, before leaving any ``with`` block or
    nursery entered after this call (``async with`` does exactly that).
    """
    parsed = url if isinstance(url, NFSURL) else parse_url(url)
    path = normalize_path(parsed.path)
    directory, _, name = path.rpartition("/")
    if not name:
        raise IsADirectoryError(errno.EISDIR, "the URL names no file", parsed.path)
    stack = AsyncExitStack()
    nfs = await stack.enter_async_context(mount(parsed.with_path(directory or "/")))
    try:
        f = await nfs.open(name, mode, encoding=encoding, errors=errors, newline=newline,
                           perms=perms, sync=sync)  # fmt: skip
    except BaseException:
        await stack.aclose()
        raise
    raw = f.buffer if isinstance(f, NFSTextFile) else f
    raw._on_close = stack.aclose
    return f
