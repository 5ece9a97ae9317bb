"""``trionfs cp``: copies between local paths and NFS mounts, with GNU cp's semantics.

* A file source is copied onto ``dest``, or into it when ``dest`` is an existing directory
  (the caller decides that).  Without ``-r`` a directory source is skipped with an error
  ("-r not specified; omitting directory"), and symlinks are followed.
* With ``-r`` a directory is copied onto a new ``dest`` (created) or merged into an existing
  directory ``dest``; symlinks are copied as symlinks (``cp -r`` implies ``-P``).
* Holes as GNU cp's ``--sparse``: with ``auto`` (the default), all-zero 64 KiB blocks are not
  written when the source looks sparse (fewer blocks allocated than its size), so the copy is
  sparse too; a dense source is copied dense.  ``always`` skips all-zero blocks of any source;
  ``never`` writes every byte.  Either way the copy reads back the same bytes.
* A progress line on stderr when asked (``--progress``, or a terminal).

Between a local file and NFS the copy moves the data the way a good copy tool does
(:func:`copy_fd_to_nfs`, :func:`copy_nfs_to_fd`; ``bench/nfs.py`` measures these):

* local → NFS: the source is ``mmap``-ed read-only and slices of the mapping go to ``pwrite``
  — no copy in user space, and the write-back tracker keeps the slices (not copies) until the
  COMMIT, rewriting from them if the server restarts.  A source changed during the copy gives a
  torn copy, as with ``cp``; one *truncated* during the copy can kill the process with SIGBUS
  (the price of ``mmap``).  Pipes, empty files and anything ``mmap`` refuses are read instead.
* NFS → local, into a regular file without holes to make: the READ data is spliced from the
  socket into the file (``_splice_copy``); otherwise the READ replies themselves
  (``NFSFile.read_views``: no copy in user space) go to the local file by ``pwrite`` in the
  event loop (the READs already sent keep arriving meanwhile), or in a worker thread once a
  local write turns out slow.
"""

from __future__ import annotations

import mmap
import os
import posixpath
import stat
import sys
import time
from collections.abc import Callable
from typing import Literal, Protocol

import trio

from ._context import NFS
from ._file import NFSFile
from ._splice_copy import pwrite_ranges, splice_copy

CHUNK = 1 << 20
BIG_CHUNK = 4 << 20
"""Piece size between a local file and NFS: trionfs's default ``rsize``/``wsize``."""
HOLE_BLOCK = 64 << 10
"""Granularity of hole detection: all-zero blocks of this size are not written."""
_ZEROS = bytes(HOLE_BLOCK)

Progress = Callable[[int], None]
Sparse = Literal["auto", "always", "never"]


def keep_holes(sparse: Sparse, st: os.stat_result) -> bool:
    """Whether a copy of a source with stat ``st`` skips all-zero blocks (GNU cp's rule)."""
    if sparse == "auto":
        return stat.S_ISREG(st.st_mode) and st.st_blocks * 512 < st.st_size
    return sparse == "always"


def _is_zero(block: memoryview) -> bool:
    # Data usually starts with a non-zero byte: one index decides.  Otherwise compare as
    # bytes: memoryview == compares item by item (~50x slower than the copy).
    return not block[0] and bytes(block) == _ZEROS[: len(block)]


def _data_runs(chunk: bytes | bytearray | memoryview, holes: bool = True) -> list[tuple[int, int]]:
    """``(start, end)`` runs of ``chunk`` to write: all of it, or (``holes``) the parts that
    are not all-zero ``HOLE_BLOCK`` blocks."""
    view = memoryview(chunk)
    if not holes:
        return [(0, len(view))] if len(view) else []
    runs: list[tuple[int, int]] = []
    for start in range(0, len(view), HOLE_BLOCK):
        block = view[start : start + HOLE_BLOCK]
        if _is_zero(block):
            continue
        end = start + len(block)
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    return runs


