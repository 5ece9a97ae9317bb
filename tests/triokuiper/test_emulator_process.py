"""Launching, killing and restarting plugins: the launch line, no orphans, the replay map."""

from __future__ import annotations

import ast
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import trio
from test_emulator_channels import FakePlugin, answer_commands, emulator_with_plugin

from triokuiper.testing import (
    IPC_DIR_ENV,
    PORTABLE_CONF_ARG,
    Emulator,
    PluginExitedError,
    open_emulator,
    python_plugin_command,
)

DEADLINE = 20

# A plugin that reports how it was launched, starts a grandchild, then handshakes and idles.
REPORTING_PLUGIN = textwrap.dedent(
    """
    import os, subprocess, sys, time
    import pynng
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    print(repr({"argv": sys.orig_argv[1:], "cwd": os.getcwd(), "child": child.pid,
                "ipc": os.environ.get("TRIOKUIPER_IPC_DIR")}))
    sock = pynng.Req0()
    sock.dial("ipc://" + os.environ["TRIOKUIPER_IPC_DIR"] + "/plugin_reporter.ipc", block=True)
    sock.send(b"handshake")
    time.sleep(60)
    """
)


def exists(path: str) -> bool:
    return os.path.exists(path)


def gone(pid: int) -> bool:
    """True once the pid no longer exists or is a zombie nobody reaped yet."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


async def test_python_plugin_is_launched_like_ekuiper_and_killed_with_its_children(
    tmp_path: Path, ekuiper_ipc_dir: str
) -> None:
    script = tmp_path / "plugins" / "reporter.py"
    script.parent.mkdir()
    script.write_text(REPORTING_PLUGIN)
    with trio.fail_after(DEADLINE):
        async with open_emulator("reporter", ipc_dir=ekuiper_ipc_dir, executable=script) as emu:
            assert emu.command == python_plugin_command(script)
            await emu.wait_handshake()
            await emu.wait_output(b"\n")
            pid = emu.pid
    report = ast.literal_eval(emu.output.decode().splitlines()[0])
    assert report["argv"] == ["-u", str(script), PORTABLE_CONF_ARG]
    assert report["cwd"] == str(script.parent)
    assert report["ipc"] == ekuiper_ipc_dir
    assert pid is not None
    assert gone(pid)
    assert gone(report["child"])


def test_ipc_dir_variable_is_only_set_away_from_tmp() -> None:
    from triokuiper.testing._emulator import _launch

    _, _, env = _launch("/tmp", "x.py", None, None, {})
    assert IPC_DIR_ENV not in env
    _, cwd, env = _launch("/tmp/elsewhere", "/a/b/x.py", None, None, {"A": "1"})
    assert env == {"A": "1", IPC_DIR_ENV: "/tmp/elsewhere"}
    assert cwd == "/a/b"
    with pytest.raises(TypeError):
        _launch("/tmp", "x.py", ["cmd"], None, None)


async def test_plugin_that_exits_before_the_handshake_is_reported(ekuiper_ipc_dir: str) -> None:
    command = [sys.executable, "-c", "import sys; print('bad config'); sys.exit(3)"]
    with trio.fail_after(DEADLINE):
        async with open_emulator("quitter", ipc_dir=ekuiper_ipc_dir, command=command) as emu:
            with pytest.raises(PluginExitedError) as err:
                await emu.wait_handshake()
    assert "bad config" in str(err.value)
    assert emu.status.status == "error"
    assert emu.processes[0].returncode == 3


async def test_private_ipc_dir_is_removed_on_exit() -> None:
    async with open_emulator("private") as emu:
        ipc_dir = emu.ipc_dir
        assert exists(emu.url("plugin_private").removeprefix("ipc://"))
    assert not exists(ipc_dir)


async def restart_in_process(emu: Emulator, functions: list[str]) -> list[str]:
    """Start functions, replace the fake plugin, restart: return the replayed symbols."""
    old = FakePlugin(emu.url(f"plugin_{emu.plugin_name}"))
    await old.hello()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_commands, old, len(functions))
        for name in functions:
            await emu.start_function(name)
    old.sock.close()
    new = FakePlugin(emu.url(f"plugin_{emu.plugin_name}"))
    await new.hello()
    replayed = []
    async with trio.open_nursery() as nursery:

        async def answer_replays() -> None:
            while True:
                command = await new.command()
                arg = command["arg"]
                assert isinstance(arg, dict)
                replayed.append(arg["symbolName"])
                await new.answer(b"ok")

        nursery.start_soon(answer_replays)
        results = await emu.restart()
        nursery.cancel_scope.cancel()
    new.sock.close()
    assert [r.error for r in results] == [None] * len(results)
    return sorted(replayed)


@pytest.mark.parametrize(("faithful", "expected"), [(True, ["b"]), (False, ["a", "b"])])
async def test_restart_replays_per_the_replay_map_switch(
    ekuiper_ipc_dir: str, faithful: bool, expected: list[str]
) -> None:
    with trio.fail_after(DEADLINE):
        async with open_emulator(
            "replayer", ipc_dir=ekuiper_ipc_dir, faithful_replay_bug=faithful
        ) as emu:
            assert await restart_in_process(emu, ["a", "b"]) == expected


async def test_stopping_one_function_forgets_every_function_with_the_bug(
    ekuiper_ipc_dir: str,
) -> None:
    with trio.fail_after(DEADLINE):
        async with (
            emulator_with_plugin(ekuiper_ipc_dir) as (emu, plugin),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(answer_commands, plugin, 3)
            await emu.start_function("a")
            await emu.start_function("b")
            await emu.stop_symbol("a")
    assert emu.replay_map == {}
    assert [json.loads(c)["cmd"] for c in emu.sent_commands] == ["start", "start", "stop"]


async def test_status_json_matches_the_rest_api_shape(ekuiper_ipc_dir: str) -> None:
    with trio.fail_after(DEADLINE):
        async with (
            emulator_with_plugin(ekuiper_ipc_dir) as (emu, plugin),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(answer_commands, plugin, 1)
            await emu.start_source("s", rule_id="rule9")
    assert emu.status.to_json() == '{"errMsg":"","refCount":{"rule9":1},"status":"running"}'


# A plugin that handshakes, takes one command, then dies (exit status 1) without answering.
DYING_PLUGIN = textwrap.dedent(
    """
    import os, sys, time
    import pynng
    sock = pynng.Req0()
    sock.dial("ipc://" + os.environ["TRIOKUIPER_IPC_DIR"] + "/plugin_dying.ipc", block=True)
    sock.send(b"handshake")
    sock.recv()
    if sys.argv[-1] != "hang":
        os._exit(1)
    time.sleep(60)
    """
)


async def test_plugin_dying_mid_command_fails_the_command_at_once(
    tmp_path: Path, ekuiper_ipc_dir: str
) -> None:
    script = tmp_path / "dying.py"
    script.write_text(DYING_PLUGIN)
    with trio.fail_after(DEADLINE):
        async with open_emulator("dying", ipc_dir=ekuiper_ipc_dir, executable=script) as emu:
            with pytest.raises(PluginExitedError, match="is not running successfully"):
                await emu.stop_symbol("x")
            assert emu.process is None
    assert (emu.status.status, emu.status.err_msg) == ("error", "exit status 1")


async def test_cancelling_the_emulator_mid_command_kills_the_plugin(
    tmp_path: Path, ekuiper_ipc_dir: str
) -> None:
    script = tmp_path / "dying.py"
    script.write_text(DYING_PLUGIN)
    command = [sys.executable, "-u", str(script), "hang"]
    with trio.fail_after(DEADLINE):
        with trio.move_on_after(1) as scope:
            async with open_emulator("dying", ipc_dir=ekuiper_ipc_dir, command=command) as emu:
                await emu.wait_handshake()
                await emu.stop_symbol("x")  # never answered
    assert scope.cancelled_caught
    pid = emu.processes[0].pid
    assert gone(pid)


def test_exit_texts_are_gos_exec_exit_errors() -> None:
    from triokuiper.testing._process import go_exit_text

    assert go_exit_text(1) == "exit status 1"
    assert go_exit_text(-9) == "signal: killed"
    assert go_exit_text(-15) == "signal: terminated"
    assert go_exit_text(-6) == "signal: aborted"
    assert go_exit_text(-64) == "signal: signal 64"


async def test_waiting_for_output_a_plugin_never_prints_ends_at_its_exit(
    ekuiper_ipc_dir: str,
) -> None:
    command = [sys.executable, "-c", "print('bye')"]
    with trio.fail_after(DEADLINE):
        async with open_emulator("printer", ipc_dir=ekuiper_ipc_dir, command=command) as emu:
            process = emu.process
            assert process is not None
            await process.wait_output(b"bye")
            with pytest.raises(EOFError):
                await process.wait_output(b"never printed")
