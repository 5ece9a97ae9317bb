"""NFSv3 (RFC 1813) data types: enums, attributes and their XDR codecs.

File handles are plain ``bytes`` (at most 64).  Names are ``str`` (decoded like ``os.fsdecode``,
so undecodable bytes survive a round trip) and accepted as ``str`` or ``bytes``.
"""

from __future__ import annotations

import enum
import os
import stat
import struct
from dataclasses import dataclass
from typing import Final

from ._errors import RemoteProtocolError
from ._xdr import Packer, Unpacker

NFS_PROGRAM: Final = 100003
NFS_V3: Final = 3
FHSIZE3: Final = 64
COOKIEVERFSIZE: Final = 8
CREATEVERFSIZE: Final = 8
WRITEVERFSIZE: Final = 8
# Bounds on names/paths the server sends us (the protocol has none; these are generous).
MAX_NAME: Final = 4096
MAX_PATH: Final = 65536


class FType3(enum.IntEnum):
    REG = 1
    DIR = 2
    BLK = 3
    CHR = 4
    LNK = 5
    SOCK = 6
    FIFO = 7


_S_IFMT: Final = {
    FType3.REG: stat.S_IFREG,
    FType3.DIR: stat.S_IFDIR,
    FType3.BLK: stat.S_IFBLK,
    FType3.CHR: stat.S_IFCHR,
    FType3.LNK: stat.S_IFLNK,
    FType3.SOCK: stat.S_IFSOCK,
    FType3.FIFO: stat.S_IFIFO,
}


class StableHow(enum.IntEnum):
    UNSTABLE = 0
    DATA_SYNC = 1
    FILE_SYNC = 2


class CreateMode(enum.IntEnum):
    UNCHECKED = 0
    GUARDED = 1
    EXCLUSIVE = 2


class TimeHow(enum.IntEnum):
    DONT_CHANGE = 0
    SET_TO_SERVER_TIME = 1
    SET_TO_CLIENT_TIME = 2


SERVER_TIME: Final = TimeHow.SET_TO_SERVER_TIME
"""Pass as ``Sattr3.atime``/``mtime`` to have the server stamp its own clock."""


class Access3(enum.IntFlag):
    READ = 0x0001
    LOOKUP = 0x0002
    MODIFY = 0x0004
    EXTEND = 0x0008
    DELETE = 0x0010
    EXECUTE = 0x0020


class FSF3(enum.IntFlag):
    """FSINFO ``properties`` bits."""

    LINK = 0x0001
    SYMLINK = 0x0002
    HOMOGENEOUS = 0x0008
    CANSETTIME = 0x0010


@dataclass(frozen=True, slots=True)
class NFSTime3:
    seconds: int
    nseconds: int = 0

    @property
    def ns(self) -> int:
        return self.seconds * 1_000_000_000 + self.nseconds

    @classmethod
    def from_ns(cls, ns: int) -> NFSTime3:
        seconds, nseconds = divmod(ns, 1_000_000_000)
        return cls(seconds, nseconds)

    def encode(self, p: Packer) -> None:
        p.uint32(self.seconds)
        p.uint32(self.nseconds)

    @classmethod
    def decode(cls, u: Unpacker) -> NFSTime3:
        return cls(u.uint32(), u.uint32())


_FATTR3 = struct.Struct(">IIIIIQQIIQQIIIIII")


@dataclass(frozen=True, slots=True)
class Fattr3:
    """File attributes.  ``mode`` holds only the permission bits (07777), as on the wire;
    ``st_mode`` adds the file type bits."""

    type: FType3
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    used: int
    rdev: tuple[int, int]
    fsid: int
    fileid: int
    atime: NFSTime3
    mtime: NFSTime3
    ctime: NFSTime3

    @property
    def st_mode(self) -> int:
        return _S_IFMT[self.type] | (self.mode & 0o7777)

    def to_stat_result(self, blksize: int = 4096) -> os.stat_result:
        return fattr3_to_stat(self, blksize)

    def encode(self, p: Packer) -> None:
        p.raw(
            _FATTR3.pack(
                self.type,
                self.mode,
                self.nlink,
                self.uid,
                self.gid,
                self.size,
                self.used,
                self.rdev[0],
                self.rdev[1],
                self.fsid,
                self.fileid,
                self.atime.seconds,
                self.atime.nseconds,
                self.mtime.seconds,
                self.mtime.nseconds,
                self.ctime.seconds,
                self.ctime.nseconds,
            )
        )

    @classmethod
    def decode(cls, u: Unpacker) -> Fattr3:
        f = u.unpack(_FATTR3)
        try:
            ftype = FType3(f[0])
        except ValueError:
            raise RemoteProtocolError(f"unknown ftype3 {f[0]}") from None
        return cls(
            ftype,
            f[1],
            f[2],
            f[3],
            f[4],
            f[5],
            f[6],
            (f[7], f[8]),
            f[9],
            f[10],
            NFSTime3(f[11], f[12]),
            NFSTime3(f[13], f[14]),
            NFSTime3(f[15], f[16]),
        )


