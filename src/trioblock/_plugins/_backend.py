"""The one interface the server serves: a plugin normalised to async calls.

Every kind of plugin (nbdkit Python scripts run in worker threads, Trio-native async plugins, the
built-in ones) is adapted to :class:`Plugin` / :class:`PluginConnection`.  The adapters resolve the
plugin's own quirks (which ``can_*`` count as true, defaults for missing callbacks) into one
:class:`ExportInfo`; the server applies nbdkit's generic emulations on top (FUA through flush, zero
through pwrite, cache through pread, one allocated extent when there are no extents).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

# Flags passed to plugin callbacks: nbdkit's FLAG_* values, not the NBD wire bits.
FLAG_MAY_TRIM = 1
FLAG_FUA = 2
FLAG_REQ_ONE = 4
FLAG_FAST_ZERO = 8

# can_fua / can_cache answers.
FUA_NONE = 0
FUA_EMULATE = 1
FUA_NATIVE = 2
CACHE_NONE = 0
CACHE_EMULATE = 1
CACHE_NATIVE = 2

# Extent types (the NBD base:allocation bits).
EXTENT_HOLE = 1
EXTENT_ZERO = 2

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class Hole:
    """Part of a read that is all zeros.  Under structured replies (and without DF) the server
    sends it as an OFFSET_HOLE chunk, twelve bytes instead of ``length`` zeros."""

    length: int

    def __len__(self) -> int:
        return self.length


ReadResult = Buffer | list[Buffer | Hole]
"""What pread returns: one buffer, or a list of buffers and holes the server sends as they are
(scatter-gather I/O: a plugin holding data in pieces need not copy or join it)."""
Extent = tuple[int, int, int]
"""(offset, length, type) as a plugin reports it."""


def read_bytes(result: ReadResult) -> bytes:
    """A pread result as one ``bytes`` (for tests and callers that want a copy)."""
    if not isinstance(result, list):
        return bytes(result)
    return b"".join(bytes(p.length) if isinstance(p, Hole) else p for p in result)


class ThreadModel(enum.IntEnum):
    """nbdkit's thread models, least to most concurrent."""

    SERIALIZE_CONNECTIONS = 0
    SERIALIZE_ALL_REQUESTS = 1
    SERIALIZE_REQUESTS = 2
    PARALLEL = 3


@dataclass(frozen=True, slots=True)
class ExportInfo:
    """What a connection's export can do, resolved once after ``open`` (nbdkit caches it too)."""

    size: int
    can_write: bool = False
    can_flush: bool = False
    can_trim: bool = False
    can_zero: bool = False
    can_fast_zero: bool = False
    can_extents: bool = False
    can_multi_conn: bool = False
    is_rotational: bool = False
    can_fua: int = FUA_NONE
    can_cache: int = CACHE_NONE
    block_size: tuple[int, int, int] | None = None
    description: str | None = None


class BlockingOps(Protocol):
    """The data-path methods of :class:`PluginConnection`, as blocking calls.

    Same names, arguments, results and errors as the async ones.  The server calls them in
    worker threads, running several queued requests per thread hop (with the concurrency the
    thread model allows), which is much cheaper than one hop per request.
    """

    def pread(self, count: int, offset: int, flags: int) -> ReadResult: ...
    def pwrite(self, buf: memoryview, offset: int, flags: int) -> None: ...
    def flush(self, flags: int) -> None: ...
    def trim(self, count: int, offset: int, flags: int) -> None: ...
    def zero(self, count: int, offset: int, flags: int) -> None: ...
    def cache(self, count: int, offset: int, flags: int) -> None: ...
    def extents(self, count: int, offset: int, flags: int) -> Sequence[Extent]: ...


def in_memory_export_info(size: int, *, readonly: bool) -> ExportInfo:
    """What an export held in memory can do: everything, natively (flush, FUA, cache and zeroing
    are free, so all are advertised), and safely from several connections."""
    writable = not readonly
    return ExportInfo(
        size=size,
        can_write=writable,
        can_flush=True,
        can_trim=writable,
        can_zero=writable,
        can_fast_zero=writable,
        can_extents=True,
        can_multi_conn=True,
        can_fua=FUA_NATIVE if writable else FUA_NONE,
        can_cache=CACHE_NATIVE,
    )


class PluginConnection(abc.ABC):
    """One open handle of a plugin, for one client connection.

    Methods raise :class:`OSError` with an errno to fail a request with that error; any other
    exception fails it with EIO (the server logs the traceback).  ``flags`` are ``FLAG_*`` values.
    Methods for operations the export does not advertise are never called.

    A connection whose plugin code blocks sets :attr:`blocking`; the server then runs requests
    through it in worker threads instead of awaiting the async methods.
    """

    blocking: BlockingOps | None = None

    @abc.abstractmethod
    async def info(self) -> ExportInfo:
        """Size and capabilities; called once, right after open."""

    @abc.abstractmethod
    async def pread(self, count: int, offset: int, flags: int) -> ReadResult:
        """Return exactly ``count`` bytes read at ``offset`` (see :data:`ReadResult`)."""

    async def pwrite(self, buf: memoryview, offset: int, flags: int) -> None:
        raise OSError(30, "read-only export")  # EROFS

    async def flush(self, flags: int) -> None:
        raise OSError(95, "flush not supported")

    async def trim(self, count: int, offset: int, flags: int) -> None:
        raise OSError(95, "trim not supported")

    async def zero(self, count: int, offset: int, flags: int) -> None:
        """Raise OSError(EOPNOTSUPP) to make the server fall back to writing zeros."""
        raise OSError(95, "zero not supported")

    async def cache(self, count: int, offset: int, flags: int) -> None:
        raise OSError(95, "cache not supported")

    async def extents(self, count: int, offset: int, flags: int) -> Sequence[Extent]:
        raise OSError(95, "extents not supported")

    async def close(self) -> None:
        """Release the handle; called exactly once, also after a failed connection."""
        await trio.lowlevel.checkpoint()


class Plugin(abc.ABC):
    """A plugin as the server sees it: lifecycle and a factory of connections."""

    name: str = "plugin"
    thread_model: ThreadModel = ThreadModel.PARALLEL

    async def get_ready(self) -> None:
        """Called once before the server listens (after config)."""
        await trio.lowlevel.checkpoint()

    async def after_fork(self) -> None:
        """Called once after the server went to the background (or would have)."""
        await trio.lowlevel.checkpoint()

    async def cleanup(self) -> None:
        """Called once when the server exits."""
        await trio.lowlevel.checkpoint()

    async def list_exports(self, readonly: bool, is_tls: bool) -> Sequence[tuple[str, str | None]]:
        """Exports for NBD_OPT_LIST: (name, description)."""
        await trio.lowlevel.checkpoint()
        return [("", None)]

    async def default_export(self, readonly: bool, is_tls: bool) -> str:
        """The name an empty export name stands for."""
        await trio.lowlevel.checkpoint()
        return ""

    async def preconnect(self, readonly: bool) -> None:
        """Called when a client connects, before the handshake; raise to refuse it."""
        await trio.lowlevel.checkpoint()

    @abc.abstractmethod
    async def open(self, readonly: bool, export_name: str, is_tls: bool) -> PluginConnection:
        """Open the export ``export_name`` (already resolved through default_export)."""

    def dump_plugin(self) -> list[str]:
        """Extra ``key=value`` lines for ``--dump-plugin``."""
        return []
