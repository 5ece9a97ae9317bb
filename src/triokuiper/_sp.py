"""Sans-I/O SP over IPC: the connection header and message framing nng and mangos speak.

The scalability-protocols IPC mapping (nng's ``ipc://`` transport, and mangos's, which eKuiper
uses) is small.  Each side sends an 8-byte header first, ``00 'S' 'P' 00`` then its protocol
number (16-bit big-endian) and two zero bytes; after it every message is one frame: a type byte
(always 1), the message length as a 64-bit big-endian integer, then the message (for Push and
Pull the message is the payload itself: those protocols add no header).

:class:`FrameDecoder` turns received bytes into whole messages, any number per call, and stops
at the first violation with :class:`SPProtocolError`; a declared length above ``max_size`` is
refused before anything is allocated for it.  This module never imports trio or pynng.
"""

from __future__ import annotations

from typing import Final

REQ0: Final = 0x30
REP0: Final = 0x31
PUSH0: Final = 0x50
PULL0: Final = 0x51

HEADER_SIZE: Final = 8
FRAME_PREFIX: Final = 9
"""Type byte + 64-bit length in front of every message."""
MESSAGE_TYPE: Final = 1

DEFAULT_MAX_SIZE: Final = 1 << 30
"""Largest message accepted.  eKuiper sets nng's limit to 0 (none); we still keep one, so that a
hostile length cannot make us reserve memory for it.  1 GiB is far above any rule's payload."""


class SPProtocolError(Exception):
    """The peer broke the SP-over-IPC framing; the connection must be dropped.

    :attr:`messages` holds the whole messages that arrived before the violation (nng, reading
    frame by frame, delivers those too)."""

    def __init__(self, message: str, messages: list[bytes] | None = None) -> None:
        super().__init__(message)
        self.messages = messages or []


def connection_header(protocol: int) -> bytes:
    """The 8 bytes one side sends first, naming its own protocol."""
    return b"\x00SP\x00" + protocol.to_bytes(2, "big") + b"\x00\x00"


def peer_protocol(header: bytes) -> int:
    """The protocol number in the peer's 8-byte header; :class:`SPProtocolError` if malformed."""
    if len(header) != HEADER_SIZE or header[:4] != b"\x00SP\x00" or header[6:] != b"\x00\x00":
        raise SPProtocolError(f"not an SP connection header: {bytes(header[:HEADER_SIZE])!r}")
    return int.from_bytes(header[4:6], "big")


def check_peer(header: bytes, expected: int) -> None:
    """Refuse a peer speaking another protocol (nng closes such a pipe too)."""
    peer = peer_protocol(header)
    if peer != expected:
        raise SPProtocolError(f"peer speaks protocol {peer:#x}, expected {expected:#x}")


def frame(message: bytes) -> bytes:
    """One message as it goes on the wire."""
    return b"\x01" + len(message).to_bytes(8, "big") + message


class FrameDecoder:
    """Whole messages out of a byte stream, after the peer's connection header.

    ``feed(data)`` returns every message completed by ``data`` (often many: one ``recv`` of a
    busy stream holds dozens); ``feed(b"")`` marks the end of the stream, which is an error only
    in the middle of a frame.  ``peer`` is the peer's protocol once its header has arrived.
    """

    __slots__ = ("_buffer", "_ended", "_max_size", "peer")

    def __init__(self, *, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self._buffer = bytearray()
        self._max_size = max_size
        self._ended = False
        self.peer: int | None = None

    @property
    def pending(self) -> int:
        """Bytes held for a frame not complete yet."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        if self._ended:
            raise SPProtocolError("data after the end of the stream")
        if not data:
            self._ended = True
            if self._buffer:
                raise SPProtocolError(
                    f"stream ended inside a frame ({len(self._buffer)} bytes pending)"
                )
            return []
        buffer = self._buffer
        buffer += data
        if self.peer is None:
            if len(buffer) < HEADER_SIZE:
                return []
            self.peer = peer_protocol(bytes(buffer[:HEADER_SIZE]))
            del buffer[:HEADER_SIZE]
        return self._messages()

    def _messages(self) -> list[bytes]:
        buffer = self._buffer
        end = len(buffer)
        pos = 0
        out: list[bytes] = []
        view = memoryview(buffer)
        try:
            while end - pos >= FRAME_PREFIX:
                if buffer[pos] != MESSAGE_TYPE:
                    raise SPProtocolError(f"unknown SP message type {buffer[pos]}", out)
                length = int.from_bytes(view[pos + 1 : pos + FRAME_PREFIX], "big")
                if length > self._max_size:
                    raise SPProtocolError(
                        f"message of {length} bytes is over the {self._max_size}-byte limit", out
                    )
                start = pos + FRAME_PREFIX
                if end - start < length:
                    break
                out.append(bytes(view[start : start + length]))
                pos = start + length
        finally:
            view.release()
        if pos:
            del buffer[:pos]
        return out
