"""Property tests for the sans-I/O core: round trips against a model, and fuzzing.

Round trips: random valid option sequences and request streams, cut at random points, must give
exactly the events (and option replies) a small model of the protocol predicts; reply encoders
must decode, through the independent client codec, to what was encoded.

Fuzzing: arbitrary bytes after a valid greeting, in the handshake and then in transmission, may
only produce events, NEED_DATA or RemoteProtocolError — never another exception — and the
buffers stay bounded however much is fed.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import nbdclient as c
from hypothesis import HealthCheck, given, settings, strategies as st

from trioblock._handshake import MAX_BUFFERED_OPTION
from trioblock.protocol import (
    NEED_DATA,
    Aborted,
    Disconnect,
    ExportDetails,
    ExportRequest,
    HandshakeComplete,
    ListExports,
    RejectedRequest,
    RemoteProtocolError,
    Request,
    ServerHandshake,
    ServerTransmission,
    StartTLS,
    WriteRequest,
    block_status_reply,
    data_chunk_header,
    error_reply,
    hole_chunk,
    read_reply_header,
    simple_reply,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SIZE = 1 << 20
MAX_REQUEST = 4096  # small, so the fuzzers reach the ENOMEM drain cheaply
DISK = ExportDetails(
    size=SIZE,
    tflags=c.SEND_FLUSH | c.SEND_FUA | c.SEND_TRIM | c.SEND_WRITE_ZEROES | c.SEND_CACHE,
    name="disk",
    description="fuzz disk",
    block_size=(1, 4096, 1 << 25),
)
DEFAULT = ExportDetails(size=4096, tflags=c.READ_ONLY)
EXPORTS = {"disk": DISK, "": DEFAULT}
FLAGS = c.client_flags()
BA = "base:allocation"


def split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """``data`` cut at the given positions (taken modulo its length)."""
    points = sorted({0, len(data), *(x % (len(data) + 1) for x in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


CUTS = st.lists(st.integers(0, 1 << 30), max_size=12)
NBD_CHARS = st.characters(exclude_characters="\0", exclude_categories=["Cs"])  # encodable, no NUL
TEXT = st.text(NBD_CHARS, max_size=40)


def answer(hs: ServerHandshake, event: object) -> None:
    """The server shell's part: answer from EXPORTS; pretend TLS came up at once."""
    if isinstance(event, ListExports):
        hs.reply_exports([(d.name, d.description) for d in EXPORTS.values()])
    elif isinstance(event, ExportRequest):
        details = EXPORTS.get(event.name)
        if details is None:
            hs.reply_error(c.REP_ERR_UNKNOWN, "no such export")
        else:
            hs.reply_export(details)
    elif isinstance(event, StartTLS):
        hs.tls_established()


# -- handshake round trip against a model ------------------------------------------------------


@dataclass(frozen=True)
class Action:
    kind: str
    name: str = ""
    items: tuple[int, ...] = ()
    queries: tuple[str, ...] = ()
    opt: int = 0
    data: bytes = b""


NAMES = st.sampled_from(["", "disk", "other"])  # "other" does not exist
INFO_REQUESTS = st.lists(
    st.sampled_from([c.INFO_EXPORT, c.INFO_NAME, c.INFO_DESCRIPTION, c.INFO_BLOCK_SIZE, 0x7777]),
    unique=True,
    max_size=5,
).map(tuple)
QUERIES = st.lists(
    st.sampled_from(["base:", BA, "qemu:dirty-bitmap:sda", "x-unknown:"]), max_size=3
).map(tuple)
UNKNOWN_OPTS = st.one_of(
    st.sampled_from([0, c.OPT_PEEK_EXPORT, c.OPT_EXTENDED_HEADERS]), st.integers(12, 2**32 - 1)
)

