"""Running source and sink instances: one Trio task each, with its own cancel scope."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import pynng
import trio

from . import _nng
from ._api import Sink, SinkContext, Source, SourceContext
from ._messages import (
    Control as Control,
    LocalProtocolError,
    RemoteProtocolError,
    encode_ack_error,
    parse_sink_payload,
)
from ._pull_listener import BlockingReceiver, PullListener
from ._push_dialer import PushDialer

log = logging.getLogger("triokuiper")

CLOSE_TIMEOUT: Final = 5.0
"""How long a symbol's ``close`` (and a stop) may take before we carry on without it."""


async def maybe_await(value: Any) -> Any:
    """Let hooks such as ``configure`` be ``def`` or ``async def``."""
    if inspect.isawaitable(value):
        return await value
    await trio.lowlevel.checkpoint()
    return value


def describe(exc: BaseException) -> str:
    """The error text eKuiper shows: ``Type: message`` (the traceback goes to our log)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(eq=False)
class Instance:
    """A started symbol: ``stop()`` cancels its task and waits for its clean-up."""

    key: str
    symbol_name: str
    plugin_type: str
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    sockets: list[Any] = field(default_factory=list)

    async def stop(self) -> None:
        self.scope.cancel()
        with trio.move_on_after(CLOSE_TIMEOUT * 2) as waited:
            await self.done.wait()
        if waited.cancelled_caught:
            log.warning("%s did not stop in time; closing its sockets", self.key)
            self.close_sockets()

    def close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()


def instance_key(control: Control) -> str:
    """The official SDK's registry key: ``{ruleId}_{opId}_{instanceId}_{symbolName}``."""
    return f"{control.meta.channel_stem}_{control.symbol_name}"


async def _close_hook(close: Any, ctx: Any, key: str) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
        try:
            await maybe_await(close(ctx))
        except Exception:
            log.exception("%s: close failed", key)


# -- sources --------------------------------------------------------------------------------


async def start_source(
    control: Control,
    source: Source,
    nursery: trio.Nursery,
    *,
    ipc_dir: str,
    send_timeout: int,
) -> Instance:
    """Configure, dial the data channel, then run ``open`` in a new task."""
    key = instance_key(control)
    await maybe_await(source.configure(control.datasource, control.config))

    def stalled() -> None:  # once per stall: eKuiper may pause a rule for long
        log.warning("%s: eKuiper is not reading; holding the rows", key)

    sender = PushDialer(
        _nng.ipc_path(ipc_dir, control.meta.channel_stem),
        send_timeout=send_timeout / 1000 if send_timeout >= 0 else None,
        on_stall=stalled,
    )
    await sender.connect()
    instance = Instance(key, control.symbol_name, "source", sockets=[sender])
    ctx = SourceContext(
        control.symbol_name, control.meta, log.getChild(key), sender.send, _BlockingPush(sender)
    )
    nursery.start_soon(_run_source, source, ctx, sender, instance, name=f"source {key}")
    return instance


async def _run_source(
    source: Source, ctx: SourceContext, sender: PushDialer, instance: Instance
) -> None:
    try:
        with instance.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender.run)
                await source.open(ctx)
                log.info("%s: open() returned; the source is finished", instance.key)
                await sender.finish()  # rows already emitted still go out
    except Exception:
        log.exception("%s: open() failed", instance.key)
    finally:
        await _close_hook(source.close, ctx, instance.key)
        instance.close_sockets()
        instance.done.set()


class _BlockingPush:
    """``ctx.socket`` for sources that emit from a worker thread (official-SDK sources): the
    blocking ``send`` of the pynng Push socket it replaces, ``pynng.Timeout`` included."""

    __slots__ = ("send",)

    def __init__(self, sender: PushDialer) -> None:
        self.send = sender.send_blocking


# -- sinks ----------------------------------------------------------------------------------


