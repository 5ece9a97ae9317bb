"""The sans-I/O pieces of splicing READ data into a local file: where a READ reply's data lies
in its record (from the head alone), the record receiver's view of a record in progress, and
which parts of the data a sink leaves in the record."""

from __future__ import annotations

import struct

from hypothesis import given, strategies as st
from nfs3_strategies import fattr

from trionfs._nfs3 import ReadResult, read3_payload_span
from trionfs._nfs3_types import Fattr3
from trionfs._payload_sink import PayloadSink, SpliceTarget
from trionfs._rpc import LAST_FRAGMENT, RecordReceiver
from trionfs._xdr import Packer

ACCEPTED_OK = struct.pack(">IIIIII", 0x1234, 1, 0, 0, 0, 0)  # xid, REPLY, accepted, AUTH_NONE, ok


def read_reply(data: bytes, attrs: Fattr3 | None = None, eof: bool = False) -> bytes:
    p = Packer()
    p.uint32(0)  # NFS3_OK
    ReadResult(attrs, len(data), eof, memoryview(data)).encode(p)
    return ACCEPTED_OK + bytes(p.view())


@given(data=st.binary(max_size=300), attrs=st.none() | fattr, eof=st.booleans())
def test_the_data_span_is_found_from_the_head_alone(
    data: bytes, attrs: Fattr3 | None, eof: bool
) -> None:
    record = read_reply(data, attrs, eof)
    span = read3_payload_span(record)
    assert span is not None
    start, length = span
    assert record[start : start + length] == data
    # Known as soon as the head is in, and not before.
    assert read3_payload_span(record[:start]) == (start, length)
    assert read3_payload_span(record[: start - 1]) is None


def test_errors_and_refused_calls_are_not_spliced() -> None:
    error = ACCEPTED_OK + struct.pack(">II", 2, 0)  # NFS3ERR_NOENT, no attributes
    assert read3_payload_span(error) is None
    denied = struct.pack(">IIIII", 0x1234, 1, 1, 0, 2)  # MSG_DENIED, RPC_MISMATCH
    assert read3_payload_span(denied + struct.pack(">II", 2, 2)) is None


@given(st.binary(max_size=400))
def test_any_bytes_give_a_span_inside_them_or_none(junk: bytes) -> None:
    span = read3_payload_span(junk)
    if span is not None:
        assert 0 <= span[0] <= len(junk)
        assert span[1] >= 0


def test_the_receiver_shows_the_record_so_far_and_what_the_fragment_still_holds() -> None:
    body = read_reply(bytes(range(256)) * 400)
    receiver = RecordReceiver(direct_threshold=1024)
    assert receiver.record_prefix() is None
    assert receiver.fragment_left == 0
    receiver.receive_data(struct.pack(">I", LAST_FRAGMENT | len(body)) + body[:100])
    prefix = receiver.record_prefix()
    assert prefix is not None
    assert bytes(prefix) == body[:100]
    assert receiver.fragment_left == len(body) - 100
    serial = receiver.serial
    # Bytes that went elsewhere are skipped; the record still completes.
    receiver.direct_filled(len(body) - 100)
    record = receiver.next_record()
    assert isinstance(record, memoryview)
    assert len(record) == len(body)
    assert bytes(record[:100]) == body[:100]
    receiver.receive_data(struct.pack(">I", LAST_FRAGMENT | 8) + b"12345678")
    assert receiver.serial == serial + 1


def test_a_sink_leaves_in_the_record_what_came_before_and_after_splicing() -> None:
    sink = PayloadSink(SpliceTarget(-1), 0, read3_payload_span)
    assert sink.in_record_ranges(10) == [(0, 10)]  # never spliced: all in the record
    assert sink.in_record_ranges(0) == []
    sink.span = (100, 1100)
    sink.spliced = (150, 1100)  # the first 50 data bytes came with the head
    assert sink.in_record_ranges(1000) == [(0, 50)]
    sink.spliced = (100, 600)  # splicing stopped half way (a slow local disk)
    assert sink.in_record_ranges(1000) == [(500, 1000)]
    sink.spliced = (150, 600)
    assert sink.in_record_ranges(1000) == [(0, 50), (500, 1000)]