ACTIONS = st.one_of(
    st.builds(Action, kind=st.just("list")),
    st.builds(Action, kind=st.just("info"), name=NAMES, items=INFO_REQUESTS),
    st.builds(Action, kind=st.just("sr")),
    st.builds(Action, kind=st.just("starttls")),
    st.builds(Action, kind=st.just("list_meta"), name=NAMES, queries=QUERIES),
    st.builds(Action, kind=st.just("set_meta"), name=NAMES, queries=QUERIES),
    st.builds(Action, kind=st.just("unknown"), opt=UNKNOWN_OPTS, data=st.binary(max_size=32)),
)
FINALS = st.one_of(
    st.builds(Action, kind=st.just("go"), name=st.sampled_from(["", "disk"]), items=INFO_REQUESTS),
    st.builds(Action, kind=st.just("export_name"), name=st.sampled_from(["", "disk"])),
    st.builds(Action, kind=st.just("abort")),
)


def known_infos(details: ExportDetails, asked: tuple[int, ...]) -> int:
    """How many INFO replies besides INFO_EXPORT the server owes for ``asked``."""
    known = {c.INFO_NAME}
    if details.description:
        known.add(c.INFO_DESCRIPTION)
    if details.block_size:
        known.add(c.INFO_BLOCK_SIZE)
    return len(known & set(asked))


@dataclass
class Model:
    """What a correct server does (tls off, structured replies allowed)."""

    sr: bool = False
    meta: str | None = None
    events: list[object] = field(default_factory=list)
    replies: list[tuple[int, int]] = field(default_factory=list)

    def info_go(self, opt: int, kind: str, action: Action) -> bytes:
        self.events.append(ExportRequest(action.name, kind, frozenset(action.items)))
        details = EXPORTS.get(action.name)
        if details is None:
            self.replies.append((opt, c.REP_ERR_UNKNOWN))
        else:
            infos = 1 + known_infos(details, action.items)
            self.replies += [(opt, c.REP_INFO)] * infos + [(opt, c.REP_ACK)]
        return c.option(opt, c.info_go_payload(action.name, action.items))

    def step(self, a: Action) -> bytes:
        """Record the expected outcome of ``a``; return what the client sends."""
        if a.kind == "list":
            self.events.append(ListExports())
            self.replies += [(c.OPT_LIST, c.REP_SERVER)] * len(EXPORTS) + [(c.OPT_LIST, c.REP_ACK)]
            return c.option(c.OPT_LIST)
        if a.kind == "info":
            return self.info_go(c.OPT_INFO, "info", a)
        if a.kind == "sr":
            self.sr = True
            self.replies.append((c.OPT_STRUCTURED_REPLY, c.REP_ACK))
            return c.option(c.OPT_STRUCTURED_REPLY)
        if a.kind == "starttls":
            self.replies.append((c.OPT_STARTTLS, c.REP_ERR_POLICY))
            return c.option(c.OPT_STARTTLS)
        if a.kind == "list_meta":
            opt = c.OPT_LIST_META_CONTEXT
            if not a.queries or {"base:", BA} & set(a.queries):
                self.replies.append((opt, c.REP_META_CONTEXT))
            self.replies.append((opt, c.REP_ACK))
            return c.list_meta(a.name, a.queries)
        if a.kind == "set_meta":
            opt = c.OPT_SET_META_CONTEXT
            self.meta = None
            if not self.sr:
                self.replies.append((opt, c.REP_ERR_INVALID))
            else:
                if BA in a.queries:
                    self.meta = a.name
                    self.replies.append((opt, c.REP_META_CONTEXT))
                self.replies.append((opt, c.REP_ACK))
            return c.set_meta(a.name, a.queries)
        if a.kind == "unknown":
            self.replies.append((a.opt, c.REP_ERR_UNSUP))
            return c.option(a.opt, a.data)
        if a.kind == "go":
            message = self.info_go(c.OPT_GO, "go", a)
            self.events.append(HandshakeComplete(a.name, self.sr, self.meta == a.name))
            return message
        if a.kind == "export_name":
            self.events.append(ExportRequest(a.name, "export_name"))
            self.events.append(HandshakeComplete(a.name, self.sr, self.meta == a.name))
            return c.export_name(a.name)
        assert a.kind == "abort"
        self.events.append(Aborted())
        self.replies.append((c.OPT_ABORT, c.REP_ACK))
        return c.option(c.OPT_ABORT)


