"""Events the sans-I/O NBD server core produces, and its error family."""

from __future__ import annotations

from dataclasses import dataclass


class ProtocolError(Exception):
    """The NBD conversation cannot go on.  ``disconnect`` is always true for now: the server
    drops the client, which is what nbdkit does for every violation it cannot answer."""


class RemoteProtocolError(ProtocolError):
    """The client broke the protocol (bad magic, hostile length, bytes after STARTTLS, ...)."""


class LocalProtocolError(ProtocolError):
    """The server code used the core wrongly (answered twice, sent in the wrong state)."""


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()
"""Returned by ``next_event`` when more bytes are needed."""


# -- handshake ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListExports:
    """NBD_OPT_LIST: answer with ``reply_exports``."""


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """NBD_OPT_INFO / NBD_OPT_GO / NBD_OPT_EXPORT_NAME: open ``name`` and answer with
    ``reply_export`` or ``reply_export_error``.  ``kind`` is "info", "go" or "export_name"."""

    name: str
    kind: str
    requested_info: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class StartTLS:
    """NBD_OPT_STARTTLS accepted: send ``data_to_send()`` (the ACK), then upgrade the stream and
    call ``tls_established()``."""


@dataclass(frozen=True, slots=True)
class Aborted:
    """NBD_OPT_ABORT: send ``data_to_send()`` (the ACK, best effort) and close."""


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """GO or EXPORT_NAME succeeded: transmission starts; ``data_to_send()`` holds the reply."""

    export_name: str
    structured_replies: bool
    base_allocation: bool


# -- transmission ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """A valid request without payload: READ, FLUSH, TRIM, CACHE, WRITE_ZEROES, BLOCK_STATUS."""

    cookie: int
    command: int
    flags: int
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """A valid WRITE with its whole payload."""

    cookie: int
    flags: int
    offset: int
    data: bytes | bytearray


@dataclass(frozen=True, slots=True)
class RejectedRequest:
    """A request the core refused (its payload, if any, already drained): reply ``error``."""

    cookie: int
    command: int
    error: int
    reason: str


@dataclass(frozen=True, slots=True)
class Disconnect:
    """NBD_CMD_DISC: finish in-flight requests, then close."""


HandshakeEvent = ListExports | ExportRequest | StartTLS | Aborted | HandshakeComplete
TransmissionEvent = Request | WriteRequest | RejectedRequest | Disconnect
