"""ONC-RPC v2 (RFC 5531), client side, sans-I/O: call headers, credentials, reply decoding,
and record marking over TCP (section 11).

Nothing here does I/O.  ``RecordReceiver`` turns received bytes into whole records; it can also
hand out the exact slice of the record still being assembled (``direct_buffer``) so the shell
can ``recv_into`` a large payload in place: a 64 MiB READ reply is copied once, by the kernel.
"""

from __future__ import annotations

import collections
import os
import random
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from ._bufpool import BufferPool
from ._errors import (
    AcceptStat,
    AuthError,
    AuthStat,
    GarbageArgsError,
    LocalProtocolError,
    ProcUnavailError,
    ProgMismatchError,
    ProgUnavailError,
    RejectStat,
    RemoteProtocolError,
    RPCError,
    RPCMismatchError,
    SystemErrError,
)
from ._xdr import Buffer, Packer, Unpacker

RPC_VERSION: Final = 2
CALL: Final = 0
REPLY: Final = 1
MSG_ACCEPTED: Final = 0
MSG_DENIED: Final = 1

AUTH_NONE: Final = 0
AUTH_SYS: Final = 1

MAX_AUTH_BYTES: Final = 400
MAX_MACHINE_NAME: Final = 255
MAX_AUX_GIDS: Final = 16

LAST_FRAGMENT: Final = 0x80000000
MAX_FRAGMENT: Final = 0x7FFFFFFF
# Large enough for a 64 MiB READ (ganesha's rtmax) plus headers and attributes.
DEFAULT_MAX_RECORD: Final = 64 * 1024 * 1024 + 64 * 1024

# Records at least this large are received into pooled buffers.
_POOL_THRESHOLD: Final = 256 * 1024

_U32 = struct.Struct(">I")
_CALL_HEAD = struct.Struct(">IIIIII")
_REPLY_HEAD = struct.Struct(">II")
# xid, REPLY, MSG_ACCEPTED, verifier flavor, verifier length (0), accept_stat
_ACCEPTED_OK = struct.Struct(">IIIIII")


# -- credentials ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthNone:
    """AUTH_NONE: no credentials."""

    def encode(self) -> bytes:
        """``opaque_auth`` on the wire: flavor + empty body."""
        return b"\0\0\0\0\0\0\0\0"


@dataclass(frozen=True, slots=True)
class AuthSys:
    """AUTH_SYS (a.k.a. AUTH_UNIX) credentials.  ``gids`` are the auxiliary groups (at most 16
    on the wire)."""

    uid: int = 0
    gid: int = 0
    gids: tuple[int, ...] = ()
    machinename: str = "trionfs"
    stamp: int = 0

    def __post_init__(self) -> None:
        if len(self.gids) > MAX_AUX_GIDS:
            raise ValueError(f"AUTH_SYS carries at most {MAX_AUX_GIDS} auxiliary gids")
        if len(self.machinename.encode()) > MAX_MACHINE_NAME:
            raise ValueError(f"machine name longer than {MAX_MACHINE_NAME} bytes")
        for value in (self.uid, self.gid, self.stamp, *self.gids):
            if not 0 <= value <= 0xFFFFFFFF:
                raise ValueError(f"{value} does not fit an AUTH_SYS 32-bit field")

    @classmethod
    def current(cls) -> AuthSys:
        """Credentials of this process (uid, gid, first 16 supplementary groups, host name)."""
        gid = os.getgid()
        gids = tuple(g for g in os.getgroups() if g != gid)[:MAX_AUX_GIDS]
        name = socket.gethostname().encode()[:MAX_MACHINE_NAME].decode(errors="ignore")
        return cls(uid=os.getuid(), gid=gid, gids=gids, machinename=name, stamp=0)

    def encode(self) -> bytes:
        body = Packer()
        body.uint32(self.stamp)
        body.string(self.machinename.encode(), MAX_MACHINE_NAME)
        body.uint32(self.uid)
        body.uint32(self.gid)
        body.uint32(len(self.gids))
        for g in self.gids:
            body.uint32(g)
        out = Packer()
        out.uint32(AUTH_SYS)
        out.opaque(body.view(), MAX_AUTH_BYTES)
        return out.get_buffer()

    @classmethod
    def decode(cls, body: Buffer) -> AuthSys:
        """Parse an ``authsys_parms`` body (used by tests and the fake server)."""
        u = Unpacker(body)
        stamp = u.uint32()
        name = u.opaque(MAX_MACHINE_NAME).decode("utf-8", "replace")
        uid = u.uint32()
        gid = u.uint32()
        gids = tuple(u.uint32() for _ in range(u.count(4, MAX_AUX_GIDS)))
        u.done()
        return cls(uid=uid, gid=gid, gids=gids, machinename=name, stamp=stamp)


Auth = AuthNone | AuthSys


