"""Just enough ONC-RPC over TCP to see whether a server is up (NULL, portmap GETPORT).

The fixture must not depend on the client it tests, so readiness probes speak the few bytes of
RFC 5531 they need here, with blocking sockets and a short timeout.
"""

from __future__ import annotations

import itertools
import socket
import struct

__all__ = [
    "MOUNT_PROGRAM",
    "NFS_PROGRAM",
    "PORTMAP_PROGRAM",
    "auth_sys",
    "call",
    "pmap_getport",
    "rpc_null",
]

PORTMAP_PROGRAM = 100000
NFS_PROGRAM = 100003
MOUNT_PROGRAM = 100005
_IPPROTO_TCP = 6
_LAST_FRAGMENT = 0x80000000
_xids = itertools.count(0x7E570000)


_AUTH_NONE = struct.pack(">II", 0, 0)


def auth_sys(uid: int = 0, gid: int = 0, machine: bytes = b"trionfs-testing") -> bytes:
    """An AUTH_SYS credential (flavor, length, body) with no supplementary groups."""
    pad = b"\0" * (-len(machine) % 4)
    body = struct.pack(">II", 0, len(machine)) + machine + pad + struct.pack(">III", uid, gid, 0)
    return struct.pack(">II", 1, len(body)) + body


def call(
    host: str,
    port: int,
    prog: int,
    vers: int,
    proc: int,
    args: bytes,
    timeout: float,
    cred: bytes = _AUTH_NONE,
) -> bytes:
    """One RPC over a new TCP connection; the result bytes of an accepted, successful reply."""
    xid = next(_xids) & 0xFFFFFFFF
    # CALL: xid, CALL=0, rpcvers=2, prog, vers, proc, cred, verf AUTH_NONE.
    head = struct.pack(">IIIIII", xid, 0, 2, prog, vers, proc)
    body = head + cred + _AUTH_NONE + args
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">I", _LAST_FRAGMENT | len(body)) + body)
        reply = b""
        last = False
        buf = b""
        while not last:
            while len(buf) < 4:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("RPC server closed the connection")
                buf += chunk
            (mark,) = struct.unpack(">I", buf[:4])
            last = bool(mark & _LAST_FRAGMENT)
            size = mark & ~_LAST_FRAGMENT
            if size > 1 << 20:
                raise ConnectionError(f"RPC fragment too large: {size}")
            buf = buf[4:]
            while len(buf) < size:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("RPC server closed the connection")
                buf += chunk
            reply += buf[:size]
            buf = buf[size:]
    # REPLY: xid, REPLY=1, MSG_ACCEPTED=0, verf (flavor, len=0), SUCCESS=0, results.
    if len(reply) < 24:
        raise ConnectionError("short RPC reply")
    rxid, mtype, stat, _flavor, vlen = struct.unpack(">IIIII", reply[:20])
    if rxid != xid or mtype != 1 or stat != 0 or vlen != 0:
        raise ConnectionError(f"unexpected RPC reply header {reply[:20].hex()}")
    (accept,) = struct.unpack(">I", reply[20:24])
    if accept != 0:
        raise ConnectionError(f"RPC call not accepted: accept_stat {accept}")
    return reply[24:]


def rpc_null(host: str, port: int, prog: int, vers: int, *, timeout: float = 1.0) -> None:
    """Call NULL of ``prog``/``vers`` at ``host:port``; raise ``OSError`` if it fails."""
    call(host, port, prog, vers, 0, b"", timeout)


def pmap_getport(host: str, prog: int, vers: int, *, timeout: float = 1.0) -> int:
    """The TCP port rpcbind at ``host:111`` has registered for ``prog``/``vers`` (0: none)."""
    result = call(
        host, 111, PORTMAP_PROGRAM, 2, 3, struct.pack(">IIII", prog, vers, _IPPROTO_TCP, 0), timeout
    )
    if len(result) < 4:
        raise ConnectionError("short GETPORT reply")
    port: int = struct.unpack(">I", result[:4])[0]
    return port
