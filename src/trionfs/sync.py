"""The blocking face of trionfs, for scripts and threads::

    from trionfs import sync as nfs_sync

    with nfs_sync.NFS("nfs://server/export") as nfs:
        with nfs.open("/dir/data.bin", "wb") as f:
            f.write(payload)
        print(nfs.listdir("/dir"))

    with nfs_sync.open("nfs://server/export/dir/notes.txt", encoding="utf-8") as f:
        for line in f:
            ...

Each :class:`NFS` runs one Trio loop in a background thread holding the mount
(:mod:`trionfs._syncportal`); every method blocks the calling thread until the async call is
done.  Several threads may use one :class:`NFS` (and its files) at once.  Files are
:class:`io.BufferedIOBase` objects (binary modes) or :class:`io.TextIOWrapper` over one (text
modes), so they work wherever Python expects a file: ``shutil.copyfileobj``, ``csv``, ``json``.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from types import TracebackType
from typing import Any, overload

from ._context import NFS as AsyncNFS
from ._dirent import NFSDirEntry
from ._file import BinaryMode, NFSFile, OpenMode, TextMode
from ._mount import mount
from ._syncportal import Portal
from ._url import NFSURL, normalize_path, parse_url

__all__ = ["NFS", "NFSDirEntry", "SyncNFSFile", "open"]

log = logging.getLogger("trionfs.sync")


class SyncNFSFile(io.BufferedIOBase):
    """A binary file on NFS, blocking.  The buffering (read-ahead, write-behind, COMMIT on
    ``flush``/``close``) is the async :class:`~trionfs.NFSFile`'s."""

    def __init__(self, portal: Portal[Any], afile: NFSFile, owner: NFS | None = None) -> None:
        super().__init__()
        self._portal = portal
        self._afile = afile
        self._owner = owner  # closed with the file (context-free ``open``)

    @property
    def name(self) -> str:
        return self._afile.name

    @property
    def mode(self) -> str:
        return self._afile.mode

    @property
    def raw(self) -> NFSFile:
        """The async file underneath."""
        return self._afile

    def readable(self) -> bool:
        return self._afile.readable()

    def writable(self) -> bool:
        return self._afile.writable()

    def seekable(self) -> bool:
        return True

    def _call(self, fn: Any, *args: Any) -> Any:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        return self._portal.call(fn, *args)

    def read(self, size: int | None = -1) -> bytes:
        result: bytes = self._call(self._afile.read, -1 if size is None else size)
        return result

    def read1(self, size: int = -1) -> bytes:
        result: bytes = self._call(self._afile.read1, size)
        return result

    def readinto(self, buffer: Any) -> int:
        # Filled by the Trio thread while this one waits: one copy, from the READ replies.
        result: int = self._call(self._afile.readinto, memoryview(buffer).cast("B"))
        return result

    def readinto1(self, buffer: Any) -> int:
        return self.readinto(buffer)

    def readline(self, size: int | None = -1) -> bytes:
        result: bytes = self._call(self._afile.readline, -1 if size is None else size)
        return result

    def write(self, data: Any) -> int:
        # The async side copies what it keeps before returning, so a view is safe here.
        result: int = self._call(self._afile.write, memoryview(data).cast("B"))
        return result

    def pread(self, size: int, offset: int) -> bytes:
        result: bytes = self._call(self._afile.pread, size, offset)
        return result

    def pwrite(self, data: Any, offset: int) -> int:
        result: int = self._call(self._afile.pwrite, memoryview(data).cast("B"), offset)
        return result

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        result: int = self._call(self._afile.seek, offset, whence)
        return result

    def tell(self) -> int:
        result: int = self._call(self._afile.tell)
        return result

    def truncate(self, size: int | None = None) -> int:
        result: int = self._call(self._afile.truncate, size)
        return result

    def flush(self) -> None:
        """WRITE everything and COMMIT it (see :meth:`trionfs.NFSFile.flush`)."""
        if self.closed or self._afile.closed:
            return
        self._portal.call(self._afile.flush)

    fsync = flush

    def stat(self) -> os.stat_result:
        result: os.stat_result = self._call(self._afile.stat)
        return result

    def fileno(self) -> int:
        raise io.UnsupportedOperation("an NFS file has no file descriptor")

    def isatty(self) -> bool:
        return False

    def detach(self) -> Any:
        raise io.UnsupportedOperation("detach")

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._portal.closed and not self._afile.closed:
                self._portal.call(self._afile.aclose)
        finally:
            super().close()
            if self._owner is not None:
                owner, self._owner = self._owner, None
                owner.close()

    def __del__(self) -> None:
        # Never call into a loop from a finalizer (it may be gone, or this may be its
        # thread); a file dropped unclosed loses nothing the mount's close won't flush.
        pass


