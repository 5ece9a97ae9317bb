"""The sans-I/O transmission core: request parsing and nbdkit-style validation, reply encoders.

Requests are fed whole, byte by byte, and with each buffer carrying the start of the next request
(``feeding`` fixture); replies are decoded by the independent client codec in ``nbdclient``.
"""

from __future__ import annotations

import nbdclient as c
import pytest
from nbdclient import converse

from trioblock.protocol import (
    NEED_DATA,
    Disconnect,
    RejectedRequest,
    RemoteProtocolError,
    Request,
    ServerTransmission,
    WriteRequest,
    block_status_reply,
    data_chunk_header,
    error_reply,
    hole_chunk,
    read_reply_header,
    simple_reply,
)

SIZE = 1 << 20
MiB = 1 << 20
ALL_TFLAGS = c.ALL_TFLAGS
RANGED = (c.CMD_READ, c.CMD_WRITE, c.CMD_TRIM, c.CMD_CACHE, c.CMD_WRITE_ZEROES, c.CMD_BLOCK_STATUS)
FOLLOW = c.request(c.CMD_READ, cookie=99, offset=0, length=1)
FOLLOW_EVENT = Request(99, c.CMD_READ, 0, 0, 1)


@pytest.fixture(params=c.FEEDINGS)
def feeding(request: pytest.FixtureRequest) -> str:
    how: str = request.param
    return how


def make(
    *,
    tflags: int = ALL_TFLAGS,
    sr: bool = True,
    ba: bool = True,
    size: int = SIZE,
    max_request: int = 64 * MiB,
) -> ServerTransmission:
    return ServerTransmission(
        size=size,
        tflags=tflags,
        structured_replies=sr,
        base_allocation=ba,
        max_request=max_request,
    )


def run(tx: ServerTransmission, feeding: str, *messages: bytes) -> list[object]:
    """Feed ``messages``; in the trailing feeding also half a request, which must stay queued."""
    events = converse(tx, messages, feeding, trailer=c.PARTIAL_REQUEST)
    assert tx.buffered == (len(c.PARTIAL_REQUEST) if feeding == "trailing" else 0)
    return events


def drain(tx: ServerTransmission) -> list[object]:
    events: list[object] = []
    while (event := tx.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def req(
    cmd: int, *, flags: int = 0, offset: int = 0, length: int | None = None, cookie: int = 1
) -> bytes:
    """A request with sensible defaults; a WRITE carries its payload."""
    if length is None:
        length = 0 if cmd == c.CMD_FLUSH else 512
    payload = bytes(length) if cmd == c.CMD_WRITE else b""
    return c.request(cmd, cookie=cookie, flags=flags, offset=offset, length=length, payload=payload)


def refusals(events: list[object]) -> list[object]:
    """(cookie, command, errno) for each RejectedRequest, other events as they are."""
    out: list[object] = []
    for e in events:
        out.append((e.cookie, e.command, e.error) if isinstance(e, RejectedRequest) else e)
    return out


def assert_refused(events: list[object], cmd: int, error: int, cookie: int = 1) -> None:
    """One refusal, then FOLLOW parsed normally: any WRITE payload was drained, not parsed."""
    assert len(events) == 2
    refused, follow = events
    assert isinstance(refused, RejectedRequest)
    assert (refused.cookie, refused.command, refused.error) == (cookie, cmd, error)
    assert refused.reason
    assert follow == FOLLOW_EVENT


# -- valid requests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmd", "offset", "length"),
    [
        (c.CMD_READ, 0, 512),
        (c.CMD_READ, SIZE - 1, 1),
        (c.CMD_FLUSH, 0, 0),
        (c.CMD_TRIM, 4096, 8192),
        (c.CMD_CACHE, 0, SIZE),
        (c.CMD_WRITE_ZEROES, SIZE - 4096, 4096),
        (c.CMD_BLOCK_STATUS, 0, SIZE),
    ],
    ids=["read", "read-last-byte", "flush", "trim", "cache", "write-zeroes", "block-status"],
)
def test_valid_request_becomes_a_request_event(
    feeding: str, cmd: int, offset: int, length: int
) -> None:
    cookie = 0xDEADBEEFCAFEF00D
    events = run(make(), feeding, req(cmd, cookie=cookie, offset=offset, length=length))
    assert events == [Request(cookie, cmd, 0, offset, length)]


