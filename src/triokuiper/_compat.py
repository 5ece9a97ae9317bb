"""Plugins written for the official ``ekuiper`` Python SDK, run unmodified on triokuiper.

``triokuiper compat PLUGIN.py ARGS`` puts our ``ekuiper`` stand-in (``_shim/``) first on
``sys.path`` and runs the script as ``__main__``; its ``plugin.start(PluginConfig(...))`` lands
in :func:`start_sdk_plugin`.  The SDK's blocking methods run in worker threads: a source's
``open`` in one thread for its life, a sink's receive loop (blocking ``recv`` + ``collect``) in
one thread, a function channel's loop in one thread, as the SDK does, so the per-message cost is
the SDK's.  What triokuiper adds: a source whose send times out keeps waiting instead of dying,
an exception in ``collect`` is acked/logged and the sink goes on, stop closes everything before
answering, all functions come back after a restart, and the process exits with eKuiper.
"""

from __future__ import annotations

import logging
import runpy
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pynng
import trio

from ._api import Function, PluginConfig, Sink, SinkContext, Source, SourceContext
from ._messages import (
    ACK_OK,
    FunctionContext,
    Meta,
    RemoteProtocolError,
    encode_ack_error,
    encode_function_reply,
    encode_source_error,
    encode_source_message,
    parse_function_call,
)
from ._runtime import run

log = logging.getLogger("triokuiper.compat")

SHIM_DIR = Path(__file__).with_name("_shim")


class _StdoutLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """``ctx.get_logger()``: the SDK returns ``sys.stdout``; this is a logger that also writes."""

    def write(self, text: str) -> int:
        if text.strip():
            self.info("%s", text.rstrip("\n"))
        return len(text)

    def flush(self) -> None:
        pass


class SdkContext:
    """The SDK's ``Context`` (``ContextImpl``), called from the symbol's worker thread."""

    def __init__(self, meta: Meta, logger: logging.Logger, symbol: str) -> None:
        self.ruleId, self.opId, self.instanceId = meta.rule_id, meta.op_id, meta.instance_id
        self._logger = _StdoutLogger(logger, {})
        self._symbol = symbol
        self._source_sock: Any = None
        self._ack_sock: Any = None
        self.require_ack = False
        self.acked = True

    def get_rule_id(self) -> str:
        return self.ruleId

    def get_op_id(self) -> str:
        return self.opId

    def get_instance_id(self) -> int:
        return self.instanceId

    def get_logger(self) -> Any:
        return self._logger

    def emit(self, message: dict[str, Any], meta: dict[str, Any] | None) -> None:
        self._push(encode_source_message(message, meta))

    def emit_error(self, error: str) -> None:
        self._push(encode_source_error(error))

    def _push(self, data: bytes) -> None:
        if self._source_sock is None:
            raise RuntimeError("emit is only available to a source")
        stalled = False
        while True:  # a timeout is backpressure: keep the row, keep the source alive
            try:
                self._source_sock.send(data)
                break
            except pynng.Timeout:
                if not stalled:
                    self._logger.warning("eKuiper is not reading; holding the row")
                    stalled = True
        if stalled:
            self._logger.info("eKuiper reads again")

    def ack_ok(self) -> None:
        self._ack(ACK_OK)

    def ack_error(self, error: str) -> None:
        self._ack(encode_ack_error(error))

    def _ack(self, data: bytes) -> None:
        if self._ack_sock is None:
            raise RuntimeError("ack is only available to a sink")
        if not self.require_ack or self.acked:
            return  # eKuiper reads one ack per payload, and only with requireAck (#3820)
        self.acked = True
        try:
            self._ack_sock.send(data)
        except pynng.Timeout:
            self._logger.warning("could not ack: eKuiper is not reading acks")


class CompatSource(Source):
    def __init__(self, sdk: Any) -> None:
        self.sdk = sdk
        self.ctx: SdkContext | None = None

    async def configure(self, datasource: str, conf: dict[str, Any]) -> None:
        await trio.to_thread.run_sync(self.sdk.configure, datasource, conf)

    async def open(self, ctx: SourceContext) -> None:
        self.ctx = SdkContext(ctx.meta, ctx.logger, ctx.symbol_name)
        self.ctx._source_sock = ctx.socket
        # abandoned on stop: the SDK's open() only returns once close() flips its flag or an
        # emit hits the closed socket
        await trio.to_thread.run_sync(self.sdk.open, self.ctx, abandon_on_cancel=True)

    async def close(self, ctx: SourceContext) -> None:
        if self.ctx is not None:
            await trio.to_thread.run_sync(self.sdk.close, self.ctx, abandon_on_cancel=True)