@FAST
@given(
    actions=st.lists(ACTIONS, max_size=20),
    final=FINALS,
    no_zeroes=st.booleans(),
    first_requests=st.binary(max_size=64),
    cuts=CUTS,
)
def test_valid_option_sequences_give_exactly_the_modelled_events_and_replies(
    actions: list[Action],
    final: Action,
    no_zeroes: bool,
    first_requests: bytes,
    cuts: list[int],
) -> None:
    model = Model()
    stream = c.client_flags(no_zeroes=no_zeroes)
    stream += b"".join(model.step(a) for a in [*actions, final])
    stream += first_requests  # whatever the client pipelines after its last option

    hs = ServerHandshake()
    greeting = hs.data_to_send()
    events: list[object] = []
    for chunk in split(stream, cuts):
        hs.receive_data(chunk)
        while (event := hs.next_event()) is not NEED_DATA:
            events.append(event)
            answer(hs, event)
    assert c.parse_greeting(greeting) == c.FLAG_FIXED_NEWSTYLE | c.FLAG_NO_ZEROES
    assert events == model.events

    out = hs.data_to_send()
    if final.kind == "export_name":
        tail = 10 if no_zeroes else 134
        details = EXPORTS[final.name]
        reply = c.parse_export_name_reply(out[-tail:], no_zeroes=no_zeroes)
        assert reply.size == details.size
        out = out[:-tail]
    assert [(r.opt, r.type) for r in c.parse_option_replies(out)] == model.replies
    if final.kind == "abort":
        assert hs.closed
    else:
        assert hs.trailing_data() == first_requests


@FAST
@given(exports=st.lists(st.tuples(TEXT, st.none() | TEXT), max_size=5))
def test_list_replies_round_trip_names_and_descriptions(
    exports: list[tuple[str, str | None]],
) -> None:
    hs = ServerHandshake()
    hs.data_to_send()
    hs.receive_data(FLAGS + c.option(c.OPT_LIST))
    assert hs.next_event() == ListExports()
    hs.reply_exports(exports)
    *servers, ack = c.parse_option_replies(hs.data_to_send())
    assert ack.type == c.REP_ACK
    assert [c.parse_server(r.data) for r in servers] == [(n, d or "") for n, d in exports]


@FAST
@given(
    name=TEXT,
    description=TEXT,
    size=st.integers(0, 2**64 - 1),
    tflags=st.integers(0, 0xFFFF),
    block_size=st.tuples(
        st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)
    ),
)
def test_go_info_replies_round_trip_what_the_server_knows(
    name: str, description: str, size: int, tflags: int, block_size: tuple[int, int, int]
) -> None:
    hs = ServerHandshake()
    hs.data_to_send()
    asked = [c.INFO_NAME, c.INFO_DESCRIPTION, c.INFO_BLOCK_SIZE]
    hs.receive_data(FLAGS + c.go(name, asked))
    assert hs.next_event() == ExportRequest(name, "go", frozenset(asked))
    hs.reply_export(ExportDetails(size, tflags, name, description, block_size))
    *infos, ack = c.parse_option_replies(hs.data_to_send())
    assert ack.type == c.REP_ACK
    got = dict(c.parse_info(r.data) for r in infos)
    assert got[c.INFO_EXPORT] == c.ExportInfo(size, tflags | c.HAS_FLAGS)
    assert got[c.INFO_NAME] == name
    assert got.get(c.INFO_DESCRIPTION) == (description or None)
    assert got[c.INFO_BLOCK_SIZE] == block_size


# -- transmission round trip against a model ---------------------------------------------------

ALLOWED = c.FLAGS_ALLOWED
ALL_TFLAGS = c.ALL_TFLAGS
COOKIES = st.integers(0, 2**64 - 1)
Expected = tuple[bytes, object]  # what the client sends, the event it must give


