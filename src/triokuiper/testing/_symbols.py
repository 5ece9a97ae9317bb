"""Server-side handles of running symbols: eKuiper's ``PortableSource``/``Sink``/``Func``.

Each handle owns the data channel eKuiper would own for one rule operator (or, for a function,
for one function name across all rules) and talks to it exactly as the Go code does.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pynng
import trio

from ._channels import FunctionChannel, close_quietly
from ._errors import EmulatorError, PluginTimeoutError
from ._goshapes import (
    Control,
    FuncReply,
    GoDecodeError,
    SourceTuple,
    decode_ack,
    decode_func_reply,
    decode_source_message,
    encode_func_meta,
    encode_func_request,
    go_json,
)

__all__ = ["FunctionHandle", "SinkAck", "SinkHandle", "SourceHandle"]

log = logging.getLogger("triokuiper.testing")

StopSymbol = Callable[[Control], Awaitable[None]]


class SourceHandle:
    """A started source: ``await receive()`` reads what the plugin pushes, ``stop()`` ends it."""

    def __init__(self, control: Control, url: str, sock: pynng.Pull0, stop: StopSymbol) -> None:
        self.control = control
        self.url = url
        self._sock: pynng.Pull0 | None = sock
        self._stop_symbol = stop

    async def receive_raw(self) -> bytes:
        """The next payload as pushed (eKuiper retries its 5 s receive deadline forever)."""
        if self._sock is None:
            raise trio.ClosedResourceError("the source was stopped")
        try:
            return bytes(await self._sock.arecv())
        except pynng.Closed:
            raise trio.ClosedResourceError("the source was stopped") from None

    async def receive(self) -> SourceTuple:
        """The next payload decoded like eKuiper's ``messageWrapper``.

        Raises :class:`GoDecodeError` for what eKuiper reports as "Invalid data format"
        (it then goes on reading, and so can the caller).  ``{"error": ...}`` is *not* an error
        to eKuiper v2: it arrives as a tuple with ``message`` and ``meta`` both ``None``.
        """
        raw = await self.receive_raw()
        try:
            return decode_source_message(raw)
        except GoDecodeError as exc:
            raise GoDecodeError(
                f"Invalid data format, cannot decode {raw.decode(errors='replace')} to json "
                f"format with error {exc}"
            ) from None

    def __aiter__(self) -> AsyncIterator[SourceTuple]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[SourceTuple]:
        while True:
            yield await self.receive()

    def close(self) -> None:
        """Close the data channel only (no stop command); idempotent."""
        close_quietly(self._sock)
        self._sock = None

    async def stop(self) -> None:
        """Close the data channel, then send the stop command (the source's ``clean``)."""
        self.close()
        await self._stop_symbol(self.control)


@dataclass(frozen=True, slots=True)
class SinkAck:
    """An ack read from ``..._ack.ipc``: ``error`` is ``""`` for ``{}``."""

    raw: bytes
    error: str

    @property
    def ok(self) -> bool:
        return not self.error


class SinkHandle:
    """A started sink: ``await send(payload)`` is eKuiper's ``Collect`` for one item."""

    def __init__(
        self,
        control: Control,
        url: str,
        data: pynng.Push0,
        ack: pynng.Pull0,
        stop: StopSymbol,
        *,
        require_ack: bool,
    ) -> None:
        self.control = control
        self.url = url
        self.require_ack = require_ack
        self._data: pynng.Push0 | None = data
        self._ack: pynng.Pull0 | None = ack
        self._stop_symbol = stop

    async def send(self, payload: bytes | Mapping[str, Any] | Sequence[Any]) -> SinkAck | None:
        """Push one item; with ``requireAck`` wait for its ack and return it, else ``None``.

        ``payload`` is sent as is when it is bytes, else Go-marshalled: eKuiper sends a JSON
        array of rows by default and one object with ``sendSingle``.  A full send buffer for
        ``sendTimeout`` raises :class:`PluginTimeoutError`; nothing is ever read from the ack
        channel when ``requireAck`` is off (as in eKuiper, acks then pile up unread).
        """
        if self._data is None or self._ack is None:
            raise trio.ClosedResourceError("the sink was stopped")
        raw = payload if isinstance(payload, bytes) else go_json(payload).encode()
        try:
            await self._data.asend(raw)
        except pynng.Timeout as exc:
            raise PluginTimeoutError(f"io error: {exc}") from exc
        except pynng.Closed:
            raise trio.ClosedResourceError("the sink was stopped") from None
        if not self.require_ack:
            return None
        while True:  # recvAck: retry the 1 s deadline until the rule stops
            try:
                reply = bytes(await self._ack.arecv())
            except pynng.Timeout:
                log.debug("sink ack receive timeout, retry")
                continue
            except pynng.Closed:
                raise trio.ClosedResourceError("the sink was stopped") from None
            return SinkAck(raw=reply, error=decode_ack(reply))

    def close(self) -> None:
        """Close the data and ack channels only (no stop command); idempotent."""
        close_quietly(self._data)
        close_quietly(self._ack)
        self._data = self._ack = None

    async def stop(self) -> None:
        """Close the data and ack channels, then send the stop command (the sink's ``clean``)."""
        self.close()
        await self._stop_symbol(self.control)


class FunctionHandle:
    """A started function (one per name, shared by every rule, like eKuiper's ``funcInsMap``)."""

    def __init__(
        self,
        symbol_name: str,
        plugin_name: str,
        channel: FunctionChannel,
        status: Callable[[], tuple[str, str]],
    ) -> None:
        self.symbol_name = symbol_name
        self._plugin_name = plugin_name
        self._channel: FunctionChannel | None = channel
        self._discarded = channel.discarded
        self._status = status
        self._is_aggregate: bool | None = None

    @property
    def discarded(self) -> list[bytes]:
        """Stale messages the request loop dropped (``handshake`` keepalives, late replies)."""
        return list(self._discarded)

    async def request_raw(self, payload: bytes) -> bytes:
        """One exchange on the function channel with eKuiper's retry and timeout rules."""
        if self._channel is None:
            raise trio.ClosedResourceError("the function channel is closed")
        try:
            return await self._channel.req(payload)
        except pynng.Closed:
            raise trio.ClosedResourceError("the function channel is closed") from None
        except pynng.Timeout:
            status, message = self._status()
            raise PluginTimeoutError(
                f"time out, plugin {self._plugin_name} status {status}, message: {message}"
            ) from None

    async def request(self, func: str, arg: Any) -> FuncReply:
        raw = await self.request_raw(encode_func_request(func, arg))
        try:
            return decode_func_reply(raw)
        except GoDecodeError:
            raise GoDecodeError(
                f"Failed to unmarshal function result {raw.decode(errors='replace')}"
            ) from None

    async def validate(self, args: Sequence[Any]) -> FuncReply:
        """``{"func":"Validate","arg":[...]}``; eKuiper accepts the SQL only if ``state``."""
        return await self.request("Validate", list(args))

    async def exec(
        self,
        args: Sequence[Any],
        *,
        rule_id: str = "rule1",
        op_id: str = "op1",
        instance_id: int = 0,
        func_id: int = 0,
    ) -> FuncReply:
        """``Exec``: the arguments plus the function context as a JSON *string* last."""
        meta = encode_func_meta(rule_id, op_id, instance_id, func_id)
        return await self.request("Exec", [*args, meta])

    async def is_aggregate(self) -> bool:
        """``IsAggregate`` with eKuiper's caching; any failure counts as ``False`` (uncached)."""
        if self._is_aggregate is not None:
            await trio.lowlevel.checkpoint()
            return self._is_aggregate
        try:
            reply = await self.request("IsAggregate", None)
        except (EmulatorError, GoDecodeError) as exc:
            log.error("IsAggregate failed: %s", exc)
            return False
        if not reply.state or not isinstance(reply.result, bool):
            log.error("IsAggregate returned %r", reply)
            return False
        self._is_aggregate = reply.result
        return reply.result

    def close(self) -> None:
        """Close the channel; like eKuiper, this does not stop the symbol in the plugin."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