# -- calls ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallEncoder:
    """Encodes call headers for one (program, version, credentials) triple; the constant
    credential/verifier bytes are built once."""

    prog: int
    vers: int
    auth: Auth = field(default_factory=AuthNone)
    _tail: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tail", self.auth.encode() + AuthNone().encode())

    def header(self, xid: int, proc: int) -> bytes:
        """The call header up to (not including) the procedure arguments."""
        try:
            head = _CALL_HEAD.pack(xid, CALL, RPC_VERSION, self.prog, self.vers, proc)
        except struct.error as exc:
            raise LocalProtocolError(f"bad call header field: {exc}") from exc
        return head + self._tail


class XidAllocator:
    """Transaction ids: a random start (so a restarted client does not collide with its
    predecessor in the server's duplicate request cache), then sequential mod 2**32."""

    __slots__ = ("_next",)

    def __init__(self, start: int | None = None) -> None:
        self._next = random.getrandbits(32) if start is None else start & 0xFFFFFFFF

    def allocate(self) -> int:
        xid = self._next
        self._next = (xid + 1) & 0xFFFFFFFF
        return xid


# -- replies --------------------------------------------------------------------------------


def peek_xid(record: Buffer) -> int:
    """The xid of a reply record, checking only that it is a REPLY (the cheap part that the
    reader task needs for routing; ``decode_reply`` does the rest in the caller's task)."""
    try:
        xid, mtype = _REPLY_HEAD.unpack_from(record, 0)
    except struct.error:
        raise RemoteProtocolError("record too short for an RPC reply header") from None
    if mtype != REPLY:
        raise RemoteProtocolError(f"expected an RPC REPLY, got message type {mtype}")
    return int(xid)


def decode_reply(record: Buffer) -> Unpacker:
    """Decode a reply header; return an ``Unpacker`` positioned at the procedure results.
    A refused call raises the matching ``RPCError``; malformed bytes ``RemoteProtocolError``."""
    # Fast path, one unpack: an accepted, successful reply with an empty verifier (what
    # servers send to AUTH_NONE and AUTH_SYS callers).
    if len(record) >= _ACCEPTED_OK.size:
        _, mtype, stat, _, vlen, accept = _ACCEPTED_OK.unpack_from(record, 0)
        if mtype == REPLY and stat == MSG_ACCEPTED and vlen == 0 and accept == 0:
            return Unpacker(record, _ACCEPTED_OK.size)
    u = Unpacker(record)
    u.uint32()  # xid, already routed
    if u.uint32() != REPLY:
        raise RemoteProtocolError("not an RPC REPLY")
    stat = u.uint32()
    if stat == MSG_ACCEPTED:
        u.uint32()  # verifier flavor
        u.opaque_view(MAX_AUTH_BYTES)
        accept = u.uint32()
        if accept == AcceptStat.SUCCESS:
            return u
        raise _accept_error(accept, u)
    if stat == MSG_DENIED:
        reject = u.uint32()
        if reject == RejectStat.RPC_MISMATCH:
            raise RPCMismatchError(u.uint32(), u.uint32())
        if reject == RejectStat.AUTH_ERROR:
            value = u.uint32()
            try:
                raise AuthError(AuthStat(value))
            except ValueError:
                raise AuthError(value) from None
        raise RemoteProtocolError(f"unknown reject_stat {reject}")
    raise RemoteProtocolError(f"unknown reply_stat {stat}")


def _accept_error(accept: int, u: Unpacker) -> RPCError | RemoteProtocolError:
    if accept == AcceptStat.PROG_UNAVAIL:
        return ProgUnavailError("program unavailable")
    if accept == AcceptStat.PROG_MISMATCH:
        return ProgMismatchError(u.uint32(), u.uint32())
    if accept == AcceptStat.PROC_UNAVAIL:
        return ProcUnavailError("procedure unavailable")
    if accept == AcceptStat.GARBAGE_ARGS:
        return GarbageArgsError("server could not decode the arguments")
    if accept == AcceptStat.SYSTEM_ERR:
        return SystemErrError("server system error")
    return RemoteProtocolError(f"unknown accept_stat {accept}")


# -- record marking -------------------------------------------------------------------------


def frame_record(pieces: Sequence[Buffer], max_fragment: int = MAX_FRAGMENT) -> list[Buffer]:
    """Split a record (given as pieces) into fragments with their 4-byte marks.  The pieces
    are sliced, never copied; the result is ready for scatter/gather sending."""
    if not 1 <= max_fragment <= MAX_FRAGMENT:
        raise ValueError("max_fragment must be in 1..2**31-1")
    views = [memoryview(p).cast("B") for p in pieces]
    total = sum(v.nbytes for v in views)
    if total <= max_fragment:
        return [_U32.pack(LAST_FRAGMENT | total), *views]
    out: list[Buffer] = []
    left = total
    budget = 0
    for v in views:
        while v.nbytes:
            if budget == 0:
                budget = min(max_fragment, left)
                out.append(_U32.pack(budget | (LAST_FRAGMENT if budget == left else 0)))
            take = min(budget, v.nbytes)
            out.append(v[:take])
            v = v[take:]
            budget -= take
            left -= take
    return out


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


