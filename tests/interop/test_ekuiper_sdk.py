"""The emulator against plugins written for the OFFICIAL eKuiper Python SDK (PyPI ``ekuiper``).

The SDK runs under its own runtime (threads + blocking pynng), launched exactly as eKuiper
launches Python plugins, so it is an independent peer: what it does here is what it does under
a real eKuiper.  Its sockets are hard-coded under /tmp, so every test uses unique names.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from triokuiper._package import build_package, install_package
from triokuiper.testing import (
    CommandError,
    Control,
    Emulator,
    Meta,
    PluginTimeoutError,
    ast_field,
    encode_command,
)
from triokuiper.testing._pytest_plugin import EmulatorFactory

pytestmark = pytest.mark.interop

PLUGIN = Path(__file__).resolve().parents[1] / "triokuiper" / "sdk_plugins" / "sdkjson.py"
DEADLINE = 20  # seconds; generous for a loaded 2-core machine, never reached when things work


@dataclass
class SdkPlugin:
    """Names of one launch of the SDK test plugin, unique to the test."""

    name: str
    suffix: str
    env: dict[str, str]

    def func(self, base: str) -> str:
        return base + self.suffix


@pytest.fixture
def sdk() -> SdkPlugin:
    tag = uuid.uuid4().hex[:10]
    env = dict(os.environ, SDK_PLUGIN_NAME=f"sdk{tag}", SDK_SYMBOL_SUFFIX=f"_{tag}")
    return SdkPlugin(name=f"sdk{tag}", suffix=f"_{tag}", env=env)


async def launch(factory: EmulatorFactory, sdk: SdkPlugin, **kwargs: Any) -> Emulator:
    return await factory(sdk.name, ipc_dir="/tmp", executable=PLUGIN, env=sdk.env, **kwargs)


def read_sink_file(path: Path) -> list[dict[str, Any]]:
    """The payloads the SDK handed to the sink's collect(), as the test sink recorded them."""
    try:
        return [json.loads(line) for line in path.read_text().splitlines()]
    except FileNotFoundError:
        return []


def ipc_file_exists(path: str) -> bool:
    return os.path.exists(path)


async def wait_sink_file(path: Path, count: int) -> list[dict[str, Any]]:
    """Without acks nothing tells the server a payload arrived: poll the sink's output."""
    while True:
        rows = read_sink_file(path)
        if len(rows) >= count:
            return rows
        await trio.sleep(0.02)


async def test_source_emits_three_rows_twice_across_a_plugin_restart(
    ekuiper_emulator: EmulatorFactory, sdk: SdkPlugin
) -> None:
    with trio.fail_after(DEADLINE):
        emu = await launch(ekuiper_emulator, sdk)
        assert await emu.wait_handshake() == b"handshake"
        source = await emu.start_source(
            "pyjson", config={"datasource": "demo_topic", "count": 3}, rule_id=f"r{sdk.suffix}"
        )
        first = [await source.receive() for _ in range(3)]
        old_pid = emu.pid
        replays = await emu.restart()
        second = [await source.receive() for _ in range(3)]

    for rows, pid in ((first, old_pid), (second, emu.pid)):
        assert [r.message and r.message["seq"] for r in rows] == [0, 1, 2]
        assert {r.message and r.message["pid"] for r in rows} == {pid}
    assert old_pid != emu.pid
    # eKuiper v2 sends the datasource inside config; the SDK looks for ctrl["datasource"], so
    # configure() gets "" -- the config (and so the datasource) only arrives as conf.
    assert first[0].message is not None
    assert first[0].message["datasource"] == ""
    assert first[0].meta == {
        "conf": {"datasource": "demo_topic", "count": 3},
        "ruleId": f"r{sdk.suffix}",
    }
    assert [r.error for r in replays] == [None]
    assert replays[0].command == emu.sent_commands[0]


async def test_source_error_is_ingested_as_an_empty_row(
    ekuiper_emulator: EmulatorFactory, sdk: SdkPlugin
) -> None:
    with trio.fail_after(DEADLINE):
        emu = await launch(ekuiper_emulator, sdk)
        source = await emu.start_source("pyjson", config={"emit_error": True, "count": 1})
        error_row = await source.receive()
        data_row = await source.receive()
        await source.stop()
    assert json.loads(error_row.raw) == {"error": "source failed on purpose"}
    assert (error_row.message, error_row.meta) == (None, None)
    assert data_row.message is not None
    assert data_row.message["seq"] == 0


