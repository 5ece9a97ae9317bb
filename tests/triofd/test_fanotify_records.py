"""Sans-I/O parsers (inotify and fanotify buffers): round trips, truncation, fuzzing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st

from triofd import FanotifyFormatError, parse_inotify_buffer
from triofd._fanotify_records import (
    ErrorRecord,
    FidRecord,
    MntRecord,
    PidfdRecord,
    RangeRecord,
    UnknownRecord,
    parse_fanotify_buffer,
)


def inotify_record(wd: int, mask: int, cookie: int, name: bytes) -> bytes:
    padded = name + b"\0" * (16 - len(name) % 16) if name else b""
    return struct.pack("=iIII", wd, mask, cookie, len(padded)) + padded


def info(info_type: int, body: bytes) -> bytes:
    body += b"\0" * (-(len(body) + 4) % 4)
    return struct.pack("=BBH", info_type, 0, 4 + len(body)) + body


def fan_event(mask: int, fd: int, pid: int, *records: bytes) -> bytes:
    tail = b"".join(records)
    return struct.pack("=IBBHQii", 24 + len(tail), 3, 0, 24, mask, fd, pid) + tail


names = st.binary(min_size=0, max_size=40).map(lambda b: b.replace(b"\0", b"_"))


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failure
@given(
    st.lists(
        st.tuples(
            st.integers(-1, 2**31 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), names
        )
    )
)
def test_inotify_buffer_round_trips(records: list[tuple[int, int, int, bytes]]) -> None:
    data = b"".join(inotify_record(*r) for r in records)
    assert list(parse_inotify_buffer(data)) == records


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failure
@given(st.binary(max_size=200))
def test_inotify_parser_on_garbage_yields_records_or_value_error(data: bytes) -> None:
    try:
        for _wd, _mask, _cookie, name in parse_inotify_buffer(data):
            assert len(name) <= len(data)
    except ValueError:
        pass


def test_inotify_truncated_header_and_name_are_value_errors() -> None:
    whole = inotify_record(1, 2, 3, b"name")
    with pytest.raises(ValueError, match="header"):
        list(parse_inotify_buffer(whole[:10]))
    with pytest.raises(ValueError, match="overruns"):
        list(parse_inotify_buffer(whole[:-1]))


def test_every_fanotify_record_type_decodes() -> None:
    fid = struct.pack("=8sIi", b"F" * 8, 8, 1) + b"H" * 8
    data = fan_event(
        0x10000000,
        -1,
        42,
        info(1, fid),
        info(10, fid + b"old\0"),
        info(12, fid + b"new\0"),
        info(4, struct.pack("=i", 7)),
        info(5, struct.pack("=iI", 5, 2)),
        info(6, struct.pack("=IQQ", 0, 4096, 512)),
        info(7, struct.pack("=Q", 99)),
        info(200, b"future"),
    )
    (event,) = parse_fanotify_buffer(data)
    assert (event.mask, event.fd, event.pid) == (0x10000000, -1, 42)
    assert event.records == (
        FidRecord(1, b"F" * 8, 1, b"H" * 8, None),
        FidRecord(10, b"F" * 8, 1, b"H" * 8, b"old"),
        FidRecord(12, b"F" * 8, 1, b"H" * 8, b"new"),
        PidfdRecord(7),
        ErrorRecord(5, 2),
        RangeRecord(4096, 512),
        MntRecord(99),
        UnknownRecord(200, b"future\0\0"),
    )


@pytest.mark.parametrize(
    "data",
    [
        fan_event(1, 3, 4)[:20],  # truncated metadata
        struct.pack("=IBBHQii", 24, 2, 0, 24, 1, 3, 4),  # wrong version
        struct.pack("=IBBHQii", 500, 3, 0, 24, 1, 3, 4),  # event_len past the buffer
        struct.pack("=IBBHQii", 24, 3, 0, 40, 1, 3, 4),  # metadata_len > event_len
        fan_event(1, -1, 4, struct.pack("=BBH", 1, 0, 2)),  # record shorter than its header
        fan_event(1, -1, 4, info(1, struct.pack("=8sIi", b"F" * 8, 4000, 1))),  # handle overrun
        fan_event(1, -1, 4, info(4, b"")),  # pidfd record with no pidfd
    ],
)
def test_malformed_fanotify_buffers_raise_format_error(data: bytes) -> None:
    with pytest.raises(FanotifyFormatError):
        parse_fanotify_buffer(data)


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failure
@given(st.binary(max_size=300))
def test_fanotify_parser_on_garbage_yields_events_or_format_error(data: bytes) -> None:
    try:
        parse_fanotify_buffer(data)
    except FanotifyFormatError:
        pass


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failure
@given(
    st.lists(st.sampled_from([1, 2, 3, 4, 5, 6, 7, 10, 12, 99]), max_size=6), st.binary(max_size=64)
)
def test_fanotify_parser_on_well_framed_random_records(types: list[int], body: bytes) -> None:
    data = fan_event(1, -1, 1, *(info(t, body) for t in types))
    try:
        (event,) = parse_fanotify_buffer(data)
    except FanotifyFormatError:
        return
    assert len(event.records) == len(types)