async def start_sink(
    control: Control,
    sink: Sink,
    nursery: trio.Nursery,
    *,
    ipc_dir: str,
    send_timeout: int,
) -> Instance:
    """Configure, listen on the data channel, dial the ack channel, ``open``, then collect.

    eKuiper dials the data channel right after our "ok", so we listen before answering.
    """
    key = instance_key(control)
    require_ack = control.config.get("requireAck") is True
    await maybe_await(sink.configure(control.config))
    stem = control.meta.channel_stem
    data = PullListener(_nng.ipc_path(ipc_dir, stem))
    ack_sock = _nng.new_socket(pynng.Push0, send_timeout=send_timeout)
    instance = Instance(key, control.symbol_name, "sink", sockets=[data, ack_sock])
    ack_channel = _nng.FastChannel(ack_sock)
    ctx = SinkContext(
        control.symbol_name,
        control.meta,
        log.getChild(key),
        require_ack,
        ack_channel.send,
        socket=BlockingReceiver(data),
        ack_socket=ack_sock,
    )
    try:
        await data.listen()
        await _nng.dial(ack_sock, _nng.ipc_url(ipc_dir, f"{stem}_ack"))
        await sink.open(ctx)
    except BaseException:
        instance.close_sockets()
        raise
    nursery.start_soon(_run_sink, sink, ctx, instance, name=f"sink {key}")
    return instance


async def _run_sink(sink: Sink, ctx: SinkContext, instance: Instance) -> None:
    blocking = getattr(sink, "serve_blocking", None)
    if blocking is None and not inspect.iscoroutinefunction(sink.collect):
        blocking = partial(_collect_blocking_loop, sink)
    data_channel: PullListener = instance.sockets[0]
    try:
        with instance.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(data_channel.run)
                if blocking is not None:  # collect blocks: the whole loop in one worker thread
                    nursery.start_soon(ctx.socket.pump)
                    await trio.to_thread.run_sync(blocking, ctx, abandon_on_cancel=True)
                    nursery.cancel_scope.cancel()
                    return
                while True:
                    try:
                        batch = await data_channel.receive_batch()
                    except trio.ClosedResourceError:
                        return
                    for data in batch:
                        await collect_one(sink, ctx, data)
    finally:
        await _close_hook(sink.close, ctx, instance.key)
        instance.close_sockets()
        instance.done.set()


async def collect_one(sink: Sink, ctx: SinkContext, data: bytes) -> None:
    """Hand one payload to ``collect``; a failure is acked (requireAck) or logged, never fatal."""
    ctx.acked = False
    error: str | None = None
    if sink.raw:
        payload: Any = data
    else:
        try:
            payload = parse_sink_payload(data)
        except RemoteProtocolError as exc:
            log.warning("%s: dropped a payload: %s", ctx.symbol_name, exc)
            error = str(exc)
    if error is None:
        try:
            await sink.collect(ctx, payload)
        except Exception as exc:
            log.exception("%s: collect() failed", ctx.symbol_name)
            error = describe(exc)
    if ctx.require_ack and not ctx.acked:
        try:
            await ctx._ack(encode_ack_error(error) if error is not None else b"{}")
        except (pynng.Timeout, LocalProtocolError) as exc:
            log.warning("%s: could not ack: %s", ctx.symbol_name, exc)
    ctx.acked = True


def _collect_blocking_loop(sink: Sink, ctx: SinkContext) -> None:
    """A plain ``def collect``: receive, collect and ack in one worker thread (blocking nng)."""
    sock, ack_sock = ctx.socket, ctx.ack_socket
    while True:
        try:
            data = sock.recv()
        except pynng.Closed:
            return
        error: str | None = None
        try:
            sink.collect(ctx, data if sink.raw else parse_sink_payload(data))  # type: ignore[unused-coroutine]
        except RemoteProtocolError as exc:
            log.warning("%s: dropped a payload: %s", ctx.symbol_name, exc)
            error = str(exc)
        except Exception as exc:
            log.exception("%s: collect() failed", ctx.symbol_name)
            error = describe(exc)
        if ctx.require_ack:
            try:
                ack_sock.send(encode_ack_error(error) if error is not None else b"{}")
            except pynng.Timeout as exc:
                log.warning("%s: could not ack: %s", ctx.symbol_name, exc)
            except pynng.Closed:
                return
