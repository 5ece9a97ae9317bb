"""NFSv3 codecs: every argument and result round-trips; statuses map to the right OSError."""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st
from nfs3_strategies import ARGS, RESULTS, fattr

from trionfs._errors import NFS3_ERRNO, NFSError, NFSStat3, RemoteProtocolError
from trionfs._nfs3 import Proc, ReadResult, WriteArgs, decode_result, encode_result
from trionfs._nfs3_types import Fattr3, FType3, NFSTime3, StableHow, decode_fh, encode_fh
from trionfs._xdr import Packer, Unpacker


def _encode_args(proc: Proc, value: Any) -> bytes:
    p = Packer()
    if proc == Proc.GETATTR:
        encode_fh(p, value)
    else:
        value.encode(p)
    return p.get_buffer()


def _decode_args(proc: Proc, data: bytes) -> Any:
    u = Unpacker(data)
    if proc == Proc.GETATTR:
        value: Any = decode_fh(u)
    else:
        value = type_for_args(proc).decode(u)
    u.done()
    return value


def type_for_args(proc: Proc) -> Any:
    from trionfs import _nfs3 as n3

    return {
        Proc.SETATTR: n3.SetattrArgs,
        Proc.LOOKUP: n3.DirOpArgs,
        Proc.ACCESS: n3.AccessArgs,
        Proc.READ: n3.ReadArgs,
        Proc.WRITE: n3.WriteArgs,
        Proc.CREATE: n3.CreateArgs,
        Proc.MKDIR: n3.MkdirArgs,
        Proc.SYMLINK: n3.SymlinkArgs,
        Proc.MKNOD: n3.MknodArgs,
        Proc.REMOVE: n3.DirOpArgs,
        Proc.RENAME: n3.RenameArgs,
        Proc.LINK: n3.LinkArgs,
        Proc.READDIR: n3.ReaddirArgs,
        Proc.READDIRPLUS: n3.ReaddirplusArgs,
        Proc.COMMIT: n3.CommitArgs,
    }[proc]


def _same(a: Any, b: Any) -> bool:
    # memoryview fields compare by content; WriteArgs data may be bytes vs memoryview.
    if isinstance(a, WriteArgs) and isinstance(b, WriteArgs):
        return (a.fh, a.offset, bytes(a.data), a.stable) == (
            b.fh,
            b.offset,
            bytes(b.data),
            b.stable,
        )
    return bool(a == b)


@pytest.mark.parametrize("proc", list(ARGS), ids=lambda p: p.name)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_arguments_round_trip(proc: Proc, data: st.DataObject) -> None:
    value = data.draw(ARGS[proc])
    wire = _encode_args(proc, value)
    assert len(wire) % 4 == 0
    assert _same(_decode_args(proc, wire), value)


@pytest.mark.parametrize("proc", list(RESULTS), ids=lambda p: p.name)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_results_round_trip(proc: Proc, data: st.DataObject) -> None:
    value = data.draw(RESULTS[proc])
    wire = encode_result(proc, value)
    u = Unpacker(wire)
    assert decode_result(proc, u) == value
    u.done()


@pytest.mark.parametrize("proc", [p for p in Proc if p != Proc.NULL], ids=lambda p: p.name)
@pytest.mark.parametrize("status", [NFSStat3.NOENT, NFSStat3.JUKEBOX, NFSStat3.STALE])
def test_failure_replies_raise_nfserror_with_status(proc: Proc, status: NFSStat3) -> None:
    wire = encode_result(proc, None, status)
    with pytest.raises(NFSError) as info:
        decode_result(proc, Unpacker(wire))
    assert info.value.status is status
    assert info.value.errno == NFS3_ERRNO[status]


def test_write_args_send_the_payload_uncopied_with_padding() -> None:
    payload = bytearray(b"abcde")
    p = Packer()
    pieces = WriteArgs(b"\x01" * 8, 4096, payload, StableHow.FILE_SYNC).encode_pieces(p)
    assert pieces[0] is payload
    assert pieces[1] == b"\0\0\0"
    wire = p.get_buffer() + bytes(pieces[0]) + bytes(pieces[1])
    decoded = WriteArgs.decode(Unpacker(wire))
    assert bytes(decoded.data) == b"abcde"
    assert decoded.stable == StableHow.FILE_SYNC


def test_read_result_data_is_a_view_into_the_record() -> None:
    record = bytearray(encode_result(Proc.READ, ReadResult(None, 3, True, memoryview(b"xyz"))))
    result = decode_result(Proc.READ, Unpacker(record))
    assert result.data.obj is record
    assert result.data.readonly


