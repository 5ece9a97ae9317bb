"""MOUNT v3 and portmapper/rpcbind codecs."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given
from nfs3_strategies import exports, mapping, mount_list, mount_result, rpcb

from trionfs._errors import LocalProtocolError, MountError, MountStat3, RemoteProtocolError
from trionfs._mount3 import (
    ExportEntry,
    MountEntry,
    MountResult,
    decode_exports,
    decode_mnt,
    decode_mountlist,
    encode_exports,
    encode_mnt,
    encode_mountlist,
)
from trionfs._portmap import (
    Mapping,
    Rpcb,
    decode_getport,
    decode_pmaplist,
    encode_pmaplist,
    format_universal_address,
    parse_universal_address,
)
from trionfs._xdr import Packer, Unpacker


@given(mount_result)
def test_mnt_result_round_trips(value: MountResult) -> None:
    p = Packer()
    encode_mnt(p, value)
    u = Unpacker(p.get_buffer())
    assert decode_mnt(u) == value
    u.done()


@pytest.mark.parametrize("status", [s for s in MountStat3 if s != MountStat3.OK])
def test_mnt_failure_raises_mount_error_with_status(status: MountStat3) -> None:
    p = Packer()
    encode_mnt(p, status)
    with pytest.raises(MountError) as info:
        decode_mnt(Unpacker(p.get_buffer()))
    assert info.value.status is status


def test_mnt3err_acces_is_a_permission_error() -> None:
    exc = MountError(MountStat3.ACCES)
    assert isinstance(exc, PermissionError)
    assert exc.errno == errno.EACCES
    assert isinstance(MountError(MountStat3.NOENT), FileNotFoundError)


def test_mnt_with_too_many_flavors_is_rejected() -> None:
    p = Packer()
    p.uint32(0)
    p.opaque(b"fh")
    p.uint32(1_000_000)
    with pytest.raises(RemoteProtocolError):
        decode_mnt(Unpacker(p.get_buffer()))


@given(mount_list)
def test_mount_list_round_trips(value: tuple[MountEntry, ...]) -> None:
    p = Packer()
    encode_mountlist(p, value)
    u = Unpacker(p.get_buffer())
    assert decode_mountlist(u) == value
    u.done()


@given(exports)
def test_export_list_round_trips(value: tuple[ExportEntry, ...]) -> None:
    p = Packer()
    encode_exports(p, value)
    u = Unpacker(p.get_buffer())
    assert decode_exports(u) == value
    u.done()


@given(mapping)
def test_pmap_list_round_trips(value: Mapping) -> None:
    p = Packer()
    encode_pmaplist(p, (value, value))
    u = Unpacker(p.get_buffer())
    assert decode_pmaplist(u) == (value, value)
    u.done()


@given(rpcb)
def test_rpcb_round_trips(value: Rpcb) -> None:
    p = Packer()
    value.encode(p)
    u = Unpacker(p.get_buffer())
    assert Rpcb.decode(u) == value
    u.done()


def test_getport_beyond_65535_is_rejected() -> None:
    assert decode_getport(Unpacker(b"\0\0\x08\x01")) == 2049
    with pytest.raises(RemoteProtocolError):
        decode_getport(Unpacker(b"\0\1\0\0"))


@pytest.mark.parametrize(
    ("uaddr", "expected"),
    [("127.0.0.1.8.1", ("127.0.0.1", 2049)), ("::1.0.111", ("::1", 111))],
)
def test_universal_addresses_parse_and_format(uaddr: str, expected: tuple[str, int]) -> None:
    assert parse_universal_address(uaddr) == expected
    assert format_universal_address(*expected) == uaddr


@pytest.mark.parametrize("uaddr", ["", "127.0.0.1", "host.8.1", "127.0.0.1.256.1", "1.2.3.4.a.b"])
def test_bad_universal_addresses_are_rejected(uaddr: str) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_universal_address(uaddr)


def test_port_out_of_range_cannot_be_formatted() -> None:
    with pytest.raises(LocalProtocolError):
        format_universal_address("127.0.0.1", 70000)
