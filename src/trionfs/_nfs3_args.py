"""NFSv3 (RFC 1813) procedure arguments: one frozen dataclass per call shape, each with
``encode`` (client) and ``decode`` (tests, fake servers)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ._errors import LocalProtocolError, RemoteProtocolError
from ._nfs3_types import (
    COOKIEVERFSIZE,
    CREATEVERFSIZE,
    MAX_NAME,
    MAX_PATH,
    CreateMode,
    FType3,
    NFSTime3,
    Sattr3,
    StableHow,
    decode_fh,
    encode_fh,
)
from ._xdr import Buffer, Packer, Unpacker, fsencode, padding

ZERO_VERF: Final = bytes(8)
NO_ATTRS: Final = Sattr3()


def _name(p: Packer, name: str | bytes) -> None:
    p.opaque(fsencode(name), MAX_NAME)


def _check_verf(verf: bytes, size: int, what: str) -> bytes:
    if len(verf) != size:
        raise LocalProtocolError(f"{what} must be {size} bytes")
    return verf


def _enum(kind: type[Any], value: int) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise RemoteProtocolError(f"unknown {kind.__name__} value {value}") from None


@dataclass(frozen=True, slots=True)
class DirOpArgs:
    """diropargs3: a directory handle and a name (LOOKUP, REMOVE, RMDIR)."""

    dir: bytes
    name: str | bytes

    def encode(self, p: Packer) -> None:
        encode_fh(p, self.dir)
        _name(p, self.name)

    @classmethod
    def decode(cls, u: Unpacker) -> DirOpArgs:
        return cls(decode_fh(u), u.string(MAX_NAME))


@dataclass(frozen=True, slots=True)
class SetattrArgs:
    fh: bytes
    attrs: Sattr3
    guard: NFSTime3 | None = None  # ctime the object must still have

    def encode(self, p: Packer) -> None:
        encode_fh(p, self.fh)
        self.attrs.encode(p)
        p.bool(self.guard is not None)
        if self.guard is not None:
            self.guard.encode(p)

    @classmethod
    def decode(cls, u: Unpacker) -> SetattrArgs:
        fh, attrs = decode_fh(u), Sattr3.decode(u)
        return cls(fh, attrs, NFSTime3.decode(u) if u.optional() else None)


@dataclass(frozen=True, slots=True)
class AccessArgs:
    fh: bytes
    access: int

    def encode(self, p: Packer) -> None:
        encode_fh(p, self.fh)
        p.uint32(self.access)

    @classmethod
    def decode(cls, u: Unpacker) -> AccessArgs:
        return cls(decode_fh(u), u.uint32())


@dataclass(frozen=True, slots=True)
class ReadArgs:
    fh: bytes
    offset: int
    count: int

    def encode(self, p: Packer) -> None:
        encode_fh(p, self.fh)
        p.uint64(self.offset)
        p.uint32(self.count)

    @classmethod
    def decode(cls, u: Unpacker) -> ReadArgs:
        return cls(decode_fh(u), u.uint64(), u.uint32())


def encode_write_head(
    p: Packer, fh: bytes, offset: int, data: Sequence[Buffer], stable: StableHow
) -> list[Buffer]:
    """WRITE arguments up to the data, into ``p``; the data is given as pieces (sent after
    the packer's bytes, uncopied) and the returned list is those pieces plus padding."""
    n = sum(memoryview(piece).nbytes for piece in data)
    encode_fh(p, fh)
    p.uint64(offset)
    p.uint32(n)
    p.uint32(stable)
    p.uint32(n)
    return [*data, padding(n)] if n & 3 else list(data)


@dataclass(frozen=True, slots=True)
class WriteArgs:
    fh: bytes
    offset: int
    data: Buffer
    stable: StableHow = StableHow.UNSTABLE

    def encode_pieces(self, p: Packer) -> list[Buffer]:
        """Encode into ``p`` everything before the data; return the pieces that follow the
        packer's bytes on the wire (the data itself, uncopied, and its padding)."""
        return encode_write_head(p, self.fh, self.offset, [self.data], self.stable)

    def encode(self, p: Packer) -> None:
        for piece in self.encode_pieces(p):
            p.raw(piece)

    @classmethod
    def decode(cls, u: Unpacker) -> WriteArgs:
        fh, offset, count, stable = decode_fh(u), u.uint64(), u.uint32(), u.uint32()
        data = u.opaque_view()
        if count != len(data):
            raise RemoteProtocolError("WRITE count disagrees with the data length")
        return cls(fh, offset, data, _enum(StableHow, stable))


@dataclass(frozen=True, slots=True)
class CreateArgs:
    dir: bytes
    name: str | bytes
    mode: CreateMode = CreateMode.UNCHECKED
    attrs: Sattr3 = NO_ATTRS
    verf: bytes = ZERO_VERF  # EXCLUSIVE only

    def encode(self, p: Packer) -> None:
        encode_fh(p, self.dir)
        _name(p, self.name)
        p.uint32(self.mode)
        if self.mode == CreateMode.EXCLUSIVE:
            p.fixed_opaque(_check_verf(self.verf, CREATEVERFSIZE, "createverf3"), 8)
        else:
            self.attrs.encode(p)

    @classmethod
    def decode(cls, u: Unpacker) -> CreateArgs:
        d, name, mode = decode_fh(u), u.string(MAX_NAME), _enum(CreateMode, u.uint32())
        if mode == CreateMode.EXCLUSIVE:
            return cls(d, name, mode, verf=u.fixed_opaque(CREATEVERFSIZE))
        return cls(d, name, mode, Sattr3.decode(u))


@dataclass(frozen=True, slots=True)
class MkdirArgs:
    dir: bytes
    name: str | bytes
    attrs: Sattr3 = NO_ATTRS

    def encode(self, p: Packer) -> None:
        encode_fh(p, self.dir)
        _name(p, self.name)
        self.attrs.encode(p)

    @classmethod
    def decode(cls, u: Unpacker) -> MkdirArgs:
        return cls(decode_fh(u), u.string(MAX_NAME), Sattr3.decode(u))


@dataclass(frozen=True, slots=True)
class SymlinkArgs:
    dir: bytes
    name: str | bytes
    target: str | bytes
    attrs: Sattr3 = NO_ATTRS

    def encode(self, p: Packer) -> None:
        encode_fh(p, self.dir)
        _name(p, self.name)
        self.attrs.encode(p)
        p.opaque(fsencode(self.target), MAX_PATH)

    @classmethod
    def decode(cls, u: Unpacker) -> SymlinkArgs:
        d, name, attrs = decode_fh(u), u.string(MAX_NAME), Sattr3.decode(u)
        return cls(d, name, u.string(MAX_PATH), attrs)


@dataclass(frozen=True, slots=True)
class MknodArgs:
    dir: bytes
    name: str | bytes
    type: FType3
    attrs: Sattr3 = NO_ATTRS
    rdev: tuple[int, int] = (0, 0)  # CHR/BLK only

    def encode(self, p: Packer) -> None:
        encode_fh(p, self.dir)
        _name(p, self.name)
        p.uint32(self.type)
        if self.type in (FType3.CHR, FType3.BLK):
            self.attrs.encode(p)
            p.uint32(self.rdev[0])
            p.uint32(self.rdev[1])
        elif self.type in (FType3.SOCK, FType3.FIFO):
            self.attrs.encode(p)

    @classmethod
    def decode(cls, u: Unpacker) -> MknodArgs:
        d, name, t = decode_fh(u), u.string(MAX_NAME), _enum(FType3, u.uint32())
        if t in (FType3.CHR, FType3.BLK):
            attrs = Sattr3.decode(u)
            return cls(d, name, t, attrs, (u.uint32(), u.uint32()))
        if t in (FType3.SOCK, FType3.FIFO):
            return cls(d, name, t, Sattr3.decode(u))
        return cls(d, name, t)


@dataclass(frozen=True, slots=True)
class RenameArgs:
    from_dir: bytes
    from_name: str | bytes
    to_dir: bytes
    to_name: str | bytes

    def encode(self, p: Packer) -> None:
        encode_fh(p, self.from_dir)
        _name(p, self.from_name)
        encode_fh(p, self.to_dir)
        _name(p, self.to_name)

    @classmethod
    def decode(cls, u: Unpacker) -> RenameArgs:
        return cls(decode_fh(u), u.string(MAX_NAME), decode_fh(u), u.string(MAX_NAME))


@dataclass(frozen=True, slots=True)
class LinkArgs:
    fh: bytes
    dir: bytes
    name: str | bytes

    def encode(self, p: Packer) -> None:
        encode_fh(p, self.fh)
        encode_fh(p, self.dir)
        _name(p, self.name)

    @classmethod
    def decode(cls, u: Unpacker) -> LinkArgs:
        return cls(decode_fh(u), decode_fh(u), u.string(MAX_NAME))


@dataclass(frozen=True, slots=True)
class ReaddirArgs:
    dir: bytes
    cookie: int = 0
    cookieverf: bytes = ZERO_VERF
    count: int = 65536

    def encode(self, p: Packer) -> None:
        encode_fh(p, self.dir)
        p.uint64(self.cookie)
        p.fixed_opaque(_check_verf(self.cookieverf, COOKIEVERFSIZE, "cookieverf3"), 8)
        p.uint32(self.count)

    @classmethod
    def decode(cls, u: Unpacker) -> ReaddirArgs:
        return cls(decode_fh(u), u.uint64(), u.fixed_opaque(8), u.uint32())


@dataclass(frozen=True, slots=True)
class ReaddirplusArgs:
    dir: bytes
    cookie: int = 0
    cookieverf: bytes = ZERO_VERF
    dircount: int = 16384
    maxcount: int = 65536

    def encode(self, p: Packer) -> None:
        encode_fh(p, self.dir)
        p.uint64(self.cookie)
        p.fixed_opaque(_check_verf(self.cookieverf, COOKIEVERFSIZE, "cookieverf3"), 8)
        p.uint32(self.dircount)
        p.uint32(self.maxcount)

    @classmethod
    def decode(cls, u: Unpacker) -> ReaddirplusArgs:
        return cls(decode_fh(u), u.uint64(), u.fixed_opaque(8), u.uint32(), u.uint32())


@dataclass(frozen=True, slots=True)
class CommitArgs:
    fh: bytes
    offset: int = 0
    count: int = 0  # 0 = to the end of the file

    def encode(self, p: Packer) -> None:
        encode_fh(p, self.fh)
        p.uint64(self.offset)
        p.uint32(self.count)

    @classmethod
    def decode(cls, u: Unpacker) -> CommitArgs:
        return cls(decode_fh(u), u.uint64(), u.uint32())
