"""Function channels: one Req channel per function name, answering eKuiper's calls.

eKuiper sends calls as Rep *replies* to our last request, so we start with ``handshake`` and
answer every call with a new request.  After ``keepalive`` seconds without a call we send
``handshake`` again (servers since 1.9 skip such a stale 'h' reply), so an idle function never
finds its channel out of step (#3962).  An ``async def exec`` is served by one Trio task over
our own SP Req (:mod:`triokuiper._req_dialer`: no thread at all).  A plain ``def exec`` (and an
official-SDK function) is served from one worker thread over a blocking pynng Req socket, the
call made right there: no Trio round trip per call.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final

import pynng
import trio

from . import _nng
from ._messages import (
    HANDSHAKE,
    FunctionCall,
    RemoteProtocolError,
    encode_function_reply,
    parse_function_call,
)
from ._req_dialer import ReqDialer
from ._sp import SPProtocolError
from ._symbols import Instance, describe

log = logging.getLogger("triokuiper")

KEEPALIVE: Final = 5.0
"""Seconds without a call before re-sending ``handshake`` (the official SDK's 5 s)."""


def has_blocking_exec(function: Any) -> bool:
    """True when ``exec`` is a plain method: the channel then runs in a worker thread."""
    if getattr(function, "blocking", None) is not None:
        return bool(function.blocking)
    return not inspect.iscoroutinefunction(function.exec)


def _validate_reply(function: Any, args: list[Any]) -> bytes:
    err = function.validate(args)
    if err is None or err == "":
        return encode_function_reply(True, "")
    return encode_function_reply(False, str(err))


def _is_aggregate_reply(function: Any) -> bytes:
    return encode_function_reply(True, bool(function.is_aggregate()))


def _error_reply(exc: Exception) -> bytes:
    """What eKuiper gets for a call that failed; called from inside the ``except`` block."""
    if isinstance(exc, RemoteProtocolError):
        log.warning("bad function call: %s", exc)
        return exc.reply
    log.exception("function call failed")
    return encode_function_reply(False, describe(exc))


def answer_blocking(function: Any, data: bytes) -> bytes:
    """The reply to one call, calling ``exec`` synchronously.  Never raises."""
    custom = getattr(function, "answer_call", None)
    if custom is not None:  # official-SDK functions answer with the SDK's own rules
        reply: bytes = custom(data)
        return reply
    try:
        call = parse_function_call(data)
        if call.func == "Exec":
            return encode_function_reply(True, function.exec(call.args, call.context))
        return _answer_other(function, call)
    except Exception as exc:
        return _error_reply(exc)


async def answer(function: Any, data: bytes) -> bytes:
    """The reply to one call, awaiting an ``async def exec``.  Never raises (but Cancelled)."""
    try:
        call = parse_function_call(data)
        if call.func == "Exec":
            return encode_function_reply(True, await function.exec(call.args, call.context))
        return _answer_other(function, call)
    except Exception as exc:
        return _error_reply(exc)


def _answer_other(function: Any, call: FunctionCall) -> bytes:
    if call.func == "Validate":
        return _validate_reply(function, call.args)
    return _is_aggregate_reply(function)


async def start_function(
    name: str,
    function: Any,
    nursery: trio.Nursery,
    *,
    ipc_dir: str,
    keepalive: float,
    wait_for_server: bool,
    on_exit: Callable[[Instance], None],
) -> Instance:
    """Open the channel for ``name`` and serve it in a new task.

    With ``wait_for_server`` the dial must succeed now (eKuiper listens before it sends the
    start command); otherwise nng keeps dialing in the background, for functions eKuiper has
    not asked for since this process started (see "restart" in docs/triokuiper.md).
    """
    url = _nng.ipc_url(ipc_dir, f"func_{name}")
    if has_blocking_exec(function):
        sock = _nng.new_socket(pynng.Req0, resend_time=0, recv_timeout=int(keepalive * 1000))
        try:
            if wait_for_server:
                await _nng.dial(sock, url)
            else:
                sock.dial(url, block=False)
        except BaseException:
            sock.close()
            raise
        instance = Instance(f"func_{name}", name, "func", sockets=[sock])
        key = f"func_{name}"
        serve = partial(
            trio.to_thread.run_sync, _serve_blocking, sock, function, key, abandon_on_cancel=True
        )
    else:
        channel = ReqDialer(_nng.ipc_path(ipc_dir, f"func_{name}"))
        if wait_for_server:
            await channel.connect()
        instance = Instance(f"func_{name}", name, "func", sockets=[channel])
        serve = partial(_serve_async, channel, function, f"func_{name}", keepalive)
    nursery.start_soon(_run_function, serve, instance, on_exit, name=f"function {name}")
    return instance


async def _run_function(
    serve: Callable[[], Awaitable[Any]], instance: Instance, on_exit: Any
) -> None:
    try:
        with instance.scope:
            await serve()
    except (pynng.Closed, trio.ClosedResourceError):
        pass
    except Exception:
        log.exception("%s: function channel failed", instance.key)
    finally:
        instance.close_sockets()  # also ends an abandoned worker thread
        instance.done.set()
        on_exit(instance)


async def _serve_async(channel: ReqDialer, function: Any, key: str, keepalive: float) -> None:
    """``async def exec``: the whole channel in this task, no thread (see _req_dialer)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_keep_alive, channel, key, keepalive)
        try:
            await _answer_calls(channel, function, key)
        except trio.ClosedResourceError:
            pass  # closed under us (a stop that took too long): the channel is done
        nursery.cancel_scope.cancel()


async def _answer_calls(channel: ReqDialer, function: Any, key: str) -> None:
    request = HANDSHAKE
    while True:
        if not channel.connected:
            await channel.redial()  # a function eKuiper has not asked for yet, or a break
            request = HANDSHAKE
        try:
            call = await channel.request(request)
        except (OSError, SPProtocolError) as exc:
            log.info("%s: eKuiper's channel broke (%s); redialling", key, exc)
            channel.disconnect()
            continue
        request = await answer(function, call)


async def _keep_alive(channel: ReqDialer, key: str, keepalive: float) -> None:
    """Re-send ``handshake`` once ``keepalive`` seconds pass without a call.

    A task beside the call loop rather than a timeout around each wait for a call: moving a
    deadline twice per call cost ~15% of a round trip."""
    while True:
        due = channel.last_request + keepalive
        if trio.current_time() < due:
            await trio.sleep_until(due)
        elif channel.waiting:
            log.debug("%s: idle, re-sending handshake", key)
            channel.resend_nowait(HANDSHAKE)
        else:  # answering a call, or redialling: the next request will be fresh
            await trio.sleep(keepalive)


def _req_loop(sock: Any, key: str, reply_to: Callable[[bytes], bytes | None]) -> None:
    """The function channel's Req side, in its thread: handshake, then answer every call.

    A receive timeout re-sends the handshake (eKuiper >= 2.4 skips it as a keepalive); the loop
    ends when the socket closes or ``reply_to`` returns ``None``."""
    try:
        sock.send(HANDSHAKE)
        while True:
            try:
                data = sock.recv()
            except (pynng.Timeout, pynng.BadState, pynng.ConnectionReset):
                log.debug("%s: idle, re-sending handshake", key)
                sock.send(HANDSHAKE)
                continue
            reply = reply_to(data)
            if reply is None:
                return
            sock.send(reply)
    except pynng.Closed:
        return


def _serve_blocking(sock: Any, function: Any, key: str) -> None:
    _req_loop(sock, key, partial(answer_blocking, function))
