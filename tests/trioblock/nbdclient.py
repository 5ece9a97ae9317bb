"""A tiny NBD client codec for the tests, written from doc/proto.md (NetworkBlockDevice/nbd).

The codec deliberately imports nothing from ``trioblock``: its constants and layouts are typed
in again from the spec, so a wrong value in ``trioblock._wire`` makes the tests fail instead of
agreeing with itself.  Encoders build what a client sends; decoders parse what the server sends
and raise ``ValueError`` on anything malformed (short data, bad magic, left-over bytes).

It also holds :func:`converse`, the driver that feeds a core with one of the feeding strategies
(whole messages, byte by byte, or each buffer carrying the start of the next message); only the
driver touches ``trioblock`` (for the ``NEED_DATA`` sentinel).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from trioblock.protocol import NEED_DATA

# -- constants, from the spec ------------------------------------------------------------------

NBDMAGIC = 0x4E42444D41474943  # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054  # "IHAVEOPT"
REPLY_MAGIC = 0x0003E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
STRUCTURED_MAGIC = 0x668E33EF

FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2
C_FIXED_NEWSTYLE = 1
C_NO_ZEROES = 2

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_PEEK_EXPORT = 4
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10
OPT_EXTENDED_HEADERS = 11

REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
_ERR = 1 << 31
REP_ERR_UNSUP = _ERR + 1
REP_ERR_POLICY = _ERR + 2
REP_ERR_INVALID = _ERR + 3
REP_ERR_PLATFORM = _ERR + 4
REP_ERR_TLS_REQD = _ERR + 5
REP_ERR_UNKNOWN = _ERR + 6
REP_ERR_SHUTDOWN = _ERR + 7
REP_ERR_BLOCK_SIZE_REQD = _ERR + 8
REP_ERR_TOO_BIG = _ERR + 9

INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

# Transmission flags.
HAS_FLAGS = 1 << 0
READ_ONLY = 1 << 1
SEND_FLUSH = 1 << 2
SEND_FUA = 1 << 3
ROTATIONAL = 1 << 4
SEND_TRIM = 1 << 5
SEND_WRITE_ZEROES = 1 << 6
SEND_DF = 1 << 7
CAN_MULTI_CONN = 1 << 8
SEND_CACHE = 1 << 10
SEND_FAST_ZERO = 1 << 11

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7

FLAG_FUA = 1 << 0
FLAG_NO_HOLE = 1 << 1
FLAG_DF = 1 << 2
FLAG_REQ_ONE = 1 << 3
FLAG_FAST_ZERO = 1 << 4

REPLY_FLAG_DONE = 1
TYPE_NONE = 0
TYPE_OFFSET_DATA = 1
TYPE_OFFSET_HOLE = 2
TYPE_BLOCK_STATUS = 5
TYPE_ERROR = (1 << 15) + 1
TYPE_ERROR_OFFSET = (1 << 15) + 2

EPERM = 1
EIO = 5
ENOMEM = 12
EINVAL = 22
ENOSPC = 28
EOVERFLOW = 75
ENOTSUP = 95
ESHUTDOWN = 108

STATE_HOLE = 1
STATE_ZERO = 2


# -- reading helper ----------------------------------------------------------------------------


class _Reader:
    """Consume big-endian fields from a byte string; ``ValueError`` when it runs short."""

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.pos = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n > self.left:
            raise ValueError(f"need {n} bytes, have {self.left}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "big")

    def string(self, n: int) -> str:
        raw = self.take(n)
        if b"\0" in raw or n > 4096:
            raise ValueError(f"not an NBD string: {raw!r}")
        return raw.decode("utf-8")  # UnicodeDecodeError is a ValueError

    def rest(self) -> bytes:
        return self.take(self.left)

    def end(self) -> None:
        if self.left:
            raise ValueError(f"{self.left} unexpected trailing bytes")


# -- handshake: client side --------------------------------------------------------------------


def client_flags(*, fixed: bool = True, no_zeroes: bool = False, extra: int = 0) -> bytes:
    flags = (C_FIXED_NEWSTYLE if fixed else 0) | (C_NO_ZEROES if no_zeroes else 0) | extra
    return struct.pack(">I", flags)


def option(
    opt: int, data: bytes = b"", *, magic: int = IHAVEOPT, length: int | None = None
) -> bytes:
    """One option request; ``length`` overrides the length field (for lying clients)."""
    return struct.pack(">QII", magic, opt, len(data) if length is None else length) + data


def _string(s: str | bytes) -> bytes:
    return s.encode() if isinstance(s, str) else s


def export_name(name: str | bytes) -> bytes:
    return option(OPT_EXPORT_NAME, _string(name))


def info_go_payload(name: str | bytes, requests: Sequence[int] = ()) -> bytes:
    raw = _string(name)
    out = struct.pack(">I", len(raw)) + raw + struct.pack(">H", len(requests))
    return out + b"".join(struct.pack(">H", r) for r in requests)


def info(name: str | bytes, requests: Sequence[int] = ()) -> bytes:
    return option(OPT_INFO, info_go_payload(name, requests))


def go(name: str | bytes, requests: Sequence[int] = ()) -> bytes:
    return option(OPT_GO, info_go_payload(name, requests))


def meta_payload(export: str | bytes, queries: Sequence[str | bytes]) -> bytes:
    raw = _string(export)
    out = struct.pack(">I", len(raw)) + raw + struct.pack(">I", len(queries))
    for query in queries:
        q = _string(query)
        out += struct.pack(">I", len(q)) + q
    return out


def list_meta(export: str | bytes, queries: Sequence[str | bytes]) -> bytes:
    return option(OPT_LIST_META_CONTEXT, meta_payload(export, queries))


def set_meta(export: str | bytes, queries: Sequence[str | bytes]) -> bytes:
    return option(OPT_SET_META_CONTEXT, meta_payload(export, queries))


# -- handshake: server side decoded ------------------------------------------------------------


def parse_greeting(data: bytes) -> int:
    """The server's first 18 bytes; returns its handshake flags."""
    r = _Reader(data)
    if r.u64() != NBDMAGIC or r.u64() != IHAVEOPT:
        raise ValueError("bad greeting magic")
    flags = r.u16()
    r.end()
    return flags