def test_read_result_with_count_disagreeing_with_data_is_rejected() -> None:
    p = Packer()
    p.uint32(0)
    p.bool(False)
    p.uint32(10)  # count
    p.bool(True)
    p.opaque(b"abc")
    with pytest.raises(RemoteProtocolError, match="count"):
        decode_result(Proc.READ, Unpacker(p.get_buffer()))


def test_unknown_ftype_is_a_protocol_error() -> None:
    wire = bytearray(encode_result(Proc.GETATTR, _sample_fattr()))
    wire[4:8] = (99).to_bytes(4, "big")
    with pytest.raises(RemoteProtocolError, match="ftype3"):
        decode_result(Proc.GETATTR, Unpacker(wire))


def _sample_fattr(ftype: FType3 = FType3.REG) -> Fattr3:
    return Fattr3(
        ftype,
        0o4755,
        2,
        1000,
        100,
        12345,
        16384,
        (8, 1),
        77,
        4242,
        NFSTime3(1, 500_000_000),
        NFSTime3(2, 5),
        NFSTime3(3, 0),
    )


def test_fattr3_to_stat_result_matches_os_stat_layout() -> None:
    s = _sample_fattr(FType3.CHR).to_stat_result()
    assert stat.S_ISCHR(s.st_mode)
    assert stat.S_IMODE(s.st_mode) == 0o4755
    assert (s.st_ino, s.st_dev, s.st_nlink, s.st_uid, s.st_gid) == (4242, 77, 2, 1000, 100)
    assert s.st_size == 12345
    assert s.st_blocks == 32
    assert s.st_atime_ns == 1_500_000_000
    assert s.st_atime == pytest.approx(1.5)
    assert s.st_mtime_ns == 2_000_000_005
    assert int(s.st_ctime) == 3
    assert (os.major(s.st_rdev), os.minor(s.st_rdev)) == (8, 1)


@given(fattr)
def test_every_ftype_maps_to_its_stat_type_bits(attrs: Fattr3) -> None:
    mode = attrs.st_mode
    checks = {
        FType3.REG: stat.S_ISREG,
        FType3.DIR: stat.S_ISDIR,
        FType3.BLK: stat.S_ISBLK,
        FType3.CHR: stat.S_ISCHR,
        FType3.LNK: stat.S_ISLNK,
        FType3.SOCK: stat.S_ISSOCK,
        FType3.FIFO: stat.S_ISFIFO,
    }
    assert checks[attrs.type](mode)
    assert stat.S_IMODE(mode) == attrs.mode


@pytest.mark.parametrize(
    ("status", "exc_type", "code"),
    [
        (NFSStat3.NOENT, FileNotFoundError, errno.ENOENT),
        (NFSStat3.ACCES, PermissionError, errno.EACCES),
        (NFSStat3.PERM, PermissionError, errno.EPERM),
        (NFSStat3.EXIST, FileExistsError, errno.EEXIST),
        (NFSStat3.NOTDIR, NotADirectoryError, errno.ENOTDIR),
        (NFSStat3.ISDIR, IsADirectoryError, errno.EISDIR),
        (NFSStat3.JUKEBOX, BlockingIOError, errno.EAGAIN),
        (NFSStat3.STALE, OSError, errno.ESTALE),
        (NFSStat3.REMOTE, OSError, errno.EREMOTE),
        (NFSStat3.NOTSUPP, OSError, errno.EOPNOTSUPP),
        (NFSStat3.SERVERFAULT, OSError, errno.EIO),
        (NFSStat3.NOTEMPTY, OSError, errno.ENOTEMPTY),
        (NFSStat3.DQUOT, OSError, errno.EDQUOT),
    ],
)
def test_nfs_status_maps_to_errno_and_builtin_class(
    status: NFSStat3, exc_type: type[OSError], code: int
) -> None:
    exc = NFSError(status, filename="/a/b")
    assert isinstance(exc, NFSError)
    assert isinstance(exc, exc_type)
    assert exc.errno == code
    assert exc.status is status
    assert exc.filename == "/a/b"
    assert f"NFS3ERR_{status.name}" in str(exc)


def test_every_nfs_error_status_has_an_errno() -> None:
    assert set(NFS3_ERRNO) == {s for s in NFSStat3 if s != NFSStat3.OK}


def test_unknown_nfs_status_is_eio_and_keeps_the_number() -> None:
    exc = NFSError(4242)
    assert exc.errno == errno.EIO
    assert exc.status == 4242


def test_nfs_error_survives_pickling() -> None:
    import pickle

    exc = pickle.loads(pickle.dumps(NFSError(NFSStat3.NOENT, filename="x")))
    assert isinstance(exc, NFSError)
    assert isinstance(exc, FileNotFoundError)
    assert exc.status is NFSStat3.NOENT
    assert exc.filename == "x"
