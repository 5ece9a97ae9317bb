"""NFSv3 (RFC 1813) procedures: result codecs (arguments live in ``_nfs3_args``), sans-I/O.

Every procedure has an ``*Args`` class (``encode`` into a ``Packer``) and a result class; both
also decode/encode the other way so tests and fake servers can round-trip them.
``decode_result(proc, unpacker)`` reads the status first and raises ``NFSError`` for anything
but NFS3_OK (the failure arm's wcc/post-op data is dropped).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ._errors import NFSError, NFSStat3, RemoteProtocolError, RPCError
from ._nfs3_args import (
    NO_ATTRS as NO_ATTRS,
    ZERO_VERF as ZERO_VERF,
    AccessArgs as AccessArgs,
    CommitArgs as CommitArgs,
    CreateArgs as CreateArgs,
    DirOpArgs as DirOpArgs,
    LinkArgs as LinkArgs,
    MkdirArgs as MkdirArgs,
    MknodArgs as MknodArgs,
    ReadArgs as ReadArgs,
    ReaddirArgs as ReaddirArgs,
    ReaddirplusArgs as ReaddirplusArgs,
    RenameArgs as RenameArgs,
    SetattrArgs as SetattrArgs,
    SymlinkArgs as SymlinkArgs,
    WriteArgs as WriteArgs,
    _enum,
    encode_write_head as encode_write_head,
)
from ._nfs3_types import (
    COOKIEVERFSIZE,
    MAX_NAME,
    MAX_PATH,
    WRITEVERFSIZE,
    Fattr3,
    NFSTime3,
    StableHow,
    WccData,
    decode_fh,
    decode_post_op_attr,
    decode_post_op_fh,
    encode_fh,
    encode_post_op_attr,
    encode_post_op_fh,
)
from ._rpc import decode_reply
from ._xdr import Buffer, Packer, Unpacker


class Proc(enum.IntEnum):
    NULL = 0
    GETATTR = 1
    SETATTR = 2
    LOOKUP = 3
    ACCESS = 4
    READLINK = 5
    READ = 6
    WRITE = 7
    CREATE = 8
    MKDIR = 9
    SYMLINK = 10
    MKNOD = 11
    REMOVE = 12
    RMDIR = 13
    RENAME = 14
    LINK = 15
    READDIR = 16
    READDIRPLUS = 17
    FSSTAT = 18
    FSINFO = 19
    PATHCONF = 20
    COMMIT = 21


# -- results --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LookupResult:
    fh: bytes
    attributes: Fattr3 | None
    dir_attributes: Fattr3 | None

    def encode(self, p: Packer) -> None:
        encode_fh(p, self.fh)
        encode_post_op_attr(p, self.attributes)
        encode_post_op_attr(p, self.dir_attributes)

    @classmethod
    def decode(cls, u: Unpacker) -> LookupResult:
        return cls(decode_fh(u), decode_post_op_attr(u), decode_post_op_attr(u))


@dataclass(frozen=True, slots=True)
class AccessResult:
    attributes: Fattr3 | None
    access: int  # the Access3 bits granted

    def encode(self, p: Packer) -> None:
        encode_post_op_attr(p, self.attributes)
        p.uint32(self.access)

    @classmethod
    def decode(cls, u: Unpacker) -> AccessResult:
        return cls(decode_post_op_attr(u), u.uint32())


@dataclass(frozen=True, slots=True)
class ReadlinkResult:
    attributes: Fattr3 | None
    target: str

    def encode(self, p: Packer) -> None:
        encode_post_op_attr(p, self.attributes)
        p.string(self.target, MAX_PATH)

    @classmethod
    def decode(cls, u: Unpacker) -> ReadlinkResult:
        return cls(decode_post_op_attr(u), u.string(MAX_PATH))


def read3_payload_span(record: Buffer) -> tuple[int, int] | None:
    """Where a successful READ reply's data lies in its record: ``(start, length)``, read from
    the head of the record alone (the data need not have arrived).  None when ``record`` does
    not hold the whole head yet, or is not a successful READ reply (then it is decoded the
    usual way)."""
    try:
        u = decode_reply(record)
        if u.uint32() != NFSStat3.OK:
            return None
        decode_post_op_attr(u)
        u.uint32()  # count
        u.bool()  # eof
        length = u.uint32()
    except (RPCError, RemoteProtocolError):
        return None
    return u.position, length


@dataclass(frozen=True, slots=True)
class ReadResult:
    """``data`` is a read-only view into the reply record (no copy); ``bytes(data)`` if you
    keep it long."""

    attributes: Fattr3 | None
    count: int
    eof: bool
    data: memoryview

    def encode(self, p: Packer) -> None:
        encode_post_op_attr(p, self.attributes)
        p.uint32(self.count)
        p.bool(self.eof)
        p.opaque(self.data)

    @classmethod
    def decode(cls, u: Unpacker) -> ReadResult:
        attrs = decode_post_op_attr(u)
        count, eof = u.uint32(), u.bool()
        data = u.opaque_view()
        if count != len(data):
            raise RemoteProtocolError(f"READ count {count} but {len(data)} bytes of data")
        return cls(attrs, count, eof, data.toreadonly())


@dataclass(frozen=True, slots=True)
class WriteResult:
    """``committed`` is how stable the server made the data; ``verf`` is the 8-byte write
    verifier to compare with COMMIT's (a change means the server lost unstable data)."""

    wcc: WccData
    count: int
    committed: StableHow
    verf: bytes

    def encode(self, p: Packer) -> None:
        self.wcc.encode(p)
        p.uint32(self.count)
        p.uint32(self.committed)
        p.fixed_opaque(self.verf, WRITEVERFSIZE)

    @classmethod
    def decode(cls, u: Unpacker) -> WriteResult:
        wcc, count = WccData.decode(u), u.uint32()
        return cls(wcc, count, _enum(StableHow, u.uint32()), u.fixed_opaque(WRITEVERFSIZE))


