"""The built-in ``null`` plugin: reads zeros, discards writes (nbdkit's ``null``).

Every operation succeeds; extents say the whole disk is a hole that reads as zeros.  Reads return
one :class:`Hole`: an OFFSET_HOLE chunk under structured replies, otherwise slices of the server's
shared zero buffer, so serving them allocates nothing per request.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from ._backend import (
    EXTENT_HOLE,
    EXTENT_ZERO,
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

__all__ = ["NullPlugin"]


class NullPlugin(Plugin):
    """A disk of ``size`` bytes (default 0) that stores nothing."""

    name = "null"
    magic_config_key = "size"
    """A bare ``null 1G`` argument is ``size=1G``: the loader passes it under this key."""
    thread_model = ThreadModel.PARALLEL

    def __init__(self, size: int = 0) -> None:
        if not 0 <= size <= MAX_SIZE:
            raise ValueError(f"null: size {size} is not in 0 .. 2**63-1")
        self.size = size

    @classmethod
    def from_params(cls, params: Sequence[tuple[str, str]]) -> NullPlugin:
        """Build from ``key=value`` parameters: only ``size=`` (optional, default 0)."""
        size = 0
        for key, value in params:
            if key != "size":
                raise ValueError(f"null: unknown parameter '{key}'")
            size = parse_size(value)
        return cls(size)

    async def open(self, readonly: bool, export_name: str, is_tls: bool) -> PluginConnection:
        await trio.lowlevel.checkpoint()
        return _NullConnection(self.size, readonly)


class _NullConnection(PluginConnection):
    def __init__(self, size: int, readonly: bool) -> None:
        self._size = size
        self._readonly = readonly

    async def info(self) -> ExportInfo:
        await trio.lowlevel.checkpoint()
        return in_memory_export_info(self._size, readonly=self._readonly)

    async def pread(self, count: int, offset: int, flags: int) -> ReadResult:
        await trio.lowlevel.checkpoint()
        return [Hole(count)]  # an OFFSET_HOLE chunk, or zeros where the client needs bytes

    async def pwrite(self, buf: memoryview, offset: int, flags: int) -> None:
        await trio.lowlevel.checkpoint()

    async def flush(self, flags: int) -> None:
        await trio.lowlevel.checkpoint()

    async def trim(self, count: int, offset: int, flags: int) -> None:
        await trio.lowlevel.checkpoint()

    async def zero(self, count: int, offset: int, flags: int) -> None:
        await trio.lowlevel.checkpoint()

    async def cache(self, count: int, offset: int, flags: int) -> None:
        await trio.lowlevel.checkpoint()

    async def extents(self, count: int, offset: int, flags: int) -> Sequence[Extent]:
        await trio.lowlevel.checkpoint()
        # nbdkit reports (0, size); the part the request covers is the same answer.
        end = min(offset + count, self._size)
        return [(offset, max(end - offset, 0), EXTENT_HOLE | EXTENT_ZERO)]

    async def close(self) -> None:
        await trio.lowlevel.checkpoint()
