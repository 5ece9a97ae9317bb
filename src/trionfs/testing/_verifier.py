"""Ask a live NFSv3 server for its write verifier, without the client under test.

Fault tests need the server's verifier as an independent fact ("the restart changed it"), so
this speaks the few NFSv3 calls it takes (RFC 1813: MNT, CREATE, COMMIT, REMOVE) by hand.
"""

from __future__ import annotations

import os
import struct

from ._rpcprobe import MOUNT_PROGRAM, NFS_PROGRAM, auth_sys, call

__all__ = ["probe_write_verifier"]

_MOUNTPROC3_MNT = 1
_NFSPROC3_CREATE = 8
_NFSPROC3_REMOVE = 12
_NFSPROC3_COMMIT = 21
_FATTR3_SIZE = 84
_WCC_ATTR_SIZE = 24


def _opaque(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data + b"\0" * (-len(data) % 4)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _need(self, size: int) -> None:
        if self.pos + size > len(self.data):
            raise ConnectionError("truncated NFS reply")

    def u32(self) -> int:
        self._need(4)
        (value,) = struct.unpack_from(">I", self.data, self.pos)
        self.pos += 4
        return int(value)

    def opaque(self, limit: int = 64) -> bytes:
        size = self.u32()
        if size > limit:
            raise ConnectionError(f"opaque of {size} bytes exceeds {limit}")
        self._need(size)
        value = self.data[self.pos : self.pos + size]
        self.pos += size + (-size % 4)
        return value

    def fixed(self, size: int) -> bytes:
        self._need(size)
        value = self.data[self.pos : self.pos + size]
        self.pos += size
        return value

    def optional(self, size: int) -> None:
        if self.u32():
            self.pos += size


def _status(reader: _Reader, what: str) -> None:
    status = reader.u32()
    if status != 0:
        raise OSError(f"{what} failed with NFS status {status}")


def probe_write_verifier(
    host: str, export: str, *, nfs_port: int = 2049, mount_port: int = 20048, timeout: float = 5.0
) -> bytes:
    """The 8-byte write verifier the server returns now (COMMIT of a scratch file it then removes).

    Call it from a thread inside the server's network namespace.
    """
    cred = auth_sys()
    reply = _Reader(
        call(host, mount_port, MOUNT_PROGRAM, 3, _MOUNTPROC3_MNT, _opaque(export.encode()),
             timeout, cred)
    )  # fmt: skip
    _status(reply, f"MNT {export}")
    root = reply.opaque()
    name = f".trionfs-verifier-probe-{os.getpid()}-{os.urandom(4).hex()}".encode()
    # CREATE UNCHECKED with an empty sattr3 (six "don't set" discriminants).
    args = _opaque(root) + _opaque(name) + struct.pack(">7I", 0, 0, 0, 0, 0, 0, 0)
    reply = _Reader(call(host, nfs_port, NFS_PROGRAM, 3, _NFSPROC3_CREATE, args, timeout, cred))
    _status(reply, "CREATE")
    if not reply.u32():
        raise ConnectionError("CREATE returned no file handle")
    fh = reply.opaque()
    try:
        args = _opaque(fh) + struct.pack(">QI", 0, 0)
        reply = _Reader(call(host, nfs_port, NFS_PROGRAM, 3, _NFSPROC3_COMMIT, args, timeout, cred))
        _status(reply, "COMMIT")
        reply.optional(_WCC_ATTR_SIZE)  # wcc_data.before
        reply.optional(_FATTR3_SIZE)  # wcc_data.after
        return reply.fixed(8)
    finally:
        args = _opaque(root) + _opaque(name)
        reply = _Reader(call(host, nfs_port, NFS_PROGRAM, 3, _NFSPROC3_REMOVE, args, timeout, cred))
        _status(reply, "REMOVE")