@st.composite
def valid_requests(draw: st.DrawFn) -> Expected:
    cmd = draw(st.sampled_from(sorted(ALLOWED)))
    cookie = draw(COOKIES)
    allowed = ALLOWED[cmd]
    flags = draw(st.integers(0, 0x1F)) & allowed
    if cmd == c.CMD_FLUSH:
        offset = length = 0
    else:
        offset = draw(st.integers(0, SIZE - 1))
        cap = MAX_REQUEST if cmd in (c.CMD_READ, c.CMD_WRITE) else SIZE
        length = draw(st.integers(1, min(SIZE - offset, cap)))
    if cmd == c.CMD_WRITE:
        payload = draw(st.binary(min_size=length, max_size=length))
        event: object = WriteRequest(cookie, flags, offset, payload)
        return c.request(cmd, cookie=cookie, flags=flags, offset=offset, payload=payload), event
    event = Request(cookie, cmd, flags, offset, length)
    return c.request(cmd, cookie=cookie, flags=flags, offset=offset, length=length), event


@st.composite
def refused_requests(draw: st.DrawFn) -> Expected:
    """Requests the core must refuse, and the (cookie, command, errno) it must refuse with."""
    cookie = draw(COOKIES)
    kind = draw(st.sampled_from(["past-end", "zero-length", "unknown-command", "too-big"]))
    if kind == "unknown-command":
        cmd = draw(st.integers(8, 0xFFFF))
        message = c.request(cmd, cookie=cookie, length=draw(st.integers(0, 2**32 - 1)))
        return message, (cookie, cmd, c.EINVAL)
    cmd = draw(st.sampled_from([c.CMD_READ, c.CMD_WRITE, c.CMD_TRIM, c.CMD_WRITE_ZEROES]))
    if kind == "past-end":
        offset = draw(st.integers(SIZE - 8, 2**64 - 1))
        length = draw(st.integers(max(1, SIZE - offset + 1), 64)) if offset < SIZE else 8
        error = c.ENOSPC if cmd in (c.CMD_WRITE, c.CMD_WRITE_ZEROES) else c.EINVAL
    elif kind == "zero-length":
        offset, length, error = draw(st.integers(0, SIZE)), 0, c.EINVAL
    else:
        cmd = draw(st.sampled_from([c.CMD_READ, c.CMD_WRITE]))
        offset, length, error = 0, MAX_REQUEST + draw(st.integers(1, 64)), c.ENOMEM
    payload = bytes(length) if cmd == c.CMD_WRITE else b""
    message = c.request(cmd, cookie=cookie, offset=offset, length=length, payload=payload)
    return message, (cookie, cmd, error)


def normalise(event: object) -> object:
    if isinstance(event, RejectedRequest):
        assert event.reason
        return (event.cookie, event.command, event.error)
    return event


def make_transmission(*, sr: bool = True, ba: bool = True) -> ServerTransmission:
    return ServerTransmission(
        size=SIZE, tflags=ALL_TFLAGS, structured_replies=sr, base_allocation=ba, max_request=4096
    )


@FAST
@given(
    requests=st.lists(
        st.one_of(valid_requests(), valid_requests(), refused_requests()), max_size=12
    ),
    disconnect=st.booleans(),
    cuts=CUTS,
)
def test_request_streams_give_exactly_the_expected_events(
    requests: list[Expected], disconnect: bool, cuts: list[int]
) -> None:
    stream = b"".join(message for message, _ in requests)
    expected = [event for _, event in requests]
    if disconnect:
        stream += c.request(c.CMD_DISC, cookie=1)
        expected.append(Disconnect())
    tx = make_transmission()
    events: list[object] = []
    for chunk in split(stream, cuts):
        tx.receive_data(chunk)
        while (event := tx.next_event()) is not NEED_DATA:
            events.append(normalise(event))
    assert events == expected
    assert tx.buffered == 0


# -- reply encoders round trip -----------------------------------------------------------------


@FAST
@given(cookie=COOKIES, error=st.integers(0, 2**32 - 1))
def test_simple_reply_round_trips(cookie: int, error: int) -> None:
    assert c.parse_simple_reply(simple_reply(cookie, error)) == (c.SimpleReply(error, cookie), b"")


