"""Running one validated request against a plugin connection, with nbdkit's emulations.

The plugin adapters say what a plugin can do (:class:`ExportInfo`); this module does what
nbdkit's backend does on top of any plugin: FUA emulated by a flush, WRITE_ZEROES through pwrite
when the plugin cannot zero (or refuses with EOPNOTSUPP), CACHE emulated by reading, one allocated
extent when the plugin has no extents, and the mapping of errno values onto the NBD ones.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

from . import _wire as w
from ._plugins._backend import (
    CACHE_EMULATE,
    CACHE_NATIVE,
    FLAG_FAST_ZERO,
    FLAG_FUA,
    FLAG_MAY_TRIM,
    FLAG_REQ_ONE,
    FUA_EMULATE,
    FUA_NATIVE,
    FUA_NONE,
    Buffer,
    ExportInfo,
    PluginConnection,
    ThreadModel,
)

ZERO_CHUNK = 1024 * 1024  # WRITE_ZEROES emulation writes this much at a time
CACHE_CHUNK = 4 * 1024 * 1024
_ZEROS = bytes(ZERO_CHUNK)
_NOT_SUPPORTED = (errno.EOPNOTSUPP, errno.ENOTSUP)


class RequestFailed(Exception):
    """A request failed; ``nbd_error`` is what the client is told."""

    def __init__(self, nbd_error: int, message: str) -> None:
        super().__init__(message)
        self.nbd_error = nbd_error


def nbd_errno(err: int | None, *, fast_zero: bool = False, df: bool = False) -> int:
    """Map a host errno onto the NBD error set (nbdkit's nbd_errno)."""
    if err in (errno.EROFS, errno.EPERM):
        return w.EPERM
    if err in (errno.EIO, errno.ENOMEM, errno.EINVAL, errno.ESHUTDOWN):
        return int(err)  # these NBD numbers equal Linux's
    if err in (errno.EDQUOT, errno.EFBIG, errno.ENOSPC):
        return w.ENOSPC
    if err in _NOT_SUPPORTED:
        return w.ENOTSUP if fast_zero else w.EINVAL
    if err == errno.EOVERFLOW:
        return w.EOVERFLOW if df else w.EINVAL
    if err is None or err == 0:
        return w.EIO
    return w.EINVAL


def transmission_flags(info: ExportInfo, *, readonly: bool, thread_model: ThreadModel) -> int:
    """The export's transmission flags (without HAS_FLAGS/SEND_DF: the handshake adds them)."""
    t = w.TFlag
    flags = 0
    writable = info.can_write and not readonly
    if not writable:
        flags |= t.READ_ONLY
    if info.can_flush:
        flags |= t.SEND_FLUSH
    if writable:
        flags |= t.SEND_WRITE_ZEROES  # always: emulated through pwrite when needed
        if info.can_fua != FUA_NONE:
            flags |= t.SEND_FUA
        if info.can_trim:
            flags |= t.SEND_TRIM
        if info.can_fast_zero:
            flags |= t.SEND_FAST_ZERO
    if info.is_rotational:
        flags |= t.ROTATIONAL
    if info.can_multi_conn and thread_model > ThreadModel.SERIALIZE_CONNECTIONS:
        flags |= t.CAN_MULTI_CONN
    if info.can_cache != 0:
        flags |= t.SEND_CACHE
    return int(flags)


class Export:
    """A plugin connection plus what it can do: executes requests, raising RequestFailed."""

    def __init__(self, conn: PluginConnection, info: ExportInfo) -> None:
        self.conn = conn
        self.info = info

    async def read(self, offset: int, length: int) -> Buffer:
        data = await self.conn.pread(length, offset, 0)
        if len(data) != length:
            raise RequestFailed(
                w.EIO, f"plugin returned {len(data)} bytes for a {length}-byte read"
            )
        return data

    async def write(self, data: Buffer, offset: int, fua: bool) -> None:
        await self.conn.pwrite(memoryview(data), offset, self._fua_flag(fua))
        await self._emulated_fua(fua)

    async def flush(self) -> None:
        await self.conn.flush(0)

    async def trim(self, offset: int, length: int, fua: bool) -> None:
        await self.conn.trim(length, offset, self._fua_flag(fua))
        await self._emulated_fua(fua)

    async def cache(self, offset: int, length: int) -> None:
        if self.info.can_cache == CACHE_NATIVE:
            await self.conn.cache(length, offset, 0)
        elif self.info.can_cache == CACHE_EMULATE:
            end = offset + length
            while offset < end:
                n = min(CACHE_CHUNK, end - offset)
                await self.read(offset, n)
                offset += n

    async def zero(
        self, offset: int, length: int, *, may_trim: bool, fast: bool, fua: bool
    ) -> None:
        if fast and not self.info.can_zero:
            raise RequestFailed(w.ENOTSUP, "fast zero not possible: the plugin cannot zero")
        if self.info.can_zero:
            flags = self._fua_flag(fua) | (FLAG_MAY_TRIM if may_trim else 0)
            flags |= FLAG_FAST_ZERO if fast else 0
            try:
                await self.conn.zero(length, offset, flags)
            except OSError as exc:
                if exc.errno not in _NOT_SUPPORTED:
                    raise
                if fast:
                    raise RequestFailed(w.ENOTSUP, "plugin cannot zero fast") from exc
            else:
                await self._emulated_fua(fua)
                return
        # Fall back to writing zeros, FUA applied once at the end.
        end = offset + length
        while offset < end:
            n = min(ZERO_CHUNK, end - offset)
            await self.conn.pwrite(memoryview(_ZEROS)[:n], offset, 0)
            offset += n
        if fua:
            await self._fua_after_emulation()

    async def block_status(self, offset: int, length: int, req_one: bool) -> list[tuple[int, int]]:
        if not self.info.can_extents:
            return [(length, 0)]
        raw = await self.conn.extents(length, offset, FLAG_REQ_ONE if req_one else 0)
        return normalise_extents(raw, offset, length, req_one)

    def _fua_flag(self, fua: bool) -> int:
        return FLAG_FUA if fua and self.info.can_fua == FUA_NATIVE else 0

    async def _emulated_fua(self, fua: bool) -> None:
        if fua and self.info.can_fua == FUA_EMULATE:
            await self.conn.flush(0)

    async def _fua_after_emulation(self) -> None:
        if self.info.can_fua == FUA_NATIVE and self.info.can_flush:
            await self.conn.flush(0)
        else:
            await self._emulated_fua(True)


def normalise_extents(
    raw: Sequence[tuple[int, int, int]], offset: int, length: int, req_one: bool
) -> list[tuple[int, int]]:
    """Clip a plugin's extents to the request and coalesce equal neighbours (nbdkit's rules:
    contiguous, ascending, the first one covering ``offset``)."""
    end = offset + length
    out: list[tuple[int, int]] = []
    expect = None
    for ext_off, ext_len, ext_type in raw:
        if ext_len <= 0:
            continue
        if expect is not None and ext_off != expect:
            raise RequestFailed(w.EIO, "plugin returned extents that are not contiguous")
        expect = ext_off + ext_len
        lo, hi = max(ext_off, offset), min(expect, end)
        if expect <= offset:
            continue
        if lo >= hi:
            break
        if not out and lo != offset:
            raise RequestFailed(w.EIO, "plugin extents do not cover the start of the request")
        flags = ext_type & (w.STATE_HOLE | w.STATE_ZERO)
        if out and out[-1][1] == flags and out[-1][0] + (hi - lo) <= 0xFFFFFFFF:
            out[-1] = (out[-1][0] + hi - lo, flags)
        else:
            out.append((hi - lo, flags))
        if req_one or len(out) >= w.MAX_EXTENTS:
            break
    if not out:
        raise RequestFailed(w.EIO, "plugin returned no extent for the request")
    if req_one:
        del out[1:]
    return out
