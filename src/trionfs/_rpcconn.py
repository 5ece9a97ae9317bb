"""One TCP connection for the RPC client: connection policy (``RPCOptions``), the socket
holder, and connecting (privileged source ports as libnfs does, a connect timeout)."""

from __future__ import annotations

import errno
import math
import os
import random
import socket
from dataclasses import dataclass, field

import trio

from ._rpc import DEFAULT_MAX_RECORD, MAX_FRAGMENT, Auth, AuthNone

__all__ = ["Conn", "RPCOptions", "open_connection"]


@dataclass(frozen=True, slots=True)
class RPCOptions:
    """Connection policy, shared by every program client.

    - ``auth``: credentials for every call (``AuthNone()`` or ``AuthSys(...)``).
    - ``timeo``: seconds to wait for a reply before retransmitting (None: forever).
    - ``retrans``: retransmissions (same xid) after a timeout before ``RPCTimeoutError``.
    - ``autoreconnect``: after the connection drops, -1 reconnects forever, 0 never (calls
      then fail with ``trio.BrokenResourceError``), N tries N times.
    - ``privileged_port``: bind a source port below 1024 before connecting; None means "when
      running as root" (falling back to an ordinary port if none is free).
    - ``connect_timeout``: seconds for one TCP connect attempt (None: the kernel's limit).
    - ``max_record_size``: the largest reply record accepted (checked before allocation).
    - ``max_fragment``: the largest record fragment we send.
    """

    auth: Auth = field(default_factory=AuthNone)
    timeo: float | None = 60.0
    retrans: int = 2
    autoreconnect: int = -1
    privileged_port: bool | None = None
    connect_timeout: float | None = 30.0
    max_record_size: int = DEFAULT_MAX_RECORD
    max_fragment: int = MAX_FRAGMENT

    def __post_init__(self) -> None:
        if self.timeo is not None and not self.timeo > 0:
            raise ValueError("timeo must be positive (or None)")
        if self.retrans < 0:
            raise ValueError("retrans must be >= 0")
        if self.autoreconnect < -1:
            raise ValueError("autoreconnect must be -1, 0 or a positive count")


class Conn:
    """One TCP connection: the Trio socket (connect, close with notify_closing) and the same
    socket as the stdlib object, for non-blocking fast paths that wait through
    ``trio.lowlevel.wait_readable``/``wait_writable`` only when the kernel says so."""

    __slots__ = ("raw", "sock")

    def __init__(self, raw: socket.socket) -> None:
        raw.setblocking(False)
        self.raw = raw
        self.sock = trio.socket.from_stdlib_socket(raw)

    def close(self) -> None:
        self.sock.close()


async def open_connection(host: str, port: int, options: RPCOptions) -> Conn:
    """Connect (as ``options`` say: source port, timeout) and return the connection."""
    infos = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    if not infos:
        raise OSError(errno.EHOSTUNREACH, f"cannot resolve {host}")
    family, type_, proto, _, address = infos[0]
    privileged = options.privileged_port
    if privileged is None:
        privileged = os.geteuid() == 0
    ports: list[int | None] = [None]
    if privileged:
        # A random walk over 512..1023, like libnfs; an ordinary port as the last resort
        # only when the caller did not insist on a privileged one.
        start = random.randrange(512, 1024)
        ports = [512 + (start - 512 + i) % 512 for i in range(512)]
        if options.privileged_port is None:
            ports.append(None)
    last: OSError | None = None
    for local_port in ports:
        conn = Conn(socket.socket(family, type_, proto))
        sock = conn.sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if local_port is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    anywhere = "::" if family == socket.AF_INET6 else "0.0.0.0"
                    await sock.bind((anywhere, local_port))
                except OSError as exc:
                    if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EPERM):
                        last = exc
                        sock.close()
                        continue
                    raise
            limit = options.connect_timeout
            with trio.fail_after(math.inf if limit is None else limit):
                try:
                    await sock.connect(address)
                except OSError as exc:
                    if local_port is not None and exc.errno in (
                        errno.EADDRINUSE,
                        errno.EADDRNOTAVAIL,
                    ):
                        last = exc
                        sock.close()
                        continue
                    raise
        except trio.TooSlowError:
            sock.close()
            raise TimeoutError(errno.ETIMEDOUT, f"connecting to {host}:{port} timed out") from None
        except BaseException:
            sock.close()
            raise
        return conn
    assert last is not None
    raise last
