"""Directory entries (:class:`NFSDirEntry`, like ``os.DirEntry``) and :class:`Walk`
(``os.walk`` as an async iterator), for ``NFS.scandir`` and ``NFS.walk``."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._nfs3_types import Fattr3, FType3, fattr3_to_stat

if TYPE_CHECKING:
    from ._dirops import DirectoryOps

__all__ = ["NFSDirEntry", "Walk"]


class NFSDirEntry:
    """A directory entry from :meth:`NFS.scandir`, like ``os.DirEntry``: the attributes came
    with the listing (READDIRPLUS), so the methods make no calls.  A symlink's target was
    looked up by ``scandir``; a dangling one is neither a file nor a directory."""

    __slots__ = ("_attrs", "_target", "_target_error", "fh", "name", "path")

    def __init__(self, name: str, path: str, fh: bytes, attrs: Fattr3) -> None:
        self.name = name
        self.path = path
        self.fh = fh
        self._attrs = attrs
        self._target: Fattr3 | None = None
        self._target_error: OSError | None = None

    def __repr__(self) -> str:
        return f"<NFSDirEntry {self.name!r}>"

    def __fspath__(self) -> str:
        return self.path

    def inode(self) -> int:
        return self._attrs.fileid

    def _attrs_for(self, follow_symlinks: bool) -> Fattr3 | None:
        if follow_symlinks and self._attrs.type is FType3.LNK:
            return self._target
        return self._attrs

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        attrs = self._attrs_for(follow_symlinks)
        return attrs is not None and attrs.type is FType3.DIR

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        attrs = self._attrs_for(follow_symlinks)
        return attrs is not None and attrs.type is FType3.REG

    def is_symlink(self) -> bool:
        return self._attrs.type is FType3.LNK

    def is_junction(self) -> bool:
        return False

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        attrs = self._attrs_for(follow_symlinks)
        if attrs is None:
            raise self._target_error or FileNotFoundError(
                errno.ENOENT, os.strerror(errno.ENOENT), self.path
            )
        return fattr3_to_stat(attrs)


class Walk:
    """The iterator behind :meth:`NFS.walk` (``os.walk`` semantics)."""

    def __init__(
        self, nfs: DirectoryOps, top: str, topdown: bool, followlinks: bool,
        onerror: Callable[[OSError], object] | None,
    ) -> None:  # fmt: skip
        self._nfs = nfs
        self._topdown = topdown
        self._followlinks = followlinks
        self._onerror = onerror
        self._stack: list[str] = [top]
        self._pending: list[tuple[str, list[str], list[str]]] | None = None
        self._last: tuple[str, list[str], list[str]] | None = None
        self._links: set[str] = set()

    def __aiter__(self) -> Walk:
        return self

    async def _listing(self, top: str) -> tuple[str, list[str], list[str]] | None:
        try:
            entries = await self._nfs.scandir(top)
        except OSError as exc:
            if self._onerror is not None:
                self._onerror(exc)
            return None
        dirs: list[str] = []
        files: list[str] = []
        for e in entries:
            (dirs if e.is_dir() else files).append(e.name)
            if e.is_symlink():
                self._links.add(e.path)
        return top, dirs, files

    def _children(self, item: tuple[str, list[str], list[str]]) -> list[str]:
        top, dirs, _ = item
        base = top.rstrip("/")
        return [f"{base}/{d}" for d in dirs]

    def _descend(self, path: str) -> bool:
        return self._followlinks or path not in self._links

    async def __anext__(self) -> tuple[str, list[str], list[str]]:
        if self._topdown:
            if self._last is not None:  # the caller may have pruned dirnames meanwhile
                for child in reversed(self._children(self._last)):
                    if self._descend(child):
                        self._stack.append(child)
                self._last = None
            while self._stack:
                item = await self._listing(self._stack.pop())
                if item is not None:
                    self._last = item
                    return item
            raise StopAsyncIteration
        if self._pending is None:
            self._pending = []
            order: list[tuple[str, list[str], list[str]]] = []
            while self._stack:
                item = await self._listing(self._stack.pop())
                if item is None:
                    continue
                order.append(item)
                for child in reversed(self._children(item)):
                    if self._descend(child):
                        self._stack.append(child)
            # Bottom-up: every directory after all of its descendants.
            self._pending = order
        if not self._pending:
            raise StopAsyncIteration
        return self._pending.pop()
