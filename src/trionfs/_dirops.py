"""Directory operations of :class:`trionfs.NFS`: listings (READDIRPLUS), ``walk``, and the
calls that add or remove names (MKDIR, REMOVE, RMDIR, RENAME, LINK, SYMLINK, READLINK)."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable

import trio

from ._dirent import NFSDirEntry, Walk
from ._errors import NFSError, NFSStat3
from ._mountbase import MountBase
from ._nfs3 import ZERO_VERF, DirEntryPlus
from ._nfs3_types import FType3, Sattr3

log = logging.getLogger("trionfs")

BAD_COOKIE_RESTARTS = 5


class DirectoryOps(MountBase):
    """Directory operations (mixed into :class:`trionfs.NFS`)."""

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
