"""The plugin author's API: async base classes, their contexts, and :class:`PluginConfig`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from ._messages import (
    ACK_OK,
    FunctionContext,
    Meta,
    encode_ack_error,
    encode_source_error,
    encode_source_message,
)


class Source:
    """A source symbol: ``configure`` once, then ``open`` runs until the rule stops it.

    ``open`` emits rows with ``await ctx.emit(message, meta)``; emitting waits while eKuiper
    is not reading (backpressure), it never drops a row.  ``open`` is cancelled on stop;
    ``close`` runs afterwards in every case.  ``configure`` may be ``def`` or ``async def``.
    """

    def configure(self, datasource: str, conf: dict[str, Any]) -> Any:
        """Check the datasource and the stream's config; raise to fail the rule start."""

    async def open(self, ctx: SourceContext) -> None:
        raise NotImplementedError

    async def close(self, ctx: SourceContext) -> None:
        """Release what ``open`` acquired (runs after ``open`` ended or was cancelled)."""


class Sink:
    """A sink symbol: ``configure``, ``open``, then ``collect`` for every payload.

    ``collect`` gets the payload decoded from JSON (a list of rows, or one row with
    ``sendSingle``); set ``raw = True`` to get the bytes (``dataTemplate`` output).  With the
    rule's ``requireAck``, the runtime answers each payload: ok when ``collect`` returns, the
    error when it raises, unless ``collect`` already called ``ctx.ack_ok()``/``ack_error()``.
    ``collect`` may also be a plain ``def``: it then runs in the sink's worker thread with
    blocking nng calls (the fastest path; acks are the runtime's: ok or the exception).
    """

    raw: bool = False

    def configure(self, conf: dict[str, Any]) -> Any:
        """Check the sink's properties; raise to fail the rule start."""

    async def open(self, ctx: SinkContext) -> None:
        """Connect to the target; raising fails the rule start."""

    async def collect(self, ctx: SinkContext, data: Any) -> None:
        raise NotImplementedError

    async def close(self, ctx: SinkContext) -> None:
        """Release what ``open`` acquired."""


class Function:
    """A function symbol, shared by every rule that calls it.

    ``validate`` returns None or "" when the arguments are fine, else the error text.
    ``exec`` may be ``async def`` (runs in Trio) or ``def``: a plain ``exec`` runs in the
    channel's worker thread with blocking nng calls, the fastest path for CPU-only functions.
    """

    def validate(self, args: list[Any]) -> str | None:
        return None

    async def exec(self, args: list[Any], ctx: FunctionContext) -> Any:
        raise NotImplementedError

    def is_aggregate(self) -> bool:
        return False


@dataclass
class _Context:
    symbol_name: str
    meta: Meta
    logger: logging.Logger

    @property
    def rule_id(self) -> str:
        return self.meta.rule_id

    @property
    def op_id(self) -> str:
        return self.meta.op_id

    @property
    def instance_id(self) -> int:
        return self.meta.instance_id


@dataclass
class SourceContext(_Context):
    """What a running source sees; ``emit``/``emit_error`` push to eKuiper."""

    _emit: Callable[[bytes], Any] = field(repr=False, default=None)  # type: ignore[assignment]
    socket: Any = field(repr=False, default=None)
    """For sources that emit from a worker thread: a blocking ``send(data)`` that raises
    ``pynng.Timeout``/``pynng.Closed`` like the pynng Push socket it replaces."""

    async def emit(self, message: dict[str, Any], meta: dict[str, Any] | None = None) -> None:
        """Push one row; waits while eKuiper is not reading.  ``message`` must be a dict."""
        await self._emit(encode_source_message(message, meta))

    async def emit_error(self, error: str) -> None:
        await self._emit(encode_source_error(error))


@dataclass
class SinkContext(_Context):
    """What a running sink sees; ``ack_ok``/``ack_error`` answer the current payload."""

    require_ack: bool = False
    _send_ack: Callable[[bytes], Any] = field(repr=False, default=None)  # type: ignore[assignment]
    acked: bool = field(default=True, repr=False)
    socket: Any = field(repr=False, default=None)
    """Where the payloads arrive, for a worker thread: ``recv()`` blocks for the next one and
    raises ``pynng.Closed`` at the end, as the pynng Pull socket it replaces did."""
    ack_socket: Any = field(repr=False, default=None)

    async def ack_ok(self) -> None:
        await self._ack(ACK_OK)

    async def ack_error(self, error: str) -> None:
        await self._ack(encode_ack_error(error))

    async def _ack(self, data: bytes) -> None:
        if not self.require_ack or self.acked:
            # eKuiper reads exactly one ack per payload and only with requireAck (#3820)
            if self.require_ack:
                self.logger.warning("%s: payload already acknowledged", self.symbol_name)
            await trio.lowlevel.checkpoint()
            return
        self.acked = True
        await self._send_ack(data)


Factory = Callable[[], Any]


@dataclass
class PluginConfig:
    """The plugin's name (its control channel) and its symbols: name -> factory or class."""

    name: str
    sources: Mapping[str, Factory] = field(default_factory=dict)
    sinks: Mapping[str, Factory] = field(default_factory=dict)
    functions: Mapping[str, Factory] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"invalid plugin name {self.name!r}")

    def factories(self, plugin_type: str) -> Mapping[str, Factory]:
        return {"source": self.sources, "sink": self.sinks, "func": self.functions}[plugin_type]