def test_write_becomes_a_write_request_with_its_payload(feeding: str) -> None:
    payload = bytes(range(256)) * 4
    events = run(make(), feeding, c.request(c.CMD_WRITE, cookie=7, offset=512, payload=payload))
    assert events == [WriteRequest(7, 0, 512, payload)]


def test_pipelined_requests_come_out_in_order(feeding: str) -> None:
    tx = make()
    events = run(
        tx,
        feeding,
        req(c.CMD_READ, cookie=1),
        c.request(c.CMD_WRITE, cookie=2, offset=4096, payload=b"hello"),
        req(c.CMD_FLUSH, cookie=3),
        req(c.CMD_READ, cookie=4, offset=SIZE),  # out of range: refused in its place
        req(c.CMD_TRIM, cookie=5, length=4096),
    )
    assert refusals(events) == [
        Request(1, c.CMD_READ, 0, 0, 512),
        WriteRequest(2, 0, 4096, b"hello"),
        Request(3, c.CMD_FLUSH, 0, 0, 0),
        (4, c.CMD_READ, c.EINVAL),
        Request(5, c.CMD_TRIM, 0, 0, 4096),
    ]


def test_disconnect_ends_the_stream_and_eof_after_it_is_clean(feeding: str) -> None:
    tx = make()
    assert run(tx, feeding, req(c.CMD_DISC)) == [Disconnect()]
    tx.receive_data(FOLLOW)  # nothing is parsed after NBD_CMD_DISC
    assert tx.next_event() is NEED_DATA
    tx.receive_data(b"")
    assert tx.next_event() is NEED_DATA


# -- command flags -----------------------------------------------------------------------------

FITTING = [
    (c.CMD_READ, c.FLAG_DF),
    (c.CMD_WRITE, c.FLAG_FUA),
    (c.CMD_TRIM, c.FLAG_FUA),
    (c.CMD_WRITE_ZEROES, c.FLAG_FUA),
    (c.CMD_WRITE_ZEROES, c.FLAG_NO_HOLE),
    (c.CMD_WRITE_ZEROES, c.FLAG_FAST_ZERO),
    (c.CMD_WRITE_ZEROES, c.FLAG_FUA | c.FLAG_NO_HOLE | c.FLAG_FAST_ZERO),
    (c.CMD_BLOCK_STATUS, c.FLAG_REQ_ONE),
]


@pytest.mark.parametrize(
    ("cmd", "flags"),
    FITTING,
    ids=[
        "read-df",
        "write-fua",
        "trim-fua",
        "zero-fua",
        "zero-no-hole",
        "zero-fast",
        "zero-all",
        "status-req-one",
    ],
)
def test_flags_are_accepted_where_they_fit_and_were_advertised(
    feeding: str, cmd: int, flags: int
) -> None:
    events = run(make(), feeding, req(cmd, flags=flags, cookie=3, offset=1024))
    expected = (
        WriteRequest(3, flags, 1024, bytes(512))
        if cmd == c.CMD_WRITE
        else Request(3, cmd, flags, 1024, 512)
    )
    assert events == [expected]


ALLOWED = c.FLAGS_ALLOWED
ALL_FLAGS = (c.FLAG_FUA, c.FLAG_NO_HOLE, c.FLAG_DF, c.FLAG_REQ_ONE, c.FLAG_FAST_ZERO)
MISFITS = [(cmd, f) for cmd, ok in ALLOWED.items() for f in ALL_FLAGS if not f & ok]