@dataclass(frozen=True, slots=True)
class CreateResult:
    """CREATE, MKDIR, SYMLINK, MKNOD.  ``fh`` may be None (then LOOKUP the name)."""

    fh: bytes | None
    attributes: Fattr3 | None
    dir_wcc: WccData

    def encode(self, p: Packer) -> None:
        encode_post_op_fh(p, self.fh)
        encode_post_op_attr(p, self.attributes)
        self.dir_wcc.encode(p)

    @classmethod
    def decode(cls, u: Unpacker) -> CreateResult:
        return cls(decode_post_op_fh(u), decode_post_op_attr(u), WccData.decode(u))


@dataclass(frozen=True, slots=True)
class RenameResult:
    from_dir_wcc: WccData
    to_dir_wcc: WccData

    def encode(self, p: Packer) -> None:
        self.from_dir_wcc.encode(p)
        self.to_dir_wcc.encode(p)

    @classmethod
    def decode(cls, u: Unpacker) -> RenameResult:
        return cls(WccData.decode(u), WccData.decode(u))


@dataclass(frozen=True, slots=True)
class LinkResult:
    attributes: Fattr3 | None
    dir_wcc: WccData

    def encode(self, p: Packer) -> None:
        encode_post_op_attr(p, self.attributes)
        self.dir_wcc.encode(p)

    @classmethod
    def decode(cls, u: Unpacker) -> LinkResult:
        return cls(decode_post_op_attr(u), WccData.decode(u))


@dataclass(frozen=True, slots=True)
class DirEntry:
    fileid: int
    name: str
    cookie: int


@dataclass(frozen=True, slots=True)
class DirEntryPlus:
    fileid: int
    name: str
    cookie: int
    attributes: Fattr3 | None
    fh: bytes | None


# The smallest encoded entry: value_follows + fileid + empty name + cookie.
_MIN_ENTRY: Final = 4 + 8 + 4 + 8


@dataclass(frozen=True, slots=True)
class ReaddirResult:
    """One READDIR page: continue with the last entry's ``cookie`` and this ``cookieverf``
    until ``eof``."""

    dir_attributes: Fattr3 | None
    cookieverf: bytes
    entries: tuple[DirEntry, ...]
    eof: bool

    def encode(self, p: Packer) -> None:
        encode_post_op_attr(p, self.dir_attributes)
        p.fixed_opaque(self.cookieverf, COOKIEVERFSIZE)
        for e in self.entries:
            p.bool(True)
            p.uint64(e.fileid)
            p.string(e.name, MAX_NAME)
            p.uint64(e.cookie)
        p.bool(False)
        p.bool(self.eof)

    @classmethod
    def decode(cls, u: Unpacker) -> ReaddirResult:
        attrs, verf = decode_post_op_attr(u), u.fixed_opaque(COOKIEVERFSIZE)
        entries = []
        # Each link consumes at least _MIN_ENTRY bytes, so the loop is bounded by the record.
        while u.optional():
            entries.append(DirEntry(u.uint64(), u.string(MAX_NAME), u.uint64()))
        return cls(attrs, verf, tuple(entries), u.bool())


