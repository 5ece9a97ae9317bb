"""Sans-I/O parsing of what ``read(2)`` returns on a fanotify fd.

Layouts (``<linux/fanotify.h>``, hard-coded because cffi ABI mode reads no headers; the tests check
them against the running kernel's output)::

    struct fanotify_event_metadata { u32 event_len; u8 vers; u8 reserved; u16 metadata_len;
                                     u64 mask; s32 fd; s32 pid; }            24 bytes
    struct fanotify_event_info_header { u8 info_type; u8 pad; u16 len; }     4 bytes
    FID-style record: header, __kernel_fsid_t fsid (8), struct file_handle { u32 handle_bytes;
                      s32 handle_type; u8 f_handle[handle_bytes]; }, then for *_NAME types a
                      NUL-terminated name, padded to 4 bytes.
    PIDFD: header, s32 pidfd.   ERROR: header, s32 error, u32 error_count.
    RANGE: header, u32 pad, u64 offset, u64 count.   MNT: header, u64 mnt_id.

Every length read from the buffer is checked against the bytes that are really there before it
is used; a malformed buffer raises :class:`FanotifyFormatError` and nothing else.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

__all__ = [
    "ErrorRecord",
    "FanotifyFormatError",
    "FidRecord",
    "InfoRecord",
    "InfoType",
    "MntRecord",
    "PidfdRecord",
    "RangeRecord",
    "RawFanotifyEvent",
    "UnknownRecord",
    "parse_fanotify_buffer",
]

METADATA = struct.Struct("=IBBHQii")
INFO_HEADER = struct.Struct("=BBH")
FANOTIFY_RESPONSE = struct.Struct("=iI")
_FID_FIXED = struct.Struct("=8sIi")  # fsid, handle_bytes, handle_type (after the header)
_PIDFD = struct.Struct("=i")
_ERROR = struct.Struct("=iI")
_RANGE = struct.Struct("=IQQ")
_MNT = struct.Struct("=Q")
FANOTIFY_METADATA_VERSION = 3


class InfoType(enum.IntEnum):
    FID = 1
    DFID_NAME = 2
    DFID = 3
    PIDFD = 4
    ERROR = 5
    RANGE = 6
    MNT = 7
    OLD_DFID_NAME = 10
    NEW_DFID_NAME = 12


_FID_TYPES = frozenset({1, 2, 3, 10, 12})
_NAMED_TYPES = frozenset({2, 10, 12})


class FanotifyFormatError(ValueError):
    """The buffer read from the fanotify fd does not follow the kernel's format."""


@dataclass(frozen=True, slots=True)
class FidRecord:
    """A file (``FID``) or directory (``DFID``/``*_DFID_NAME``) identity, plus a name if any.

    ``handle`` + ``handle_type`` can be passed to ``open_by_handle_at(2)``; ``fsid`` is the raw
    8-byte ``__kernel_fsid_t`` (compare with ``os.statvfs().f_fsid`` packing).
    """

    info_type: int
    fsid: bytes
    handle_type: int
    handle: bytes
    name: bytes | None = None


@dataclass(frozen=True, slots=True)
class PidfdRecord:
    pidfd: int  # >= 0 an fd owned by the event; FAN_NOPIDFD (-1) / FAN_EPIDFD (-2) otherwise


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    error: int
    error_count: int


@dataclass(frozen=True, slots=True)
class RangeRecord:
    offset: int
    count: int


@dataclass(frozen=True, slots=True)
class MntRecord:
    mnt_id: int


@dataclass(frozen=True, slots=True)
class UnknownRecord:
    info_type: int
    data: bytes


InfoRecord = FidRecord | PidfdRecord | ErrorRecord | RangeRecord | MntRecord | UnknownRecord


@dataclass(frozen=True, slots=True)
class RawFanotifyEvent:
    mask: int
    fd: int
    pid: int
    records: tuple[InfoRecord, ...]


def parse_fanotify_buffer(data: bytes) -> list[RawFanotifyEvent]:
    """Every event in ``data`` (one ``read()``'s worth), records decoded."""
    events = []
    end = len(data)
    offset = 0
    while offset < end:
        if end - offset < METADATA.size:
            raise FanotifyFormatError(f"truncated fanotify_event_metadata at offset {offset}")
        event_len, vers, _, metadata_len, mask, fd, pid = METADATA.unpack_from(data, offset)
        if vers != FANOTIFY_METADATA_VERSION:
            raise FanotifyFormatError(f"fanotify metadata version {vers}, expected 3")
        if not METADATA.size <= metadata_len <= event_len <= end - offset:
            raise FanotifyFormatError(
                f"bad lengths at offset {offset}: event_len={event_len}"
                f" metadata_len={metadata_len}, {end - offset} bytes left"
            )
        records = _parse_records(data, offset + metadata_len, offset + event_len)
        events.append(RawFanotifyEvent(mask, fd, pid, records))
        offset += event_len
    return events


def _parse_records(data: bytes, offset: int, end: int) -> tuple[InfoRecord, ...]:
    records: list[InfoRecord] = []
    while offset < end:
        if end - offset < INFO_HEADER.size:
            raise FanotifyFormatError(f"truncated info record header at offset {offset}")
        info_type, _, length = INFO_HEADER.unpack_from(data, offset)
        if not INFO_HEADER.size <= length <= end - offset:
            raise FanotifyFormatError(f"info record length {length} at offset {offset}")
        body = data[offset + INFO_HEADER.size : offset + length]
        records.append(_parse_record(info_type, body))
        offset += length
    return tuple(records)


def _parse_record(info_type: int, body: bytes) -> InfoRecord:
    try:
        if info_type in _FID_TYPES:
            fsid, handle_bytes, handle_type = _FID_FIXED.unpack_from(body)
            start = _FID_FIXED.size
            if handle_bytes > len(body) - start:
                raise FanotifyFormatError(f"file handle of {handle_bytes} bytes overruns record")
            handle = body[start : start + handle_bytes]
            name = None
            if info_type in _NAMED_TYPES:
                name = body[start + handle_bytes :].split(b"\0", 1)[0]
            return FidRecord(info_type, fsid, handle_type, handle, name)
        if info_type == InfoType.PIDFD:
            return PidfdRecord(*_PIDFD.unpack_from(body))
        if info_type == InfoType.ERROR:
            return ErrorRecord(*_ERROR.unpack_from(body))
        if info_type == InfoType.RANGE:
            _, offset, count = _RANGE.unpack_from(body)
            return RangeRecord(offset, count)
        if info_type == InfoType.MNT:
            return MntRecord(*_MNT.unpack_from(body))
    except struct.error as exc:
        raise FanotifyFormatError(f"info record type {info_type} too short: {exc}") from None
    return UnknownRecord(info_type, body)