@pytest.mark.parametrize(("cmd", "flag"), MISFITS, ids=[f"cmd{c}-flag{f}" for c, f in MISFITS])
def test_flags_that_do_not_fit_the_command_are_einval(feeding: str, cmd: int, flag: int) -> None:
    assert_refused(run(make(), feeding, req(cmd, flags=flag), FOLLOW), cmd, c.EINVAL)


@pytest.mark.parametrize("flag", [1 << 5, 1 << 8, 1 << 15], ids=["bit5", "bit8", "bit15"])
@pytest.mark.parametrize("cmd", [c.CMD_READ, c.CMD_WRITE], ids=["read", "write"])
def test_unknown_flag_bits_are_einval(feeding: str, cmd: int, flag: int) -> None:
    assert_refused(run(make(), feeding, req(cmd, flags=flag), FOLLOW), cmd, c.EINVAL)


NOT_ADVERTISED = {
    "df-without-sr": (c.CMD_READ, c.FLAG_DF, ALL_TFLAGS, False, False),
    "write-fua": (c.CMD_WRITE, c.FLAG_FUA, ALL_TFLAGS & ~c.SEND_FUA, True, True),
    "trim-fua": (c.CMD_TRIM, c.FLAG_FUA, ALL_TFLAGS & ~c.SEND_FUA, True, True),
    "zero-fua": (c.CMD_WRITE_ZEROES, c.FLAG_FUA, ALL_TFLAGS & ~c.SEND_FUA, True, True),
    "fast-zero": (c.CMD_WRITE_ZEROES, c.FLAG_FAST_ZERO, ALL_TFLAGS & ~c.SEND_FAST_ZERO, True, True),
    "flush": (c.CMD_FLUSH, 0, ALL_TFLAGS & ~c.SEND_FLUSH, True, True),
    "trim": (c.CMD_TRIM, 0, ALL_TFLAGS & ~c.SEND_TRIM, True, True),
    "cache": (c.CMD_CACHE, 0, ALL_TFLAGS & ~c.SEND_CACHE, True, True),
    "write-zeroes": (c.CMD_WRITE_ZEROES, 0, ALL_TFLAGS & ~c.SEND_WRITE_ZEROES, True, True),
    "status-without-sr": (c.CMD_BLOCK_STATUS, 0, ALL_TFLAGS, False, False),
    "status-without-context": (c.CMD_BLOCK_STATUS, 0, ALL_TFLAGS, True, False),
}


@pytest.mark.parametrize(
    ("cmd", "flags", "tflags", "sr", "ba"),
    list(NOT_ADVERTISED.values()),
    ids=list(NOT_ADVERTISED),
)
def test_commands_and_flags_that_were_not_negotiated_are_einval(
    feeding: str, cmd: int, flags: int, tflags: int, sr: bool, ba: bool
) -> None:
    tx = make(tflags=tflags, sr=sr, ba=ba)
    assert_refused(run(tx, feeding, req(cmd, flags=flags), FOLLOW), cmd, c.EINVAL)


# -- ranges and limits -------------------------------------------------------------------------


@pytest.mark.parametrize("cmd", RANGED)
def test_zero_length_request_is_einval(feeding: str, cmd: int) -> None:
    assert_refused(run(make(), feeding, req(cmd, length=0), FOLLOW), cmd, c.EINVAL)


