"""The mount: the :class:`NFS` object (libnfs's ``nfs_context``, on Trio): ``open`` and the
path operations on attributes; directory operations are in ``_dirops``, the shared plumbing in
``_mountbase``, :func:`trionfs.mount` and :func:`trionfs.open` in ``_mount``.

One :class:`NFS` holds one TCP connection to the NFS service and the root file handle of one
export.  Every method may be called by many tasks at once: the RPC client matches replies by
xid, so calls from different tasks are pipelined on the connection; the path cache needs no
lock (one Trio thread).  Background READ/WRITE tasks of open files run in the mount's nursery.
"""

from __future__ import annotations

import errno
import logging
import os
import stat as stat_module
from collections.abc import Callable
from typing import overload

import trio

from ._dirops import DirectoryOps
from ._errors import NFSError
from ._file import BinaryMode, NFSFile, OpenMode, TextMode
from ._nfs3_types import SERVER_TIME, Access3, Fattr3, FType3, NFSTime3, Sattr3
from ._textfile import NFSTextFile
from ._url import split_components

__all__ = ["NFS"]

log = logging.getLogger("trionfs")

_NOT_THERE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES, errno.EPERM,
              errno.ENAMETOOLONG)  # fmt: skip


class NFS(DirectoryOps):
    """An NFSv3 mount: path operations, and :meth:`open` for file objects.

    Paths are relative to the mounted directory (a leading ``/`` is the same directory).
    Errors are :class:`trionfs.NFSError` (an ``OSError``: ``except FileNotFoundError`` works)
    with the path in ``filename``; a server that does not answer raises
    :class:`trionfs.RPCTimeoutError` (a ``TimeoutError``) after ``timeo`` x (``retrans`` + 1).
    """

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
                    sync=self.url.sync if sync is None else sync, opened=m)  # fmt: skip
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