@pytest.mark.parametrize("require_ack", [True, False])
async def test_sink_receives_array_then_single_object(
    ekuiper_emulator: EmulatorFactory, sdk: SdkPlugin, tmp_path: Path, require_ack: bool
) -> None:
    out = tmp_path / "sink.jsonl"
    with trio.fail_after(DEADLINE):
        emu = await launch(ekuiper_emulator, sdk)
        sink = await emu.start_sink("file", config={"path": str(out)}, require_ack=require_ack)
        acks = [
            await sink.send([{"name": "hello", "count": 5}]),  # default: a JSON array
            await sink.send({"name": "world", "count": 10}),  # sendSingle: one object
        ]
        rows = await wait_sink_file(out, 2)
        await sink.stop()

    assert rows == [
        {"type": "bytes", "data": '[{"count":5,"name":"hello"}]'},
        {"type": "bytes", "data": '{"count":10,"name":"world"}'},
    ]
    if require_ack:
        assert [a and (a.raw, a.ok) for a in acks] == [(b"{}", True), (b"{}", True)]
    else:
        assert acks == [None, None]
    assert json.loads(json.loads(emu.sent_commands[0])["arg"])["config"] == {
        "path": str(out),
        "requireAck": require_ack,
    }


async def test_sink_reconnects_to_the_restarted_plugin(
    ekuiper_emulator: EmulatorFactory, sdk: SdkPlugin, tmp_path: Path
) -> None:
    out = tmp_path / "sink.jsonl"
    with trio.fail_after(DEADLINE):
        emu = await launch(ekuiper_emulator, sdk)
        sink = await emu.start_sink("file", config={"path": str(out)}, require_ack=True)
        before = await sink.send({"name": "hello", "count": 5})
        replays = await emu.restart()
        # The server's Push socket redials on its own (nng/mangos reconnect backoff).
        after = await sink.send({"name": "world", "count": 10})
    assert [r.error for r in replays] == [None]
    assert before is not None
    assert after is not None
    assert (before.ok, after.ok) == (True, True)
    assert [row["data"] for row in read_sink_file(out)] == [
        '{"count":5,"name":"hello"}',
        '{"count":10,"name":"world"}',
    ]


async def test_sink_error_ack_reaches_the_server(
    ekuiper_emulator: EmulatorFactory, sdk: SdkPlugin, tmp_path: Path
) -> None:
    with trio.fail_after(DEADLINE):
        emu = await launch(ekuiper_emulator, sdk)
        sink = await emu.start_sink("file", config={"path": str(tmp_path / "o")}, require_ack=True)
        bad = await sink.send(b"please fail")
        good = await sink.send(b'{"ok":1}')
    assert bad is not None
    assert good is not None
    assert (bad.ok, bad.error) == (False, "sink refused the data")
    assert good.ok


async def test_function_validate_exec_and_is_aggregate(
    ekuiper_emulator: EmulatorFactory, sdk: SdkPlugin
) -> None:
    with trio.fail_after(DEADLINE):
        emu = await launch(ekuiper_emulator, sdk)
        revert = await emu.start_function(sdk.func("revert"))
        echo = await emu.start_function(sdk.func("echo"))
        assert await emu.start_function(sdk.func("revert")) is revert  # one per name
        ok = await revert.validate([ast_field("name", "demo")])
        too_many = await revert.validate(["a", "b"])
        results = [await revert.exec([word]) for word in ("pyjson", "twelve", "eleven")]
        echoed = await echo.exec(["twelve", 1, None], rule_id="ruleA", op_id="op7", func_id=1)
        aggregates = (await revert.is_aggregate(), await echo.is_aggregate())

    assert (ok.state, ok.result) == (True, "")
    assert (too_many.state, too_many.result) == (
        False,
        "revert function only supports 1 parameter",
    )
    assert [r.result for r in results] == ["nosjyp", "evlewt", "nevele"]
    assert echoed.state
    assert echoed.result == {"args": ["twelve", 1, None], "rule": "ruleA", "op": "op7"}
    assert aggregates == (False, True)
    # eKuiper starts functions with a zero Meta and no config.
    start = encode_command("start", Control(sdk.func("revert"), "func"))
    assert start in emu.sent_commands
    assert b'"meta\\":{\\"ruleId\\":\\"\\",\\"opId\\":\\"\\",\\"instanceId\\":0}' in start


async def test_function_that_raises_answers_state_false_with_the_traceback(
    ekuiper_emulator: EmulatorFactory, sdk: SdkPlugin
) -> None:
    with trio.fail_after(DEADLINE):
        emu = await launch(ekuiper_emulator, sdk)
        boom = await emu.start_function(sdk.func("boom"))
        exec_reply = await boom.exec(["x"])
        validate_reply = await boom.validate(["x"])
        unknown = await boom.request("Frobnicate", [1])
        no_context = await boom.request("Exec", [])
        still_alive = await (await emu.start_function(sdk.func("revert"))).exec(["ab"])

    assert not exec_reply.state
    assert "ValueError: exec exploded" in exec_reply.result
    assert not validate_reply.state
    assert "ValueError: validate exploded" in validate_reply.result
    assert (unknown.state, unknown.result) == (False, "invalid func Frobnicate")
    assert (no_context.state, no_context.result) == (False, "invalid arg")
    assert still_alive.result == "ba"