@pytest.mark.parametrize(
    ("offset", "length"),
    [(SIZE, 1), (SIZE - 1, 2), (SIZE + 4096, 512), (2**64 - 1, 2)],
    ids=["at-end", "straddling-end", "past-end", "offset-would-wrap"],
)
@pytest.mark.parametrize(
    ("cmd", "error"),
    [
        (c.CMD_READ, c.EINVAL),
        (c.CMD_TRIM, c.EINVAL),
        (c.CMD_CACHE, c.EINVAL),
        (c.CMD_BLOCK_STATUS, c.EINVAL),
        (c.CMD_WRITE, c.ENOSPC),
        (c.CMD_WRITE_ZEROES, c.ENOSPC),
    ],
    ids=["read", "trim", "cache", "block-status", "write", "write-zeroes"],
)
def test_out_of_range_request_is_einval_but_enospc_for_writes(
    feeding: str, cmd: int, error: int, offset: int, length: int
) -> None:
    events = run(make(), feeding, req(cmd, offset=offset, length=length), FOLLOW)
    assert_refused(events, cmd, error)


@pytest.mark.parametrize(("offset", "length"), [(1, 0), (0, 1)], ids=["offset", "length"])
def test_flush_with_an_offset_or_length_is_einval(feeding: str, offset: int, length: int) -> None:
    events = run(make(), feeding, req(c.CMD_FLUSH, offset=offset, length=length), FOLLOW)
    assert_refused(events, c.CMD_FLUSH, c.EINVAL)


@pytest.mark.parametrize("cmd", [c.CMD_WRITE, c.CMD_TRIM, c.CMD_WRITE_ZEROES])
def test_writing_commands_on_a_read_only_export_are_eperm(feeding: str, cmd: int) -> None:
    tx = make(tflags=ALL_TFLAGS | c.READ_ONLY)
    assert_refused(run(tx, feeding, req(cmd), FOLLOW), cmd, c.EPERM)


@pytest.mark.parametrize("cmd", [c.CMD_READ, c.CMD_FLUSH, c.CMD_CACHE, c.CMD_BLOCK_STATUS])
def test_commands_that_do_not_write_work_on_a_read_only_export(feeding: str, cmd: int) -> None:
    tx = make(tflags=ALL_TFLAGS | c.READ_ONLY)
    (event,) = run(tx, feeding, req(cmd))
    assert isinstance(event, Request)
    assert event.command == cmd


def test_read_of_exactly_64_mib_is_accepted_and_one_byte_more_is_enomem(feeding: str) -> None:
    tx = make(size=1 << 30)
    events = run(
        tx,
        feeding,
        req(c.CMD_READ, length=64 * MiB, cookie=1),
        req(c.CMD_READ, length=64 * MiB + 1, cookie=2),
    )
    assert refusals(events) == [Request(1, c.CMD_READ, 0, 0, 64 * MiB), (2, c.CMD_READ, c.ENOMEM)]


@pytest.mark.parametrize("cmd", [c.CMD_TRIM, c.CMD_WRITE_ZEROES, c.CMD_CACHE])
def test_trim_zero_and_cache_are_not_capped_by_the_request_limit(cmd: int) -> None:
    tx = make(size=1 << 32)
    tx.receive_data(req(cmd, length=(1 << 32) - 1))
    assert drain(tx) == [Request(1, cmd, 0, 0, (1 << 32) - 1)]


def test_write_over_64_mib_is_enomem_and_drained_in_bounded_memory() -> None:
    tx = make(size=1 << 30)
    length = 64 * MiB + 1
    tx.receive_data(c.request(c.CMD_WRITE, cookie=5, length=length))
    assert tx.next_event() is NEED_DATA
    chunk = bytes(MiB)
    left = length
    while left > len(chunk):
        tx.receive_data(chunk)
        left -= len(chunk)
        assert tx.next_event() is NEED_DATA
        assert tx.buffered == 0  # drained as it arrives, never stored
    tx.receive_data(bytes(left) + FOLLOW)
    assert_refused(drain(tx), c.CMD_WRITE, c.ENOMEM, cookie=5)
    assert tx.buffered == 0


def test_request_limit_is_configurable(feeding: str) -> None:
    tx = make(max_request=4096)
    events = run(
        tx,
        feeding,
        req(c.CMD_WRITE, length=4096, cookie=1),
        req(c.CMD_WRITE, length=4097, cookie=2),
        req(c.CMD_READ, length=4097, cookie=3),
    )
    assert refusals(events) == [
        WriteRequest(1, 0, 0, bytes(4096)),
        (2, c.CMD_WRITE, c.ENOMEM),
        (3, c.CMD_READ, c.ENOMEM),
    ]