def fattr3_to_stat(attrs: Fattr3, blksize: int = 4096) -> os.stat_result:
    """An ``os.stat_result`` as ``os.stat`` would give for the file: ``st_dev`` is the fsid,
    ``st_blocks`` counts 512-byte units of ``used``, ``st_rdev`` is ``os.makedev(*rdev)``."""
    a, m, c = attrs.atime, attrs.mtime, attrs.ctime
    return os.stat_result(
        (
            attrs.st_mode,
            attrs.fileid,
            attrs.fsid,
            attrs.nlink,
            attrs.uid,
            attrs.gid,
            attrs.size,
            a.seconds,
            m.seconds,
            c.seconds,
            a.seconds + a.nseconds / 1e9,
            m.seconds + m.nseconds / 1e9,
            c.seconds + c.nseconds / 1e9,
            a.ns,
            m.ns,
            c.ns,
            blksize,
            (attrs.used + 511) // 512,
            os.makedev(attrs.rdev[0] & 0xFFFFFFFF, attrs.rdev[1] & 0xFFFFFFFF),
        )
    )


def decode_post_op_attr(u: Unpacker) -> Fattr3 | None:
    return Fattr3.decode(u) if u.optional() else None


def encode_post_op_attr(p: Packer, attrs: Fattr3 | None) -> None:
    p.bool(attrs is not None)
    if attrs is not None:
        attrs.encode(p)


_WCC_ATTR = struct.Struct(">QIIII")


@dataclass(frozen=True, slots=True)
class WccAttr:
    """Pre-operation attributes (size, mtime, ctime)."""

    size: int
    mtime: NFSTime3
    ctime: NFSTime3

    def encode(self, p: Packer) -> None:
        p.raw(
            _WCC_ATTR.pack(
                self.size,
                self.mtime.seconds,
                self.mtime.nseconds,
                self.ctime.seconds,
                self.ctime.nseconds,
            )
        )

    @classmethod
    def decode(cls, u: Unpacker) -> WccAttr:
        size, ms, mn, cs, cn = u.unpack(_WCC_ATTR)
        return cls(size, NFSTime3(ms, mn), NFSTime3(cs, cn))


@dataclass(frozen=True, slots=True)
class WccData:
    """Weak cache consistency data: attributes before (subset) and after the operation."""

    before: WccAttr | None = None
    after: Fattr3 | None = None

    def encode(self, p: Packer) -> None:
        p.bool(self.before is not None)
        if self.before is not None:
            self.before.encode(p)
        encode_post_op_attr(p, self.after)

    @classmethod
    def decode(cls, u: Unpacker) -> WccData:
        before = WccAttr.decode(u) if u.optional() else None
        return cls(before, decode_post_op_attr(u))


SetTime = NFSTime3 | TimeHow | None


@dataclass(frozen=True, slots=True)
class Sattr3:
    """Attributes to set; ``None`` leaves a field unchanged.  ``atime``/``mtime`` take an
    ``NFSTime3`` (client time) or ``SERVER_TIME``."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime: SetTime = None
    mtime: SetTime = None

    def encode(self, p: Packer) -> None:
        for value in (self.mode, self.uid, self.gid):
            p.bool(value is not None)
            if value is not None:
                p.uint32(value)
        p.bool(self.size is not None)
        if self.size is not None:
            p.uint64(self.size)
        for t in (self.atime, self.mtime):
            if t is None or t == TimeHow.DONT_CHANGE:
                p.uint32(TimeHow.DONT_CHANGE)
            elif isinstance(t, NFSTime3):
                p.uint32(TimeHow.SET_TO_CLIENT_TIME)
                t.encode(p)
            else:
                p.uint32(TimeHow.SET_TO_SERVER_TIME)

    @classmethod
    def decode(cls, u: Unpacker) -> Sattr3:
        mode = u.uint32() if u.optional() else None
        uid = u.uint32() if u.optional() else None
        gid = u.uint32() if u.optional() else None
        size = u.uint64() if u.optional() else None
        times: list[SetTime] = []
        for _ in range(2):
            how = u.uint32()
            if how == TimeHow.DONT_CHANGE:
                times.append(None)
            elif how == TimeHow.SET_TO_SERVER_TIME:
                times.append(SERVER_TIME)
            elif how == TimeHow.SET_TO_CLIENT_TIME:
                times.append(NFSTime3.decode(u))
            else:
                raise RemoteProtocolError(f"unknown time_how {how}")
        return cls(mode, uid, gid, size, times[0], times[1])


def encode_fh(p: Packer, fh: bytes) -> None:
    p.opaque(fh, FHSIZE3)


def decode_fh(u: Unpacker) -> bytes:
    return u.opaque(FHSIZE3)


def decode_post_op_fh(u: Unpacker) -> bytes | None:
    return decode_fh(u) if u.optional() else None


def encode_post_op_fh(p: Packer, fh: bytes | None) -> None:
    p.bool(fh is not None)
    if fh is not None:
        encode_fh(p, fh)