class NFS:
    """A mount, blocking: ``NFS(url)`` mounts at once; :meth:`close` (or ``with``) unmounts.

    Methods are those of :class:`trionfs.NFS`, without ``await``.
    """

    def __init__(self, url: str | NFSURL, **options: Any) -> None:
        self._portal: Portal[AsyncNFS] = Portal(name="trionfs-sync")
        self._nfs = self._portal.start(lambda: mount(url, **options))
        self.url: NFSURL = self._nfs.url

    def __enter__(self) -> NFS:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.close()

    @property
    def closed(self) -> bool:
        return self._portal.closed

    @property
    def aio(self) -> AsyncNFS:
        """The async :class:`trionfs.NFS` underneath (only usable inside its loop)."""
        return self._nfs

    def close(self) -> None:
        """Flush and close open files, unmount, stop the loop thread."""
        self._portal.close()

    def _call(self, fn: Any, *args: Any) -> Any:
        return self._portal.call(fn, *args)

    @overload
    def open(
        self,
        path: str,
        mode: BinaryMode,
        *,
        encoding: None = None,
        errors: None = None,
        newline: None = None,
        perms: int = 0o666,
        sync: bool | None = None,
    ) -> SyncNFSFile: ...

    @overload
    def open(
        self,
        path: str,
        mode: TextMode = "r",
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        perms: int = 0o666,
        sync: bool | None = None,
    ) -> io.TextIOWrapper: ...

    @overload
    def open(
        self,
        path: str,
        mode: str,
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        perms: int = 0o666,
        sync: bool | None = None,
    ) -> SyncNFSFile | io.TextIOWrapper: ...

    def open(
        self,
        path: str,
        mode: str = "r",
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        perms: int = 0o666,
        sync: bool | None = None,
    ) -> SyncNFSFile | io.TextIOWrapper:
        """Like Python's ``open()``: a :class:`SyncNFSFile` in binary modes, an
        :class:`io.TextIOWrapper` over one in text modes."""
        return self._open(path, mode, encoding, errors, newline, perms, sync, None)

    def _open(self, path: str, mode: str, encoding: str | None, errors: str | None,
              newline: str | None, perms: int, sync: bool | None,
              owner: NFS | None) -> SyncNFSFile | io.TextIOWrapper:  # fmt: skip
        m = OpenMode(mode)
        if m.binary and (encoding is not None or errors is not None or newline is not None):
            raise ValueError("binary mode doesn't take an encoding, errors or newline argument")
        binary_mode = mode.replace("t", "") + ("" if m.binary else "b")

        async def do_open() -> NFSFile:
            f = await self._nfs.open(path, binary_mode, perms=perms, sync=sync)
            assert isinstance(f, NFSFile)
            return f

        afile: NFSFile = self._call(do_open)
        raw = SyncNFSFile(self._portal, afile, owner)
        if m.binary:
            return raw
        text = io.TextIOWrapper(raw, encoding=encoding or "utf-8", errors=errors,
                                newline=newline)  # fmt: skip
        text.mode = mode  # type: ignore[misc]
        return text

    # Path operations: the async ones, blocking.

    def stat(self, path: str, *, follow_symlinks: bool = True) -> os.stat_result:
        async def op() -> os.stat_result:
            return await self._nfs.stat(path, follow_symlinks=follow_symlinks)

        result: os.stat_result = self._call(op)
        return result

    def lstat(self, path: str) -> os.stat_result:
        result: os.stat_result = self._call(self._nfs.lstat, path)
        return result

    def exists(self, path: str) -> bool:
        return bool(self._call(self._nfs.exists, path))

    def isdir(self, path: str) -> bool:
        return bool(self._call(self._nfs.isdir, path))

    def isfile(self, path: str) -> bool:
        return bool(self._call(self._nfs.isfile, path))

    def islink(self, path: str) -> bool:
        return bool(self._call(self._nfs.islink, path))

    def listdir(self, path: str = "/") -> list[str]:
        result: list[str] = self._call(self._nfs.listdir, path)
        return result

    def scandir(self, path: str = "/") -> list[NFSDirEntry]:
        result: list[NFSDirEntry] = self._call(self._nfs.scandir, path)
        return result

    def walk(
        self, top: str = "/", *, topdown: bool = True, followlinks: bool = False
    ) -> Iterator[tuple[str, list[str], list[str]]]:
        walker = self._nfs.walk(top, topdown=topdown, followlinks=followlinks)

        async def step() -> tuple[str, list[str], list[str]] | None:
            try:
                return await walker.__anext__()
            except StopAsyncIteration:
                return None

        while (item := self._call(step)) is not None:
            yield item

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        self._call(self._nfs.mkdir, path, mode)

    def makedirs(self, path: str, mode: int = 0o777, exist_ok: bool = False) -> None:
        self._call(self._nfs.makedirs, path, mode, exist_ok)

    def rmdir(self, path: str) -> None:
        self._call(self._nfs.rmdir, path)

    def unlink(self, path: str) -> None:
        self._call(self._nfs.unlink, path)

    remove = unlink

    def rename(self, src: str, dst: str) -> None:
        self._call(self._nfs.rename, src, dst)

    replace = rename

    def link(self, src: str, dst: str) -> None:
        self._call(self._nfs.link, src, dst)

    def symlink(self, target: str, path: str) -> None:
        self._call(self._nfs.symlink, target, path)

    def readlink(self, path: str) -> str:
        result: str = self._call(self._nfs.readlink, path)
        return result

    def chmod(self, path: str, mode: int) -> None:
        self._call(self._nfs.chmod, path, mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self._call(self._nfs.chown, path, uid, gid)

    def utime(
        self, path: str, times: tuple[float, float] | None = None, *,
        ns: tuple[int, int] | None = None,
    ) -> None:  # fmt: skip
        async def op() -> None:
            await self._nfs.utime(path, times, ns=ns)

        self._call(op)

    def truncate(self, path: str, length: int) -> None:
        self._call(self._nfs.truncate, path, length)

    def access(self, path: str, mode: int) -> bool:
        return bool(self._call(self._nfs.access, path, mode))

    def statvfs(self, path: str = "/") -> os.statvfs_result:
        result: os.statvfs_result = self._call(self._nfs.statvfs, path)
        return result


@overload
def open(
    url: str | NFSURL,
    mode: BinaryMode,
    *,
    encoding: None = None,
    errors: None = None,
    newline: None = None,
    perms: int = 0o666,
    sync: bool | None = None,
) -> SyncNFSFile: ...


@overload
def open(
    url: str | NFSURL,
    mode: TextMode = "r",
    *,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    perms: int = 0o666,
    sync: bool | None = None,
) -> io.TextIOWrapper: ...


@overload
def open(
    url: str | NFSURL,
    mode: str,
    *,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    perms: int = 0o666,
    sync: bool | None = None,
) -> SyncNFSFile | io.TextIOWrapper: ...


def open(
    url: str | NFSURL,
    mode: str = "r",
    *,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    perms: int = 0o666,
    sync: bool | None = None,
) -> SyncNFSFile | io.TextIOWrapper:
    """Context-free ``open(url, mode)``: mounts the file's directory, returns the file; closing
    the file unmounts.  Text or binary as Python's ``open()``."""
    parsed = url if isinstance(url, NFSURL) else parse_url(url)
    path = normalize_path(parsed.path)
    directory, _, name = path.rpartition("/")
    if not name:
        raise IsADirectoryError(21, "the URL names no file", parsed.path)
    nfs = NFS(parsed.with_path(directory or "/"))
    try:
        return nfs._open(name, mode, encoding, errors, newline, perms, sync, nfs)
    except BaseException:
        nfs.close()
        raise
