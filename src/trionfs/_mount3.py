"""MOUNT v3 (RFC 1813 appendix I) codecs, sans-I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from ._errors import MountError, MountStat3
from ._xdr import Packer, Unpacker

MOUNT_PROGRAM: Final = 100005
MOUNT_V3: Final = 3
MNTPATHLEN: Final = 1024
MNTNAMLEN: Final = 255
FHSIZE3: Final = 64
# A server lists at most this many auth flavors / list items per reply we accept; the lists
# are also bounded by the record itself.
_MAX_FLAVORS: Final = 64


class MountProc(enum.IntEnum):
    NULL = 0
    MNT = 1
    DUMP = 2
    UMNT = 3
    UMNTALL = 4
    EXPORT = 5


@dataclass(frozen=True, slots=True)
class MountResult:
    """MNT succeeded: the root file handle of the export and the auth flavors it accepts
    (1 = AUTH_SYS, 0 = AUTH_NONE, 390003.. = Kerberos)."""

    fh: bytes
    auth_flavors: tuple[int, ...]

    def encode(self, p: Packer) -> None:
        p.opaque(self.fh, FHSIZE3)
        p.uint32(len(self.auth_flavors))
        for f in self.auth_flavors:
            p.uint32(f)

    @classmethod
    def decode(cls, u: Unpacker) -> MountResult:
        fh = u.opaque(FHSIZE3)
        n = u.count(4, _MAX_FLAVORS)
        return cls(fh, tuple(u.uint32() for _ in range(n)))


@dataclass(frozen=True, slots=True)
class MountEntry:
    """One DUMP entry: a client host and the directory it mounted."""

    hostname: str
    directory: str


@dataclass(frozen=True, slots=True)
class ExportEntry:
    """One EXPORT entry: a directory and the groups (host names/netgroups) allowed to mount
    it (empty = everyone)."""

    directory: str
    groups: tuple[str, ...]


def encode_dirpath(p: Packer, path: str | bytes) -> None:
    p.string(path, MNTPATHLEN)


def decode_mnt(u: Unpacker) -> MountResult:
    status = u.uint32()
    if status != MountStat3.OK:
        raise MountError(status)
    return MountResult.decode(u)


def encode_mnt(p: Packer, result: MountResult | MountStat3) -> None:
    if isinstance(result, MountResult):
        p.uint32(MountStat3.OK)
        result.encode(p)
    else:
        p.uint32(result)


def decode_mountlist(u: Unpacker) -> tuple[MountEntry, ...]:
    out = []
    # Every link costs at least 12 bytes of the record, so the loop is bounded by it.
    while u.optional():
        out.append(MountEntry(u.string(MNTNAMLEN), u.string(MNTPATHLEN)))
    return tuple(out)


def encode_mountlist(p: Packer, entries: tuple[MountEntry, ...]) -> None:
    for e in entries:
        p.bool(True)
        p.string(e.hostname, MNTNAMLEN)
        p.string(e.directory, MNTPATHLEN)
    p.bool(False)


def decode_exports(u: Unpacker) -> tuple[ExportEntry, ...]:
    out = []
    while u.optional():
        directory = u.string(MNTPATHLEN)
        groups = []
        while u.optional():
            groups.append(u.string(MNTNAMLEN))
        out.append(ExportEntry(directory, tuple(groups)))
    return tuple(out)


def encode_exports(p: Packer, entries: tuple[ExportEntry, ...]) -> None:
    for e in entries:
        p.bool(True)
        p.string(e.directory, MNTPATHLEN)
        for g in e.groups:
            p.bool(True)
            p.string(g, MNTNAMLEN)
        p.bool(False)
    p.bool(False)
