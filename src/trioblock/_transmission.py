"""Sans-I/O server side of the NBD transmission phase: requests in, replies out.

:class:`ServerTransmission` parses request headers (and WRITE payloads) from received bytes and
validates each request the way nbdkit does, so the caller only sees requests that may reach the
plugin; refused ones arrive as :class:`RejectedRequest` with the errno to reply with, their payload
already drained without being stored.  The ``*_reply`` functions encode replies.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable

from . import _wire as w
from ._events import (
    NEED_DATA,
    Disconnect,
    RejectedRequest,
    RemoteProtocolError,
    Request,
    TransmissionEvent,
    WriteRequest,
    _NeedData,
)

_C = w.Cmd
_F = w.CmdFlag
_T = w.TFlag


class _State(enum.Enum):
    HEADER = enum.auto()
    PAYLOAD = enum.auto()
    DRAIN = enum.auto()
    CLOSED = enum.auto()


class ServerTransmission:
    def __init__(
        self,
        *,
        size: int,
        tflags: int,
        structured_replies: bool = False,
        base_allocation: bool = False,
        max_request: int = w.MAX_REQUEST_SIZE,
    ) -> None:
        self.size = size
        self.tflags = tflags
        self.structured_replies = structured_replies
        self.base_allocation = base_allocation
        self.max_request = max_request
        self._buf = bytearray()
        self._state = _State.HEADER
        self._header: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
        self._left = 0
        self._reject: RejectedRequest | None = None

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            if self._state is _State.CLOSED:
                return
            mid = self._state is not _State.HEADER or bool(self._buf)
            self._state = _State.CLOSED
            if mid:
                raise RemoteProtocolError("client closed the connection in the middle of a request")
            raise RemoteProtocolError("client closed the connection without NBD_CMD_DISC")
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_event(self) -> TransmissionEvent | _NeedData:
        buf = self._buf
        while True:
            state = self._state
            if state is _State.HEADER:
                if len(buf) < w.REQUEST.size:
                    return NEED_DATA
                magic, flags, cmd, cookie, offset, length = w.REQUEST.unpack_from(buf)
                del buf[: w.REQUEST.size]
                if magic != w.REQUEST_MAGIC:
                    self._state = _State.CLOSED
                    raise RemoteProtocolError(f"bad request magic {magic:#x}")
                if cmd == _DISC:
                    self._state = _State.CLOSED
                    return Disconnect()
                error, reason = self._validate(cmd, flags, offset, length)
                if cmd == _WRITE:
                    if error:
                        # Drain the payload without storing it, then refuse.
                        self._reject = RejectedRequest(cookie, cmd, error, reason)
                        self._left = length
                        self._state = _State.DRAIN
                        continue
                    self._header = (cookie, flags, cmd, offset, length)
                    self._state = _State.PAYLOAD
                    continue
                if error:
                    return RejectedRequest(cookie, cmd, error, reason)
                return Request(cookie, cmd, flags, offset, length)
            if state is _State.PAYLOAD:
                cookie, flags, _, offset, length = self._header
                if len(buf) < length:
                    return NEED_DATA
                data = buf[:length]
                del buf[:length]
                self._state = _State.HEADER
                return WriteRequest(cookie, flags, offset, data)
            if state is _State.DRAIN:
                take = min(self._left, len(buf))
                del buf[:take]
                self._left -= take
                if self._left:
                    return NEED_DATA
                self._state = _State.HEADER
                rejected, self._reject = self._reject, None
                assert rejected is not None
                return rejected
            return NEED_DATA

    def _validate(self, cmd: int, flags: int, offset: int, length: int) -> tuple[int, str]:
        """Return (0, "") for a valid request, else (NBD errno, why) — nbdkit's checks.

        Plain ints and one table lookup: this runs for every request."""
        rule = _RULES.get(cmd)
        if rule is None:
            return w.EINVAL, f"unknown command {cmd}"
        name, allowed, ranged, writing, needs = rule
        tflags = self.tflags
        if writing and tflags & _T_READ_ONLY:
            return w.EPERM, "the export is read-only"  # first, as nbdkit: nothing else matters
        if flags:
            if flags & ~_KNOWN_FLAGS:
                return w.EINVAL, f"unknown command flags {flags:#x}"
            if flags & ~allowed:
                return w.EINVAL, f"flags {flags:#x} do not apply to {name}"
            if flags & _FUA and not tflags & _T_FUA:
                return w.EINVAL, "FUA was not advertised"
            if flags & _DF and not self.structured_replies:
                return w.EINVAL, "DF needs structured replies"
            if flags & _FAST_ZERO and not tflags & _T_FAST_ZERO:
                return w.EINVAL, "FAST_ZERO was not advertised"
        if ranged:
            if length == 0:
                return w.EINVAL, f"{name} of zero length"
            if offset > self.size or length > self.size - offset:
                err = w.ENOSPC if cmd in (_WRITE, _ZERO) else w.EINVAL
                return err, f"{name} beyond the end of the export"
        elif offset or length:
            return w.EINVAL, f"{name} takes no offset or length"
        if cmd <= _WRITE and length > self.max_request:
            return w.ENOMEM, f"{name} of {length} bytes exceeds {self.max_request}"
        if needs and not tflags & needs:
            return w.EINVAL, f"{name} was not advertised"
        if cmd == _BLOCK_STATUS and not (self.structured_replies and self.base_allocation):
            return w.EINVAL, "BLOCK_STATUS needs structured replies and base:allocation"
        return 0, ""


# Per command: name, flags it accepts, has a range, writes, transmission flag it needs.  FUA is
# accepted on every command once advertised (the spec says MUST; it only matters for writes).
_RULES: dict[int, tuple[str, int, bool, bool, int]] = {
    int(_C.READ): ("READ", int(_F.DF | _F.FUA), True, False, 0),
    int(_C.WRITE): ("WRITE", int(_F.FUA), True, True, 0),
    int(_C.FLUSH): ("FLUSH", int(_F.FUA), False, False, int(_T.SEND_FLUSH)),
    int(_C.TRIM): ("TRIM", int(_F.FUA), True, True, int(_T.SEND_TRIM)),
    int(_C.CACHE): ("CACHE", int(_F.FUA), True, False, int(_T.SEND_CACHE)),
    int(_C.WRITE_ZEROES): (
        "WRITE_ZEROES",
        int(_F.FUA | _F.NO_HOLE | _F.FAST_ZERO),
        True,
        True,
        int(_T.SEND_WRITE_ZEROES),
    ),
    int(_C.BLOCK_STATUS): ("BLOCK_STATUS", int(_F.REQ_ONE | _F.FUA), True, False, 0),
}
_KNOWN_FLAGS = w.KNOWN_CMD_FLAGS
_FUA, _DF, _FAST_ZERO = int(_F.FUA), int(_F.DF), int(_F.FAST_ZERO)
_T_FUA, _T_FAST_ZERO, _T_READ_ONLY = int(_T.SEND_FUA), int(_T.SEND_FAST_ZERO), int(_T.READ_ONLY)
_WRITE, _ZERO, _BLOCK_STATUS, _DISC = (
    int(_C.WRITE),
    int(_C.WRITE_ZEROES),
    int(_C.BLOCK_STATUS),
    int(_C.DISC),
)


# -- reply encoders ----------------------------------------------------------------------------


def simple_reply(cookie: int, error: int = 0) -> bytes:
    return w.SIMPLE_REPLY.pack(w.SIMPLE_REPLY_MAGIC, error, cookie)


def read_reply_header(cookie: int, offset: int, length: int, structured: bool) -> bytes:
    """Header to send before ``length`` bytes of read data (one final OFFSET_DATA chunk)."""
    if not structured:
        return _SIMPLE_REPLY.pack(_SIMPLE_REPLY_MAGIC, 0, cookie)
    return _DATA_CHUNK.pack(_STRUCTURED_MAGIC, _DONE, _OFFSET_DATA, cookie, 8 + length, offset)


# Once per READ: one pack of plain ints (enum members cost a conversion each time).
_DATA_CHUNK = struct.Struct(w.CHUNK_HEADER.format + "Q")  # chunk header + the data's offset
_SIMPLE_REPLY, _SIMPLE_REPLY_MAGIC = w.SIMPLE_REPLY, int(w.SIMPLE_REPLY_MAGIC)
_STRUCTURED_MAGIC, _DONE = int(w.STRUCTURED_REPLY_MAGIC), int(w.CHUNK_FLAG_DONE)
_OFFSET_DATA = int(w.Chunk.OFFSET_DATA)


def hole_chunk(cookie: int, offset: int, length: int, done: bool) -> bytes:
    flags = w.CHUNK_FLAG_DONE if done else 0
    return (
        w.CHUNK_HEADER.pack(w.STRUCTURED_REPLY_MAGIC, flags, w.Chunk.OFFSET_HOLE, cookie, 12)
        + w.U64.pack(offset)
        + w.U32.pack(length)
    )


def data_chunk_header(cookie: int, offset: int, length: int, done: bool) -> bytes:
    flags = w.CHUNK_FLAG_DONE if done else 0
    head = w.CHUNK_HEADER.pack(
        w.STRUCTURED_REPLY_MAGIC, flags, w.Chunk.OFFSET_DATA, cookie, 8 + length
    )
    return head + w.U64.pack(offset)


def error_reply(
    cookie: int,
    command: int,
    error: int,
    structured: bool,
    message: str = "",
    offset: int | None = None,
) -> bytes:
    """An error for ``command``: an ERROR chunk for READ/BLOCK_STATUS under structured replies
    (as nbdkit), else a simple reply."""
    if not (structured and command in (_C.READ, _C.BLOCK_STATUS)):
        return simple_reply(cookie, error)
    msg = w.encode_string(message)
    body = w.U32.pack(error) + w.U16.pack(len(msg)) + msg
    kind = w.Chunk.ERROR
    if offset is not None:
        kind = w.Chunk.ERROR_OFFSET
        body += w.U64.pack(offset)
    head = w.CHUNK_HEADER.pack(w.STRUCTURED_REPLY_MAGIC, w.CHUNK_FLAG_DONE, kind, cookie, len(body))
    return head + body


def block_status_reply(cookie: int, context_id: int, extents: Iterable[tuple[int, int]]) -> bytes:
    """One final BLOCK_STATUS chunk of (length, flags) descriptors."""
    body = bytearray(w.U32.pack(context_id))
    for length, flags in extents:
        body += w.U32.pack(length) + w.U32.pack(flags)
    head = w.CHUNK_HEADER.pack(
        w.STRUCTURED_REPLY_MAGIC, w.CHUNK_FLAG_DONE, w.Chunk.BLOCK_STATUS, cookie, len(body)
    )
    return head + bytes(body)
