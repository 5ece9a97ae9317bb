"""The sans-I/O SP-over-IPC codec (``triokuiper._sp``): no sockets, no trio."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings, strategies as st

from triokuiper._sp import (
    DEFAULT_MAX_SIZE,
    FRAME_PREFIX,
    HEADER_SIZE,
    PULL0,
    PUSH0,
    FrameDecoder,
    SPProtocolError,
    check_peer,
    connection_header,
    frame,
    peer_protocol,
)

PUSH_HEADER = connection_header(PUSH0)


def test_connection_header_is_the_nng_wire_layout() -> None:
    assert connection_header(PUSH0) == b"\x00SP\x00\x00\x50\x00\x00"
    assert connection_header(PULL0) == b"\x00SP\x00\x00\x51\x00\x00"
    assert len(PUSH_HEADER) == HEADER_SIZE


@pytest.mark.parametrize("protocol", [0, PUSH0, PULL0, 0x10, 0x1234, 0xFFFF])
def test_connection_header_round_trips(protocol: int) -> None:
    assert peer_protocol(connection_header(protocol)) == protocol
    check_peer(connection_header(protocol), protocol)


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"\x01SP\x00\x00\x50\x00\x00", id="first-magic-byte"),
        pytest.param(b"\x00sp\x00\x00\x50\x00\x00", id="lowercase-sp"),
        pytest.param(b"\x00SP\x01\x00\x50\x00\x00", id="fourth-magic-byte"),
        pytest.param(b"\x00SP\x00\x00\x50\x01\x00", id="reserved-byte-6"),
        pytest.param(b"\x00SP\x00\x00\x50\x00\x01", id="reserved-byte-7"),
        pytest.param(b"\x00SP\x00\x00\x50\x00", id="short"),
        pytest.param(b"", id="empty"),
        pytest.param(PUSH_HEADER + b"\x00", id="long"),
        pytest.param(b"GET / HTTP/1.1\r\n", id="http"),
    ],
)
def test_malformed_connection_header_raises(header: bytes) -> None:
    with pytest.raises(SPProtocolError, match="not an SP connection header"):
        peer_protocol(header)
    with pytest.raises(SPProtocolError):
        check_peer(header, PUSH0)


def test_check_peer_refuses_another_protocol() -> None:
    with pytest.raises(SPProtocolError, match="0x51, expected 0x50"):
        check_peer(connection_header(PULL0), PUSH0)


def test_frame_is_type_byte_length_and_payload() -> None:
    assert frame(b"abc") == b"\x01" + (3).to_bytes(8, "big") + b"abc"
    assert frame(b"") == b"\x01" + bytes(8)


def stream(messages: list[bytes], protocol: int = PUSH0) -> bytes:
    return connection_header(protocol) + b"".join(frame(m) for m in messages)


def decode_in_chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    decoder = FrameDecoder()
    out: list[bytes] = []
    bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    for start, end in itertools.pairwise(bounds):
        if end > start:
            out += decoder.feed(data[start:end])
    assert decoder.feed(b"") == []
    return out


MIXED = [b"", b"x", b"hello", bytes(range(256)) * 40, b"\x01" * 9, b"", b"\x00" * 70_000]


def test_decoder_whole_stream() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(stream(MIXED)) == MIXED
    assert decoder.peer == PUSH0
    assert decoder.pending == 0
    assert decoder.feed(b"") == []


def test_decoder_byte_at_a_time() -> None:
    decoder = FrameDecoder()
    data = stream(MIXED[:5])
    out: list[bytes] = []
    for i in range(len(data)):
        out += decoder.feed(data[i : i + 1])
        if i < HEADER_SIZE - 1:
            assert decoder.peer is None
    assert out == MIXED[:5]
    assert decoder.peer == PUSH0
    assert decoder.feed(b"") == []


def test_decoder_accepts_memoryview_and_bytearray() -> None:
    data = stream([b"one", b"two"])
    decoder = FrameDecoder()
    assert decoder.feed(memoryview(data)[:12]) == []
    assert decoder.feed(bytearray(data[12:])) == [b"one", b"two"]


def test_decoder_returns_every_message_completed_by_one_feed() -> None:
    messages = [b"%d" % n for n in range(1000)]
    decoder = FrameDecoder()
    assert decoder.feed(stream(messages)) == messages


def test_decoder_reports_the_peer_protocol_without_judging_it() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(stream([b"a"], protocol=0x10)) == [b"a"]
    assert decoder.peer == 0x10


def test_decoder_header_alone_yields_nothing() -> None:
    assert FrameDecoder().peer is None
    decoder = FrameDecoder()
    assert decoder.feed(PUSH_HEADER) == []
    assert decoder.peer == PUSH0
    assert decoder.pending == 0
    assert decoder.feed(b"") == []


@given(
    messages=st.lists(st.binary(max_size=300), max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
)
def test_decoder_round_trips_any_chunking(messages: list[bytes], cuts: list[int]) -> None:
    assert decode_in_chunks(stream(messages), cuts) == messages


def test_decoder_round_trips_a_large_message_in_odd_chunks() -> None:
    big = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB
    messages = [b"before", big, b"", big[::-1], b"after"]
    data = stream(messages)
    assert decode_in_chunks(data, list(range(0, len(data), 65_537))) == messages
    assert decode_in_chunks(data, [HEADER_SIZE + 3, len(data) - 1]) == messages


def test_declared_length_over_the_limit_raises_before_the_body_arrives() -> None:
    decoder = FrameDecoder(max_size=100)
    assert decoder.feed(PUSH_HEADER + frame(b"y" * 100)) == [b"y" * 100]
    prefix = b"\x01" + (101).to_bytes(8, "big")
    assert decoder.feed(prefix[:-1]) == []  # not yet decidable
    assert decoder.pending == FRAME_PREFIX - 1
    with pytest.raises(SPProtocolError, match="101 bytes is over the 100-byte limit"):
        decoder.feed(prefix[-1:])
    assert decoder.pending == FRAME_PREFIX  # no body reserved or awaited


def test_hostile_length_raises_with_the_default_limit() -> None:
    decoder = FrameDecoder()
    with pytest.raises(SPProtocolError, match=str(1 << 40)):
        decoder.feed(PUSH_HEADER + b"\x01" + (1 << 40).to_bytes(8, "big"))
    assert decoder.pending <= FRAME_PREFIX
    over = FrameDecoder()
    with pytest.raises(SPProtocolError):
        over.feed(PUSH_HEADER + b"\x01" + (DEFAULT_MAX_SIZE + 1).to_bytes(8, "big"))


def test_length_equal_to_the_limit_is_accepted_and_awaited() -> None:
    decoder = FrameDecoder(max_size=1 << 20)
    assert decoder.feed(PUSH_HEADER + b"\x01" + (1 << 20).to_bytes(8, "big")) == []
    assert decoder.feed(b"z" * (1 << 20)) == [b"z" * (1 << 20)]


@pytest.mark.parametrize("type_byte", [0, 2, 0x50, 0xFF])
def test_wrong_message_type_raises(type_byte: int) -> None:
    decoder = FrameDecoder()
    assert decoder.feed(PUSH_HEADER + frame(b"ok")) == [b"ok"]
    with pytest.raises(SPProtocolError, match=f"unknown SP message type {type_byte}"):
        decoder.feed(bytes([type_byte]) + (2).to_bytes(8, "big") + b"no")


def test_malformed_header_raises_once_eight_bytes_are_in() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"\x00SP\x00\x00\x50\x00") == []
    with pytest.raises(SPProtocolError, match="not an SP connection header"):
        decoder.feed(b"\x07" + frame(b"x"))


@pytest.mark.parametrize(
    "partial",
    [
        pytest.param(b"\x00SP", id="inside-header"),
        pytest.param(PUSH_HEADER + b"\x01\x00\x00", id="inside-prefix"),
        pytest.param(PUSH_HEADER + frame(b"hello")[:-1], id="inside-body"),
        pytest.param(PUSH_HEADER + frame(b"ok") + frame(b"hello")[:10], id="after-a-message"),
    ],
)
def test_eof_inside_a_frame_raises(partial: bytes) -> None:
    decoder = FrameDecoder()
    decoder.feed(partial)
    assert decoder.pending > 0
    with pytest.raises(SPProtocolError, match="stream ended inside a frame"):
        decoder.feed(b"")


def test_eof_at_a_frame_boundary_returns_nothing() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(stream([b"a", b"b"])) == [b"a", b"b"]
    assert decoder.feed(b"") == []


def test_eof_before_any_byte_returns_nothing() -> None:
    assert FrameDecoder().feed(b"") == []


def test_data_after_eof_raises() -> None:
    decoder = FrameDecoder()
    decoder.feed(stream([b"a"]))
    assert decoder.feed(b"") == []
    with pytest.raises(SPProtocolError, match="after the end"):
        decoder.feed(frame(b"late"))
    with pytest.raises(SPProtocolError, match="after the end"):
        decoder.feed(b"")


@settings(max_examples=300)
@given(
    data=st.binary(max_size=200),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=10),
    prefix=st.sampled_from([b"", PUSH_HEADER, PUSH_HEADER + b"\x01"]),
)
def test_fuzz_only_messages_or_protocol_error(data: bytes, cuts: list[int], prefix: bytes) -> None:
    stream_bytes = prefix + data
    decoder = FrameDecoder(max_size=1 << 16)
    bounds = [0, *sorted({c % (len(stream_bytes) + 1) for c in cuts}), len(stream_bytes)]
    try:
        for start, end in itertools.pairwise(bounds):
            if end > start:
                out = decoder.feed(stream_bytes[start:end])
                assert isinstance(out, list)
                assert all(type(m) is bytes for m in out)
            # memory stays bounded by what was fed: no reservation for a declared length
            assert decoder.pending <= len(stream_bytes)
        assert decoder.feed(b"") == []
    except SPProtocolError:
        pass