def test_a_pending_write_buffers_no_more_than_its_payload() -> None:
    tx = make()
    tx.receive_data(c.request(c.CMD_WRITE, cookie=1, length=8192))
    for _ in range(7):
        tx.receive_data(bytes(1024))
        assert tx.next_event() is NEED_DATA
    assert tx.buffered == 7 * 1024
    tx.receive_data(bytes(1024) + FOLLOW)
    assert drain(tx) == [WriteRequest(1, 0, 0, bytes(8192)), FOLLOW_EVENT]


# -- unknown commands, bad magic, EOF ----------------------------------------------------------


@pytest.mark.parametrize("cmd", [8, 9, 0x7FFF, 0xFFFF])
def test_unknown_command_is_einval_and_assumed_to_carry_no_payload(feeding: str, cmd: int) -> None:
    events = run(make(), feeding, c.request(cmd, cookie=1, length=512), FOLLOW)
    assert_refused(events, cmd, c.EINVAL)


@pytest.mark.parametrize(
    "magic",
    [0, c.REQUEST_MAGIC ^ 1, c.SIMPLE_MAGIC, 0x21E41C71],
    ids=["zero", "one-bit-off", "reply-magic", "extended-request-magic"],
)
def test_bad_request_magic_drops_the_client(feeding: str, magic: int) -> None:
    tx = make()
    with pytest.raises(RemoteProtocolError):
        converse(tx, [req(c.CMD_READ), c.request(c.CMD_READ, length=1, magic=magic)], feeding)
    tx.receive_data(FOLLOW)
    assert tx.next_event() is NEED_DATA  # nothing more is parsed


@pytest.mark.parametrize(
    "sent",
    [
        req(c.CMD_READ)[:1],
        req(c.CMD_READ)[:27],
        req(c.CMD_WRITE)[:28],
        req(c.CMD_WRITE)[:-1],
        c.request(c.CMD_WRITE, length=64 * MiB + 1) + bytes(10),  # while draining
    ],
    ids=["first-byte", "header-less-one", "write-header", "write-payload-less-one", "draining"],
)
def test_eof_in_the_middle_of_a_request_is_a_remote_protocol_error(sent: bytes) -> None:
    tx = make(size=1 << 30)
    tx.receive_data(sent)
    assert tx.next_event() is NEED_DATA
    with pytest.raises(RemoteProtocolError, match="middle"):
        tx.receive_data(b"")


def test_eof_between_requests_without_disconnect_is_a_remote_protocol_error() -> None:
    tx = make()
    tx.receive_data(req(c.CMD_READ))
    assert len(drain(tx)) == 1
    with pytest.raises(RemoteProtocolError, match="NBD_CMD_DISC"):
        tx.receive_data(b"")


# -- reply encoders ----------------------------------------------------------------------------

COOKIE = 0x0123456789ABCDEF


@pytest.mark.parametrize("error", [0, c.EPERM, c.EIO, c.ENOSPC, c.ESHUTDOWN])
def test_simple_reply_carries_cookie_and_error(error: int) -> None:
    assert c.parse_simple_reply(simple_reply(COOKIE, error)) == (c.SimpleReply(error, COOKIE), b"")


def test_read_reply_without_structured_replies_is_a_simple_reply_then_the_data() -> None:
    wire = read_reply_header(COOKIE, 4096, 4, structured=False) + b"data"
    assert c.parse_simple_reply(wire) == (c.SimpleReply(0, COOKIE), b"data")


