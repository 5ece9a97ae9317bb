"""The built-in ``memory`` plugin: a sparse RAM disk, as nbdkit's ``memory`` plugin.

Storage is a dict of 64 KiB pages, allocated on the first non-zero write to them.  The invariant
"an allocated page is never all zeros" is kept by every operation (writing zeros or trimming frees
a page as soon as it is all zeros), so ``extents`` can answer from the dict alone: missing pages are
HOLE|ZERO, present ones data.  nbdkit uses 32 KiB pages; 64 KiB is qemu's default cluster size and
a common request size, so 64 KiB-aligned reads are served without copying, and the dict holds half
as many entries, for at most 64 KiB allocated per scattered small write.

Copies: a read inside one page returns a ``memoryview`` of the page itself, a read spanning pages a
list of such views, with :class:`Hole` markers for pages never written (sent as OFFSET_HOLE chunks
when the client negotiated structured replies); the server hands them to ``sendmsg`` as they are,
so a read copies nothing in Python (joining 256 KiB cost 60 µs and, with many replies in flight,
page faults on every fresh allocation). The views alias live storage: a write processed while the
reply is still being sent can change the bytes on the wire. NBD leaves the result of overlapping
requests that are in flight together undefined, and a request the client sends after seeing the
read's reply cannot overlap it, so this is allowed.

Concurrency: every operation runs to completion without awaiting, on the Trio thread, so
requests and connections need no lock (thread model PARALLEL, multi-conn safe).
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

import trio

from ._backend import (
    EXTENT_HOLE,
    EXTENT_ZERO,
    FLAG_REQ_ONE,
    Buffer,
    ExportInfo,
    Extent,
    Hole,
    Plugin,
    PluginConnection,
    ReadResult,
    ThreadModel,
    in_memory_export_info,
)
from ._params import MAX_SIZE, parse_size

__all__ = ["PAGE_SIZE", "MemoryPlugin"]

PAGE_SIZE = 64 * 1024
_ZERO_PAGE = bytes(PAGE_SIZE)
_ZERO_VIEW = memoryview(_ZERO_PAGE)
_HOLE = EXTENT_HOLE | EXTENT_ZERO


def _is_zero(data: Buffer) -> bool:
    # A memcmp: 3 µs per 64 KiB, and it stops at the first non-zero byte.  (memoryview == bytes
    # compares item by item: 350 µs.)
    return _ZERO_PAGE.startswith(data)


class _SparseArray:
    """Pages of ``PAGE_SIZE`` bytes by page number; absent pages read as zeros."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pages: dict[int, bytearray] = {}

    def _allocated(self, first: int, stop: int) -> list[int]:
        """Allocated page numbers in ``[first, stop)``, ascending, in O(min(range, pages))."""
        if stop - first <= len(self.pages):
            return [i for i in range(first, stop) if i in self.pages]
        return sorted(i for i in self.pages if first <= i < stop)

    def read(self, count: int, offset: int) -> ReadResult:
        index, start = divmod(offset, PAGE_SIZE)
        if start + count <= PAGE_SIZE:
            page = self.pages.get(index)
            return [Hole(count)] if page is None else memoryview(page)[start : start + count]
        last = (offset + count - 1) // PAGE_SIZE
        if not self._allocated(index, last + 1):
            return [Hole(count)]
        parts: list[Buffer | Hole] = []
        for i in range(index, last + 1):
            page = self.pages.get(i)
            n = min(PAGE_SIZE - start, count)
            if page is not None:
                parts.append(memoryview(page)[start : start + n])
            elif parts and isinstance(parts[-1], Hole):
                parts[-1] = Hole(parts[-1].length + n)
            else:
                parts.append(Hole(n))
            count -= n
            start = 0
        return parts  # sent with sendmsg, never joined; holes as OFFSET_HOLE chunks

    def write(self, buf: memoryview, offset: int) -> None:
        index, start = divmod(offset, PAGE_SIZE)
        pos = 0
        while pos < len(buf):
            n = min(PAGE_SIZE - start, len(buf) - pos)
            chunk = buf[pos : pos + n]
            page = self.pages.get(index)
            if _is_zero(chunk):
                if page is None:
                    pass  # already reads as zeros: stays a hole
                elif n == PAGE_SIZE:
                    del self.pages[index]
                else:
                    page[start : start + n] = chunk
                    if _is_zero(page):
                        del self.pages[index]
            elif page is not None:
                page[start : start + n] = chunk
            elif n == PAGE_SIZE:
                self.pages[index] = bytearray(chunk)
            else:
                page = self.pages[index] = bytearray(PAGE_SIZE)
                page[start : start + n] = chunk
            pos += n
            index += 1
            start = 0

    def zero(self, count: int, offset: int) -> None:
        end = offset + count
        first, head = divmod(offset, PAGE_SIZE)
        last, tail = divmod(end, PAGE_SIZE)
        for i in self._allocated(first, last + 1):
            lo = head if i == first else 0
            hi = tail if i == last else PAGE_SIZE
            if lo == 0 and hi == PAGE_SIZE:
                del self.pages[i]
            elif lo < hi:
                page = self.pages[i]
                page[lo:hi] = _ZERO_VIEW[: hi - lo]
                if _is_zero(page):
                    del self.pages[i]

    def extents(self, count: int, offset: int, req_one: bool) -> list[Extent]:
        end = min(offset + count, self.size)
        out: list[Extent] = []

        def add(start: int, stop: int, kind: int) -> None:
            if out and out[-1][2] == kind:
                out[-1] = (out[-1][0], stop - out[-1][0], kind)
            else:
                out.append((start, stop - start, kind))

        pos = offset
        for i in self._allocated(offset // PAGE_SIZE, (end - 1) // PAGE_SIZE + 1):
            lo = max(i * PAGE_SIZE, offset)
            hi = min((i + 1) * PAGE_SIZE, end)
            if lo > pos:
                add(pos, lo, _HOLE)
            add(lo, hi, 0)
            pos = hi
            if req_one and len(out) > 1:
                return out[:1]  # the first extent is complete once a second one starts
        if pos < end:
            add(pos, end, _HOLE)
        return out[:1] if req_one else out


def _check_range(count: int, offset: int, size: int, err: int) -> None:
    # The server validates requests; this only stops a bad call from growing the disk.
    if count < 0 or offset < 0 or offset + count > size:
        raise OSError(err, f"request [{offset}, +{count}) outside the {size}-byte export")


class MemoryPlugin(Plugin):
    """A sparse RAM disk of ``size`` bytes shared by all connections (nbdkit's ``memory``)."""

    name = "memory"
    magic_config_key = "size"
    """A bare ``memory 1G`` argument is ``size=1G``: the loader passes it under this key."""
    thread_model = ThreadModel.PARALLEL

    def __init__(self, size: int) -> None:
        if not 0 <= size <= MAX_SIZE:
            raise ValueError(f"memory: size {size} is not in 0 .. 2**63-1")
        self._array = _SparseArray(size)

    @classmethod
    def from_params(cls, params: Sequence[tuple[str, str]]) -> MemoryPlugin:
        """Build from ``key=value`` parameters: ``size=`` (required) and ``allocator=sparse``.

        A bare first argument (``memory 1G``) must arrive as ``("size", "1G")``; see
        :attr:`magic_config_key`.  Bad or missing parameters raise :class:`ValueError`.
        """
        size: int | None = None
        for key, value in params:
            if key == "size":
                size = parse_size(value)
            elif key == "allocator":
                if value != "sparse":
                    raise ValueError(f"memory: allocator={value} is not supported (only sparse)")
            else:
                raise ValueError(f"memory: unknown parameter '{key}'")
        if size is None:
            raise ValueError("memory: you must specify size=<SIZE> on the command line")
        return cls(size)

    @property
    def size(self) -> int:
        return self._array.size

    @property
    def allocated_bytes(self) -> int:
        """Bytes of page storage currently allocated (the RAM the disk's contents use)."""
        return len(self._array.pages) * PAGE_SIZE

    async def open(self, readonly: bool, export_name: str, is_tls: bool) -> PluginConnection:
        await trio.lowlevel.checkpoint()
        return _MemoryConnection(self._array, readonly)


class _MemoryConnection(PluginConnection):
    def __init__(self, array: _SparseArray, readonly: bool) -> None:
        self._array = array
        self._readonly = readonly

    async def info(self) -> ExportInfo:
        await trio.lowlevel.checkpoint()
        return in_memory_export_info(self._array.size, readonly=self._readonly)

    async def pread(self, count: int, offset: int, flags: int) -> ReadResult:
        await trio.lowlevel.checkpoint()
        _check_range(count, offset, self._array.size, errno.EINVAL)
        return self._array.read(count, offset)

    async def pwrite(self, buf: memoryview, offset: int, flags: int) -> None:
        await trio.lowlevel.checkpoint()
        _check_range(len(buf), offset, self._array.size, errno.ENOSPC)
        if buf.format != "B" or buf.ndim != 1:
            buf = buf.cast("B")
        self._array.write(buf, offset)

    async def flush(self, flags: int) -> None:
        await trio.lowlevel.checkpoint()

    async def trim(self, count: int, offset: int, flags: int) -> None:
        await trio.lowlevel.checkpoint()
        _check_range(count, offset, self._array.size, errno.ENOSPC)
        self._array.zero(count, offset)

    async def zero(self, count: int, offset: int, flags: int) -> None:
        await trio.lowlevel.checkpoint()
        _check_range(count, offset, self._array.size, errno.ENOSPC)
        self._array.zero(count, offset)

    async def cache(self, count: int, offset: int, flags: int) -> None:
        await trio.lowlevel.checkpoint()

    async def extents(self, count: int, offset: int, flags: int) -> Sequence[Extent]:
        await trio.lowlevel.checkpoint()
        _check_range(count, offset, self._array.size, errno.EINVAL)
        if count == 0:
            raise OSError(errno.EINVAL, "extents of an empty range")
        return self._array.extents(count, offset, bool(flags & FLAG_REQ_ONE))

    async def close(self) -> None:
        await trio.lowlevel.checkpoint()
