"""Every exception trionfs raises, and the one NFS3/MOUNT3 status -> errno table.

Families:

- ``ProtocolError`` (``RemoteProtocolError`` / ``LocalProtocolError``): bytes that do not parse
  or a length that breaks a bound.  The connection that produced them cannot be trusted.
- ``RPCError``: the server answered, but the RPC layer refused the call (RFC 5531 reply
  statuses), one subclass per status.
- ``RPCTimeoutError`` (a ``TimeoutError``): no reply within ``timeo`` after every retransmission.
- ``NFSError`` / ``MountError`` (``OSError``): the procedure ran and returned a non-OK status.
  ``NFSError(NFSStat3.NOENT)`` is an instance of ``FileNotFoundError`` (and so on for every status
  whose errno Python maps to an ``OSError`` subclass), so ordinary ``except`` clauses work.
"""

from __future__ import annotations

import enum
import errno
import os
from typing import Any, ClassVar

# -- protocol errors -------------------------------------------------------------------------


class ProtocolError(Exception):
    """ONC-RPC/XDR bytes that cannot be parsed or that break a bound."""


class RemoteProtocolError(ProtocolError):
    """The server sent something malformed (truncated body, hostile length, bad enum ...)."""


class LocalProtocolError(ProtocolError):
    """Our side asked to encode something the protocol cannot carry (a 70-byte file handle,
    a name longer than the bound, 17 auxiliary gids ...)."""


# -- RPC reply statuses (RFC 5531 section 9) ------------------------------------------------


class AcceptStat(enum.IntEnum):
    SUCCESS = 0
    PROG_UNAVAIL = 1
    PROG_MISMATCH = 2
    PROC_UNAVAIL = 3
    GARBAGE_ARGS = 4
    SYSTEM_ERR = 5


class RejectStat(enum.IntEnum):
    RPC_MISMATCH = 0
    AUTH_ERROR = 1


class AuthStat(enum.IntEnum):
    OK = 0
    BADCRED = 1
    REJECTEDCRED = 2
    BADVERF = 3
    REJECTEDVERF = 4
    TOOWEAK = 5
    INVALIDRESP = 6
    FAILED = 7
    KERB_GENERIC = 8
    TIMEEXPIRE = 9
    TKT_FILE = 10
    DECODE = 11
    NET_ADDR = 12
    RPCSEC_GSS_CREDPROBLEM = 13
    RPCSEC_GSS_CTXPROBLEM = 14


class RPCError(Exception):
    """The server refused the call at the RPC layer; the subclass says why."""


class ProgUnavailError(RPCError):
    """PROG_UNAVAIL: the server does not export this program."""


class ProgMismatchError(RPCError):
    """PROG_MISMATCH: the program exists but not in our version; ``low``..``high`` are served."""

    def __init__(self, low: int, high: int) -> None:
        super().__init__(f"program version mismatch: server supports {low}..{high}")
        self.low = low
        self.high = high


class ProcUnavailError(RPCError):
    """PROC_UNAVAIL: the program has no such procedure."""


class GarbageArgsError(RPCError):
    """GARBAGE_ARGS: the server could not decode our arguments."""


class SystemErrError(RPCError):
    """SYSTEM_ERR: the server failed internally (e.g. out of memory)."""


class RPCMismatchError(RPCError):
    """RPC_MISMATCH: the server does not speak RPC version 2; ``low``..``high`` are served."""

    def __init__(self, low: int, high: int) -> None:
        super().__init__(f"RPC version mismatch: server supports {low}..{high}")
        self.low = low
        self.high = high


class AuthError(RPCError):
    """AUTH_ERROR: credentials refused; ``stat`` is the reason (``AuthStat.TOOWEAK`` when the
    server wants a privileged source port or a stronger flavor)."""

    def __init__(self, stat: AuthStat | int) -> None:
        name = stat.name if isinstance(stat, AuthStat) else str(stat)
        super().__init__(f"RPC authentication error: {name}")
        self.stat = stat


class RPCTimeoutError(TimeoutError):
    """No reply within ``timeo`` seconds, after ``retrans`` retransmissions."""


# -- NFSv3 statuses (RFC 1813 section 2.6) --------------------------------------------------


class NFSStat3(enum.IntEnum):
    OK = 0
    PERM = 1
    NOENT = 2
    IO = 5
    NXIO = 6
    ACCES = 13
    EXIST = 17
    XDEV = 18
    NODEV = 19
    NOTDIR = 20
    ISDIR = 21
    INVAL = 22
    FBIG = 27
    NOSPC = 28
    ROFS = 30
    MLINK = 31
    NAMETOOLONG = 63
    NOTEMPTY = 66
    DQUOT = 69
    STALE = 70
    REMOTE = 71
    BADHANDLE = 10001
    NOT_SYNC = 10002
    BAD_COOKIE = 10003
    NOTSUPP = 10004
    TOOSMALL = 10005
    SERVERFAULT = 10006
    BADTYPE = 10007
    JUKEBOX = 10008