def test_read_reply_under_structured_replies_is_one_final_offset_data_chunk() -> None:
    wire = read_reply_header(COOKIE, 4096, 4, structured=True) + b"data"
    (chunk,) = c.parse_chunks(wire)
    assert chunk.done
    assert chunk.cookie == COOKIE
    assert c.decode_offset_data(chunk) == (4096, b"data")


def test_data_and_hole_chunks_rebuild_a_sparse_read() -> None:
    wire = (
        data_chunk_header(COOKIE, 100, 3, done=False)
        + b"abc"
        + hole_chunk(COOKIE, 103, 5, done=False)
        + data_chunk_header(COOKIE, 108, 2, done=True)
        + b"yz"
    )
    chunks = c.parse_chunks(wire)
    assert [ch.done for ch in chunks] == [False, False, True]
    assert {ch.cookie for ch in chunks} == {COOKIE}
    image = bytearray(10)
    for ch in chunks:
        if ch.type == c.TYPE_OFFSET_HOLE:
            offset, size = c.decode_hole(ch)
            image[offset - 100 : offset - 100 + size] = bytes(size)
        else:
            offset, data = c.decode_offset_data(ch)
            image[offset - 100 : offset - 100 + len(data)] = data
    assert image == b"abc\0\0\0\0\0yz"


def test_final_hole_chunk_is_marked_done() -> None:
    (chunk,) = c.parse_chunks(hole_chunk(COOKIE, 0, 4096, done=True))
    assert chunk.done
    assert c.decode_hole(chunk) == (0, 4096)


@pytest.mark.parametrize("cmd", [c.CMD_READ, c.CMD_BLOCK_STATUS], ids=["read", "block-status"])
def test_error_for_read_or_block_status_under_structured_replies_is_an_error_chunk(
    cmd: int,
) -> None:
    (chunk,) = c.parse_chunks(error_reply(COOKIE, cmd, c.EIO, structured=True, message="bad"))
    assert (chunk.done, chunk.cookie, chunk.type) == (True, COOKIE, c.TYPE_ERROR)
    assert c.decode_error(chunk) == c.ChunkError(c.EIO, "bad", None)


@pytest.mark.parametrize(
    ("cmd", "structured"),
    [
        (c.CMD_READ, False),
        (c.CMD_BLOCK_STATUS, False),
        (c.CMD_WRITE, True),
        (c.CMD_FLUSH, True),
        (c.CMD_TRIM, False),
    ],
    ids=["read-plain", "status-plain", "write-sr", "flush-sr", "trim-plain"],
)
def test_other_errors_are_simple_replies(cmd: int, structured: bool) -> None:
    wire = error_reply(COOKIE, cmd, c.ENOSPC, structured=structured, message="full")
    assert c.parse_simple_reply(wire) == (c.SimpleReply(c.ENOSPC, COOKIE), b"")


def test_error_with_an_offset_is_an_error_offset_chunk() -> None:
    wire = error_reply(COOKIE, c.CMD_READ, c.EIO, structured=True, message="", offset=8192)
    (chunk,) = c.parse_chunks(wire)
    assert chunk.type == c.TYPE_ERROR_OFFSET
    assert c.decode_error(chunk) == c.ChunkError(c.EIO, "", 8192)


def test_error_chunk_message_is_cut_to_4096_bytes_of_valid_utf8() -> None:
    wire = error_reply(COOKIE, c.CMD_READ, c.EIO, structured=True, message="x" + "é" * 3000)
    (chunk,) = c.parse_chunks(wire)
    assert c.decode_error(chunk).message == "x" + "é" * 2047  # byte 4096 was half an "é"


def test_block_status_reply_carries_the_context_id_and_descriptors() -> None:
    extents = [(4096, 0), (8192, c.STATE_HOLE | c.STATE_ZERO), (512, c.STATE_ZERO)]
    (chunk,) = c.parse_chunks(block_status_reply(COOKIE, 1, extents))
    assert (chunk.done, chunk.cookie) == (True, COOKIE)
    assert c.decode_block_status(chunk) == (1, extents)