@FAST
@given(
    cookie=COOKIES,
    offset=st.integers(0, 2**64 - 1),
    data=st.binary(min_size=1, max_size=64),
    structured=st.booleans(),
)
def test_read_reply_round_trips(cookie: int, offset: int, data: bytes, structured: bool) -> None:
    wire = read_reply_header(cookie, offset, len(data), structured) + data
    if structured:
        (chunk,) = c.parse_chunks(wire)
        assert (chunk.cookie, chunk.done) == (cookie, True)
        assert c.decode_offset_data(chunk) == (offset, data)
    else:
        assert c.parse_simple_reply(wire) == (c.SimpleReply(0, cookie), data)


@FAST
@given(
    cookie=COOKIES,
    offset=st.integers(0, 2**64 - 1),
    size=st.integers(1, 2**32 - 1),
    data=st.binary(min_size=1, max_size=64),
    done=st.booleans(),
)
def test_data_and_hole_chunks_round_trip(
    cookie: int, offset: int, size: int, data: bytes, done: bool
) -> None:
    wire = (
        data_chunk_header(cookie, offset, len(data), done)
        + data
        + hole_chunk(cookie, offset, size, done)
    )
    data_chunk, hole = c.parse_chunks(wire)
    assert (data_chunk.cookie, data_chunk.done, hole.cookie, hole.done) == (
        cookie,
        done,
        cookie,
        done,
    )
    assert c.decode_offset_data(data_chunk) == (offset, data)
    assert c.decode_hole(hole) == (offset, size)


@FAST
@given(
    cookie=COOKIES,
    error=st.integers(1, 2**32 - 1),
    message=st.text(NBD_CHARS, max_size=3000),
    offset=st.none() | st.integers(0, 2**64 - 1),
)
def test_error_chunks_round_trip_with_the_message_cut_to_a_valid_string(
    cookie: int, error: int, message: str, offset: int | None
) -> None:
    wire = error_reply(cookie, c.CMD_READ, error, structured=True, message=message, offset=offset)
    (chunk,) = c.parse_chunks(wire)
    assert (chunk.cookie, chunk.done) == (cookie, True)
    decoded = c.decode_error(chunk)  # refuses invalid UTF-8 and over-long messages
    assert (decoded.error, decoded.offset) == (error, offset)
    if len(message.encode()) <= 4096:
        assert decoded.message == message
    else:  # the longest prefix that fits: at most 3 bytes short of the limit
        assert message.startswith(decoded.message)
        assert 4096 - 3 <= len(decoded.message.encode()) <= 4096


@FAST
@given(
    cookie=COOKIES,
    context=st.integers(0, 2**32 - 1),
    extents=st.lists(
        st.tuples(st.integers(1, 2**32 - 1), st.integers(0, 2**32 - 1)), min_size=1, max_size=20
    ),
)
def test_block_status_reply_round_trips(
    cookie: int, context: int, extents: list[tuple[int, int]]
) -> None:
    (chunk,) = c.parse_chunks(block_status_reply(cookie, context, extents))
    assert (chunk.cookie, chunk.done) == (cookie, True)
    assert c.decode_block_status(chunk) == (context, extents)


# -- fuzzing: both phases ----------------------------------------------------------------------

