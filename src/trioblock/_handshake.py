"""Sans-I/O server side of the NBD fixed-newstyle handshake.

Bytes go in with :meth:`ServerHandshake.receive_data`, events come out of
:meth:`ServerHandshake.next_event`, bytes to send accumulate in :meth:`data_to_send`.  Options the
core can answer alone (STRUCTURED_REPLY, meta contexts, unknown or malformed options, TLS policy)
never reach the caller; LIST, INFO/GO/EXPORT_NAME and STARTTLS come out as events the caller
answers, because they need the plugin or the socket.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeVar

from . import _wire as w
from ._events import (
    NEED_DATA,
    Aborted,
    ExportRequest,
    HandshakeComplete,
    HandshakeEvent,
    ListExports,
    LocalProtocolError,
    RemoteProtocolError,
    StartTLS,
    _NeedData,
)

_T = TypeVar("_T")

MAX_OPTIONS = 32  # per connection, as nbdkit
MAX_BUFFERED_OPTION = 64 * 1024  # larger option payloads are drained, never stored


@dataclass(frozen=True, slots=True)
class ExportDetails:
    """What the caller learned when it opened an export, for INFO/GO/EXPORT_NAME replies."""

    size: int
    tflags: int  # without SEND_DF: the core adds it when structured replies are on
    name: str = ""
    description: str | None = None
    block_size: tuple[int, int, int] | None = None


class _State(enum.Enum):
    CLIENT_FLAGS = enum.auto()
    OPTION_HEADER = enum.auto()
    OPTION_PAYLOAD = enum.auto()
    DRAIN_OPTION = enum.auto()
    AWAIT_ANSWER = enum.auto()  # an event is out; the caller must answer before more parsing
    AWAIT_TLS = enum.auto()
    DONE = enum.auto()
    CLOSED = enum.auto()


def valid_string(raw: bytes) -> str | None:
    """Decode an NBD string (UTF-8, no NUL, <= 4096 bytes) or return None."""
    if len(raw) > w.MAX_STRING or b"\0" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


class ServerHandshake:
    def __init__(
        self,
        *,
        tls: str = "off",
        structured_replies: bool = True,
        tls_active: bool = False,
    ) -> None:
        if tls not in ("off", "on", "require"):
            raise ValueError(f"tls must be off, on or require, not {tls!r}")
        self._tls_mode = tls
        self._tls_active = tls_active
        self._sr_allowed = structured_replies
        self._buf = bytearray()
        self._out = bytearray(
            w.GREETING.pack(w.NBDMAGIC, w.IHAVEOPT, w.FLAG_FIXED_NEWSTYLE | w.FLAG_NO_ZEROES)
        )
        self._state = _State.CLIENT_FLAGS
        self._fixed = False
        self._no_zeroes = False
        self._options_seen = 0
        self._opt = 0
        self._opt_len = 0
        self._drain_left = 0
        self._drain_reply = w.Rep.ERR_UNSUP
        self._pending: ExportRequest | ListExports | None = None
        self._complete: HandshakeComplete | None = None
        self._reset_negotiation()

    def _reset_negotiation(self) -> None:
        # STARTTLS wipes what was negotiated in clear text (nbdkit, and the spec's advice).
        self.structured_replies = False
        self._meta_export: str | None = (
            None  # export named by SET_META_CONTEXT, if base:allocation set
        )

    # -- I/O -----------------------------------------------------------------------------------

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def closed(self) -> bool:
        return self._state is _State.CLOSED

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            if self._state not in (_State.DONE, _State.CLOSED):
                self._state = _State.CLOSED
                raise RemoteProtocolError("client closed the connection during the handshake")
            return
        self._buf += data

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def trailing_data(self) -> bytes:
        """Bytes received after the handshake ended (the first requests)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    # -- parsing -------------------------------------------------------------------------------

    def next_event(self) -> HandshakeEvent | _NeedData:
        while True:
            state = self._state
            if state is _State.CLIENT_FLAGS:
                if len(self._buf) < 4:
                    return NEED_DATA
                (flags,) = w.CLIENT_FLAGS.unpack_from(self._buf)
                del self._buf[:4]
                if flags & ~w.KNOWN_CLIENT_FLAGS:
                    self._fail(f"unknown client flags {flags:#x}")
                self._fixed = bool(flags & w.FLAG_C_FIXED_NEWSTYLE)
                self._no_zeroes = bool(flags & w.FLAG_C_NO_ZEROES)
                self._state = _State.OPTION_HEADER
            elif state is _State.OPTION_HEADER:
                if len(self._buf) < w.OPTION_HEADER.size:
                    return NEED_DATA
                magic, opt, length = w.OPTION_HEADER.unpack_from(self._buf)
                del self._buf[: w.OPTION_HEADER.size]
                self._start_option(magic, opt, length)
            elif state is _State.OPTION_PAYLOAD:
                if len(self._buf) < self._opt_len:
                    return NEED_DATA
                payload = bytes(self._buf[: self._opt_len])
                del self._buf[: self._opt_len]
                self._state = _State.OPTION_HEADER
                event = self._handle_option(self._opt, payload)
                if event is not None:
                    return event
            elif state is _State.DRAIN_OPTION:
                take = min(self._drain_left, len(self._buf))
                del self._buf[:take]
                self._drain_left -= take
                if self._drain_left:
                    return NEED_DATA
                self._reply(self._opt, self._drain_reply, b"option payload too large")
                self._state = _State.OPTION_HEADER
            elif state is _State.AWAIT_ANSWER or state is _State.AWAIT_TLS:
                raise LocalProtocolError("answer the previous event first")
            elif state is _State.DONE:
                if self._complete is not None:
                    event_done, self._complete = self._complete, None
                    return event_done
                return NEED_DATA
            else:
                return NEED_DATA

    def _fail(self, why: str) -> None:
        self._state = _State.CLOSED
        raise RemoteProtocolError(why)

    def _start_option(self, magic: int, opt: int, length: int) -> None:
        if magic != w.IHAVEOPT:
            self._fail(f"bad option magic {magic:#x}")
        self._options_seen += 1
        if self._options_seen > MAX_OPTIONS:
            self._fail(f"too many options (more than {MAX_OPTIONS})")
        if length > w.MAX_OPTION_LENGTH:
            self._fail(f"option {opt} payload of {length} bytes is too large")
        if not self._fixed and opt != w.Opt.EXPORT_NAME:
            self._fail("a client without fixed newstyle may only send NBD_OPT_EXPORT_NAME")
        self._opt = opt
        if length > MAX_BUFFERED_OPTION:
            if opt == w.Opt.EXPORT_NAME:
                self._fail("export name too long")
            self._drain_left = length
            known = opt in w.Opt._value2member_map_
            self._drain_reply = w.Rep.ERR_TOO_BIG if known else w.Rep.ERR_UNSUP
            self._state = _State.DRAIN_OPTION
        else:
            self._opt_len = length
            self._state = _State.OPTION_PAYLOAD

    # -- replies -------------------------------------------------------------------------------

    def _reply(self, opt: int, rep: int, data: bytes = b"") -> None:
        self._out += w.OPTION_REPLY.pack(w.OPTION_REPLY_MAGIC, opt, rep, len(data))
        self._out += data

    def _handle_option(self, opt: int, payload: bytes) -> HandshakeEvent | None:
        if (
            self._tls_mode == "require"
            and not self._tls_active
            and opt not in (w.Opt.STARTTLS, w.Opt.ABORT)
        ):
            if opt == w.Opt.EXPORT_NAME:
                self._fail("TLS is required; EXPORT_NAME cannot be refused politely")
            self._reply(opt, w.Rep.ERR_TLS_REQD, b"TLS is required")
            return None
        if opt == w.Opt.EXPORT_NAME:
            name = valid_string(payload)
            if name is None:
                self._fail("invalid export name")
                return None  # unreachable; keeps mypy's flow analysis simple
            return self._await(ExportRequest(name, "export_name"))
        if opt == w.Opt.ABORT:
            self._reply(opt, w.Rep.ACK)
            self._state = _State.CLOSED
            return Aborted()
        if opt == w.Opt.LIST:
            if payload:
                self._reply(opt, w.Rep.ERR_INVALID, b"NBD_OPT_LIST takes no data")
                return None
            return self._await(ListExports())
        if opt == w.Opt.STARTTLS:
            return self._starttls(payload)
        if opt in (w.Opt.INFO, w.Opt.GO):
            return self._info_go(opt, payload)
        if opt == w.Opt.STRUCTURED_REPLY:
            if payload:
                self._reply(opt, w.Rep.ERR_INVALID, b"NBD_OPT_STRUCTURED_REPLY takes no data")
            elif not self._sr_allowed:
                self._reply(opt, w.Rep.ERR_UNSUP, b"structured replies are disabled")
            else:
                self.structured_replies = True
                self._reply(opt, w.Rep.ACK)
            return None
        if opt in (w.Opt.LIST_META_CONTEXT, w.Opt.SET_META_CONTEXT):
            self._meta_context(opt, payload)
            return None
        self._reply(opt, w.Rep.ERR_UNSUP, b"option not supported")
        return None

    def _await(self, event: ExportRequest | ListExports) -> HandshakeEvent:
        self._pending = event
        self._state = _State.AWAIT_ANSWER
        return event

    def _starttls(self, payload: bytes) -> HandshakeEvent | None:
        opt = w.Opt.STARTTLS
        if payload:
            self._reply(opt, w.Rep.ERR_INVALID, b"NBD_OPT_STARTTLS takes no data")
        elif self._tls_mode == "off":
            self._reply(opt, w.Rep.ERR_POLICY, b"TLS is not enabled on this server")
        elif self._tls_active:
            self._reply(opt, w.Rep.ERR_INVALID, b"TLS is already active")
        else:
            self._reply(opt, w.Rep.ACK)
            self._state = _State.AWAIT_TLS
            return StartTLS()
        return None

    def tls_established(self) -> None:
        if self._state is not _State.AWAIT_TLS:
            raise LocalProtocolError("no STARTTLS in progress")
        if self._buf:
            # Plain-text bytes sent after STARTTLS would be injected into the TLS session.
            self._fail("client sent data after NBD_OPT_STARTTLS before the TLS handshake")
        self._tls_active = True
        self._reset_negotiation()
        self._state = _State.OPTION_HEADER

    def _info_go(self, opt: int, payload: bytes) -> HandshakeEvent | None:
        parsed = _parse_info_go(payload)
        if parsed is None:
            self._reply(opt, w.Rep.ERR_INVALID, b"malformed NBD_OPT_INFO/GO request")
            return None
        name, requests = parsed
        kind = "go" if opt == w.Opt.GO else "info"
        return self._await(ExportRequest(name, kind, requests))

    def _meta_context(self, opt: int, payload: bytes) -> None:
        parsed = _parse_meta_request(payload)
        if opt == w.Opt.SET_META_CONTEXT:
            self._meta_export = None  # SET replaces the selection even when it fails (proto.md)
        if parsed is None:
            self._reply(opt, w.Rep.ERR_INVALID, b"malformed meta context request")
            return
        export, queries = parsed
        setting = opt == w.Opt.SET_META_CONTEXT
        if setting and not self.structured_replies:
            self._reply(opt, w.Rep.ERR_INVALID, b"structured replies must be negotiated first")
            return
        if setting:
            chosen = w.BASE_ALLOCATION in queries
            self._meta_export = export if chosen else None
        else:
            chosen = not queries or any(q in ("base:", w.BASE_ALLOCATION) for q in queries)
        if chosen:
            ctx_id = w.BASE_ALLOCATION_ID if setting else 0
            self._reply(opt, w.Rep.META_CONTEXT, w.U32.pack(ctx_id) + w.BASE_ALLOCATION.encode())
        self._reply(opt, w.Rep.ACK)

    # -- answers from the caller ---------------------------------------------------------------

    def reply_exports(self, exports: list[tuple[str, str | None]]) -> None:
        """Answer ListExports with (name, description) pairs."""
        self._expect(ListExports)
        for name, desc in exports:
            raw = name.encode()
            data = w.U32.pack(len(raw)) + raw + (desc or "").encode()
            self._reply(w.Opt.LIST, w.Rep.SERVER, data)
        self._reply(w.Opt.LIST, w.Rep.ACK)
        self._state = _State.OPTION_HEADER

    def reply_error(self, rep: int, message: str = "") -> None:
        """Refuse a pending LIST or INFO/GO (EXPORT_NAME cannot be refused: the core closes)."""
        pending = self._pending
        if pending is None:
            raise LocalProtocolError("nothing to answer")
        if not rep & (1 << 31):
            raise LocalProtocolError(f"{rep:#x} is not an error reply")
        self._pending = None
        if isinstance(pending, ExportRequest) and pending.kind == "export_name":
            self._state = _State.CLOSED
            return
        opt = w.Opt.LIST if isinstance(pending, ListExports) else _opt_of(pending)
        self._reply(opt, rep, w.encode_string(message))
        self._state = _State.OPTION_HEADER

    def reply_export(self, details: ExportDetails) -> None:
        """Answer an ExportRequest whose export opened."""
        pending = self._expect(ExportRequest)
        tflags = details.tflags | w.TFlag.HAS_FLAGS
        if self.structured_replies:
            tflags |= w.TFlag.SEND_DF
        if pending.kind == "export_name":
            self._out += w.EXPORT_NAME_REPLY.pack(details.size, tflags)
            if not self._no_zeroes:
                self._out += bytes(124)
        else:
            opt = _opt_of(pending)
            info = w.INFO_EXPORT.pack(w.Info.EXPORT, details.size, tflags)
            self._reply(opt, w.Rep.INFO, info)
            asked = pending.requested_info
            if w.Info.NAME in asked:
                self._reply(opt, w.Rep.INFO, w.U16.pack(w.Info.NAME) + details.name.encode())
            if w.Info.DESCRIPTION in asked and details.description:
                desc = w.encode_string(details.description)
                self._reply(opt, w.Rep.INFO, w.U16.pack(w.Info.DESCRIPTION) + desc)
            if w.Info.BLOCK_SIZE in asked and details.block_size:
                self._reply(
                    opt, w.Rep.INFO, w.INFO_BLOCK_SIZE.pack(w.Info.BLOCK_SIZE, *details.block_size)
                )
            self._reply(opt, w.Rep.ACK)
            if pending.kind == "info":
                self._state = _State.OPTION_HEADER
                return
        # The base:allocation context holds only for the export it was set for (nbdkit).
        base_allocation = self._meta_export is not None and self._meta_export == pending.name
        self._complete = HandshakeComplete(pending.name, self.structured_replies, base_allocation)
        self._state = _State.DONE

    def _expect(self, kind: type[_T]) -> _T:
        pending = self._pending
        if not isinstance(pending, kind):
            raise LocalProtocolError(f"no pending {kind.__name__} to answer")
        self._pending = None
        return pending


