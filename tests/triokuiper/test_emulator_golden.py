"""Golden command bytes: eKuiper's ``TestPluginInstance`` (plugin_ins_manager_test.go) replayed.

A bare nng Req socket plays the plugin, as the Go test's mock client does, and every command the
emulator sends must equal the Go test's expected strings byte for byte.
"""

from __future__ import annotations

from typing import Any

import pynng
import trio

from triokuiper.testing import Control, Meta, encode_command, open_emulator

# The expectations of lf-edge/ekuiper internal/plugin/portable/runtime/plugin_ins_manager_test.go
# (Go struct order, sorted config keys, omitempty dataSource/config).
GO_CASES: list[tuple[Control, bytes, bytes]] = [
    (
        Control("symbol1", "sources", Meta("rule1", "op1", 0), "topic", {"abc": 1}),
        rb'{"cmd":"start","arg":"{\"symbolName\":\"symbol1\",\"meta\":{\"ruleId\":\"rule1\",'
        rb"\"opId\":\"op1\",\"instanceId\":0},\"pluginType\":\"sources\",\"dataSource\":"
        rb'\"topic\",\"config\":{\"abc\":1}}"}',
        rb'{"cmd":"stop","arg":"{\"symbolName\":\"symbol1\",\"meta\":{\"ruleId\":\"rule1\",'
        rb"\"opId\":\"op1\",\"instanceId\":0},\"pluginType\":\"sources\",\"dataSource\":"
        rb'\"topic\",\"config\":{\"abc\":1}}"}',
    ),
    (
        Control("symbol2", "functions", Meta("rule1", "op2", 0)),
        rb'{"cmd":"start","arg":"{\"symbolName\":\"symbol2\",\"meta\":{\"ruleId\":\"rule1\",'
        rb'\"opId\":\"op2\",\"instanceId\":0},\"pluginType\":\"functions\"}"}',
        rb'{"cmd":"stop","arg":"{\"symbolName\":\"symbol2\",\"meta\":{\"ruleId\":\"rule1\",'
        rb'\"opId\":\"op2\",\"instanceId\":0},\"pluginType\":\"functions\"}"}',
    ),
    (
        Control("symbol3", "sinks", Meta("rule1", "op3", 0), config={"def": {"ci": "aaa"}}),
        rb'{"cmd":"start","arg":"{\"symbolName\":\"symbol3\",\"meta\":{\"ruleId\":\"rule1\",'
        rb"\"opId\":\"op3\",\"instanceId\":0},\"pluginType\":\"sinks\",\"config\":{\"def\":"
        rb'{\"ci\":\"aaa\"}}}"}',
        rb'{"cmd":"stop","arg":"{\"symbolName\":\"symbol3\",\"meta\":{\"ruleId\":\"rule1\",'
        rb"\"opId\":\"op3\",\"instanceId\":0},\"pluginType\":\"sinks\",\"config\":{\"def\":"
        rb'{\"ci\":\"aaa\"}}}"}',
    ),
]


def test_encode_command_matches_the_go_golden_strings() -> None:
    for control, start, stop in GO_CASES:
        assert encode_command("start", control) == start
        assert encode_command("stop", control) == stop


def test_function_start_carries_a_zero_meta_and_no_config() -> None:
    assert encode_command("start", Control("revert", "func")) == (
        rb'{"cmd":"start","arg":"{\"symbolName\":\"revert\",\"meta\":{\"ruleId\":\"\",'
        rb'\"opId\":\"\",\"instanceId\":0},\"pluginType\":\"func\"}"}'
    )


def test_empty_config_is_omitted_like_nil() -> None:
    assert b"config" not in encode_command("start", Control("s", "sink", Meta("r", "o"), "", {}))


async def test_plugin_instance_scenario_sends_the_golden_commands(ekuiper_ipc_dir: str) -> None:
    """TestPluginInstance: start symbol1, then start+stop each case; ref counts as in Go."""
    received: list[bytes] = []
    ref_counts: list[dict[str, Any]] = []
    with trio.fail_after(10):
        async with open_emulator("test", ipc_dir=ekuiper_ipc_dir) as emu:
            client = pynng.Req0(resend_time=0)
            client.dial(emu.url("plugin_test"), block=True)

            async def mock_plugin() -> None:
                await client.asend(b"handshake")
                for _ in range(1 + 2 * len(GO_CASES)):
                    received.append(bytes(await client.arecv()))
                    await client.asend(b"ok")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(mock_plugin)
                assert await emu.wait_handshake() == b"handshake"
                await emu.start_symbol(GO_CASES[0][0])
                ref_counts.append(dict(emu.status.ref_count))
                for control, _, _ in GO_CASES:
                    await emu.start_symbol(control)
                    await emu.stop_symbol(control)
                    ref_counts.append(dict(emu.status.ref_count))
            client.close()

    expected = [GO_CASES[0][1]]
    for _, start, stop in GO_CASES:
        expected += [start, stop]
    assert received == expected
    assert emu.sent_commands == expected
    assert ref_counts == [{"rule1": 1}] * 4