HANDSHAKE_EVENTS = (ListExports, ExportRequest, StartTLS, Aborted, HandshakeComplete)
OPTION_HEADER_SIZE = 16
REQUEST_SIZE = 28
ANY_OPT = st.one_of(st.integers(0, 12), st.integers(0, 12), st.integers(0, 2**32 - 1))
ANY_PAYLOAD = st.one_of(
    st.binary(max_size=40),
    st.builds(c.info_go_payload, NAMES, st.lists(st.integers(0, 5), max_size=4)),
    st.builds(c.meta_payload, NAMES, QUERIES),
)
OPTION_FRAMES = st.one_of(
    st.builds(c.option, ANY_OPT, ANY_PAYLOAD),
    st.builds(c.option, ANY_OPT, ANY_PAYLOAD),
    st.builds(
        lambda o, d, n: c.option(o, d, length=n), ANY_OPT, ANY_PAYLOAD, st.integers(0, 2**32 - 1)
    ),
    # Big declared lengths followed by lots of filler: must be drained, never stored.
    st.builds(
        lambda o, n, fill: c.option(o, length=n) + bytes(fill),
        ANY_OPT,
        st.integers(MAX_BUFFERED_OPTION - 8, 2**32 - 1),
        st.integers(0, 150_000),
    ),
    st.binary(max_size=16),
)
VALID_FRAMES = valid_requests().map(lambda pair: pair[0])
REQUEST_FRAMES = st.one_of(
    VALID_FRAMES,
    VALID_FRAMES,
    VALID_FRAMES,
    VALID_FRAMES,
    refused_requests().map(lambda pair: pair[0]),
    st.builds(
        lambda magic, flags, cmd, cookie, offset, length, payload: c.request(
            cmd,
            cookie=cookie,
            flags=flags,
            offset=offset,
            length=length,
            payload=payload,
            magic=magic,
        ),
        st.one_of(st.just(c.REQUEST_MAGIC), st.just(c.REQUEST_MAGIC), st.integers(0, 2**32 - 1)),
        st.integers(0, 0xFFFF),
        st.one_of(st.integers(0, 9), st.integers(0, 0xFFFF)),
        COOKIES,
        st.one_of(st.integers(0, SIZE), st.integers(0, 2**64 - 1)),
        st.one_of(st.integers(0, 2 * MAX_REQUEST), st.integers(0, 2**32 - 1)),
        st.binary(max_size=64),
    ),
    # Big refused WRITEs followed by lots of filler: drained as it arrives.
    st.builds(
        lambda n, fill: c.request(c.CMD_WRITE, length=n) + bytes(fill),
        st.integers(MAX_REQUEST + 1, 2**32 - 1),
        st.integers(0, 150_000),
    ),
    st.binary(max_size=32),
)


def check_handshake_event(event: object) -> None:
    assert isinstance(event, HANDSHAKE_EVENTS)
    if isinstance(event, ExportRequest):
        assert event.kind in ("info", "go", "export_name")
        assert "\0" not in event.name
        assert len(event.name.encode()) <= 4096


def check_transmission_event(tx: ServerTransmission, event: object) -> None:
    """The core lets through only requests a plugin may be given."""
    if isinstance(event, Request):
        assert event.command in ALLOWED
        assert event.command != c.CMD_WRITE
        assert not event.flags & ~ALLOWED[event.command]
        if event.command == c.CMD_FLUSH:
            assert event.offset == event.length == 0
        else:
            assert 0 < event.length <= SIZE - event.offset
        if event.command == c.CMD_READ:
            assert event.length <= MAX_REQUEST
        if event.command == c.CMD_BLOCK_STATUS:
            assert tx.structured_replies
            assert tx.base_allocation
        if event.flags & c.FLAG_DF:
            assert tx.structured_replies
    elif isinstance(event, WriteRequest):
        assert 0 < len(event.data) <= MAX_REQUEST
        assert event.offset + len(event.data) <= SIZE
        assert not event.flags & ~c.FLAG_FUA
    elif isinstance(event, RejectedRequest):
        assert event.error in (c.EINVAL, c.ENOSPC, c.EPERM, c.ENOMEM)
    else:
        assert isinstance(event, Disconnect)


def pump_transmission(tx: ServerTransmission) -> bool:
    """Drain events; True after NBD_CMD_DISC (the shell stops reading then)."""
    while (event := tx.next_event()) is not NEED_DATA:
        check_transmission_event(tx, event)
        if isinstance(event, Disconnect):
            return True
    # Between events, at most a partial header or a pending WRITE's partial payload is held.
    assert tx.buffered < max(REQUEST_SIZE, MAX_REQUEST)
    return False