class RecordReceiver:
    """Reassembles record-marked fragments into records (``memoryview``s, read-only).

    Feed with ``receive_data``; or, when ``direct_buffer()`` returns a view, receive straight
    into it and report the count with ``direct_filled``.  ``max_record_size`` is checked when
    each fragment header arrives, before its memory is allocated.  Large single-fragment
    records land in pooled buffers (see ``_bufpool``): a record's memory is reused only once
    nothing references it.
    """

    __slots__ = (
        "_direct_threshold",
        "_filled",
        "_frag_end",
        "_hdr",
        "_last",
        "_max",
        "_pool",
        "_rec",
        "_records",
        "serial",
    )

    def __init__(
        self, max_record_size: int = DEFAULT_MAX_RECORD, direct_threshold: int = 64 * 1024
    ) -> None:
        self._max = max_record_size
        self._direct_threshold = direct_threshold
        self._hdr = bytearray()
        self._rec: bytearray | None = None
        self._filled = 0
        self._frag_end = 0
        self._last = False
        self._records: collections.deque[memoryview] = collections.deque()
        self._pool = BufferPool()
        self.serial = 0
        """Counts the records begun: tells a new record from the one before it."""

    @property
    def in_record(self) -> bool:
        """True between the first byte of a record and its end (EOF now = truncation)."""
        return self._rec is not None or bool(self._hdr)

    def receive_data(self, data: Buffer) -> None:
        view = memoryview(data).cast("B")
        n = view.nbytes
        pos = 0
        while pos < n:
            rec = self._rec
            if rec is not None and self._filled < self._frag_end:
                take = min(self._frag_end - self._filled, n - pos)
                rec[self._filled : self._filled + take] = view[pos : pos + take]
                self._filled += take
                pos += take
                self._maybe_complete()
                continue
            hdr = self._hdr
            if not hdr and n - pos >= 4:
                (word,) = _U32.unpack_from(view, pos)
                pos += 4
            else:
                take = min(4 - len(hdr), n - pos)
                hdr += view[pos : pos + take]
                pos += take
                if len(hdr) < 4:
                    break
                (word,) = _U32.unpack_from(hdr)
                hdr.clear()
            self._start_fragment(word)

    def _start_fragment(self, word: int) -> None:
        length = word & MAX_FRAGMENT
        rec = self._rec
        total = self._filled + length if rec is not None else length
        if total > self._max:
            raise RemoteProtocolError(
                f"RPC record of at least {total} bytes exceeds the bound {self._max}"
            )
        if rec is None:
            self.serial += 1
            last = bool(word & LAST_FRAGMENT)
            pooled = last and length >= _POOL_THRESHOLD
            self._rec = self._pool.get(length) if pooled else bytearray(length)
            self._filled = 0
        elif length:
            rec += bytes(length)
        self._frag_end = total
        self._last = bool(word & LAST_FRAGMENT)
        self._maybe_complete()

    def _maybe_complete(self) -> None:
        if self._last and self._filled == self._frag_end and self._rec is not None:
            self._records.append(memoryview(self._rec)[: self._frag_end].toreadonly())
            self._rec = None
            self._filled = self._frag_end = 0
            self._last = False

    def direct_buffer(self) -> memoryview | None:
        """Where the next bytes of a large fragment go, if one is being received; else None.
        Release the view before calling ``receive_data`` again."""
        rec = self._rec
        if rec is None or self._frag_end - self._filled < self._direct_threshold:
            return None
        return memoryview(rec)[self._filled : self._frag_end]

    def record_prefix(self) -> memoryview | None:
        """The bytes of the record being received so far (None between records).  For a
        reader that sends part of a record elsewhere: it may look at the head, then skip
        bytes with ``direct_filled`` (they are then not in the record)."""
        rec = self._rec
        if rec is None:
            return None
        return memoryview(rec)[: self._filled]

    @property
    def fragment_left(self) -> int:
        """Bytes still to come in the current fragment (0 between fragments)."""
        return self._frag_end - self._filled if self._rec is not None else 0

    def direct_filled(self, n: int) -> None:
        """``n`` bytes were written into the view from ``direct_buffer``."""
        if not 0 <= n <= self._frag_end - self._filled:
            raise ValueError("more bytes reported than the direct buffer holds")
        self._filled += n
        self._maybe_complete()

    def next_record(self) -> memoryview | _NeedData:
        if self._records:
            return self._records.popleft()
        return NEED_DATA
