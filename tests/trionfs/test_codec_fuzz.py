"""Every decoder fed arbitrary bytes: a value or RemoteProtocolError, nothing else, fast."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from trionfs import _mount3 as m3, _nfs3 as n3, _portmap as pm, _rpc as rpc
from trionfs._errors import MountError, NFSError, RemoteProtocolError, RPCError
from trionfs._nfs3_types import Sattr3
from trionfs._xdr import Unpacker


def _result_decoder(proc: n3.Proc) -> Callable[[Unpacker], Any]:
    return lambda u: n3.decode_result(proc, u)


DECODERS: dict[str, Callable[[Unpacker], Any]] = {
    **{f"nfs3-result-{p.name}": _result_decoder(p) for p in n3.Proc},
    "nfs3-args-setattr": n3.SetattrArgs.decode,
    "nfs3-args-write": n3.WriteArgs.decode,
    "nfs3-args-create": n3.CreateArgs.decode,
    "nfs3-args-mknod": n3.MknodArgs.decode,
    "nfs3-args-symlink": n3.SymlinkArgs.decode,
    "nfs3-args-readdirplus": n3.ReaddirplusArgs.decode,
    "sattr3": Sattr3.decode,
    "mount-mnt": m3.decode_mnt,
    "mount-dump": m3.decode_mountlist,
    "mount-export": m3.decode_exports,
    "pmap-getport": pm.decode_getport,
    "pmap-dump": pm.decode_pmaplist,
    "rpcb": pm.Rpcb.decode,
    "rpcb-uaddr": pm.decode_uaddr,
    "auth-sys": lambda u: rpc.AuthSys.decode(u.rest()),
}


def _payloads() -> st.SearchStrategy[bytes]:
    # Raw bytes, plus an "OK status then garbage" form so decoders get past the status word.
    return st.binary(max_size=400) | st.binary(max_size=400).map(lambda b: b"\0\0\0\0" + b)


@pytest.mark.parametrize("name", list(DECODERS))
@settings(max_examples=100, deadline=None)
@given(data=_payloads())
def test_decoder_returns_a_value_or_remote_protocol_error(name: str, data: bytes) -> None:
    try:
        DECODERS[name](Unpacker(data))
    except (RemoteProtocolError, NFSError, MountError):
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_reply_decoder_returns_results_or_typed_errors(data: bytes) -> None:
    try:
        rpc.peek_xid(data)
        rpc.decode_reply(data)
    except (RemoteProtocolError, RPCError):
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_record_receiver_yields_records_or_remote_protocol_error(chunks: list[bytes]) -> None:
    receiver = rpc.RecordReceiver(max_record_size=4096)
    try:
        for chunk in chunks:
            receiver.receive_data(chunk)
            while receiver.next_record() is not rpc.NEED_DATA:
                pass
    except RemoteProtocolError:
        pass


def test_hostile_lengths_in_a_huge_readdir_fail_without_allocating() -> None:
    # An entry whose name claims 4 GiB, followed by nothing.
    body = b"\0\0\0\0" + b"\0\0\0\0" + b"\0" * 8 + b"\0\0\0\1" + b"\0" * 8 + b"\xff\xff\xff\xfc"
    with pytest.raises(RemoteProtocolError):
        n3.decode_result(n3.Proc.READDIR, Unpacker(body))