@dataclass(frozen=True)
class OptionReply:
    opt: int
    type: int
    data: bytes

    @property
    def is_error(self) -> bool:
        return bool(self.type & _ERR)


def parse_option_replies(data: bytes) -> list[OptionReply]:
    """Every option reply in ``data``, which must hold whole replies only."""
    r = _Reader(data)
    replies = []
    while r.left:
        if r.u64() != REPLY_MAGIC:
            raise ValueError("bad option reply magic")
        opt, rep, length = r.u32(), r.u32(), r.u32()
        replies.append(OptionReply(opt, rep, r.take(length)))
    return replies


@dataclass(frozen=True)
class ExportInfo:
    size: int
    tflags: int


def parse_export_name_reply(data: bytes, *, no_zeroes: bool) -> ExportInfo:
    """The reply to NBD_OPT_EXPORT_NAME: size, flags and (unless NO_ZEROES) 124 zero bytes."""
    r = _Reader(data)
    reply = ExportInfo(r.u64(), r.u16())
    if not no_zeroes and r.take(124) != bytes(124):
        raise ValueError("reserved bytes are not zero")
    r.end()
    return reply


def parse_server(data: bytes) -> tuple[str, str]:
    """An NBD_REP_SERVER payload: (name, description)."""
    r = _Reader(data)
    name = r.string(r.u32())
    return name, r.string(r.left)


InfoValue = ExportInfo | str | tuple[int, int, int]