class CompatSink(Sink):
    raw = True  # the SDK hands collect() the payload bytes

    def __init__(self, sdk: Any) -> None:
        self.sdk = sdk
        self.ctx: SdkContext | None = None

    async def configure(self, conf: dict[str, Any]) -> None:
        await trio.to_thread.run_sync(self.sdk.configure, conf)

    async def open(self, ctx: SinkContext) -> None:
        self.ctx = SdkContext(ctx.meta, ctx.logger, ctx.symbol_name)
        self.ctx._ack_sock = ctx.ack_socket
        self.ctx.require_ack = ctx.require_ack
        await trio.to_thread.run_sync(self.sdk.open, self.ctx, abandon_on_cancel=True)

    def serve_blocking(self, ctx: SinkContext) -> None:
        """The receive loop, in one worker thread: the SDK's per-message cost, plus acks."""
        sdk_ctx = self.ctx
        assert sdk_ctx is not None
        sock = ctx.socket
        while True:
            try:
                data = sock.recv()
            except pynng.Closed:
                return
            sdk_ctx.acked = False
            error: str | None = None
            try:
                self.sdk.collect(sdk_ctx, data)
            except Exception as exc:
                log.exception("%s: collect() failed", ctx.symbol_name)
                error = f"{type(exc).__name__}: {exc}"
            if error is not None and sdk_ctx.require_ack and not sdk_ctx.acked:
                try:
                    sdk_ctx.ack_error(error)
                except pynng.Closed:
                    return
            sdk_ctx.acked = True

    async def collect(self, ctx: SinkContext, data: Any) -> None:  # pragma: no cover
        raise NotImplementedError("compat sinks are served by serve_blocking")

    async def close(self, ctx: SinkContext) -> None:
        if self.ctx is not None:
            await trio.to_thread.run_sync(self.sdk.close, self.ctx, abandon_on_cancel=True)


class CompatFunction(Function):
    """Answers calls as the SDK's ``FunctionRuntime`` does, from the channel's worker thread."""

    blocking = True

    def __init__(self, sdk: Any) -> None:
        self.sdk = sdk
        self.contexts: dict[str, SdkContext] = {}

    def answer_call(self, data: bytes) -> bytes:
        try:
            call = parse_function_call(data)
        except RemoteProtocolError as exc:
            return exc.reply
        try:
            if call.func == "Validate":
                err = self.sdk.validate(call.args)
                # the SDK's rule: only "" is valid (None fails, with a null result)
                return encode_function_reply(err == "", "" if err == "" else err)
            if call.func == "IsAggregate":
                return encode_function_reply(True, self.sdk.is_aggregate())
            assert call.context is not None
            return encode_function_reply(True, self.sdk.exec(call.args, self._ctx(call.context)))
        except Exception:
            log.exception("function call failed")
            return encode_function_reply(False, traceback.format_exc())

    def _ctx(self, fctx: FunctionContext) -> SdkContext:
        ctx = self.contexts.get(fctx.key)
        if ctx is None:
            meta = Meta(fctx.rule_id, fctx.op_id, fctx.instance_id)
            ctx = self.contexts[fctx.key] = SdkContext(meta, log, fctx.key)
        return ctx

    def exec(self, args: list[Any], ctx: FunctionContext) -> Any:
        return self.sdk.exec(args, self._ctx(ctx))


def _adapt(factories: Any, adapter: type[Any]) -> dict[str, Any]:
    def make(factory: Any) -> Any:
        return lambda: adapter(factory())

    return {name: make(factory) for name, factory in dict(factories or {}).items()}


def adapt_config(sdk_config: Any) -> PluginConfig:
    """A triokuiper ``PluginConfig`` serving an SDK ``PluginConfig``'s factories."""
    return PluginConfig(
        sdk_config.name,
        sources=_adapt(sdk_config.sources, CompatSource),
        sinks=_adapt(sdk_config.sinks, CompatSink),
        functions=_adapt(sdk_config.functions, CompatFunction),
    )


def start_sdk_plugin(sdk_config: Any) -> None:
    """``ekuiper.plugin.start(config)`` under triokuiper."""
    run(adapt_config(sdk_config))


def run_compat(script: str, args: Sequence[str]) -> None:
    """Run an SDK plugin script as ``__main__`` with our ``ekuiper`` first on ``sys.path``.

    Raises ``FileNotFoundError`` for a missing script; the script's own exceptions propagate.
    """
    path = Path(script).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{script}: no such plugin script")
    for name in [m for m in sys.modules if m == "ekuiper" or m.startswith("ekuiper.")]:
        del sys.modules[name]  # an already imported official SDK must not win
    sys.path[:0] = [str(SHIM_DIR), str(path.parent)]
    sys.argv = [str(path), *args]
    runpy.run_path(str(path), run_name="__main__")


__all__ = ["CompatFunction", "CompatSink", "CompatSource", "run_compat", "start_sdk_plugin"]
