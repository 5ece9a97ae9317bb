"""Read buffers that go back to their pool once the reply carrying them has been sent.

nbdkit's API 2 ``pread(h, buf, offset, flags)`` fills a buffer the server owns, and nbdkit reuses
one buffer per worker thread.  A fresh ``bytearray`` per large read instead costs a ``memset`` of
all of it and, as glibc hands freed heap tops back to the kernel, page faults on most of its
pages (measured at 256 KiB: ~17 faults per read, and server CPU per GiB read 1.23 s with fresh
buffers against 0.77 s pooled; ``docs/benchmarks.md``).  A :class:`ReadBufferPool` lends views of
:class:`PooledBuffer` objects instead, and the reply writer gives each one back (:func:`recycle`)
as soon as the kernel has taken its bytes, so the next read fills a buffer that is mapped and warm.

As in nbdkit (threadlocal.c), a buffer starts out zeroed but, once reused, holds data of earlier
reads (of the same connection, here); a correct plugin overwrites all of it.  A plugin must not
keep the view it was given beyond the call.  A buffer that never comes back (the connection broke,
the request failed, the read was CACHE emulation) is simply dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

__all__ = ["PooledBuffer", "ReadBufferPool", "recycle"]


class PooledBuffer(bytearray):
    """A bytearray that knows the pool it returns to."""

    __slots__ = ("pool",)
    pool: ReadBufferPool


class ReadBufferPool:
    """Free buffers of one connection, by size class (powers of two)."""

    MIN_SIZE = 64 * 1024  # below this a fresh bytearray is as cheap as a pooled one
    MAX_FREE_BYTES = 32 * 1024 * 1024  # per connection: as much as the reply writer may queue

    def __init__(self) -> None:
        self._free: dict[int, list[PooledBuffer]] = {}
        self._free_bytes = 0
        # Buffers are taken in worker threads (several at once under PARALLEL) and given back
        # on the Trio thread.
        self._lock = threading.Lock()

    def take(self, count: int) -> bytearray | memoryview:
        """A writable buffer of exactly ``count`` bytes (contents undefined)."""
        if count < self.MIN_SIZE:
            return bytearray(count)
        size = 1 << (count - 1).bit_length()
        with self._lock:
            free = self._free.get(size)
            if free:
                buf = free.pop()
                self._free_bytes -= size
            else:
                buf = None
        if buf is None:
            buf = PooledBuffer(size)
            buf.pool = self
        view = memoryview(buf)
        return view if count == size else view[:count]

    def give_back(self, buf: PooledBuffer) -> None:
        size = len(buf)
        with self._lock:
            if self._free_bytes + size <= self.MAX_FREE_BYTES:
                self._free.setdefault(size, []).append(buf)
                self._free_bytes += size


def recycle(parts: Iterable[object]) -> None:
    """Give back the pooled buffers among sent reply ``parts`` (each part is one reply's: a
    pooled buffer travels in exactly one reply, so it is given back once)."""
    for part in parts:
        if type(part) is memoryview:
            owner = part.obj
            if type(owner) is PooledBuffer:
                owner.pool.give_back(owner)
