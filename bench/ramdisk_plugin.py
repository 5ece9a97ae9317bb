"""The benchmark's plugin: an nbdkit-style Python ramdisk, served unchanged by nbdkit and trioblock.

Parameters: size=BYTES (default 1G).  API 2, THREAD_MODEL_PARALLEL, a plain bytearray.
"""

import nbdkit

API_VERSION = 2
disk = bytearray(0)


def config(key: str, value: str) -> None:
    global disk
    if key == "size":
        disk = bytearray(nbdkit.parse_size(value))
    else:
        raise RuntimeError(f"unknown parameter {key}")


def config_complete() -> None:
    global disk
    if not disk:
        disk = bytearray(1 << 30)


def thread_model() -> int:
    return nbdkit.THREAD_MODEL_PARALLEL


def open(readonly: bool) -> int:
    return 1


def get_size(h: int) -> int:
    return len(disk)


def pread(h: int, buf: memoryview, offset: int, flags: int) -> None:
    end = offset + len(buf)
    buf[:] = disk[offset:end]


def pwrite(h: int, buf: memoryview, offset: int, flags: int) -> None:
    end = offset + len(buf)
    disk[offset:end] = buf
