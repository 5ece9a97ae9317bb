"""Test triokuiper and official-SDK plugins against an emulated eKuiper server.

:func:`open_emulator` plays eKuiper's side of the portable-plugin protocol, faithful to the Go
runtime (``internal/plugin/portable/runtime``): it launches the plugin as eKuiper does (or lets
the test run it in-process), waits for its handshake, starts sources, sinks and functions, and
kills and restarts it with eKuiper's replay of stored commands::

    async with open_emulator("mirror", executable="plugins/mirror.py") as emu:
        source = await emu.start_source("random", config={"interval": 10})
        row = await source.receive()
        revert = await emu.start_function("revert")
        assert (await revert.exec(["abc"])).result == "cba"

The pytest plugin (entry point ``pytest11: triokuiper``) adds the ``ekuiper_emulator`` factory
fixture and ``ekuiper_ipc_dir``.  See ``docs/triokuiper-testing.md``.
"""

from ._emulator import (
    IPC_DIR_ENV as IPC_DIR_ENV,
    Emulator as Emulator,
    PluginStatus as PluginStatus,
    ReplayResult as ReplayResult,
    open_emulator as open_emulator,
)
from ._errors import (
    CommandError as CommandError,
    EmulatorError as EmulatorError,
    PluginExitedError as PluginExitedError,
    PluginTimeoutError as PluginTimeoutError,
)
from ._goshapes import (
    AstNode as AstNode,
    Control as Control,
    FuncReply as FuncReply,
    GoDecodeError as GoDecodeError,
    Meta as Meta,
    SourceTuple as SourceTuple,
    ast_field as ast_field,
    ast_literal as ast_literal,
    encode_command as encode_command,
    go_json as go_json,
)
from ._process import (
    PORTABLE_CONF_ARG as PORTABLE_CONF_ARG,
    python_plugin_command as python_plugin_command,
)
from ._pytest_plugin import EmulatorFactory as EmulatorFactory
from ._symbols import (
    FunctionHandle as FunctionHandle,
    SinkAck as SinkAck,
    SinkHandle as SinkHandle,
    SourceHandle as SourceHandle,
)

__all__ = [
    "IPC_DIR_ENV",
    "PORTABLE_CONF_ARG",
    "AstNode",
    "CommandError",
    "Control",
    "Emulator",
    "EmulatorError",
    "EmulatorFactory",
    "FuncReply",
    "FunctionHandle",
    "GoDecodeError",
    "Meta",
    "PluginExitedError",
    "PluginStatus",
    "PluginTimeoutError",
    "ReplayResult",
    "SinkAck",
    "SinkHandle",
    "SourceHandle",
    "SourceTuple",
    "ast_field",
    "ast_literal",
    "encode_command",
    "go_json",
    "open_emulator",
    "python_plugin_command",
]
