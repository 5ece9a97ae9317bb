"""XDR (RFC 4506) encoding and decoding: big-endian, 4-byte aligned.

Our own because ``xdrlib`` left the stdlib in 3.13, and because decoding must be bounded
(every length read from the wire is checked against both a protocol maximum and the bytes that
remain before anything is allocated) and cheap (``opaque_view`` returns a slice of the record,
so a 64 MiB READ payload is never copied by the decoder).
"""

from __future__ import annotations

import builtins
import os
import struct

from ._errors import LocalProtocolError, RemoteProtocolError

# collections.abc.Buffer is 3.12+; these are the buffers the codecs accept.
Buffer = bytes | bytearray | memoryview

_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")

UINT32_MAX = 0xFFFFFFFF
UINT64_MAX = 0xFFFFFFFFFFFFFFFF


def pad_len(n: int) -> int:
    """Bytes of zero padding after ``n`` bytes of opaque data."""
    return -n & 3


def padding(n: int) -> bytes:
    """The zero padding after ``n`` bytes of opaque data."""
    return _PAD[n & 3]


def fsencode(name: str | bytes) -> bytes:
    """File names travel as bytes; ``str`` goes through the filesystem encoding."""
    return name if isinstance(name, bytes) else os.fsencode(name)


class Packer:
    """Append-only XDR encoder into one ``bytearray``."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def get_buffer(self) -> bytes:
        return bytes(self._buf)

    def view(self) -> bytearray:
        """The encoded bytes so far, without a copy (do not keep it across more packing)."""
        return self._buf

    def __len__(self) -> int:
        return len(self._buf)

    def uint32(self, value: int) -> None:
        try:
            self._buf += _U32.pack(value)
        except struct.error as exc:
            raise LocalProtocolError(f"{value!r} is not an XDR unsigned int") from exc

    def int32(self, value: int) -> None:
        try:
            self._buf += _I32.pack(value)
        except struct.error as exc:
            raise LocalProtocolError(f"{value!r} is not an XDR int") from exc

    def uint64(self, value: int) -> None:
        try:
            self._buf += _U64.pack(value)
        except struct.error as exc:
            raise LocalProtocolError(f"{value!r} is not an XDR unsigned hyper") from exc

    def int64(self, value: int) -> None:
        try:
            self._buf += _I64.pack(value)
        except struct.error as exc:
            raise LocalProtocolError(f"{value!r} is not an XDR hyper") from exc

    def bool(self, value: bool) -> None:
        self._buf += _U32.pack(1 if value else 0)

    def fixed_opaque(self, data: Buffer, size: int) -> None:
        with memoryview(data) as view:
            if view.nbytes != size:
                raise LocalProtocolError(f"fixed opaque needs {size} bytes, got {view.nbytes}")
            self._buf += view
        self._buf += _PAD[size & 3]

    def opaque(self, data: Buffer, max_len: int = UINT32_MAX) -> None:
        with memoryview(data) as view:
            n = view.nbytes
            if n > max_len:
                raise LocalProtocolError(f"opaque of {n} bytes exceeds the bound {max_len}")
            self._buf += _U32.pack(n)
            self._buf += view
        self._buf += _PAD[n & 3]

    def string(self, value: str | bytes, max_len: int = UINT32_MAX) -> None:
        self.opaque(fsencode(value), max_len)

    def raw(self, data: Buffer) -> None:
        """Already-encoded XDR bytes."""
        self._buf += data


class Unpacker:
    """XDR decoder over a buffer.  Every failure is a ``RemoteProtocolError``."""

    __slots__ = ("_pos", "_view")

    def __init__(self, data: Buffer, offset: int = 0) -> None:
        if isinstance(data, memoryview) and data.format == "B" and data.ndim == 1:
            self._view = data
        else:
            self._view = memoryview(data).cast("B")
        self._pos = offset

    @property
    def position(self) -> int:
        return self._pos

    def remaining(self) -> int:
        return len(self._view) - self._pos

    def rest(self) -> memoryview:
        """The undecoded tail (a view, no copy)."""
        return self._view[self._pos :]

    def done(self) -> None:
        """Raise if bytes are left over."""
        if self._pos != len(self._view):
            raise RemoteProtocolError(f"{len(self._view) - self._pos} unexpected trailing bytes")

    def _short(self, what: str) -> RemoteProtocolError:
        return RemoteProtocolError(f"truncated XDR data reading {what} at offset {self._pos}")

    def uint32(self) -> int:
        pos = self._pos
        try:
            (value,) = _U32.unpack_from(self._view, pos)
        except struct.error:
            raise self._short("an unsigned int") from None
        self._pos = pos + 4
        return value  # type: ignore[no-any-return]

    def int32(self) -> int:
        pos = self._pos
        try:
            (value,) = _I32.unpack_from(self._view, pos)
        except struct.error:
            raise self._short("an int") from None
        self._pos = pos + 4
        return int(value)

    def uint64(self) -> int:
        pos = self._pos
        try:
            (value,) = _U64.unpack_from(self._view, pos)
        except struct.error:
            raise self._short("an unsigned hyper") from None
        self._pos = pos + 8
        return int(value)

    def int64(self) -> int:
        pos = self._pos
        try:
            (value,) = _I64.unpack_from(self._view, pos)
        except struct.error:
            raise self._short("a hyper") from None
        self._pos = pos + 8
        return int(value)

    def bool(self) -> builtins.bool:
        # uint32() inlined: optional() (every post_op_attr, wcc_data, list link) lands here.
        pos = self._pos
        try:
            (value,) = _U32.unpack_from(self._view, pos)
        except struct.error:
            raise self._short("a bool") from None
        if value > 1:
            raise RemoteProtocolError(f"XDR bool must be 0 or 1, got {value}")
        self._pos = pos + 4
        return value == 1  # type: ignore[no-any-return]

    def unpack(self, fmt: struct.Struct) -> tuple[int, ...]:
        """Several fixed-size fields at once through a precompiled ``Struct``."""
        pos = self._pos
        try:
            values = fmt.unpack_from(self._view, pos)
        except struct.error:
            raise self._short(f"{fmt.size} bytes of fixed fields") from None
        self._pos = pos + fmt.size
        return values

    def _take(self, n: int, what: str) -> memoryview:
        pos = self._pos
        end = pos + n
        padded = end + (-n & 3)
        if padded > len(self._view):
            raise self._short(what)
        self._pos = padded
        return self._view[pos:end]

    def fixed_opaque_view(self, size: int) -> memoryview:
        return self._take(size, f"{size} bytes of fixed opaque data")

    def fixed_opaque(self, size: int) -> bytes:
        return bytes(self._take(size, f"{size} bytes of fixed opaque data"))

    def _length(self, max_len: int, what: str) -> int:
        n = self.uint32()
        if n > max_len:
            raise RemoteProtocolError(f"{what} length {n} exceeds the bound {max_len}")
        if n > len(self._view) - self._pos:
            # Checked before anything is allocated: a hostile 4 GiB length fails here.
            raise RemoteProtocolError(f"{what} length {n} runs past the end of the record")
        return n

    def opaque_view(self, max_len: int = UINT32_MAX) -> memoryview:
        """Variable-length opaque as a view into the record (no copy)."""
        n = self._length(max_len, "opaque")
        return self._take(n, "opaque data")

    def opaque(self, max_len: int = UINT32_MAX) -> bytes:
        return bytes(self.opaque_view(max_len))

    def string(self, max_len: int = UINT32_MAX) -> str:
        """An XDR string decoded like ``os.fsdecode`` (undecodable bytes survive)."""
        return os.fsdecode(bytes(self.opaque_view(max_len)))

    def count(self, min_item_size: int, max_count: int = UINT32_MAX) -> int:
        """An array count, bounded by what the remaining bytes could possibly hold."""
        n = self.uint32()
        if n > max_count:
            raise RemoteProtocolError(f"array count {n} exceeds the bound {max_count}")
        if n * min_item_size > len(self._view) - self._pos:
            raise RemoteProtocolError(f"array count {n} cannot fit in the rest of the record")
        return n

    optional = bool
    """The discriminant of ``T *`` / a list link: True if a value follows."""