def _pwrite_runs(fd: int, view: memoryview, at: int, holes: bool) -> None:
    """Write ``view`` at ``at`` (blocking), without its all-zero blocks if ``holes``."""
    pwrite_ranges(fd, view, _data_runs(view, holes), at)


async def copy_fd_to_nfs(
    fd: int, f: NFSFile, progress: Progress | None = None, *, sparse: Sparse = "auto"
) -> int:
    """Copy the local file ``fd`` (from its start) into ``f`` at offset 0, skipping all-zero
    blocks as ``sparse`` says; the number of bytes copied (the caller truncates ``f`` to it and
    closes it: the COMMIT).  Regular files are ``mmap``-ed: see the module doc."""
    st = os.fstat(fd)
    holes = keep_holes(sparse, st)
    size = st.st_size if stat.S_ISREG(st.st_mode) else 0
    mapping: mmap.mmap | None = None
    if size > 0:
        try:
            mapping = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            mapping = None
    offset = 0
    if mapping is not None:
        view = memoryview(mapping)
        size = len(view)
        piece = view[:0]
        while offset < size:
            piece = view[offset : offset + BIG_CHUNK]
            for start, end in _data_runs(piece, holes):
                # The tracker keeps these read-only slices by reference until the COMMIT.
                await f.pwrite(piece[start:end], offset + start)
            offset += len(piece)
            if progress is not None:
                progress(offset)
        del piece, view
        # The file keeps the slices until it is closed; the mapping goes with the last one.
    # Not mappable, or grown since it was mapped: read on until EOF.
    while data := await trio.to_thread.run_sync(os.pread, fd, BIG_CHUNK, offset):
        for start, end in _data_runs(data, holes):
            await f.pwrite(data[start:end], offset + start)
        offset += len(data)
        if progress is not None:
            progress(offset)
    return offset


SLOW_WRITE = 0.05
"""Seconds: a local write slower than this moves the rest of a download to a worker thread."""


async def copy_nfs_to_fd(
    f: NFSFile, fd: int, progress: Progress | None = None, *, sparse: Sparse = "auto"
) -> int:
    """Copy ``f`` (from its position) into the local file ``fd`` at offset 0, skipping
    all-zero blocks as ``sparse`` says; the number of bytes copied (the caller truncates ``fd``
    to it).

    Into a regular file with no holes to make, the READ data is spliced from the socket into
    the file (``_splice_copy``: one copy of each byte instead of two).  Otherwise (holes to
    make, a pipe) the READ replies go to ``fd`` as they are (:meth:`NFSFile.read_views`: no
    copy in user space).  While ``pwrite`` is fast (page cache, tmpfs) it runs in the event
    loop: the READs already sent keep arriving in the socket buffer meanwhile, and a worker
    thread measured 0.1-0.2 ms more CPU per MiB (``bench/nfs.py --only read``; why was not
    measured: GIL hand-offs and smaller receive batches are the suspects).  Once a write takes
    longer than ``SLOW_WRITE`` (a disk throttling dirty pages), the rest goes through a worker
    thread so the event loop stays responsive."""
    holes = sparse == "always" or (sparse == "auto" and keep_holes("auto", await f.stat()))
    if not holes and stat.S_ISREG(os.fstat(fd).st_mode):
        return await splice_copy(f, fd, progress)
    offset = 0
    inline = True
    step = max(f.rsize, CHUNK)
    while views := await f.read_views(step):
        for view in views:
            if inline:
                began = time.monotonic()
                _pwrite_runs(fd, view, offset, holes)
                inline = time.monotonic() - began < SLOW_WRITE
            else:
                await trio.to_thread.run_sync(_pwrite_runs, fd, view, offset, holes)
            offset += len(view)
        del views, view  # the reply buffers can be reused
        if progress is not None:
            progress(offset)
    return offset


class Reader(Protocol):
    async def read(self, size: int) -> bytes: ...
    async def aclose(self) -> None: ...


class Writer(Protocol):
    async def pwrite(self, data: bytes, offset: int) -> int: ...
    async def truncate(self, size: int) -> int: ...
    async def aclose(self) -> None: ...


