"""eKuiper's server-side nng channels (``runtime/connection.go``) rebuilt on pynng under Trio.

eKuiper uses mangos; the plugin uses nng.  The behaviours a plugin can observe are kept: who
listens and who dials, the listen retry (5 x 100 ms), the synchronous first dial of the sink
channel, unlimited message size, and the request loop shared by the control and function
channels -- on a protocol-state error receive once, discard, resend; skip replies starting with
``h`` (a plugin's keepalive handshake) by sending the request again.
"""

from __future__ import annotations

import logging
import os
from functools import partial

import pynng
import trio

from ._errors import PluginExitedError

__all__ = [
    "ControlChannel",
    "FunctionChannel",
    "close_quietly",
    "dial_push",
    "ipc_url",
    "listen_pull",
    "listen_with_retry",
]

log = logging.getLogger("triokuiper.testing")

_LISTEN_RETRIES = 5
_LISTEN_RETRY_INTERVAL = 0.1


def ipc_url(ipc_dir: str | os.PathLike[str], name: str) -> str:
    """``ipc://{dir}/{name}.ipc``; eKuiper hard-codes the directory ``/tmp``."""
    return f"ipc://{os.fspath(ipc_dir)}/{name}.ipc"


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


async def listen_with_retry(sock: pynng.Socket, url: str) -> None:
    """``listenWithRetry``: up to six attempts 100 ms apart (the address may still be busy)."""
    retries = _LISTEN_RETRIES
    while True:
        try:
            sock.listen(url)
        except pynng.NNGException:
            retries -= 1
            if retries < 0:
                raise
            await trio.sleep(_LISTEN_RETRY_INTERVAL)
        else:
            await trio.lowlevel.checkpoint()
            return


async def listen_pull(url: str, *, recv_timeout: float | None = None) -> pynng.Pull0:
    """A listening Pull socket (source data, sink acks)."""
    sock = pynng.Pull0(recv_max_size=0)
    if recv_timeout is not None:
        sock.recv_timeout = _ms(recv_timeout)
    try:
        await listen_with_retry(sock, url)
    except BaseException:
        sock.close()
        raise
    return sock


async def dial_push(url: str, *, send_timeout: float) -> pynng.Push0:
    """The sink data channel: a synchronous first dial (fails if the plugin does not listen),
    then nng's own reconnects, 100 ms growing to 5 s like mangos's ``dialOptions``."""
    sock = pynng.Push0(recv_max_size=0, send_timeout=_ms(send_timeout))
    sock.reconnect_time_min = 100
    sock.reconnect_time_max = 5000
    try:
        # in a thread: the SP handshake needs the plugin's side to run, maybe in this process
        await trio.to_thread.run_sync(partial(sock.dial, url, block=True))
    except BaseException:
        sock.close()
        raise
    return sock


def close_quietly(sock: pynng.Socket | None) -> None:
    if sock is not None:
        try:
            sock.close()
        except pynng.NNGException:  # pragma: no cover - close of a closed socket
            pass


async def _recv_unless(sock: pynng.Socket, abort: trio.Event | None) -> bytes:
    """``arecv`` that gives up with :class:`PluginExitedError` once ``abort`` is set."""
    if abort is None:
        return bytes(await sock.arecv())
    if abort.is_set():
        await trio.lowlevel.checkpoint()
        raise PluginExitedError("the plugin process exited")
    received: bytes | None = None
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            await abort.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        received = bytes(await sock.arecv())
        nursery.cancel_scope.cancel()
    if received is None:  # pragma: no cover - only reached when the watcher cancelled
        raise PluginExitedError("the plugin process exited while the server waited for it")
    return received


class _RequestLoop:
    """The shared body of ``NanomsgReqChannel.SendCmd`` and ``NanomsgReqRepChannel.Req``.

    eKuiper's socket is a Rep: its requests travel as *replies* to the plugin's last request.
    """

    def __init__(self, sock: pynng.Rep0, url: str, *, skip_h: bool) -> None:
        self.sock = sock
        self.url = url
        self.skip_h = skip_h
        self.abort: trio.Event | None = None
        self.discarded: list[bytes] = []
        """Stale messages dropped by the protocol-state recovery, oldest first."""
        self._lock = trio.Lock()  # eKuiper's syncx.Mutex: one exchange at a time

    async def _exchange(self, payload: bytes) -> bytes:
        async with self._lock:
            while True:
                try:
                    await self.sock.asend(payload)
                except pynng.BadState:
                    # No request to answer yet (a new plugin, or a reply already consumed):
                    # take the plugin's pending message, drop it, then send again.
                    previous = await _recv_unless(self.sock, self.abort)
                    log.debug("%s: discard previous message %r", self.url, previous)
                    self.discarded.append(previous)
                    await self.sock.asend(payload)
                reply = await _recv_unless(self.sock, self.abort)
                if self.skip_h and reply[:1] == b"h":
                    # A keepalive handshake sent after the plugin's receive timed out: our
                    # payload went to a request the plugin had abandoned, so send it again.
                    log.debug("%s: skip handshake reply %r", self.url, reply)
                    self.discarded.append(reply)
                    continue
                return reply

    def close(self) -> None:
        close_quietly(self.sock)


class ControlChannel(_RequestLoop):
    """``plugin_{name}.ipc``: eKuiper listens Rep, the plugin dials Req and says ``handshake``."""

    @classmethod
    async def open(cls, url: str, *, skip_h: bool, reply_timeout: float) -> ControlChannel:
        sock = pynng.Rep0(recv_max_size=0, recv_timeout=_ms(reply_timeout))
        try:
            await listen_with_retry(sock, url)
        except BaseException:
            sock.close()
            raise
        return cls(sock, url, skip_h=skip_h)

    async def handshake(self, init_timeout: float) -> bytes:
        """``Handshake()``: one receive within eKuiper's ``initTimeout`` (seconds here)."""
        saved = self.sock.recv_timeout
        self.sock.recv_timeout = _ms(init_timeout)
        try:
            async with self._lock:
                return await _recv_unless(self.sock, self.abort)
        finally:
            self.sock.recv_timeout = saved

    async def send_cmd(self, payload: bytes) -> bytes:
        """``SendCmd`` up to the reply; returns it (``b""`` when the receive timed out)."""
        try:
            return await self._exchange(payload)
        except pynng.Timeout:
            return b""  # eKuiper logs the error and reports "receive error: "


class FunctionChannel(_RequestLoop):
    """``func_{symbol}.ipc``: eKuiper listens Rep with send/recv deadlines and no retry."""

    @classmethod
    async def open(cls, url: str, *, recv_timeout: float, send_timeout: float) -> FunctionChannel:
        sock = pynng.Rep0(
            recv_max_size=0, recv_timeout=_ms(recv_timeout), send_timeout=_ms(send_timeout)
        )
        try:
            await listen_with_retry(sock, url)
        except BaseException:
            sock.close()
            raise
        return cls(sock, url, skip_h=True)  # the function channel skips 'h' since 1.9.0

    async def req(self, payload: bytes) -> bytes:
        """``Req``: raises :class:`pynng.Timeout` when the plugin does not answer in time."""
        return await self._exchange(payload)
