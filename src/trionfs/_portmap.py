"""Portmapper v2 (RFC 1833 section 3) and rpcbind v3/v4 GETADDR codecs, sans-I/O."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import Final

from ._errors import LocalProtocolError, RemoteProtocolError
from ._xdr import Packer, Unpacker

PMAP_PROGRAM: Final = 100000
PMAP_PORT: Final = 111
PMAP_V2: Final = 2
RPCBIND_V3: Final = 3
RPCBIND_V4: Final = 4
IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17
# rpcbind strings (netid, universal address, owner) are short; bound them generously.
MAX_RPCB_STRING: Final = 1024


class PmapProc(enum.IntEnum):
    NULL = 0
    SET = 1
    UNSET = 2
    GETPORT = 3
    DUMP = 4
    CALLIT = 5


class RpcbProc(enum.IntEnum):
    """rpcbind v3/v4 procedure numbers we use."""

    NULL = 0
    SET = 1
    UNSET = 2
    GETADDR = 3
    DUMP = 4


@dataclass(frozen=True, slots=True)
class Mapping:
    """A portmapper registration: ``prog``/``vers`` over ``prot`` (6 = TCP) at ``port``."""

    prog: int
    vers: int
    prot: int
    port: int

    def encode(self, p: Packer) -> None:
        p.uint32(self.prog)
        p.uint32(self.vers)
        p.uint32(self.prot)
        p.uint32(self.port)

    @classmethod
    def decode(cls, u: Unpacker) -> Mapping:
        return cls(u.uint32(), u.uint32(), u.uint32(), u.uint32())


def decode_getport(u: Unpacker) -> int:
    port = u.uint32()
    if port > 0xFFFF:
        raise RemoteProtocolError(f"GETPORT returned port {port}")
    return port


def decode_pmaplist(u: Unpacker) -> tuple[Mapping, ...]:
    out = []
    while u.optional():
        out.append(Mapping.decode(u))
    return tuple(out)


def encode_pmaplist(p: Packer, mappings: tuple[Mapping, ...]) -> None:
    for m in mappings:
        p.bool(True)
        m.encode(p)
    p.bool(False)


@dataclass(frozen=True, slots=True)
class Rpcb:
    """rpcbind v3/v4 ``rpcb``: GETADDR arguments (``addr``/``owner`` are ignored there)."""

    prog: int
    vers: int
    netid: str = "tcp"
    addr: str = ""
    owner: str = ""

    def encode(self, p: Packer) -> None:
        p.uint32(self.prog)
        p.uint32(self.vers)
        p.string(self.netid, MAX_RPCB_STRING)
        p.string(self.addr, MAX_RPCB_STRING)
        p.string(self.owner, MAX_RPCB_STRING)

    @classmethod
    def decode(cls, u: Unpacker) -> Rpcb:
        return cls(
            u.uint32(),
            u.uint32(),
            u.string(MAX_RPCB_STRING),
            u.string(MAX_RPCB_STRING),
            u.string(MAX_RPCB_STRING),
        )


def decode_uaddr(u: Unpacker) -> str:
    return u.string(MAX_RPCB_STRING)


def parse_universal_address(uaddr: str) -> tuple[str, int]:
    """``"127.0.0.1.8.1"`` -> ``("127.0.0.1", 2049)`` (RFC 5665 section 5.2.3.3; IPv6 too).
    An empty string (not registered) raises ``RemoteProtocolError``."""
    head, _, p2 = uaddr.rpartition(".")
    host, _, p1 = head.rpartition(".")
    try:
        hi, lo = int(p1), int(p2)
        ipaddress.ip_address(host)
    except ValueError:
        raise RemoteProtocolError(f"not a universal address: {uaddr!r}") from None
    if not (0 <= hi <= 255 and 0 <= lo <= 255):
        raise RemoteProtocolError(f"not a universal address: {uaddr!r}")
    return host, hi * 256 + lo


def format_universal_address(host: str, port: int) -> str:
    if not 0 <= port <= 0xFFFF:
        raise LocalProtocolError(f"port {port} out of range")
    return f"{ipaddress.ip_address(host)}.{port >> 8}.{port & 0xFF}"
