"""The layouts and constants cffi ABI mode makes us hard-code, checked against the kernel's own
output (and, for constants, against the installed UAPI headers, which the kernel only extends)."""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import pytest

from triofd import (
    FanEvent,
    FanInit,
    FanMark,
    InotifyMask,
    fanotify_init,
    fanotify_mark,
    inotify_add_watch,
    inotify_init1,
    parse_inotify_buffer,
)
from triofd._fanotify_records import (
    FANOTIFY_RESPONSE,
    INFO_HEADER,
    METADATA,
    FidRecord,
    InfoType,
    parse_fanotify_buffer,
)
from triofd._inotify import INOTIFY_EVENT_HEADER

HEADERS = Path("/usr/include/linux")


def header_defines(name: str, prefix: str) -> dict[str, int]:
    path = HEADERS / name
    if not path.exists():
        pytest.skip(f"{path} not installed")
    found = {}
    for match in re.finditer(rf"#define\s+{prefix}(\w+)\s+(0x[0-9a-fA-F]+)\b", path.read_text()):
        found[match.group(1)] = int(match.group(2), 16)
    return found


def test_struct_sizes() -> None:
    assert INOTIFY_EVENT_HEADER.size == 16
    assert METADATA.size == 24
    assert INFO_HEADER.size == 4
    assert FANOTIFY_RESPONSE.size == 8


def test_inotify_constants_match_the_uapi_header() -> None:
    defines = header_defines("inotify.h", "IN_")
    assert defines, "no IN_ constants parsed"
    for name, value in defines.items():
        assert InotifyMask[name].value == value, name


def test_fanotify_constants_match_the_uapi_header() -> None:
    defines = header_defines("fanotify.h", "FAN_")
    checked = 0
    for name, value in defines.items():
        for enum, prefix in ((FanInit, ""), (FanMark, "MARK_"), (FanEvent, "")):
            key = name.removeprefix(prefix) if prefix else name
            if (prefix and not name.startswith(prefix)) or key not in enum.__members__:
                continue
            if enum is FanEvent and name.startswith(("MARK_", "REPORT_", "CLASS_")):
                continue
            assert enum.__members__[key].value == value, (enum.__name__, name)
            checked += 1
    assert checked >= 45


def test_inotify_records_from_the_kernel_are_16_byte_headers_with_padded_names(
    tmp_path: Path,
) -> None:
    fd = inotify_init1()
    try:
        wd = inotify_add_watch(fd, tmp_path, InotifyMask.CREATE)
        names = [b"a", b"x" * 15, b"y" * 16, b"z" * 255]
        for name in names:
            os.close(os.open(os.fsencode(tmp_path) + b"/" + name, os.O_CREAT | os.O_WRONLY))
        data = os.read(fd, 65536)
    finally:
        os.close(fd)
    offset = 0
    for name in names:
        got_wd, mask, cookie, length = struct.unpack_from("=iIII", data, offset)
        assert (got_wd, mask, cookie) == (wd, InotifyMask.CREATE, 0)
        assert length % 16 == 0
        assert length > len(name)
        assert data[offset + 16 : offset + 16 + len(name)] == name
        offset += 16 + length
    assert offset == len(data)
    assert [r[3] for r in parse_inotify_buffer(data)] == names


def test_fanotify_metadata_and_fid_records_from_the_kernel(tmp_path: Path) -> None:
    fd = fanotify_init(
        FanInit.CLOEXEC | FanInit.NONBLOCK | FanInit.REPORT_DFID_NAME | FanInit.REPORT_FID
    )
    try:
        fanotify_mark(fd, FanMark.ADD, FanEvent.CREATE | FanEvent.EVENT_ON_CHILD, -100, tmp_path)
        (tmp_path / "child").write_bytes(b"")
        data = os.read(fd, 65536)
    finally:
        os.close(fd)
    event_len, vers, _, metadata_len, mask, event_fd, pid = struct.unpack_from("=IBBHQii", data)
    assert (vers, metadata_len, event_fd, pid) == (3, 24, -1, os.getpid())
    assert mask == FanEvent.CREATE
    assert event_len == len(data)
    info_type, _, length = struct.unpack_from("=BBH", data, 24)
    assert info_type == InfoType.DFID_NAME
    assert 24 + length == event_len
    assert length % 4 == 0
    val0, val1, handle_bytes, _ = struct.unpack_from("=iiIi", data, 28)
    # __kernel_fsid_t is what statfs reports (glibc folds it into one 64-bit f_fsid).
    assert (val0 & 0xFFFFFFFF) | ((val1 & 0xFFFFFFFF) << 32) == os.statvfs(tmp_path).f_fsid
    name_at = 28 + 8 + 8 + handle_bytes
    assert data[name_at : name_at + 6] == b"child\0"
    (event,) = parse_fanotify_buffer(data)
    (record,) = event.records
    assert isinstance(record, FidRecord)
    assert record.name == b"child"
    assert len(record.handle) == handle_bytes


def test_fanotify_fd_mode_event_is_bare_metadata(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"")
    fd = fanotify_init(FanInit.CLOEXEC | FanInit.NONBLOCK)
    try:
        fanotify_mark(fd, FanMark.ADD, FanEvent.OPEN, -100, target)
        target.read_bytes()
        data = os.read(fd, 65536)
    finally:
        os.close(fd)
    (event,) = parse_fanotify_buffer(data)
    assert len(data) == 24
    assert event.records == ()
    assert os.readlink(f"/proc/self/fd/{event.fd}") == str(target)
    assert not os.get_inheritable(event.fd)  # O_CLOEXEC from event_f_flags
    os.close(event.fd)
