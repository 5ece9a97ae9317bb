"""Path resolution on an NFS mount: LOOKUP component by component, symlinks followed like a
local filesystem, results cached.

The cache maps ``(directory handle, name)`` to ``(handle, type)``.  Keyed by the directory's
*handle* rather than a path string, a rename of a directory leaves every entry under it valid;
our own REMOVE/RMDIR/RENAME/CREATE drop the names they change.  Other clients' changes are seen
after ``ttl`` seconds (the dircache of libnfs has the same trade-off), and a handle the server
calls stale empties the cache and the call is tried once more.

Resolution is done client-side against the mount's root: ``..`` pops back up the handles
walked (never above the root), an absolute symlink target starts again at the root (as libnfs
does: a mount is its own namespace), and more than :data:`MAX_SYMLINKS` symlinks is ``ELOOP``.
"""

from __future__ import annotations

import errno
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ._nfs3_types import FType3
from ._url import split_components

__all__ = ["MAX_SYMLINKS", "PathCache", "Resolved"]

MAX_SYMLINKS = 40
"""Linux's limit on symlinks followed in one path walk."""


@dataclass(frozen=True, slots=True)
class Resolved:
    """A resolved path: the object's handle and type, its parent's handle and its name."""

    fh: bytes
    type: FType3
    parent: bytes
    name: str


Lookup = Callable[[bytes, str], Awaitable[tuple[bytes, FType3]]]
Readlink = Callable[[bytes], Awaitable[str]]


class PathCache:
    """``(dir handle, name) -> (handle, type)`` with a time-to-live and a size bound."""

    def __init__(self, root: bytes, *, ttl: float = 5.0, max_entries: int = 65536) -> None:
        self.root = root
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[bytes, str], tuple[bytes, FType3, float]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, parent: bytes, name: str) -> tuple[bytes, FType3] | None:
        entry = self._entries.get((parent, name))
        if entry is None:
            return None
        if time.monotonic() - entry[2] > self.ttl:
            del self._entries[(parent, name)]
            return None
        return entry[0], entry[1]

    def put(self, parent: bytes, name: str, fh: bytes, ftype: FType3) -> None:
        if self.ttl <= 0:
            return
        self._entries[(parent, name)] = (fh, ftype, time.monotonic())
        self._entries.move_to_end((parent, name))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, parent: bytes, name: str) -> None:
        self._entries.pop((parent, name), None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    async def resolve(
        self, path: str, lookup: Lookup, readlink: Readlink, *, follow: bool = True
    ) -> Resolved:
        """Walk ``path`` from the root.  ``follow``: whether a symlink as the last component is
        followed (``stat``) or returned itself (``lstat``, ``unlink``, ``readlink``)."""
        todo = split_components(path)
        todo.reverse()  # a stack: pop() gives the next component
        stack: list[tuple[bytes, str]] = [(self.root, "")]  # (handle, name) of dirs walked
        cur, cur_type = self.root, FType3.DIR
        links = 0
        while todo:
            name = todo.pop()
            if name == "..":
                if len(stack) > 1:
                    stack.pop()
                cur, cur_type = stack[-1][0], FType3.DIR
                continue
            if cur_type is not FType3.DIR:
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            parent = cur
            hit = self.get(parent, name)
            if hit is None:
                self.misses += 1
                hit = await lookup(parent, name)
                self.put(parent, name, *hit)
            else:
                self.hits += 1
            fh, ftype = hit
            if ftype is FType3.LNK and (todo or follow):
                links += 1
                if links > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = await readlink(fh)
                parts = split_components(target)
                todo.extend(reversed(parts))
                if target.startswith("/"):
                    del stack[1:]
                    cur, cur_type = self.root, FType3.DIR
                else:
                    cur, cur_type = stack[-1][0], FType3.DIR
                if not parts:  # a link to "/" (or to ".") is its directory
                    continue
                continue
            stack.append((fh, name))
            cur, cur_type = fh, ftype
        parent_fh, name = (stack[-2][0], stack[-1][1]) if len(stack) > 1 else (self.root, "")
        return Resolved(cur, cur_type, parent_fh, name)

    async def resolve_parent(
        self, path: str, lookup: Lookup, readlink: Readlink
    ) -> tuple[bytes, str]:
        """The directory that holds ``path``'s last component, and that component's name
        (for CREATE, MKDIR, REMOVE, RENAME ...)."""
        parts = split_components(path)
        if not parts or parts[-1] == "..":
            raise OSError(errno.EINVAL, "the path does not name an entry in a directory", path)
        parent = await self.resolve("/".join(parts[:-1]), lookup, readlink, follow=True)
        if parent.type is not FType3.DIR:
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        return parent.fh, parts[-1]