async def test_unknown_symbols_and_plugin_types_are_refused(
    ekuiper_emulator: EmulatorFactory, sdk: SdkPlugin
) -> None:
    with trio.fail_after(DEADLINE):
        emu = await launch(ekuiper_emulator, sdk)
        with pytest.raises(CommandError) as unknown_function:
            await emu.start_symbol(Control("nosuchfunc", "func"))
        with pytest.raises(CommandError) as unknown_source:
            await emu.start_symbol(Control("nosuch", "source", Meta(f"r{sdk.suffix}", "op1")))
        # eKuiper's own unit test uses plural types; the SDK does not know them.
        with pytest.raises(CommandError) as plural_type:
            await emu.start_symbol(Control("pyjson", "sources", Meta(f"r{sdk.suffix}", "op2")))
        stop_unknown = await emu.send_command(
            encode_command("stop", Control("never_started", "source", Meta("x", "y")))
        )
        await emu.stop_symbol("never_started_func")

    # The Python SDK answers with the traceback of the KeyError from its symbol table.
    assert "KeyError: 'nosuchfunc'" in str(unknown_function.value)
    assert str(unknown_function.value).startswith("receive error: Traceback")
    assert "KeyError: 'nosuch'" in str(unknown_source.value)
    assert plural_type.value.reply == b"symbol not found"
    assert stop_unknown == b"ok"  # stopping what is not running is fine for the SDK
    assert emu.replay_map == {}


async def test_malformed_commands_get_tracebacks_and_the_plugin_survives(
    ekuiper_emulator: EmulatorFactory, sdk: SdkPlugin
) -> None:
    bad_commands: dict[str, bytes | str] = {
        "not json": b"garbage",
        "invalid utf-8": b"\xff\xfe{",
        "arg not a string": '{"cmd":"start","arg":{"symbolName":"x"}}',
        "arg not json": '{"cmd":"start","arg":"{nope"}',
        "no cmd": '{"arg":"{}"}',
        "empty control": '{"cmd":"start","arg":"{}"}',
    }
    with trio.fail_after(DEADLINE):
        emu = await launch(ekuiper_emulator, sdk)
        replies = {name: await emu.send_command(raw) for name, raw in bad_commands.items()}
        unknown_cmd = await emu.send_command(
            encode_command("pause", Control("pyjson", "source", Meta("r", "o")))
        )
        revert = await emu.start_function(sdk.func("revert"))
        after = await revert.exec(["ok"])

    for name, reply in replies.items():
        assert reply.startswith(b"Traceback (most recent call last):"), name
    assert b"JSONDecodeError" in replies["not json"]
    assert b"TypeError" in replies["arg not a string"]
    assert b"KeyError: 'cmd'" in replies["no cmd"]
    assert b"KeyError: 'pluginType'" in replies["empty control"]
    assert unknown_cmd == b"ok"  # neither start nor stop: the SDK ignores it and says ok
    assert after.result == "ko"
    assert emu.process is not None


async def test_restart_with_faithful_replay_bug_replays_only_the_last_function(
    ekuiper_emulator: EmulatorFactory, sdk: SdkPlugin
) -> None:
    with trio.fail_after(DEADLINE):
        emu = await launch(ekuiper_emulator, sdk, recv_timeout=1.0)
        revert = await emu.start_function(sdk.func("revert"))
        echo = await emu.start_function(sdk.func("echo"))
        assert len(emu.replay_map) == 1  # both starts went to the zero-Meta key
        replays = await emu.restart()
        with pytest.raises(PluginTimeoutError) as lost:
            await revert.exec(["abc"])
        echoed = await echo.exec(["abc"])

    assert [r.command for r in replays] == [emu.sent_commands[-1]]
    assert sdk.func("echo").encode() in replays[0].command
    assert str(lost.value) == f"time out, plugin {sdk.name} status running, message: "
    assert echoed.result["args"] == ["abc"]


async def test_restart_without_the_bug_replays_every_function(
    ekuiper_emulator: EmulatorFactory, sdk: SdkPlugin
) -> None:
    with trio.fail_after(DEADLINE):
        emu = await launch(ekuiper_emulator, sdk, faithful_replay_bug=False)
        revert = await emu.start_function(sdk.func("revert"))
        echo = await emu.start_function(sdk.func("echo"))
        replays = await emu.restart()
        results = (await revert.exec(["abc"]), await echo.exec(["abc"]))

    assert sorted(r.command for r in replays) == sorted(emu.sent_commands)
    assert [r.error for r in replays] == [None, None]
    assert results[0].result == "cba"
    assert results[1].result["args"] == ["abc"]


