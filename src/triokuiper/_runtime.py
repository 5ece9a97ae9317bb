"""The plugin process: the control channel, its commands, and every running symbol.

``serve()`` dials ``plugin_{name}.ipc``, says ``handshake`` and then answers eKuiper's
start/stop commands one at a time.  Each started source or sink is a task with its own cancel
scope in the serve nursery; each function name gets one channel task.  When the control
channel's peer goes away (eKuiper exited or was killed) everything is cancelled, closed and
``serve()`` returns, so the process never lingers as an orphan (#1188).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, Final

import pynng
import trio

from . import _nng
from ._api import PluginConfig
from ._function import KEEPALIVE, start_function
from ._messages import (
    HANDSHAKE,
    OK,
    Command,
    RemoteProtocolError,
    control_error_reply,
    parse_command,
    parse_launch_args,
)
from ._symbols import Instance, describe, instance_key, start_sink, start_source

log = logging.getLogger("triokuiper")

PARENT_POLL: Final = 1.0


class Plugin:
    """A serving plugin (what ``nursery.start(serve, ...)`` returns)."""

    def __init__(
        self,
        config: PluginConfig,
        nursery: trio.Nursery,
        *,
        ipc_dir: str,
        send_timeout: int,
        keepalive: float,
    ) -> None:
        self.config = config
        self.ipc_dir = ipc_dir
        self.send_timeout = send_timeout
        self.keepalive = keepalive
        self._nursery = nursery
        self.instances: dict[str, Instance] = {}
        """Running sources and sinks by ``{ruleId}_{opId}_{instanceId}_{symbol}``."""
        self.functions: dict[str, Instance] = {}
        """Running function channels by function name."""
        self.server_gone = trio.Event()

    def shutdown(self) -> None:
        """Stop serving: cancel every symbol and close the control channel."""
        self._nursery.cancel_scope.cancel()

    async def handle(self, data: bytes) -> bytes:
        """Answer one control command: ``ok`` or the error text.  Never raises (but Cancelled)."""
        try:
            command = parse_command(data)
        except RemoteProtocolError as exc:
            log.warning("malformed command: %s", exc)
            return exc.reply
        try:
            if command.cmd == "start":
                await self._start(command)
            else:
                await self._stop(command)
        except _SymbolNotFound as exc:
            log.warning("%s", exc)
            return control_error_reply(str(exc))
        except Exception as exc:
            log.exception("%s %s failed", command.cmd, command.control.symbol_name)
            return control_error_reply(describe(exc))
        return OK

    async def _start(self, command: Command) -> None:
        control = command.control
        factory = self.config.factories(control.plugin_type).get(control.symbol_name)
        if factory is None:
            raise _SymbolNotFound(f"symbol {control.symbol_name} not found")
        if control.plugin_type == "func":
            await self._start_functions(control.symbol_name)
            return
        key = instance_key(control)
        old = self.instances.pop(key, None)
        if old is not None:  # a start without stop: the rule restarted, free its ipc files
            await old.stop()
        symbol = factory()
        start = start_source if control.plugin_type == "source" else start_sink
        instance = await start(
            control, symbol, self._nursery, ipc_dir=self.ipc_dir, send_timeout=self.send_timeout
        )
        self.instances[key] = instance
        log.info("started %s %s", control.plugin_type, key)

    async def _start_functions(self, name: str) -> None:
        """Open ``name``'s channel, and every other function's in the background.

        eKuiper keeps a function's channel (its Rep socket) across plugin restarts but
        replays only the last function start (its replay map is keyed by the all-zero Meta),
        so the other functions would never be dialed again (#3784, #4077).
        """
        for other, factory in self.config.functions.items():
            running = self.functions.get(other)
            if running is not None and not running.done.is_set():
                continue
            self.functions[other] = await start_function(
                other,
                factory(),
                self._nursery,
                ipc_dir=self.ipc_dir,
                keepalive=self.keepalive,
                wait_for_server=other == name,
                on_exit=self._function_exited,
            )
        await trio.lowlevel.checkpoint()

    def _function_exited(self, instance: Instance) -> None:
        if self.functions.get(instance.symbol_name) is instance:
            del self.functions[instance.symbol_name]

    async def _stop(self, command: Command) -> None:
        control = command.control
        if control.plugin_type == "func":
            instance = self.functions.pop(control.symbol_name, None)
        else:
            instance = self.instances.pop(instance_key(control), None)
        if instance is None:
            # the official Python SDK answers ok too; eKuiper only logs a failed stop
            log.info("stop %s: not running", control.symbol_name)
            await trio.lowlevel.checkpoint()
            return
        await instance.stop()
        log.info("stopped %s", instance.key)


class _SymbolNotFound(Exception):
    pass


async def serve(
    config: PluginConfig,
    *,
    ipc_dir: str | None = None,
    send_timeout: int = 1000,
    control_keepalive: bool = False,
    keepalive: float = KEEPALIVE,
    task_status: trio.TaskStatus[Plugin] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``config``'s symbols to eKuiper until it goes away or the caller cancels.

    ``ipc_dir`` defaults to ``$TRIOKUIPER_IPC_DIR`` or /tmp.  ``send_timeout`` (ms) bounds
    one wait of a data-channel send (a stalled source logs and keeps waiting).
    ``control_keepalive`` re-sends ``handshake`` on the control channel after ``keepalive``
    idle seconds, as the official SDK 2.4 does; it is off by default because eKuiper before
    2.2 takes the stale reply for a command answer.  Function channels always keep alive.
    Raises ``ConnectionRefusedError`` if eKuiper's control channel cannot be dialed.
    """
    directory = ipc_dir or _nng.ipc_dir()
    timeout = int(keepalive * 1000) if control_keepalive else -1
    sock = _nng.new_socket(pynng.Req0, resend_time=0, recv_timeout=timeout)
    token = trio.lowlevel.current_trio_token()
    closing = False

    plugin: Plugin | None = None
    try:
        async with trio.open_nursery() as nursery:
            plugin = Plugin(
                config, nursery, ipc_dir=directory, send_timeout=send_timeout, keepalive=keepalive
            )

            def pipe_removed(_pipe: Any) -> None:  # runs in an nng thread
                if closing:
                    return
                try:
                    token.run_sync_soon(_server_gone, plugin)
                except trio.RunFinishedError:
                    pass

            sock.add_post_pipe_remove_cb(pipe_removed)
            await _nng.dial(sock, _nng.ipc_url(directory, f"plugin_{config.name}"))
            channel = _nng.FastChannel(sock)
            await channel.send(HANDSHAKE)
            log.info("plugin %s connected to eKuiper", config.name)
            task_status.started(plugin)
            while True:
                try:
                    data = await channel.receive()
                except (pynng.Timeout, pynng.BadState):
                    await channel.send(HANDSHAKE)  # keepalive (control_keepalive=True only)
                    continue
                except (pynng.Closed, pynng.ConnectionReset):
                    _server_gone(plugin)  # our request's pipe died with eKuiper
                    await trio.sleep_forever()  # cancelled by the shutdown just requested
                await channel.send(await plugin.handle(data))
    finally:
        closing = True
        sock.close()
        if plugin is not None and plugin.server_gone.is_set():
            log.info("plugin %s: eKuiper went away, exiting", config.name)


def _server_gone(plugin: Plugin) -> None:
    if plugin.server_gone.is_set():
        return
    log.warning("plugin %s: the control channel to eKuiper closed", plugin.config.name)
    plugin.server_gone.set()
    plugin.shutdown()


def run(config: PluginConfig, argv: Sequence[str] | None = None) -> None:
    """The plugin program's entry point, as eKuiper launches it: ``exe '{"sendTimeout":..}'``.

    Logs to stderr (eKuiper copies it into its log), serves until eKuiper goes away, the
    parent process changes, or SIGTERM/SIGINT; then returns.  Exits with status 1 when
    eKuiper's control channel cannot be reached.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            stream=sys.stderr,
            level=logging.INFO,
            format=f"triokuiper[{config.name}] %(levelname)s %(name)s: %(message)s",
        )
    try:
        trio.run(_serve_process, config, parse_launch_args(args))
    except ConnectionRefusedError as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None


async def _serve_process(config: PluginConfig, send_timeout: int) -> None:
    parent = os.getppid()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, signals, nursery.cancel_scope)
            nursery.start_soon(_watch_parent, parent, nursery.cancel_scope)
            keepalive = os.environ.get("TRIOKUIPER_CONTROL_KEEPALIVE", "") not in ("", "0")
            await serve(config, send_timeout=send_timeout, control_keepalive=keepalive)
            nursery.cancel_scope.cancel()


async def _watch_signals(signals: Any, scope: trio.CancelScope) -> None:
    async for signum in signals:
        log.info("received %s, exiting", signal.Signals(signum).name)
        scope.cancel()


async def _watch_parent(parent: int, scope: trio.CancelScope) -> None:
    """eKuiper gone without closing our socket (we were reparented): exit too."""
    while os.getppid() == parent:  # noqa: ASYNC110 - no event tells us; poll once a second
        await trio.sleep(PARENT_POLL)
    log.warning("parent process %d exited, exiting", parent)
    scope.cancel()