def _opt_of(request: ExportRequest) -> int:
    return w.Opt.GO if request.kind == "go" else w.Opt.INFO


def _parse_name(payload: bytes, tail: int) -> tuple[str, int] | None:
    """The export name that starts INFO/GO and meta-context payloads (u32 length, name), with at
    least ``tail`` bytes after it; returns the name and where the rest starts."""
    if len(payload) < 4 + tail:
        return None
    (name_len,) = w.U32.unpack_from(payload)
    if name_len > w.MAX_STRING or 4 + name_len + tail > len(payload):
        return None
    name = valid_string(payload[4 : 4 + name_len])
    return None if name is None else (name, 4 + name_len)


def _parse_info_go(payload: bytes) -> tuple[str, frozenset[int]] | None:
    parsed = _parse_name(payload, 2)
    if parsed is None:
        return None
    name, pos = parsed
    (count,) = w.U16.unpack_from(payload, pos)
    pos += 2
    if len(payload) != pos + 2 * count:
        return None
    requests = frozenset(w.U16.unpack_from(payload, pos + 2 * i)[0] for i in range(count))
    return name, requests


def _parse_meta_request(payload: bytes) -> tuple[str, list[str]] | None:
    parsed = _parse_name(payload, 4)
    if parsed is None:
        return None
    export, pos = parsed
    (count,) = w.U32.unpack_from(payload, pos)
    pos += 4
    if count > (len(payload) - pos) // 4:
        return None
    queries: list[str] = []
    for _ in range(count):
        if pos + 4 > len(payload):
            return None
        (qlen,) = w.U32.unpack_from(payload, pos)
        pos += 4
        if qlen > w.MAX_STRING or pos + qlen > len(payload):
            return None
        query = valid_string(payload[pos : pos + qlen])
        if query is None:
            return None
        queries.append(query)
        pos += qlen
    if pos != len(payload):
        return None
    return export, queries