# The NFS3ERR_* values below 100 were copied from SunOS errno numbers; they coincide with
# Linux for most, but not all (REMOTE=71 is EPROTO on Linux).  So: one explicit table.
NFS3_ERRNO: dict[int, int] = {
    NFSStat3.PERM: errno.EPERM,
    NFSStat3.NOENT: errno.ENOENT,
    NFSStat3.IO: errno.EIO,
    NFSStat3.NXIO: errno.ENXIO,
    NFSStat3.ACCES: errno.EACCES,
    NFSStat3.EXIST: errno.EEXIST,
    NFSStat3.XDEV: errno.EXDEV,
    NFSStat3.NODEV: errno.ENODEV,
    NFSStat3.NOTDIR: errno.ENOTDIR,
    NFSStat3.ISDIR: errno.EISDIR,
    NFSStat3.INVAL: errno.EINVAL,
    NFSStat3.FBIG: errno.EFBIG,
    NFSStat3.NOSPC: errno.ENOSPC,
    NFSStat3.ROFS: errno.EROFS,
    NFSStat3.MLINK: errno.EMLINK,
    NFSStat3.NAMETOOLONG: errno.ENAMETOOLONG,
    NFSStat3.NOTEMPTY: errno.ENOTEMPTY,
    NFSStat3.DQUOT: errno.EDQUOT,
    NFSStat3.STALE: errno.ESTALE,
    NFSStat3.REMOTE: errno.EREMOTE,
    # The protocol-only statuses have no errno of their own; these follow libnfs and the
    # Linux client where they agree, and stay actionable otherwise.
    NFSStat3.BADHANDLE: errno.ESTALE,
    NFSStat3.NOT_SYNC: errno.EINVAL,
    NFSStat3.BAD_COOKIE: errno.EINVAL,
    NFSStat3.NOTSUPP: errno.EOPNOTSUPP,
    NFSStat3.TOOSMALL: errno.EINVAL,
    NFSStat3.SERVERFAULT: errno.EIO,
    NFSStat3.BADTYPE: errno.EINVAL,
    NFSStat3.JUKEBOX: errno.EAGAIN,
}


class MountStat3(enum.IntEnum):
    OK = 0
    PERM = 1
    NOENT = 2
    IO = 5
    ACCES = 13
    NOTDIR = 20
    INVAL = 22
    NAMETOOLONG = 63
    NOTSUPP = 10004
    SERVERFAULT = 10006


MOUNT3_ERRNO: dict[int, int] = {
    MountStat3.PERM: errno.EPERM,
    MountStat3.NOENT: errno.ENOENT,
    MountStat3.IO: errno.EIO,
    MountStat3.ACCES: errno.EACCES,
    MountStat3.NOTDIR: errno.ENOTDIR,
    MountStat3.INVAL: errno.EINVAL,
    MountStat3.NAMETOOLONG: errno.ENAMETOOLONG,
    MountStat3.NOTSUPP: errno.EOPNOTSUPP,
    MountStat3.SERVERFAULT: errno.EIO,
}

# errno -> the builtin OSError subclass Python itself would pick for it.
_ERRNO_CLASS: dict[int, type[OSError]] = {
    errno.EPERM: PermissionError,
    errno.EACCES: PermissionError,
    errno.ENOENT: FileNotFoundError,
    errno.EEXIST: FileExistsError,
    errno.ENOTDIR: NotADirectoryError,
    errno.EISDIR: IsADirectoryError,
    errno.EAGAIN: BlockingIOError,
}


class _StatusError(OSError):
    """Shared machinery: construct with a status, get the right builtin subclass mixed in."""

    _errno_table: ClassVar[dict[int, int]]
    _status_enum: ClassVar[type[enum.IntEnum]]
    _prefix: ClassVar[str]
    _mixed: ClassVar[dict[type[OSError], type[OSError]]]
    status: int

    def __new__(cls, status: int, strerror: str | None = None, filename: Any = None) -> Any:
        try:
            status = cls._status_enum(status)
        except ValueError:
            pass
        code = cls._errno_table.get(int(status), errno.EIO)
        if cls in (NFSError, MountError):
            base = _ERRNO_CLASS.get(code)
            if base is not None:
                mixed = cls._mixed.get(base)
                if mixed is None:
                    mixed = type(f"{cls.__name__}[{base.__name__}]", (cls, base), {})
                    mixed.__module__ = cls.__module__
                    cls._mixed[base] = mixed
                cls = mixed  # type: ignore[assignment]
        name = status.name if isinstance(status, enum.IntEnum) else str(int(status))
        message = f"{cls._prefix}{name}: {strerror or os.strerror(code)}"
        # OSError parses (errno, strerror, filename) in __new__ when a subclass overrides both
        # __new__ and __init__, so the arguments go here.
        if filename is None:
            self = OSError.__new__(cls, code, message)
        else:
            self = OSError.__new__(cls, code, message, filename)
        self.status = status
        return self

    def __init__(self, status: int, strerror: str | None = None, filename: Any = None) -> None:
        pass

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self)._base(), (self.status, None, self.filename))

    @classmethod
    def _base(cls) -> type[_StatusError]:
        return NFSError if issubclass(cls, NFSError) else MountError


class NFSError(_StatusError):
    """An NFSv3 procedure returned a non-OK status.  ``status`` is an ``NFSStat3`` (or a plain
    int for a value RFC 1813 does not define), ``errno`` the matching errno."""

    _errno_table = NFS3_ERRNO
    _status_enum = NFSStat3
    _prefix = "NFS3ERR_"
    _mixed: ClassVar[dict[type[OSError], type[OSError]]] = {}


class MountError(_StatusError):
    """A MOUNT v3 procedure returned a non-OK status (``status`` is a ``MountStat3``)."""

    _errno_table = MOUNT3_ERRNO
    _status_enum = MountStat3
    _prefix = "MNT3ERR_"
    _mixed: ClassVar[dict[type[OSError], type[OSError]]] = {}
