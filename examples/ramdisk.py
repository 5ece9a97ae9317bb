"""A RAM disk as an nbdkit Python plugin: runs unchanged under ``nbdkit python`` and trioblock.

    trioblock -U - python examples/ramdisk.py size=64M --run 'nbdinfo "$uri"'
    nbdkit    -U - python examples/ramdisk.py size=64M --run 'nbdinfo "$uri"'

One ``bytearray`` holds the disk (``size=`` parameter, default 64M, nbdkit size syntax).  All
connections share it, and requests run in parallel: a slice copy is done while holding the GIL,
so each read or write is atomic with respect to the others, and a write is visible to every
connection as soon as it is acknowledged (hence ``can_multi_conn``).  There is no ``extents``:
clients see the whole disk as allocated data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the type checker reads trioblock's copy; at run time the server provides it
    from trioblock import nbdkit
else:
    import nbdkit

API_VERSION = 2

ZERO_CHUNK = memoryview(bytes(1024 * 1024))  # trim and zero copy from this, 1 MiB at a time

size = 64 * 1024 * 1024
disk = bytearray()


def config(key: str, value: str) -> None:
    global size
    if key == "size":
        size = nbdkit.parse_size(value)
    else:
        raise ValueError(f"unknown parameter {key!r} (this plugin takes size=)")


def config_complete() -> None:
    global disk
    disk = bytearray(size)


def thread_model() -> int:
    return nbdkit.THREAD_MODEL_PARALLEL


def open(readonly: bool) -> int:
    return 1  # no per-connection state: the handle is unused


def get_size(h: int) -> int:
    return len(disk)


def can_multi_conn(h: int) -> bool:
    return True


def pread(h: int, buf: memoryview, offset: int, flags: int) -> None:
    buf[:] = disk[offset : offset + len(buf)]


def pwrite(h: int, buf: memoryview, offset: int, flags: int) -> None:
    disk[offset : offset + len(buf)] = buf


def flush(h: int, flags: int) -> None:
    pass  # RAM is as durable as it gets


def trim(h: int, count: int, offset: int, flags: int) -> None:
    zero(h, count, offset, flags)  # trimmed blocks read back as zeros


def zero(h: int, count: int, offset: int, flags: int) -> None:
    end = offset + count
    while offset < end:
        n = min(end - offset, len(ZERO_CHUNK))
        disk[offset : offset + n] = ZERO_CHUNK[:n]
        offset += n
