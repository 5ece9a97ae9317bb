"""The sans-I/O NBD server core: no sockets, no trio — bytes in, events out."""

from . import _wire as wire
from ._events import (
    NEED_DATA as NEED_DATA,
    Aborted as Aborted,
    Disconnect as Disconnect,
    ExportRequest as ExportRequest,
    HandshakeComplete as HandshakeComplete,
    ListExports as ListExports,
    LocalProtocolError as LocalProtocolError,
    ProtocolError as ProtocolError,
    RejectedRequest as RejectedRequest,
    RemoteProtocolError as RemoteProtocolError,
    Request as Request,
    StartTLS as StartTLS,
    WriteRequest as WriteRequest,
)
from ._handshake import ExportDetails as ExportDetails, ServerHandshake as ServerHandshake
from ._transmission import (
    ServerTransmission as ServerTransmission,
    block_status_reply as block_status_reply,
    data_chunk_header as data_chunk_header,
    error_reply as error_reply,
    hole_chunk as hole_chunk,
    read_reply_header as read_reply_header,
    simple_reply as simple_reply,
)

__all__ = [
    "NEED_DATA",
    "Aborted",
    "Disconnect",
    "ExportDetails",
    "ExportRequest",
    "HandshakeComplete",
    "ListExports",
    "LocalProtocolError",
    "ProtocolError",
    "RejectedRequest",
    "RemoteProtocolError",
    "Request",
    "ServerHandshake",
    "ServerTransmission",
    "StartTLS",
    "WriteRequest",
    "block_status_reply",
    "data_chunk_header",
    "error_reply",
    "hole_chunk",
    "read_reply_header",
    "simple_reply",
    "wire",
]