def run_session(chunks: list[bytes], *, tls: str) -> None:
    """A whole connection: handshake, then (after GO/EXPORT_NAME) transmission."""
    hs = ServerHandshake(tls=tls)
    hs.data_to_send()
    tx: ServerTransmission | None = None
    try:
        for chunk in chunks:
            if tx is not None:
                tx.receive_data(chunk)
                if pump_transmission(tx):
                    return
                continue
            hs.receive_data(chunk)
            while (event := hs.next_event()) is not NEED_DATA:
                check_handshake_event(event)
                answer(hs, event)
                if isinstance(event, HandshakeComplete):
                    details = EXPORTS[event.export_name]
                    tx = ServerTransmission(
                        size=details.size,
                        tflags=details.tflags | c.HAS_FLAGS,
                        structured_replies=event.structured_replies,
                        base_allocation=event.base_allocation,
                        max_request=MAX_REQUEST,
                    )
                    first = hs.trailing_data()
                    if first:
                        tx.receive_data(first)
                    if pump_transmission(tx):
                        return
                    break
            if hs.closed:
                return  # ABORT, or an EXPORT_NAME the server refused
            if tx is None:
                assert len(hs._buf) < MAX_BUFFERED_OPTION + OPTION_HEADER_SIZE
            hs.data_to_send()
        (tx or hs).receive_data(b"")  # EOF: fine after DISC only, else a RemoteProtocolError
    except RemoteProtocolError:
        assert tx is not None or hs.closed


@FAST
@given(junk=st.binary(max_size=400), cuts=CUTS, tls=st.sampled_from(["off", "on", "require"]))
def test_random_bytes_after_the_client_flags_only_give_events_or_remote_errors(
    junk: bytes, cuts: list[int], tls: str
) -> None:
    run_session(split(FLAGS + junk, cuts), tls=tls)


@FAST
@given(junk=st.binary(max_size=400), cuts=CUTS)
def test_random_bytes_from_the_first_byte_only_give_events_or_remote_errors(
    junk: bytes, cuts: list[int]
) -> None:
    run_session(split(junk, cuts), tls="on")


@FAST
@given(
    options=st.lists(OPTION_FRAMES, max_size=8),
    final=st.sampled_from([c.go("disk"), c.export_name("disk"), c.option(c.OPT_ABORT), b""]),
    cuts=CUTS,
    tls=st.sampled_from(["off", "on", "require"]),
)
def test_fuzzed_options_only_give_events_or_remote_errors(
    options: list[bytes], final: bytes, cuts: list[int], tls: str
) -> None:
    run_session(split(FLAGS + b"".join(options) + final, cuts), tls=tls)


@FAST
@given(
    actions=st.lists(ACTIONS, max_size=6),
    final=st.sampled_from([Action("go", "disk"), Action("export_name", "disk")]),
    requests=st.lists(REQUEST_FRAMES, max_size=10),
    junk=st.binary(max_size=64),
    cuts=CUTS,
)
def test_fuzzed_requests_after_a_valid_handshake_only_give_events_or_remote_errors(
    actions: list[Action], final: Action, requests: list[bytes], junk: bytes, cuts: list[int]
) -> None:
    model = Model()
    stream = FLAGS + b"".join(model.step(a) for a in [*actions, final])
    run_session(split(stream + b"".join(requests) + junk, cuts), tls="off")


@FAST
@given(
    junk=st.binary(max_size=400),
    requests=st.lists(REQUEST_FRAMES, max_size=10),
    cuts=CUTS,
    sr=st.booleans(),
    ba=st.booleans(),
)
def test_fuzzed_request_streams_only_give_events_or_remote_errors(
    junk: bytes, requests: list[bytes], cuts: list[int], sr: bool, ba: bool
) -> None:
    tx = make_transmission(sr=sr, ba=ba and sr)
    try:
        for chunk in split(b"".join(requests) + junk, cuts):
            tx.receive_data(chunk)
            if pump_transmission(tx):
                return
        tx.receive_data(b"")
    except RemoteProtocolError:
        tx.receive_data(FLAGS)
        assert tx.next_event() is NEED_DATA  # a refused stream stays refused
