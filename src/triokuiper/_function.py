"""Function channels: one nng Req socket per function name, answering eKuiper's calls.

eKuiper sends calls as Rep *replies* to our last request, so we start with ``handshake`` and
answer every call with a new request.  After ``keepalive`` seconds without a call we send
``handshake`` again (servers since 1.9 skip such a stale 'h' reply), so an idle function never
finds its channel out of step (#3962).  The nng I/O always runs in a worker thread with
blocking calls (the fastest round trip: ``arecv`` measured 2-4x slower); a plain ``def exec``
is called right there, an ``async def exec`` is handed to a Trio task.
"""

from __future__ import annotations

import collections
import inspect
import logging
import os
import queue
import threading
from collections.abc import Callable
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
    sock = _nng.new_socket(pynng.Req0, resend_time=0, recv_timeout=int(keepalive * 1000))
    url = _nng.ipc_url(ipc_dir, f"func_{name}")
    try:
        if wait_for_server:
            await _nng.dial(sock, url)
        else:
            sock.dial(url, block=False)
    except BaseException:
        sock.close()
        raise
    instance = Instance(f"func_{name}", name, "func", sockets=[sock])
    nursery.start_soon(_run_function, function, instance, on_exit, name=f"function {name}")
    return instance


async def _run_function(function: Any, instance: Instance, on_exit: Any) -> None:
    sock = instance.sockets[0]
    try:
        with instance.scope:
            if has_blocking_exec(function):
                await trio.to_thread.run_sync(
                    _serve_blocking, sock, function, instance.key, abandon_on_cancel=True
                )
            else:
                await _serve_async_threaded(sock, function, instance.key)
    except pynng.Closed:
        pass
    except Exception:
        log.exception("%s: function channel failed", instance.key)
    finally:
        instance.close_sockets()  # also ends an abandoned worker thread
        instance.done.set()
        on_exit(instance)


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


class _CallInbox:
    """Calls from the channel's thread to a Trio task, without a blocking round trip.

    The thread wakes the task through an eventfd the task waits on with ``wait_readable``:
    Trio reschedules it straight from epoll.  (``run_sync_soon`` costs one more pass of the
    run loop, through Trio's entry-queue task, on every call.)
    """

    def __init__(self) -> None:
        self._items: collections.deque[bytes | None] = collections.deque()
        self._lock = threading.Lock()
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def put_from_thread(self, data: bytes | None) -> None:
        self._items.append(data)
        with self._lock:  # never write to a closed (maybe reused) fd number
            if self._fd >= 0:
                os.eventfd_write(self._fd, 1)

    async def get(self) -> bytes | None:
        await trio.lowlevel.checkpoint_if_cancelled()
        items = self._items
        while not items:
            await trio.lowlevel.wait_readable(self._fd)
            try:
                os.eventfd_read(self._fd)
            except BlockingIOError:
                pass
        return items.popleft()

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                trio.lowlevel.notify_closing(self._fd)
                os.close(self._fd)
                self._fd = -1


async def _serve_async_threaded(sock: Any, function: Any, key: str) -> None:
    """``async def exec``: blocking nng I/O in a worker thread, the calls answered in Trio."""
    inbox = _CallInbox()
    replies: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def hand_to_trio(data: bytes) -> bytes | None:
        inbox.put_from_thread(data)
        return replies.get()

    def io_loop() -> None:
        try:
            _req_loop(sock, key, hand_to_trio)
        finally:
            inbox.put_from_thread(None)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(trio.to_thread.run_sync, io_loop, abandon_on_cancel=True))
        try:
            while (data := await inbox.get()) is not None:
                replies.put(await answer(function, data))
        finally:
            replies.put(None)
            sock.close()
            inbox.close()