@dataclass(frozen=True, slots=True)
class ReaddirplusResult:
    dir_attributes: Fattr3 | None
    cookieverf: bytes
    entries: tuple[DirEntryPlus, ...]
    eof: bool

    def encode(self, p: Packer) -> None:
        encode_post_op_attr(p, self.dir_attributes)
        p.fixed_opaque(self.cookieverf, COOKIEVERFSIZE)
        for e in self.entries:
            p.bool(True)
            p.uint64(e.fileid)
            p.string(e.name, MAX_NAME)
            p.uint64(e.cookie)
            encode_post_op_attr(p, e.attributes)
            encode_post_op_fh(p, e.fh)
        p.bool(False)
        p.bool(self.eof)

    @classmethod
    def decode(cls, u: Unpacker) -> ReaddirplusResult:
        attrs, verf = decode_post_op_attr(u), u.fixed_opaque(COOKIEVERFSIZE)
        entries = []
        while u.optional():
            fileid, name, cookie = u.uint64(), u.string(MAX_NAME), u.uint64()
            entries.append(
                DirEntryPlus(fileid, name, cookie, decode_post_op_attr(u), decode_post_op_fh(u))
            )
        return cls(attrs, verf, tuple(entries), u.bool())


_FSSTAT = struct.Struct(">QQQQQQI")


@dataclass(frozen=True, slots=True)
class FSStatResult:
    attributes: Fattr3 | None
    tbytes: int
    fbytes: int
    abytes: int
    tfiles: int
    ffiles: int
    afiles: int
    invarsec: int

    def encode(self, p: Packer) -> None:
        encode_post_op_attr(p, self.attributes)
        p.raw(
            _FSSTAT.pack(
                self.tbytes,
                self.fbytes,
                self.abytes,
                self.tfiles,
                self.ffiles,
                self.afiles,
                self.invarsec,
            )
        )

    @classmethod
    def decode(cls, u: Unpacker) -> FSStatResult:
        return cls(decode_post_op_attr(u), *u.unpack(_FSSTAT))


_FSINFO = struct.Struct(">IIIIIIIQIII")


@dataclass(frozen=True, slots=True)
class FSInfoResult:
    attributes: Fattr3 | None
    rtmax: int
    rtpref: int
    rtmult: int
    wtmax: int
    wtpref: int
    wtmult: int
    dtpref: int
    maxfilesize: int
    time_delta: NFSTime3
    properties: int  # FSF3 bits

    def encode(self, p: Packer) -> None:
        encode_post_op_attr(p, self.attributes)
        p.raw(
            _FSINFO.pack(
                self.rtmax,
                self.rtpref,
                self.rtmult,
                self.wtmax,
                self.wtpref,
                self.wtmult,
                self.dtpref,
                self.maxfilesize,
                self.time_delta.seconds,
                self.time_delta.nseconds,
                self.properties,
            )
        )

    @classmethod
    def decode(cls, u: Unpacker) -> FSInfoResult:
        attrs = decode_post_op_attr(u)
        f = u.unpack(_FSINFO)
        return cls(
            attrs, f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], NFSTime3(f[8], f[9]), f[10]
        )


_PATHCONF = struct.Struct(">IIIIII")


@dataclass(frozen=True, slots=True)
class PathConfResult:
    attributes: Fattr3 | None
    linkmax: int
    name_max: int
    no_trunc: bool
    chown_restricted: bool
    case_insensitive: bool
    case_preserving: bool

    def encode(self, p: Packer) -> None:
        encode_post_op_attr(p, self.attributes)
        p.uint32(self.linkmax)
        p.uint32(self.name_max)
        for flag in (
            self.no_trunc,
            self.chown_restricted,
            self.case_insensitive,
            self.case_preserving,
        ):
            p.bool(flag)

    @classmethod
    def decode(cls, u: Unpacker) -> PathConfResult:
        attrs = decode_post_op_attr(u)
        linkmax, name_max = u.uint32(), u.uint32()
        return cls(attrs, linkmax, name_max, u.bool(), u.bool(), u.bool(), u.bool())


@dataclass(frozen=True, slots=True)
class CommitResult:
    wcc: WccData
    verf: bytes

    def encode(self, p: Packer) -> None:
        self.wcc.encode(p)
        p.fixed_opaque(self.verf, WRITEVERFSIZE)

    @classmethod
    def decode(cls, u: Unpacker) -> CommitResult:
        return cls(WccData.decode(u), u.fixed_opaque(WRITEVERFSIZE))


def _decode_none(u: Unpacker) -> None:
    return None


def _encode_none(value: None, p: Packer) -> None:
    pass