def parse_info(data: bytes) -> tuple[int, InfoValue]:
    """An NBD_REP_INFO payload: (info type, decoded value)."""
    r = _Reader(data)
    kind = r.u16()
    value: InfoValue
    if kind == INFO_EXPORT:
        value = ExportInfo(r.u64(), r.u16())
    elif kind in (INFO_NAME, INFO_DESCRIPTION):
        value = r.string(r.left)
    elif kind == INFO_BLOCK_SIZE:
        value = (r.u32(), r.u32(), r.u32())
    else:
        raise ValueError(f"unknown info type {kind}")
    r.end()
    return kind, value


def parse_meta_context(data: bytes) -> tuple[int, str]:
    """An NBD_REP_META_CONTEXT payload: (context id, name)."""
    r = _Reader(data)
    ctx_id = r.u32()
    return ctx_id, r.string(r.left)


# -- transmission ------------------------------------------------------------------------------


def request(
    cmd: int,
    *,
    cookie: int = 0,
    offset: int = 0,
    length: int | None = None,
    flags: int = 0,
    payload: bytes = b"",
    magic: int = REQUEST_MAGIC,
) -> bytes:
    """One request; ``length`` defaults to the payload length."""
    if length is None:
        length = len(payload)
    return struct.pack(">IHHQQI", magic, flags, cmd, cookie, offset, length) + payload


@dataclass(frozen=True)
class SimpleReply:
    error: int
    cookie: int


def parse_simple_reply(data: bytes) -> tuple[SimpleReply, bytes]:
    """A simple reply header and whatever follows it (read data)."""
    r = _Reader(data)
    if r.u32() != SIMPLE_MAGIC:
        raise ValueError("bad simple reply magic")
    error = r.u32()
    return SimpleReply(error, r.u64()), r.rest()


@dataclass(frozen=True)
class ChunkReply:
    flags: int
    type: int
    cookie: int
    payload: bytes

    @property
    def done(self) -> bool:
        return bool(self.flags & REPLY_FLAG_DONE)


def parse_chunks(data: bytes) -> list[ChunkReply]:
    """Every structured reply chunk in ``data``, which must hold whole chunks only."""
    r = _Reader(data)
    chunks = []
    while r.left:
        if r.u32() != STRUCTURED_MAGIC:
            raise ValueError("bad structured reply magic")
        flags, kind, cookie, length = r.u16(), r.u16(), r.u64(), r.u32()
        chunks.append(ChunkReply(flags, kind, cookie, r.take(length)))
    return chunks


def decode_offset_data(chunk: ChunkReply) -> tuple[int, bytes]:
    if chunk.type != TYPE_OFFSET_DATA or len(chunk.payload) < 9:
        raise ValueError(f"not an OFFSET_DATA chunk: {chunk}")
    r = _Reader(chunk.payload)
    return r.u64(), r.rest()


def decode_hole(chunk: ChunkReply) -> tuple[int, int]:
    if chunk.type != TYPE_OFFSET_HOLE or len(chunk.payload) != 12:
        raise ValueError(f"not an OFFSET_HOLE chunk: {chunk}")
    r = _Reader(chunk.payload)
    offset, size = r.u64(), r.u32()
    if not size:
        raise ValueError("hole size must be nonzero")
    return offset, size


@dataclass(frozen=True)
class ChunkError:
    error: int
    message: str
    offset: int | None


def decode_error(chunk: ChunkReply) -> ChunkError:
    if not chunk.type & (1 << 15):
        raise ValueError(f"not an error chunk: {chunk}")
    r = _Reader(chunk.payload)
    error, msglen = r.u32(), r.u16()
    if not error:
        raise ValueError("error chunk with error 0")
    message = r.string(msglen)
    offset = None
    if chunk.type == TYPE_ERROR_OFFSET:
        offset = r.u64()
    elif chunk.type != TYPE_ERROR:
        raise ValueError(f"unknown error chunk type {chunk.type:#x}")
    r.end()
    return ChunkError(error, message, offset)


