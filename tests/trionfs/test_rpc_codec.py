"""ONC-RPC codec: call headers, credentials, every reply status, record marking."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, strategies as st

from trionfs._errors import (
    AuthError,
    AuthStat,
    GarbageArgsError,
    LocalProtocolError,
    ProcUnavailError,
    ProgMismatchError,
    ProgUnavailError,
    RemoteProtocolError,
    RPCMismatchError,
    SystemErrError,
)
from trionfs._rpc import (
    NEED_DATA,
    AuthNone,
    AuthSys,
    CallEncoder,
    RecordReceiver,
    XidAllocator,
    decode_reply,
    frame_record,
    peek_xid,
)
from trionfs._xdr import Buffer, Unpacker


def _accepted(xid: int, accept: int, tail: bytes = b"") -> bytes:
    return struct.pack(">IIIIII", xid, 1, 0, 0, 0, accept) + tail


def _denied(xid: int, reject: int, tail: bytes) -> bytes:
    return struct.pack(">IIII", xid, 1, 1, reject) + tail


def test_call_header_layout_with_auth_none() -> None:
    head = CallEncoder(100003, 3).header(0x01020304, 6)
    assert head == struct.pack(">IIIIIIIIII", 0x01020304, 0, 2, 100003, 3, 6, 0, 0, 0, 0)


def test_auth_sys_credentials_round_trip() -> None:
    cred = AuthSys(uid=1000, gid=100, gids=(4, 24, 27), machinename="box", stamp=7)
    wire = CallEncoder(100003, 3, cred).header(1, 0)
    u = Unpacker(wire)
    assert [u.uint32() for _ in range(6)] == [1, 0, 2, 100003, 3, 0]
    assert u.uint32() == 1  # AUTH_SYS
    assert AuthSys.decode(u.opaque(400)) == cred
    assert (u.uint32(), u.opaque()) == (0, b"")  # verifier AUTH_NONE
    u.done()


def test_auth_sys_rejects_more_than_16_groups() -> None:
    with pytest.raises(ValueError, match="16"):
        AuthSys(gids=tuple(range(17)))


def test_auth_sys_current_describes_this_process() -> None:
    import os

    cred = AuthSys.current()
    assert (cred.uid, cred.gid) == (os.getuid(), os.getgid())
    assert len(cred.gids) <= 16


def test_bad_header_fields_are_local_protocol_errors() -> None:
    with pytest.raises(LocalProtocolError):
        CallEncoder(100003, 3).header(2**32, 0)


def test_successful_reply_leaves_the_unpacker_at_the_results() -> None:
    u = decode_reply(_accepted(9, 0, b"\0\0\0\x2a"))
    assert u.uint32() == 42
    u.done()


def test_reply_with_verifier_body_is_skipped() -> None:
    record = struct.pack(">IIIII", 9, 1, 0, 1, 8) + b"verifier" + b"\0\0\0\0" + b"\0\0\0\x07"
    assert decode_reply(record).uint32() == 7


@pytest.mark.parametrize(
    ("record", "exc_type"),
    [
        (_accepted(1, 1), ProgUnavailError),
        (_accepted(1, 3), ProcUnavailError),
        (_accepted(1, 4), GarbageArgsError),
        (_accepted(1, 5), SystemErrError),
    ],
)
def test_accept_statuses_raise_their_own_error(record: bytes, exc_type: type[Exception]) -> None:
    with pytest.raises(exc_type):
        decode_reply(record)


def test_prog_mismatch_carries_low_and_high() -> None:
    with pytest.raises(ProgMismatchError) as info:
        decode_reply(_accepted(1, 2, struct.pack(">II", 2, 4)))
    assert (info.value.low, info.value.high) == (2, 4)


def test_rpc_mismatch_carries_low_and_high() -> None:
    with pytest.raises(RPCMismatchError) as info:
        decode_reply(_denied(1, 0, struct.pack(">II", 3, 3)))
    assert (info.value.low, info.value.high) == (3, 3)


@pytest.mark.parametrize("stat", list(AuthStat)[1:])
def test_auth_error_carries_its_reason(stat: AuthStat) -> None:
    with pytest.raises(AuthError) as info:
        decode_reply(_denied(1, 1, struct.pack(">I", stat)))
    assert info.value.stat is stat


def test_unknown_auth_stat_is_kept_as_a_number() -> None:
    with pytest.raises(AuthError) as info:
        decode_reply(_denied(1, 1, struct.pack(">I", 999)))
    assert info.value.stat == 999


@pytest.mark.parametrize(
    "record",
    [
        _accepted(1, 9),  # unknown accept_stat
        _denied(1, 7, b""),  # unknown reject_stat
        struct.pack(">III", 1, 1, 5),  # unknown reply_stat
        struct.pack(">II", 1, 0),  # a CALL, not a REPLY
        b"\0\0\0\1",
        _accepted(1, 2, b"\0\0\0\1"),  # PROG_MISMATCH without high
    ],
)
def test_malformed_replies_are_remote_protocol_errors(record: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_reply(record)


def test_peek_xid_checks_the_message_type() -> None:
    assert peek_xid(_accepted(0xDEADBEEF, 0)) == 0xDEADBEEF
    with pytest.raises(RemoteProtocolError):
        peek_xid(struct.pack(">II", 5, 0))
    with pytest.raises(RemoteProtocolError):
        peek_xid(b"\0\0")


def test_xids_are_sequential_and_wrap() -> None:
    xids = XidAllocator(2**32 - 2)
    assert [xids.allocate() for _ in range(3)] == [2**32 - 2, 2**32 - 1, 0]


# -- record marking -------------------------------------------------------------------------


def _records(receiver: RecordReceiver) -> list[bytes]:
    out = []
    while (r := receiver.next_record()) is not NEED_DATA:
        assert isinstance(r, memoryview)
        out.append(bytes(r))
    return out


def _join(frames: list[Buffer]) -> bytes:
    return b"".join(bytes(f) for f in frames)


@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    st.integers(1, 64),
    st.integers(1, 97),
)
def test_records_survive_any_fragmenting_and_any_chunking(
    records: list[bytes], max_fragment: int, chunk: int
) -> None:
    wire = b"".join(_join(frame_record([r], max_fragment)) for r in records)
    receiver = RecordReceiver(direct_threshold=1 << 30)
    got: list[bytes] = []
    for i in range(0, len(wire), chunk):
        receiver.receive_data(wire[i : i + chunk])
        got += _records(receiver)
    assert got == records
    assert not receiver.in_record


def test_byte_at_a_time_multi_fragment_record() -> None:
    payload = bytes(range(256)) * 4
    wire = _join(frame_record([payload[:100], payload[100:]], max_fragment=300))
    receiver = RecordReceiver()
    for i in range(len(wire)):
        assert receiver.next_record() is NEED_DATA
        receiver.receive_data(wire[i : i + 1])
    assert _records(receiver) == [payload]


def test_frame_record_marks_only_the_last_fragment() -> None:
    frames = frame_record([b"a" * 10], max_fragment=4)
    marks = [struct.unpack(">I", bytes(f))[0] for f in frames[::2]]
    assert marks == [4, 4, 0x80000002]


def test_frame_record_does_not_copy_large_pieces() -> None:
    payload = bytearray(1 << 20)
    frames = frame_record([b"head", payload])
    assert isinstance(frames[2], memoryview)
    assert frames[2].obj is payload


def test_record_over_the_bound_is_rejected_at_its_header() -> None:
    receiver = RecordReceiver(max_record_size=1024)
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        receiver.receive_data(struct.pack(">I", 0x80000000 | 0x7FFFFFFF))


def test_fragments_adding_up_over_the_bound_are_rejected() -> None:
    receiver = RecordReceiver(max_record_size=1024)
    receiver.receive_data(struct.pack(">I", 1000) + b"x" * 1000)
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        receiver.receive_data(struct.pack(">I", 0x80000000 | 100))


def test_direct_buffer_receives_a_large_fragment_in_place() -> None:
    payload = bytes(range(256)) * 1024
    wire = _join(frame_record([payload]))
    receiver = RecordReceiver(direct_threshold=4096)
    receiver.receive_data(wire[:1000])
    pos = 1000
    while pos < len(wire):
        buf = receiver.direct_buffer()
        assert buf is not None
        with buf:
            n = min(len(buf), 10000, len(wire) - pos)
            buf[:n] = wire[pos : pos + n]
        receiver.direct_filled(n)
        pos += n
        if receiver.direct_buffer() is None and pos < len(wire):
            receiver.receive_data(wire[pos:])
            pos = len(wire)
    assert _records(receiver) == [payload]


def test_direct_filled_cannot_overrun() -> None:
    receiver = RecordReceiver(direct_threshold=16)
    receiver.receive_data(struct.pack(">I", 0x80000000 | 64))
    with pytest.raises(ValueError, match="more bytes"):
        receiver.direct_filled(65)


def test_eof_state_is_visible_mid_record_and_mid_header() -> None:
    receiver = RecordReceiver()
    states = [receiver.in_record]
    receiver.receive_data(b"\x80\0")
    states.append(receiver.in_record)
    receiver.receive_data(b"\0\x02a")
    states.append(receiver.in_record)
    receiver.receive_data(b"b")
    states.append(receiver.in_record)
    assert states == [False, True, True, False]
    assert _records(receiver) == [b"ab"]


def test_empty_record_and_trailing_bytes() -> None:
    receiver = RecordReceiver()
    receiver.receive_data(struct.pack(">I", 0x80000000) + struct.pack(">I", 0x80000001) + b"z")
    assert _records(receiver) == [b"", b"z"]


def test_auth_none_is_eight_zero_bytes() -> None:
    assert AuthNone().encode() == bytes(8)


def _big_record(fill: int, size: int = 300 * 1024) -> bytes:
    return struct.pack(">I", 0x80000000 | size) + bytes([fill]) * size


def test_large_record_buffers_are_reused_only_when_unreferenced() -> None:
    receiver = RecordReceiver()
    receiver.receive_data(_big_record(1))
    first = receiver.next_record()
    assert isinstance(first, memoryview)
    held = first[10:20]  # a caller keeps a slice (like ReadResult.data)
    del first
    receiver.receive_data(_big_record(2))
    second = receiver.next_record()
    assert isinstance(second, memoryview)
    assert second.obj is not held.obj
    assert bytes(held) == b"\1" * 10  # untouched
    buffer_id = id(second.obj)
    del second
    receiver.receive_data(_big_record(3))
    third = receiver.next_record()
    assert isinstance(third, memoryview)
    assert id(third.obj) == buffer_id  # the free one came back
    assert bytes(third) == b"\3" * (300 * 1024)
    assert bytes(held) == b"\1" * 10


def test_records_are_read_only_views() -> None:
    receiver = RecordReceiver()
    receiver.receive_data(_big_record(7))
    record = receiver.next_record()
    assert isinstance(record, memoryview)
    assert record.readonly
    assert len(record) == 300 * 1024


@pytest.mark.parametrize(
    "module",
    [
        "_xdr",
        "_rpc",
        "_bufpool",
        "_errors",
        "_nfs3",
        "_nfs3_args",
        "_nfs3_types",
        "_mount3",
        "_portmap",
    ],
)
def test_sans_io_modules_never_import_trio(module: str) -> None:
    import ast
    import importlib.util

    source = importlib.util.find_spec(f"trionfs.{module}")
    assert source is not None
    assert source.origin is not None
    with open(source.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 0
    }
    assert "trio" not in imported


def test_protocol_module_exports_everything_it_lists() -> None:
    import trionfs.protocol as protocol

    assert all(hasattr(protocol, name) for name in protocol.__all__)
    assert "NFS3Client" in protocol.__all__