async def test_crashed_plugin_is_respawned_by_the_next_start(
    ekuiper_emulator: EmulatorFactory, sdk: SdkPlugin
) -> None:
    with trio.fail_after(DEADLINE):
        emu = await launch(ekuiper_emulator, sdk)
        first = await emu.start_source("pyjson", config={"count": 1})
        await first.receive()
        old_pid = emu.pid
        await emu.kill()
        assert (emu.status.status, emu.status.err_msg) == ("error", "signal: killed")
        second = await emu.start_source("pyjson", config={"count": 1})
        replays = await emu.wait_replayed()
        rows = [await second.receive(), await first.receive()]

    assert emu.pid not in (None, old_pid)
    assert [r.error for r in replays] == [None]  # the first source, replayed
    assert {r.message and r.message["pid"] for r in rows} == {emu.pid}
    assert emu.status.status == "running"
    assert emu.status.ref_count == {first.control.meta.rule_id: 1, second.control.meta.rule_id: 1}


@pytest.mark.slow
async def test_idle_past_the_sdk_keepalive_needs_the_h_skip(
    ekuiper_emulator: EmulatorFactory,
) -> None:
    """The SDK re-sends ``handshake`` after 5 s without a command (its recv timeout).

    eKuiper >= 2.2 skips that stale reply; older servers report it as the command's error and
    the command is lost.  Both servers idle in the same ~6 s.
    """
    plugins = [SdkPlugin(f"sdk{t}", f"_{t}", {}) for t in (uuid.uuid4().hex[:10] for _ in "ab")]
    for p in plugins:
        p.env = dict(os.environ, SDK_PLUGIN_NAME=p.name, SDK_SYMBOL_SUFFIX=p.suffix)
    with trio.fail_after(DEADLINE):
        new = await launch(ekuiper_emulator, plugins[0], skip_h=True)
        old = await launch(ekuiper_emulator, plugins[1], skip_h=False)
        functions = [
            await new.start_function(plugins[0].func("revert")),
            await old.start_function(plugins[1].func("revert")),
        ]
        await trio.sleep(6)
        await new.stop_symbol("never_started")
        with pytest.raises(CommandError) as stale:
            await old.stop_symbol("never_started")
        await old.stop_symbol("never_started")  # the next command gets through
        results = [await f.exec(["idle"]) for f in functions]

    assert stale.value.reply == b"handshake"
    assert [r.result for r in results] == ["eldi", "eldi"]
    # Each function channel dropped the SDK's first handshake and then skipped its keepalive
    # (the 'h' skip is on for functions since eKuiper 1.9).
    assert [f.discarded for f in functions] == [[b"handshake", b"handshake"]] * 2


async def test_plugin_process_is_killed_when_the_emulator_closes(sdk: SdkPlugin) -> None:
    from triokuiper.testing import open_emulator

    with trio.fail_after(DEADLINE):
        async with open_emulator(sdk.name, ipc_dir="/tmp", executable=PLUGIN, env=sdk.env) as emu:
            await emu.wait_handshake()
            pid = emu.pid
            assert pid is not None
            os.kill(pid, 0)  # alive
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not ipc_file_exists(f"/tmp/plugin_{sdk.name}.ipc")


def package_sdk_plugin(root: Path, sdk: SdkPlugin) -> Path:
    """A plugin source tree around the SDK test plugin, zipped with triokuiper's builder."""
    src = root / "src"
    (src / "sources").mkdir(parents=True)
    (src / "sdkjson.py").write_text(PLUGIN.read_text())
    (src / "sources" / "pyjson.yaml").write_text("default:\n  count: 2\n")
    meta = {
        "name": sdk.name,
        "version": "1.0.0",
        "language": "python",
        "executable": "sdkjson.py",
        "sources": ["pyjson"],
        "sinks": ["file"],
        "functions": [sdk.func("revert")],
    }
    (src / f"{sdk.name}.json").write_text(json.dumps(meta))
    return build_package(src, root / "dist")


async def test_built_package_installs_and_runs_under_the_emulator(
    ekuiper_emulator: EmulatorFactory, sdk: SdkPlugin, tmp_path: Path
) -> None:
    installed = install_package(package_sdk_plugin(tmp_path, sdk), tmp_path / "ekuiper")
    assert installed.executable == tmp_path / "ekuiper/plugins/portable" / sdk.name / "sdkjson.py"
    assert (tmp_path / "ekuiper/etc/sources/pyjson.yaml").exists()
    with trio.fail_after(DEADLINE):
        emu = await ekuiper_emulator(
            installed.info.name, ipc_dir="/tmp", executable=installed.executable, env=sdk.env
        )
        revert = await emu.start_function(installed.info.functions[0])
        reply = await revert.exec(["packaged"])
    assert reply.result == "degakcap"