def decode_block_status(chunk: ChunkReply) -> tuple[int, list[tuple[int, int]]]:
    """(context id, [(length, flags), ...]); the spec wants at least one descriptor."""
    n = len(chunk.payload) - 4
    if chunk.type != TYPE_BLOCK_STATUS or n <= 0 or n % 8:
        raise ValueError(f"not a BLOCK_STATUS chunk: {chunk}")
    r = _Reader(chunk.payload)
    ctx_id = r.u32()
    return ctx_id, [(r.u32(), r.u32()) for _ in range(n // 8)]


# -- feeding a sans-I/O core -------------------------------------------------------------------


class Core(Protocol):
    def receive_data(self, data: bytes) -> None: ...

    def next_event(self) -> object: ...


FEEDINGS = ("whole", "bytewise", "trailing")
PARTIAL_OPTION = struct.pack(">QI", IHAVEOPT, OPT_GO)  # 12 of an option header's 16 bytes
PARTIAL_REQUEST = struct.pack(">IHH", REQUEST_MAGIC, 0, CMD_READ)  # 8 of a request's 28 bytes


def feed_buffers(messages: Sequence[bytes], feeding: str, trailer: bytes = b"") -> list[bytes]:
    """Split a client's ``messages`` into the buffers a server would receive.

    ``whole``: one buffer per message.  ``bytewise``: one byte per buffer.  ``trailing``: every
    buffer also carries the first half of the next message (the last one carries all of
    ``trailer``), so the core must stop exactly at each message's end.
    """
    if feeding == "whole":
        return [m for m in messages if m]
    stream = b"".join(messages)
    if feeding == "bytewise":
        return [stream[i : i + 1] for i in range(len(stream))]
    if feeding != "trailing":
        raise ValueError(f"unknown feeding {feeding!r}")
    buffers: list[bytes] = []
    carried = b""
    for i, msg in enumerate(messages):
        rest = msg[len(carried) :]
        if i + 1 < len(messages):
            carried = messages[i + 1][: max(1, len(messages[i + 1]) // 2)]
        else:
            carried = trailer
        buffers.append(rest + carried)
    return [b for b in buffers if b]


Answer = Callable[[object], None]


def converse(
    core: Core,
    messages: Sequence[bytes],
    feeding: str,
    answer: Answer | None = None,
    trailer: bytes = b"",
) -> list[object]:
    """Feed ``messages`` as ``feeding`` says and return the events, in order.

    After each buffer the core is drained to NEED_DATA; ``answer`` sees every event as it comes
    out (a handshake core needs its answer before it parses on).  ``trailer`` is fed last, only
    in the ``trailing`` feeding, glued to the last message.
    """
    events: list[object] = []
    for buf in feed_buffers(messages, feeding, trailer if feeding == "trailing" else b""):
        core.receive_data(buf)
        while True:
            event = core.next_event()
            if event is NEED_DATA:
                break
            events.append(event)
            if answer is not None:
                answer(event)
    return events


# The command flags each command may carry.  proto.md: once SEND_FUA is advertised the server
# MUST accept FUA on any command (it only matters for writes).
FLAGS_ALLOWED = {
    CMD_READ: FLAG_DF | FLAG_FUA,
    CMD_WRITE: FLAG_FUA,
    CMD_FLUSH: FLAG_FUA,
    CMD_TRIM: FLAG_FUA,
    CMD_CACHE: FLAG_FUA,
    CMD_WRITE_ZEROES: FLAG_FUA | FLAG_NO_HOLE | FLAG_FAST_ZERO,
    CMD_BLOCK_STATUS: FLAG_REQ_ONE | FLAG_FUA,
}

# Every transmission flag a fully capable writable export advertises.
ALL_TFLAGS = (
    HAS_FLAGS
    | SEND_FLUSH
    | SEND_FUA
    | SEND_TRIM
    | SEND_WRITE_ZEROES
    | SEND_DF
    | SEND_CACHE
    | SEND_FAST_ZERO
)
