"""Typed facade over the generated cffi module: the ``ffi``/``lib`` pair and errno checking."""

from __future__ import annotations

import os
from typing import Any

from ._errors import raise_errno
from ._generated_ffi import ffi as _ffi

__all__ = ["check", "ffi", "fspath_bytes", "lib"]

ffi: Any = _ffi
# ABI mode: symbols resolve from the C library already loaded in the process.
lib: Any = _ffi.dlopen(None)


def check(result: int, syscall: str, filename: str | bytes | None = None) -> int:
    """Return ``result`` of a libc call, or raise the mapped ``OSError`` when it is -1."""
    if result == -1:
        raise_errno(ffi.errno, syscall, filename)
    return result


def fspath_bytes(path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> bytes:
    """A path argument as the bytes the kernel gets (``str``, ``bytes`` and path-likes)."""
    if not isinstance(path, str | bytes | os.PathLike):
        raise TypeError(f"expected a str, bytes or os.PathLike path, got {type(path).__name__}")
    raw = os.fsencode(path)
    if b"\0" in raw:
        raise ValueError("embedded null byte in path")
    return raw
