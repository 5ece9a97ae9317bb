"""How one validated request becomes plugin calls and a reply, with nbdkit's emulations.

A request is planned by a generator (:func:`plan`) that yields the plugin calls it needs as
``(method, args)`` and returns the reply's bytes.  The same plan runs against an async plugin
connection (:func:`run_async`) or, batched inside one worker thread, against a blocking one
(:func:`run_blocking`) — so nbdkit's generic behaviour lives in one place: FUA emulated by a flush,
WRITE_ZEROES through pwrite when the plugin cannot zero (or refuses with EOPNOTSUPP), CACHE emulated
by reading, one allocated extent when the plugin has no extents, errno mapped onto NBD's few.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Generator, Sequence
from typing import Any

from . import _wire as w
from ._events import Request, WriteRequest
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
    Hole,
    ThreadModel,
)
from ._transmission import (
    block_status_reply,
    data_chunk_header,
    error_reply,
    hole_chunk,
    read_reply_header,
    simple_reply,
)

log = logging.getLogger("trioblock.server")

ZERO_CHUNK = 1024 * 1024  # WRITE_ZEROES emulation writes this much at a time
CACHE_CHUNK = 4 * 1024 * 1024
_ZEROS = memoryview(bytes(ZERO_CHUNK))
_NOT_SUPPORTED = (errno.EOPNOTSUPP, errno.ENOTSUP)

# Plain ints on the hot path: IntEnum/IntFlag arithmetic costs microseconds per request.
_READ, _WRITE, _FLUSH, _TRIM, _CACHE, _ZERO, _BLOCK_STATUS = (
    int(w.Cmd.READ),
    int(w.Cmd.WRITE),
    int(w.Cmd.FLUSH),
    int(w.Cmd.TRIM),
    int(w.Cmd.CACHE),
    int(w.Cmd.WRITE_ZEROES),
    int(w.Cmd.BLOCK_STATUS),
)
_F_FUA, _F_NO_HOLE, _F_DF, _F_REQ_ONE, _F_FAST_ZERO = (
    int(w.CmdFlag.FUA),
    int(w.CmdFlag.NO_HOLE),
    int(w.CmdFlag.DF),
    int(w.CmdFlag.REQ_ONE),
    int(w.CmdFlag.FAST_ZERO),
)

Call = tuple[str, tuple[Any, ...]]
Plan = Generator[Call, Any, list[Buffer]]


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
    if not err:
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


def plan(req: Request | WriteRequest, info: ExportInfo, structured: bool, peer: str = "") -> Plan:
    """Plugin calls for ``req``; returns the reply as a list of buffers.  Never raises for a
    plugin failure: that becomes an error reply."""
    cookie = req.cookie
    flags = req.flags
    command = _WRITE if isinstance(req, WriteRequest) else req.command
    try:
        if command == _READ:
            assert isinstance(req, Request)
            data = yield ("pread", (req.length, req.offset, 0))
            if type(data) is not list:  # one buffer, the usual answer: no parts to inspect
                if len(data) != req.length:
                    raise RequestFailed(
                        w.EIO, f"plugin returned {len(data)} bytes, not {req.length}"
                    )
                return [read_reply_header(cookie, req.offset, req.length, structured), data]
            parts = data
            got = sum(len(p) for p in parts)
            if got != req.length:
                raise RequestFailed(w.EIO, f"plugin returned {got} bytes, not {req.length}")
            if any(isinstance(p, Hole) for p in parts):
                if structured and not flags & _F_DF:
                    return sparse_read_reply(cookie, req.offset, parts)
                parts = [_zeros(p.length) if isinstance(p, Hole) else p for p in parts]
            return [read_reply_header(cookie, req.offset, req.length, structured), *parts]
        if command == _BLOCK_STATUS:
            assert isinstance(req, Request)
            req_one = bool(flags & _F_REQ_ONE)
            if info.can_extents:
                raw = yield ("extents", (req.length, req.offset, FLAG_REQ_ONE if req_one else 0))
                extents = normalise_extents(raw, req.offset, req.length, req_one)
            else:
                extents = [(req.length, 0)]
            return [block_status_reply(cookie, w.BASE_ALLOCATION_ID, extents)]
        fua = bool(flags & _F_FUA)
        native_fua = FLAG_FUA if fua and info.can_fua == FUA_NATIVE else 0
        if isinstance(req, WriteRequest):
            yield ("pwrite", (memoryview(req.data), req.offset, native_fua))
        elif command == _FLUSH:
            yield ("flush", (0,))
        elif command == _TRIM:
            yield ("trim", (req.length, req.offset, native_fua))
        elif command == _CACHE:
            yield from _cache(info, req.offset, req.length)
        elif command == _ZERO:
            fua = yield from _zero(info, req, native_fua)
        if fua and info.can_fua == FUA_EMULATE:
            yield ("flush", (0,))
        return [simple_reply(cookie)]
    except RequestFailed as exc:
        log.debug("%s: %s failed: %s", peer, _name(command), exc)
        err = exc.nbd_error
    except OSError as exc:
        log.debug("%s: %s failed: %s", peer, _name(command), exc)
        err = nbd_errno(exc.errno, fast_zero=bool(flags & _F_FAST_ZERO), df=bool(flags & _F_DF))
    except Exception:
        log.exception("%s: %s raised", peer, _name(command))
        err = w.EIO
    return [error_reply(cookie, command, err, structured)]


def sparse_read_reply(cookie: int, offset: int, parts: Sequence[Buffer | Hole]) -> list[Buffer]:
    """A structured read reply of OFFSET_DATA chunks (one per run of data) and OFFSET_HOLE chunks,
    the last one flagged DONE."""
    runs: list[tuple[int, list[Buffer] | int]] = []  # (offset, data parts) or (offset, hole size)
    for part in parts:
        if isinstance(part, Hole):
            if runs and isinstance(runs[-1][1], int):
                runs[-1] = (runs[-1][0], runs[-1][1] + part.length)
            else:
                runs.append((offset, part.length))
        elif len(part):
            if runs and isinstance(runs[-1][1], list):
                runs[-1][1].append(part)
            else:
                runs.append((offset, [part]))
        offset += len(part)
    reply: list[Buffer] = []
    for i, (at, run) in enumerate(runs):
        done = i == len(runs) - 1
        if isinstance(run, int):
            reply.append(hole_chunk(cookie, at, run, done))
        else:
            reply.append(data_chunk_header(cookie, at, sum(len(b) for b in run), done))
            reply += run
    return reply


def _zeros(length: int) -> Buffer:
    return _ZEROS[:length] if length <= ZERO_CHUNK else bytes(length)


def _name(command: int) -> str:
    return w.Cmd(command).name


def _cache(info: ExportInfo, offset: int, length: int) -> Generator[Call, Any, None]:
    if info.can_cache == CACHE_NATIVE:
        yield ("cache", (length, offset, 0))
    elif info.can_cache == CACHE_EMULATE:
        end = offset + length
        while offset < end:
            n = min(CACHE_CHUNK, end - offset)
            yield ("pread", (n, offset, 0))
            offset += n


def _zero(info: ExportInfo, req: Request, native_fua: int) -> Generator[Call, Any, bool]:
    """WRITE_ZEROES; returns whether FUA still needs emulating by a flush."""
    fast = bool(req.flags & _F_FAST_ZERO)
    fua = bool(req.flags & _F_FUA)
    if fast and not info.can_zero:
        raise RequestFailed(w.ENOTSUP, "fast zero impossible: the plugin cannot zero")
    if info.can_zero:
        flags = native_fua | (0 if req.flags & _F_NO_HOLE else FLAG_MAY_TRIM)
        flags |= FLAG_FAST_ZERO if fast else 0
        try:
            yield ("zero", (req.length, req.offset, flags))
            return fua
        except OSError as exc:
            if exc.errno not in _NOT_SUPPORTED:
                raise
            if fast:
                raise RequestFailed(w.ENOTSUP, "the plugin cannot zero fast") from exc
    # Fall back to writing zeros, each write keeping a native FUA (as nbdkit); an emulated FUA is
    # the caller's one flush at the end.
    offset, end = req.offset, req.offset + req.length
    while offset < end:
        n = min(ZERO_CHUNK, end - offset)
        yield ("pwrite", (_ZEROS[:n], offset, native_fua))
        offset += n
    return fua


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
        if expect <= offset:
            continue
        lo, hi = max(ext_off, offset), min(expect, end)
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
    return out


def run_blocking(ops: Any, gen: Plan) -> list[Buffer]:
    """Drive a plan against blocking plugin methods (in a worker thread)."""
    try:
        call = next(gen)
        while True:
            try:
                result = getattr(ops, call[0])(*call[1])
            except Exception as exc:
                call = gen.throw(exc)
            else:
                call = gen.send(result)
    except StopIteration as stop:
        reply: list[Buffer] = stop.value
        return reply


async def run_async(conn: Any, gen: Plan) -> list[Buffer]:
    """Drive a plan against an async plugin connection."""
    try:
        call = next(gen)
        while True:
            try:
                result = await getattr(conn, call[0])(*call[1])
            except Exception as exc:
                call = gen.throw(exc)
            else:
                call = gen.send(result)
    except StopIteration as stop:
        reply: list[Buffer] = stop.value
        return reply