def _encode_fattr(value: Fattr3, p: Packer) -> None:
    value.encode(p)


def _encode_wcc(value: WccData, p: Packer) -> None:
    value.encode(p)


# proc -> (success decoder, success encoder).  GETATTR's success body is a bare fattr3;
# SETATTR/REMOVE/RMDIR's is a bare wcc_data.
_Codec = tuple[Callable[[Unpacker], Any], Callable[[Any, Packer], None]]
RESULT_CODECS: Final[dict[Proc, _Codec]] = {
    Proc.NULL: (_decode_none, _encode_none),
    Proc.GETATTR: (Fattr3.decode, _encode_fattr),
    Proc.SETATTR: (WccData.decode, _encode_wcc),
    Proc.LOOKUP: (LookupResult.decode, LookupResult.encode),
    Proc.ACCESS: (AccessResult.decode, AccessResult.encode),
    Proc.READLINK: (ReadlinkResult.decode, ReadlinkResult.encode),
    Proc.READ: (ReadResult.decode, ReadResult.encode),
    Proc.WRITE: (WriteResult.decode, WriteResult.encode),
    Proc.CREATE: (CreateResult.decode, CreateResult.encode),
    Proc.MKDIR: (CreateResult.decode, CreateResult.encode),
    Proc.SYMLINK: (CreateResult.decode, CreateResult.encode),
    Proc.MKNOD: (CreateResult.decode, CreateResult.encode),
    Proc.REMOVE: (WccData.decode, _encode_wcc),
    Proc.RMDIR: (WccData.decode, _encode_wcc),
    Proc.RENAME: (RenameResult.decode, RenameResult.encode),
    Proc.LINK: (LinkResult.decode, LinkResult.encode),
    Proc.READDIR: (ReaddirResult.decode, ReaddirResult.encode),
    Proc.READDIRPLUS: (ReaddirplusResult.decode, ReaddirplusResult.encode),
    Proc.FSSTAT: (FSStatResult.decode, FSStatResult.encode),
    Proc.FSINFO: (FSInfoResult.decode, FSInfoResult.encode),
    Proc.PATHCONF: (PathConfResult.decode, PathConfResult.encode),
    Proc.COMMIT: (CommitResult.decode, CommitResult.encode),
}


def decode_status(u: Unpacker) -> None:
    """Read an nfsstat3; raise ``NFSError`` unless it is NFS3_OK."""
    status = u.uint32()
    if status != NFSStat3.OK:
        raise NFSError(status)


def decode_result(proc: Proc, u: Unpacker) -> Any:
    """Status + success body for ``proc`` (NULL has no status)."""
    if proc != Proc.NULL:
        decode_status(u)
    return RESULT_CODECS[proc][0](u)


def encode_result(proc: Proc, value: Any, status: int = NFSStat3.OK) -> bytes:
    """Server side (tests, fakes): a result body.  A non-OK status is sent with an empty
    failure arm where the protocol allows (all post-op/wcc fields absent)."""
    p = Packer()
    if proc == Proc.NULL:
        return b""
    p.uint32(status)
    if status == NFSStat3.OK:
        RESULT_CODECS[proc][1](value, p)
    else:
        p.raw(_FAILURE_ARM.get(proc, b""))
    return p.get_buffer()


_NO_ATTR = b"\0\0\0\0"
_NO_WCC = _NO_ATTR * 2
# Absent attributes/wcc for every failure arm (and the fixed fields some carry).
_FAILURE_ARM: Final[dict[Proc, bytes]] = {
    Proc.SETATTR: _NO_WCC,
    Proc.LOOKUP: _NO_ATTR,
    Proc.ACCESS: _NO_ATTR,
    Proc.READLINK: _NO_ATTR,
    Proc.READ: _NO_ATTR,
    Proc.WRITE: _NO_WCC,
    Proc.CREATE: _NO_WCC,
    Proc.MKDIR: _NO_WCC,
    Proc.SYMLINK: _NO_WCC,
    Proc.MKNOD: _NO_WCC,
    Proc.REMOVE: _NO_WCC,
    Proc.RMDIR: _NO_WCC,
    Proc.RENAME: _NO_WCC * 2,
    Proc.LINK: _NO_ATTR + _NO_WCC,
    Proc.READDIR: _NO_ATTR,
    Proc.READDIRPLUS: _NO_ATTR,
    Proc.FSSTAT: _NO_ATTR,
    Proc.FSINFO: _NO_ATTR,
    Proc.PATHCONF: _NO_ATTR,
    Proc.COMMIT: _NO_WCC,
}
