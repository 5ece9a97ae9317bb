"""XDR primitives: round trips, alignment, and bounds checked before allocation."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, strategies as st

from trionfs._errors import LocalProtocolError, RemoteProtocolError
from trionfs._xdr import Packer, Unpacker


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("uint32"), st.integers(0, 2**32 - 1)),
            st.tuples(st.just("int32"), st.integers(-(2**31), 2**31 - 1)),
            st.tuples(st.just("uint64"), st.integers(0, 2**64 - 1)),
            st.tuples(st.just("int64"), st.integers(-(2**63), 2**63 - 1)),
            st.tuples(st.just("bool"), st.booleans()),
            st.tuples(st.just("opaque"), st.binary(max_size=50)),
            st.tuples(st.just("string"), st.text(max_size=20)),
        ),
        max_size=20,
    )
)
def test_primitives_round_trip_in_sequence(items: list[tuple[str, object]]) -> None:
    p = Packer()
    for kind, value in items:
        getattr(p, kind)(value)
    wire = p.get_buffer()
    assert len(wire) % 4 == 0
    u = Unpacker(wire)
    for kind, value in items:
        assert getattr(u, kind)() == value
    u.done()


@given(st.binary(max_size=40))
def test_opaque_is_zero_padded_to_four_bytes(data: bytes) -> None:
    p = Packer()
    p.opaque(data)
    wire = p.get_buffer()
    assert wire[:4] == len(data).to_bytes(4, "big")
    assert wire[4 : 4 + len(data)] == data
    assert set(wire[4 + len(data) :]) <= {0}
    assert len(wire) == 4 + (len(data) + 3) // 4 * 4


def test_opaque_view_is_a_slice_of_the_buffer_not_a_copy() -> None:
    p = Packer()
    p.opaque(b"payload!")
    record = bytearray(p.get_buffer())
    view = Unpacker(record).opaque_view()
    record[4] = ord("P")
    assert bytes(view) == b"Payload!"


def test_hostile_4gib_opaque_length_fails_fast_without_allocating() -> None:
    wire = b"\xff\xff\xff\xff" + b"\0" * 8
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError, match="past the end"):
            Unpacker(wire).opaque()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_opaque_longer_than_its_bound_is_rejected() -> None:
    p = Packer()
    p.opaque(b"x" * 65)
    with pytest.raises(RemoteProtocolError, match="bound 64"):
        Unpacker(p.get_buffer()).opaque(64)


def test_array_count_is_bounded_by_the_remaining_bytes() -> None:
    wire = (1000).to_bytes(4, "big") + b"\0" * 40
    with pytest.raises(RemoteProtocolError, match="cannot fit"):
        Unpacker(wire).count(4)
    assert Unpacker((10).to_bytes(4, "big") + b"\0" * 40).count(4) == 10


def test_bool_other_than_zero_or_one_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError, match="bool"):
        Unpacker((2).to_bytes(4, "big")).bool()


@pytest.mark.parametrize("method", ["uint32", "int32", "uint64", "int64", "bool", "opaque"])
def test_truncated_input_raises_remote_protocol_error(method: str) -> None:
    with pytest.raises(RemoteProtocolError, match=r"truncated|past the end"):
        getattr(Unpacker(b"\0\0\0"), method)()


def test_trailing_bytes_are_reported_by_done() -> None:
    u = Unpacker(b"\0\0\0\1\0\0\0\2")
    u.uint32()
    with pytest.raises(RemoteProtocolError, match="trailing"):
        u.done()


def test_padding_bytes_must_exist_for_a_complete_opaque() -> None:
    wire = (3).to_bytes(4, "big") + b"abc"  # the pad byte is missing
    with pytest.raises(RemoteProtocolError):
        Unpacker(wire).opaque()


@pytest.mark.parametrize(
    ("method", "value"),
    [("uint32", -1), ("uint32", 2**32), ("int32", 2**31), ("uint64", -1), ("int64", 2**63)],
)
def test_out_of_range_values_are_local_protocol_errors(method: str, value: int) -> None:
    with pytest.raises(LocalProtocolError):
        getattr(Packer(), method)(value)


def test_opaque_over_its_bound_cannot_be_encoded() -> None:
    with pytest.raises(LocalProtocolError, match="bound"):
        Packer().opaque(b"x" * 65, 64)


def test_fixed_opaque_needs_exactly_its_size() -> None:
    with pytest.raises(LocalProtocolError):
        Packer().fixed_opaque(b"1234567", 8)


def test_names_with_undecodable_bytes_survive_a_round_trip() -> None:
    p = Packer()
    p.string(b"caf\xe9")
    name = Unpacker(p.get_buffer()).string()
    q = Packer()
    q.string(name)
    assert q.get_buffer() == p.get_buffer()