class Side(Protocol):
    """One end of a copy: the local filesystem or one NFS mount."""

    async def lstat(self, path: str) -> os.stat_result: ...
    async def stat(self, path: str) -> os.stat_result: ...
    async def isdir(self, path: str) -> bool: ...
    async def readlink(self, path: str) -> str: ...
    async def listdir(self, path: str) -> list[str]: ...
    async def mkdir(self, path: str, mode: int) -> None: ...
    async def symlink(self, target: str, path: str) -> None: ...
    async def unlink(self, path: str) -> None: ...
    async def open_read(self, path: str) -> Reader: ...
    async def open_write(self, path: str, mode: int) -> Writer: ...
    def join(self, a: str, b: str) -> str: ...
    def basename(self, path: str) -> str: ...


class NFSSide:
    def __init__(self, nfs: NFS) -> None:
        self.nfs = nfs

    async def lstat(self, path: str) -> os.stat_result:
        return await self.nfs.lstat(path)

    async def stat(self, path: str) -> os.stat_result:
        return await self.nfs.stat(path)

    async def isdir(self, path: str) -> bool:
        return await self.nfs.isdir(path)

    async def readlink(self, path: str) -> str:
        return await self.nfs.readlink(path)

    async def listdir(self, path: str) -> list[str]:
        return await self.nfs.listdir(path)

    async def mkdir(self, path: str, mode: int) -> None:
        await self.nfs.mkdir(path, mode)

    async def symlink(self, target: str, path: str) -> None:
        await self.nfs.symlink(target, path)

    async def unlink(self, path: str) -> None:
        await self.nfs.unlink(path)

    async def open_read(self, path: str) -> Reader:
        f = await self.nfs.open(path, "rb")
        assert isinstance(f, NFSFile)
        return f

    async def open_write(self, path: str, mode: int) -> Writer:
        f = await self.nfs.open(path, "wb", perms=mode)
        assert isinstance(f, NFSFile)
        return f

    def join(self, a: str, b: str) -> str:
        return posixpath.join(a, b)

    def basename(self, path: str) -> str:
        return posixpath.basename(path.rstrip("/")) or "/"


