"""An eKuiper server, as far as one portable plugin can tell: ``open_emulator()``.

It follows ``internal/plugin/portable/runtime`` of eKuiper v2 (``plugin_ins_manager.go``,
``connection.go``, ``source.go``, ``sink.go``, ``function.go``): the control channel is created
once, the plugin is spawned and must say ``handshake``, every successful start command is stored
in a map keyed by ``Meta`` and replayed when the plugin is started again, a dead plugin is only
noticed by ``cmd.Wait()`` and respawned by the next symbol start.  Switches reproduce version
differences and bugs (``skip_h``, ``faithful_replay_bug``); see ``docs/triokuiper-testing.md``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pynng
import trio

from ._channels import (
    ControlChannel,
    FunctionChannel,
    close_quietly,
    dial_push,
    ipc_url,
    listen_pull as _listen_pull,
)
from ._errors import CommandError, EmulatorError, PluginExitedError, PluginTimeoutError
from ._goshapes import (
    CMD_START,
    CMD_STOP,
    TYPE_FUNC,
    TYPE_SINK,
    TYPE_SOURCE,
    Control,
    Meta,
    encode_command,
    go_json,
)
from ._process import PluginProcess, go_exit_text, python_plugin_command
from ._symbols import FunctionHandle, SinkHandle, SourceHandle

__all__ = ["IPC_DIR_ENV", "Emulator", "PluginStatus", "ReplayResult", "open_emulator"]

log = logging.getLogger("triokuiper.testing")

IPC_DIR_ENV = "TRIOKUIPER_IPC_DIR"
"""Set in the plugin's environment when ``ipc_dir`` is not eKuiper's hard-coded ``/tmp``."""

_EKUIPER_IPC_DIR = "/tmp"


@dataclass(slots=True)
class PluginStatus:
    """``GET /plugins/portables/{name}/status``: ``refCount``, ``status`` and ``errMsg``."""

    status: str = "initializing"
    err_msg: str = ""
    ref_count: dict[str, int] = field(default_factory=dict)

    def error(self, message: str) -> None:
        self.status, self.err_msg = "error", message

    def to_json(self) -> str:
        return go_json({"refCount": self.ref_count, "status": self.status, "errMsg": self.err_msg})


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """One stored command sent again after a plugin (re)start; ``error`` is ``None`` if ok."""

    command: bytes
    error: str | None


class Emulator:
    """The eKuiper side of one portable plugin.  Create it with :func:`open_emulator`."""

    def __init__(
        self,
        nursery: trio.Nursery,
        plugin_name: str,
        ipc_dir: str,
        *,
        command: Sequence[str] | None,
        cwd: str | None,
        env: Mapping[str, str],
        skip_h: bool,
        faithful_replay_bug: bool,
        init_timeout: float,
        recv_timeout: float,
        send_timeout: float,
        control_timeout: float,
    ) -> None:
        self.plugin_name = plugin_name
        self.ipc_dir = ipc_dir
        self.command = None if command is None else list(command)
        self.cwd = cwd
        self.env = dict(env)
        self.skip_h = skip_h
        self.faithful_replay_bug = faithful_replay_bug
        self.init_timeout = init_timeout
        self.recv_timeout = recv_timeout
        self.send_timeout = send_timeout
        self.control_timeout = control_timeout
        self.status = PluginStatus()
        self.sent_commands: list[bytes] = []
        """Every start/stop command handed to ``SendCmd``, once each, in order (resends of the
        same bytes after a protocol-state error or an ``h`` reply are not repeated here)."""
        self.replays: list[ReplayResult] = []
        """Outcomes of the replays of the last (re)start, in completion order."""
        self.processes: list[PluginProcess] = []
        """Every process spawned, oldest first; the last one is the current one."""
        self._nursery = nursery
        self._control: ControlChannel | None = None
        self._commands: dict[Any, bytes] = {}  # the replay map (PluginIns.commands)
        self._functions: dict[str, FunctionHandle] = {}
        self._handles: list[SourceHandle | SinkHandle] = []
        self._process: PluginProcess | None = None
        self._running = False  # handshake done and the process not seen exiting
        self._hello = b""
        self._start_lock = trio.Lock()  # pluginInsManager's lock around GetOrStartProcess
        self._replay_done = trio.Event()
        self._replay_done.set()
        self._rule_counter = 0

    # -- process and control channel ---------------------------------------------------------

    @property
    def process(self) -> PluginProcess | None:
        return self._process

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def output(self) -> bytes:
        """Everything every plugin process printed, concatenated."""
        return b"".join(bytes(p.output) for p in self.processes)

    async def wait_output(self, needle: bytes) -> None:
        """Wait until the current plugin process prints ``needle`` (stdout or stderr)."""
        if self._process is None:
            raise RuntimeError("no plugin process is running")
        await self._process.wait_output(needle)

    @property
    def replay_map(self) -> dict[Any, bytes]:
        """The stored start commands by key (``Meta`` when ``faithful_replay_bug``)."""
        return dict(self._commands)

    def url(self, name: str) -> str:
        return ipc_url(self.ipc_dir, name)

    async def _open(self) -> None:
        self._control = await ControlChannel.open(
            self.url(f"plugin_{self.plugin_name}"),
            skip_h=self.skip_h,
            reply_timeout=self.control_timeout,
        )
        if self.command is not None:
            await self._spawn()

    async def _spawn(self) -> None:
        assert self.command is not None
        assert self._control is not None
        process = await PluginProcess.spawn(self._nursery, self.command, cwd=self.cwd, env=self.env)
        self._process = process
        self.processes.append(process)
        self._control.abort = process.exited
        self._nursery.start_soon(self._watch, process)

    async def _watch(self, process: PluginProcess) -> None:
        await process.exited.wait()
        self._record_exit(process)

    def _record_exit(self, process: PluginProcess) -> None:
        """What eKuiper's ``cmd.Wait()`` goroutine does: mark the error, forget the process."""
        if self._process is not process:
            return
        assert process.returncode is not None
        if process.returncode != 0:
            self.status.error(go_exit_text(process.returncode))
        self._process = None
        self._running = False

    async def wait_handshake(self) -> bytes:
        """Make sure the plugin is up (``GetOrStartProcess``) and return its handshake message.

        The first call waits for the plugin's ``handshake`` (eKuiper's ``Handshake()``: one
        message within ``init_timeout``); later calls return at once while the plugin lives, and
        respawn it if it died.  A timeout or a plugin that exits first kills the plugin and
        raises (:class:`PluginTimeoutError`, :class:`PluginExitedError`); eKuiper marks the
        plugin ``error`` then.  Every ``start_*`` and command method calls this first.
        """
        await self._get_or_start()
        return self._hello

    async def _handshake(self) -> None:
        assert self._control is not None
        process = self._process
        try:
            hello = await self._control.handshake(init_timeout=self.init_timeout)
        except (pynng.Timeout, PluginExitedError) as exc:
            reason = "recv time out" if isinstance(exc, pynng.Timeout) else str(exc)
            message = f"plugin {self.plugin_name} control handshake error: {reason}"
            if process is not None:
                await process.kill()
                tail = bytes(process.output[-2000:]).decode(errors="replace")
                message += f"\n--- plugin output ---\n{tail}"
            self.status.error(message)
            raise (PluginTimeoutError if isinstance(exc, pynng.Timeout) else PluginExitedError)(
                message
            ) from None
        self._hello = hello
        self._running = True
        self.status.status, self.status.err_msg = "running", ""

    async def _get_or_start(self) -> None:
        """``GetOrStartProcess``: respawn a dead plugin, handshake, replay stored commands."""
        async with self._start_lock:
            if self._running:
                await trio.lowlevel.checkpoint()
                return
            if self.command is not None and self._process is None:
                await self._spawn()
            await self._handshake()
            self._start_replay()

    def _start_replay(self) -> None:
        commands = list(self._commands.items())
        self.replays = []
        self._replay_done = done = trio.Event()

        async def replay_all() -> None:
            try:
                async with trio.open_nursery() as nursery:
                    for key, command in commands:  # Go: one goroutine per stored command
                        nursery.start_soon(replay_one, key, command)
            finally:
                done.set()

        async def replay_one(key: Any, command: bytes) -> None:
            error: str | None = None
            try:
                await self._send_cmd(command)
            except (EmulatorError, pynng.NNGException) as exc:
                error = str(exc)
                self.status.error(error)
                log.error("send command to %r error: %s", key, error)
            self.replays.append(ReplayResult(command, error))

        self._nursery.start_soon(replay_all)

    async def wait_replayed(self) -> list[ReplayResult]:
        """Wait until the replays of the last (re)start have all been answered."""
        await self._replay_done.wait()
        return list(self.replays)

    async def kill(self) -> None:
        """SIGKILL the plugin, as if it crashed; eKuiper only notices through ``cmd.Wait()``."""
        process = self._process
        if process is None:
            raise RuntimeError("no plugin process is running")
        await process.kill()
        self._record_exit(process)

    async def restart(self, *, wait_replay: bool = True) -> list[ReplayResult]:
        """Kill the plugin if alive, start it again (handshake), replay stored commands.

        With ``command=None`` the test must restart its in-process plugin itself; this then
        waits for the new handshake and replays.  Returns the replay outcomes (waited for
        unless ``wait_replay`` is false).
        """
        if self._process is not None:
            await self.kill()
        self._running = False
        await self._get_or_start()
        return await self.wait_replayed() if wait_replay else []

    # -- commands ------------------------------------------------------------------------------

    async def _send_cmd(self, command: bytes) -> bytes:
        assert self._control is not None
        try:
            reply = await self._control.send_cmd(command)
        except PluginExitedError:
            raise PluginExitedError(
                f"plugin {self.plugin_name} is not running successfully, please make sure it is "
                "valid"
            ) from None
        if reply != b"ok":
            raise CommandError(reply)
        return reply

    async def send_command(self, command: bytes | str | Mapping[str, Any]) -> bytes:
        """Send any bytes as a command (``SendCmd``), return the plugin's reply as is.

        For malformed-command tests: nothing is stored for replay, a non-``ok`` reply does not
        raise.  ``h`` replies are skipped per ``skip_h``; a mapping is Go-marshalled.  Like every
        command, it waits for the plugin's handshake first (starting the plugin if needed).
        """
        await self._get_or_start()
        assert self._control is not None
        if isinstance(command, Mapping):
            command = go_json(command)
        raw = command.encode() if isinstance(command, str) else bytes(command)
        self.sent_commands.append(raw)
        return await self._control.send_cmd(raw)

    def _replay_key(self, control: Control) -> Any:
        if self.faithful_replay_bug:
            return control.meta  # eKuiper's key: every function shares the zero Meta
        return (control.meta, control.plugin_type, control.symbol_name)

    async def start_symbol(self, control: Control) -> None:
        """``PluginIns.StartSymbol``: send start, then on ``ok`` count the ref and store it."""
        await self._get_or_start()
        command = encode_command(CMD_START, control)
        self.sent_commands.append(command)
        await self._send_cmd(command)
        rule = control.meta.rule_id
        if rule:
            self.status.ref_count[rule] = self.status.ref_count.get(rule, 0) + 1
        self._commands[self._replay_key(control)] = command

    async def stop_symbol(
        self,
        control: Control | str,
        plugin_type: str = TYPE_FUNC,
        *,
        rule_id: str = "",
        op_id: str = "",
        instance_id: int = 0,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        """``PluginIns.StopSymbol``: send stop; on ``ok`` forget it and drop the ref.

        Give a :class:`Control` or its parts.  A reply other than ``ok`` raises
        :class:`CommandError` (its ``reply`` attribute holds the plugin's text).
        """
        if isinstance(control, str):
            control = Control(control, plugin_type, Meta(rule_id, op_id, instance_id), "", config)
        command = encode_command(CMD_STOP, control)
        self.sent_commands.append(command)
        await self._send_cmd(command)
        self._commands.pop(self._replay_key(control), None)
        rule = control.meta.rule_id
        if rule in self.status.ref_count:
            if self.status.ref_count[rule] > 1:
                self.status.ref_count[rule] -= 1
            else:
                del self.status.ref_count[rule]

    # -- symbols -------------------------------------------------------------------------------

    def _meta(self, rule_id: str | None, op_id: str, instance_id: int) -> Meta:
        if rule_id is None:
            self._rule_counter += 1
            rule_id = f"{self.plugin_name}_rule{self._rule_counter}"
        return Meta(rule_id, op_id, instance_id)

    async def start_source(
        self,
        symbol: str,
        *,
        rule_id: str | None = None,
        op_id: str = "op1",
        instance_id: int = 0,
        config: Mapping[str, Any] | None = None,
        data_source: str = "",
    ) -> SourceHandle:
        """``PortableSource.Connect``: listen on the data channel, then send start.

        v2 puts the datasource in ``config["datasource"]``; ``data_source`` fills the
        ``dataSource`` field that only eKuiper 1.x sends.  ``rule_id`` defaults to a name
        unique to this emulator.
        """
        await self._get_or_start()
        meta = self._meta(rule_id, op_id, instance_id)
        control = Control(symbol, TYPE_SOURCE, meta, data_source, config)
        url = self.url(f"{meta.rule_id}_{meta.op_id}_{meta.instance_id}")
        sock = await _listen_pull(url)
        try:
            await self.start_symbol(control)
        except BaseException:
            close_quietly(sock)
            raise
        handle = SourceHandle(control, url, sock, self.stop_symbol)
        self._handles.append(handle)
        return handle

    async def start_sink(
        self,
        symbol: str,
        *,
        rule_id: str | None = None,
        op_id: str = "op1",
        instance_id: int = 0,
        config: Mapping[str, Any] | None = None,
        require_ack: bool | None = None,
    ) -> SinkHandle:
        """``PortableSink.Connect``: listen for acks, send start, then dial the plugin's Pull.

        ``require_ack`` (if given) is put into the config as ``requireAck``, which is where
        eKuiper reads it from.  A plugin that is not listening when start returns makes the
        dial fail: the symbol is stopped again and :class:`EmulatorError` raised.
        """
        await self._get_or_start()
        props = dict(config or {})
        if require_ack is not None:
            props["requireAck"] = require_ack
        meta = self._meta(rule_id, op_id, instance_id)
        control = Control(symbol, TYPE_SINK, meta, "", props)
        url = self.url(f"{meta.rule_id}_{meta.op_id}_{meta.instance_id}")
        ack = await _listen_pull(self.url(f"{meta.rule_id}_{meta.op_id}_{meta.instance_id}_ack"))
        try:
            await self.start_symbol(control)
            try:
                data = await dial_push(url, send_timeout=self.send_timeout)
            except pynng.NNGException as exc:
                await self.stop_symbol(control)
                raise EmulatorError(f"can't dial on push socket: {exc}") from exc
        except BaseException:
            close_quietly(ack)
            raise
        handle = SinkHandle(
            control, url, data, ack, self.stop_symbol, require_ack=props.get("requireAck") is True
        )
        self._handles.append(handle)
        return handle

    async def start_function(self, symbol: str) -> FunctionHandle:
        """``NewPortableFunc``: listen on ``func_{symbol}.ipc``, send start with a zero Meta.

        One handle per function name for the emulator's life, like eKuiper's ``funcInsMap``.
        """
        existing = self._functions.get(symbol)
        if existing is not None:
            await trio.lowlevel.checkpoint()
            return existing
        await self._get_or_start()
        channel = await FunctionChannel.open(
            self.url(f"func_{symbol}"),
            recv_timeout=self.recv_timeout,
            send_timeout=self.send_timeout,
        )
        try:
            await self.start_symbol(Control(symbol, TYPE_FUNC))
        except BaseException:
            channel.close()
            raise
        handle = FunctionHandle(symbol, self.plugin_name, channel, self._status_pair)
        self._functions[symbol] = handle
        return handle

    def _status_pair(self) -> tuple[str, str]:
        return self.status.status, self.status.err_msg

    async def aclose(self) -> None:
        """Kill the plugin, close every socket.  Idempotent."""
        with trio.CancelScope(shield=True):
            for process in self.processes:
                await process.kill()
        for handle in self._handles:
            handle.close()
            if isinstance(handle, SinkHandle) and self.command is not None:
                # The killed plugin listened there and left its socket file behind.
                _remove_ipc_file(handle.url)
        for function in self._functions.values():
            function.close()
        if self._control is not None:
            self._control.close()
        await trio.lowlevel.checkpoint()


def _remove_ipc_file(url: str) -> None:
    try:
        os.unlink(url.removeprefix("ipc://"))
    except FileNotFoundError:
        pass


def _launch(
    ipc_dir: str,
    executable: str | os.PathLike[str] | None,
    command: Sequence[str] | None,
    cwd: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None,
) -> tuple[Sequence[str] | None, str | os.PathLike[str] | None, dict[str, str]]:
    if executable is not None:
        if command is not None:
            raise TypeError("give executable= or command=, not both")
        command = python_plugin_command(executable)
        if cwd is None:
            cwd = os.path.dirname(os.path.abspath(executable))
    run_env = dict(os.environ if env is None else env)
    if os.path.abspath(ipc_dir) != _EKUIPER_IPC_DIR:
        run_env[IPC_DIR_ENV] = ipc_dir
    return command, cwd, run_env


@asynccontextmanager
async def open_emulator(
    plugin_name: str,
    *,
    ipc_dir: str | os.PathLike[str] | None = None,
    executable: str | os.PathLike[str] | None = None,
    command: Sequence[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    skip_h: bool = True,
    faithful_replay_bug: bool = True,
    init_timeout: float = 60.0,
    recv_timeout: float = 5.0,
    send_timeout: float = 5.0,
    control_timeout: float = 60.0,
) -> AsyncIterator[Emulator]:
    """Run an emulated eKuiper server for the plugin ``plugin_name`` while the block runs.

    The plugin is either launched by the emulator -- ``executable=`` a Python plugin script
    (run as ``python -u SCRIPT '{"sendTimeout":1000}'`` in its directory, like eKuiper), or any
    ``command=`` -- or, with neither, started by the test itself (in-process).  ``ipc_dir``
    holds the sockets (default: a new private directory; the official SDK needs ``"/tmp"``).
    Leaving the block kills the plugin and closes every socket.
    """
    private_dir = (
        tempfile.mkdtemp(prefix="kuemu-", dir=_EKUIPER_IPC_DIR) if ipc_dir is None else None
    )
    ipc_dir = os.fspath(private_dir or ipc_dir or _EKUIPER_IPC_DIR)
    command, cwd, run_env = _launch(ipc_dir, executable, command, cwd, env)
    try:
        async with trio.open_nursery() as nursery:
            emulator = Emulator(
                nursery,
                plugin_name,
                ipc_dir,
                command=command,
                cwd=None if cwd is None else os.fspath(cwd),
                env=run_env,
                skip_h=skip_h,
                faithful_replay_bug=faithful_replay_bug,
                init_timeout=init_timeout,
                recv_timeout=recv_timeout,
                send_timeout=send_timeout,
                control_timeout=control_timeout,
            )
            try:
                await emulator._open()
                yield emulator
            finally:
                await emulator.aclose()
                nursery.cancel_scope.cancel()
    finally:
        if private_dir is not None:
            shutil.rmtree(private_dir, ignore_errors=True)
