"""examples/kuiper_plugin (a triokuiper plugin) launched by the emulator as eKuiper launches it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pynng
import pytest
import trio

from triokuiper._cli import main
from triokuiper._package import install_package, validate_package
from triokuiper.testing import CommandError, Emulator, EmulatorFactory

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "examples" / "kuiper_plugin"
EXAMPLE = EXAMPLE_DIR / "triodemo.py"
DEADLINE = 30


async def check_every_symbol(emu: Emulator, rule: str) -> None:
    config = {"datasource": "demo", "count": 3}
    source = await emu.start_source("ticker", rule_id=rule, config=config)
    rows = [await source.receive() for _ in range(3)]
    assert [r.message for r in rows] == [{"seq": i, "datasource": "demo"} for i in range(3)]
    sink = await emu.start_sink("checker", rule_id=rule, op_id="sink", require_ack=True)
    acks = [
        await sink.send([{"name": "hello", "count": 5}]),
        await sink.send({"name": "world", "count": 10}),
        await sink.send({"name": 1}),
    ]
    assert [a and a.error for a in acks] == ["", "", "ValueError: bad row {'name': 1}"]
    revert = await emu.start_function("revert")
    shout = await emu.start_function("shout")
    assert (await revert.exec(["twelve"], func_id=1)).result == "evlewt"
    assert (await shout.exec(["eleven"])).result == "ELEVEN!"
    failed = await shout.exec([""])
    assert (failed.state, failed.result) == (False, "ValueError: nothing to shout")
    assert (await revert.validate(["a", "b"])).state is False
    assert await shout.is_aggregate() is False


async def test_example_plugin_serves_every_symbol_and_comes_back_after_a_kill(
    ekuiper_emulator: EmulatorFactory,
) -> None:
    with trio.fail_after(DEADLINE):
        emu = await ekuiper_emulator("triodemo", executable=EXAMPLE, recv_timeout=2.0)
        await check_every_symbol(emu, "r1")
        source = await emu.start_source("ticker", rule_id="live")  # no count: runs on
        await source.receive()
        sink = await emu.start_sink("checker", rule_id="live", op_id="sink", require_ack=True)
        old_pid = emu.pid
        await emu.kill()
        replays = await emu.restart()  # eKuiper's replay: only the LAST function start
        assert emu.pid != old_pid
        assert all(r.error is None for r in replays)
        assert (await source.receive()).message is not None
        ack = await sink.send({"name": "again", "count": 1})
        assert ack is not None
        assert ack.ok
        for name, arg, result in (("revert", "abc", "cba"), ("shout", "hi", "HI!")):
            function = await emu.start_function(name)  # the same handle, not a new start
            assert (await function.exec([arg])).result == result
        await emu.wait_output(b"received name=again count=1")


async def test_packaged_example_installs_and_runs(
    ekuiper_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    zip_path = tmp_path / "triodemo.zip"
    assert main(["package", str(EXAMPLE_DIR), "-o", str(zip_path)]) == 0
    info = validate_package(zip_path)
    assert [list(info.sources), list(info.sinks)] == [["ticker"], ["checker"]]
    assert list(info.functions) == ["revert", "shout"]
    installed = install_package(zip_path, tmp_path / "ekuiper")
    with trio.fail_after(DEADLINE):
        emu = await ekuiper_emulator("triodemo", executable=installed.executable)
        await check_every_symbol(emu, "pkg")
        with pytest.raises(CommandError, match="symbol nope not found"):
            await emu.start_sink("nope")


async def test_plugin_process_exits_when_ekuiper_goes_away(ekuiper_ipc_dir: str) -> None:
    """A raw control server hands out a function, then vanishes: the plugin must exit 0."""
    env = dict(os.environ, TRIOKUIPER_IPC_DIR=ekuiper_ipc_dir)
    control = pynng.Rep0(listen=f"ipc://{ekuiper_ipc_dir}/plugin_triodemo.ipc")
    func = pynng.Rep0(listen=f"ipc://{ekuiper_ipc_dir}/func_revert.ipc")
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-u", str(EXAMPLE), '{"sendTimeout":1000}'],
        cwd=EXAMPLE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        with trio.fail_after(DEADLINE):
            assert await control.arecv() == b"handshake"
            arg = '{"symbolName":"revert","meta":{},"pluginType":"func"}'
            start = json.dumps({"cmd": "start", "arg": arg}).encode()
            await control.asend(start)
            assert await control.arecv() == b"ok"
            assert await func.arecv() == b"handshake"
            control.close()  # eKuiper is gone; nobody will ever send a command again
            func.close()
            assert await proc.wait() == 0
        assert proc.stderr is not None
        log = await proc.stderr.receive_some(65536)
        assert b"eKuiper went away" in log or b"control channel to eKuiper closed" in log
    finally:
        control.close()
        func.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