class _LocalFile:
    """A local file for the copy loop; the blocking calls run in a worker thread."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    async def read(self, size: int) -> bytes:
        return await trio.to_thread.run_sync(os.read, self.fd, size)

    async def pwrite(self, data: bytes, offset: int) -> int:
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += await trio.to_thread.run_sync(os.pwrite, self.fd, view[done:], offset + done)
        return done

    async def truncate(self, size: int) -> int:
        await trio.to_thread.run_sync(os.ftruncate, self.fd, size)
        return size

    async def aclose(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)
        await trio.lowlevel.checkpoint()


class LocalSide:
    async def lstat(self, path: str) -> os.stat_result:
        return await trio.to_thread.run_sync(os.lstat, path)

    async def stat(self, path: str) -> os.stat_result:
        return await trio.to_thread.run_sync(os.stat, path)

    async def isdir(self, path: str) -> bool:
        return await trio.to_thread.run_sync(os.path.isdir, path)

    async def readlink(self, path: str) -> str:
        return await trio.to_thread.run_sync(os.readlink, path)

    async def listdir(self, path: str) -> list[str]:
        return await trio.to_thread.run_sync(os.listdir, path)

    async def mkdir(self, path: str, mode: int) -> None:
        await trio.to_thread.run_sync(os.mkdir, path, mode)

    async def symlink(self, target: str, path: str) -> None:
        await trio.to_thread.run_sync(os.symlink, target, path)

    async def unlink(self, path: str) -> None:
        await trio.to_thread.run_sync(os.unlink, path)

    async def open_read(self, path: str) -> Reader:
        fd = await trio.to_thread.run_sync(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
        return _LocalFile(fd)

    async def open_write(self, path: str, mode: int) -> Writer:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        fd = await trio.to_thread.run_sync(os.open, path, flags, mode)
        return _LocalFile(fd)

    def join(self, a: str, b: str) -> str:
        return os.path.join(a, b)

    def basename(self, path: str) -> str:
        return os.path.basename(path.rstrip("/")) or "/"


class Copier:
    def __init__(self, *, recursive: bool, progress: bool,
                 fail: Callable[[str, BaseException | str], None],
                 sparse: Sparse = "auto") -> None:  # fmt: skip
        self.recursive = recursive
        self.progress = progress
        self.sparse: Sparse = sparse
        self._fail = fail
        self.failed = False

    def fail(self, shown: str, exc: BaseException | str) -> None:
        self.failed = True
        self._fail(shown, exc)

    async def copy(self, src: Side, spath: str, dst: Side, dpath: str, *, shown: str) -> None:
        st = await (src.lstat(spath) if self.recursive else src.stat(spath))
        if stat.S_ISDIR(st.st_mode):
            if not self.recursive:
                self.fail(shown, "-r not specified; omitting directory")
                return
            await self._copy_dir(src, spath, dst, dpath, st, shown)
        elif stat.S_ISLNK(st.st_mode):
            target = await src.readlink(spath)
            try:
                await dst.symlink(target, dpath)
            except FileExistsError:
                await dst.unlink(dpath)
                await dst.symlink(target, dpath)
        elif stat.S_ISREG(st.st_mode):
            await self._copy_file(src, spath, dst, dpath, st, shown)
        else:
            self.fail(shown, "not a regular file, directory or symlink: skipped")

    async def _copy_dir(self, src: Side, spath: str, dst: Side, dpath: str,
                        st: os.stat_result, shown: str) -> None:  # fmt: skip
        if not await dst.isdir(dpath):
            await dst.mkdir(dpath, stat.S_IMODE(st.st_mode) | 0o700)
        for name in sorted(await src.listdir(spath)):
            child = src.join(spath, name)
            try:
                await self.copy(src, child, dst, dst.join(dpath, name),
                                shown=posixpath.join(shown, name))  # fmt: skip
            except OSError as exc:
                self.fail(posixpath.join(shown, name), exc)

    async def _copy_file(self, src: Side, spath: str, dst: Side, dpath: str,
                         st: os.stat_result, shown: str) -> None:  # fmt: skip
        reader = await src.open_read(spath)
        try:
            writer = await dst.open_write(dpath, stat.S_IMODE(st.st_mode))
            try:
                started = time.monotonic()

                def show(done: int) -> None:
                    self._show(shown, done, st.st_size, started)

                progress = show if self.progress else None
                sparse = self.sparse
                if isinstance(reader, _LocalFile) and isinstance(writer, NFSFile):
                    offset = await copy_fd_to_nfs(reader.fd, writer, progress, sparse=sparse)
                elif isinstance(reader, NFSFile) and isinstance(writer, _LocalFile):
                    offset = await copy_nfs_to_fd(reader, writer.fd, progress, sparse=sparse)
                else:
                    offset = 0
                    holes = keep_holes(sparse, st)
                    while chunk := await reader.read(CHUNK):
                        for start, end in _data_runs(chunk, holes):
                            await writer.pwrite(chunk[start:end], offset + start)
                        offset += len(chunk)
                        if progress is not None:
                            progress(offset)
                await writer.truncate(offset)  # the length, holes included
            finally:
                await writer.aclose()
        finally:
            await reader.aclose()
        if self.progress:
            sys.stderr.write("\n")

    def _show(self, shown: str, done: int, total: int, started: float) -> None:
        elapsed = max(time.monotonic() - started, 1e-6)
        pct = f"{100 * done // total:3d}%" if total else "   "
        rate = done / elapsed / 1e6
        name = shown if len(shown) <= 40 else "..." + shown[-37:]
        sys.stderr.write(f"\r{name:<40} {pct} {done / 1e6:10.1f} MB {rate:8.1f} MB/s")
        sys.stderr.flush()
