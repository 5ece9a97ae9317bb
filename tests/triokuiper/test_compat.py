"""Official-SDK plugin scripts, unmodified, under the SDK's runtime and under ``triokuiper compat``.

Both runs face the same emulated eKuiper; the server must see the same things.  The SDK
hard-codes /tmp for its sockets, so each run uses unique names (see sdk_plugins/sdkjson.py).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import trio

from triokuiper.testing import PORTABLE_CONF_ARG, Emulator, EmulatorFactory, PluginTimeoutError

PLUGIN = Path(__file__).resolve().parent / "sdk_plugins" / "sdkjson.py"
DEADLINE = 30


def launch_options(runtime: str, tag: str) -> dict[str, Any]:
    env = dict(os.environ, SDK_PLUGIN_NAME=f"sdk{tag}", SDK_SYMBOL_SUFFIX=f"_{tag}")
    if runtime == "sdk":
        return {"executable": PLUGIN, "env": env}
    command = [sys.executable, "-u", "-m", "triokuiper", "compat", str(PLUGIN), PORTABLE_CONF_ARG]
    return {"command": command, "cwd": PLUGIN.parent, "env": env}


async def launch(factory: EmulatorFactory, runtime: str) -> tuple[Emulator, str]:
    tag = uuid.uuid4().hex[:10]
    emu = await factory(
        f"sdk{tag}", ipc_dir="/tmp", recv_timeout=2.0, **launch_options(runtime, tag)
    )
    await emu.wait_handshake()
    return emu, tag


async def wait_lines(path: Path, count: int) -> list[dict[str, Any]]:
    while True:
        try:
            lines = (await trio.Path(path).read_text()).splitlines()
        except FileNotFoundError:
            lines = []
        if len(lines) >= count:
            return [json.loads(line) for line in lines]
        await trio.sleep(0.02)


async def observe(factory: EmulatorFactory, runtime: str, tmp_path: Path) -> dict[str, Any]:
    """What the server sees from sdkjson.py (decoded JSON, as eKuiper reads it)."""
    seen: dict[str, Any] = {}
    emu, tag = await launch(factory, runtime)
    source = await emu.start_source("pyjson", config={"count": 3}, rule_id=f"r{tag}")
    rows = [await source.receive() for _ in range(3)]
    seen["rows"] = [(r.message and r.message["seq"], json.dumps(r.meta).replace(tag, "TAG"))
                    for r in rows]  # fmt: skip
    out = tmp_path / f"{runtime}.jsonl"
    sink = await emu.start_sink("file", rule_id=f"s{tag}", config={"path": str(out)},
                                require_ack=True)  # fmt: skip
    acks = [await sink.send([{"name": "hello", "count": 5}]),
            await sink.send({"name": "world", "count": 10}), await sink.send(b"fail")]  # fmt: skip
    seen["acks"] = [a and json.loads(a.raw) for a in acks]
    seen["sink_file"] = await wait_lines(out, 3)
    revert = await emu.start_function(f"revert_{tag}")
    echo = await emu.start_function(f"echo_{tag}")
    boom = await emu.start_function(f"boom_{tag}")
    seen["revert"] = [
        json.loads((await revert.validate(["a"])).raw),
        json.loads((await revert.validate(["a", "b"])).raw),
        json.loads((await revert.exec(["twelve"])).raw),
        await revert.is_aggregate(),
    ]
    seen["echo"] = [json.loads((await echo.exec([1, "x"], rule_id="rA", func_id=1)).raw),
                    await echo.is_aggregate()]  # fmt: skip
    failed = await boom.exec(["x"])
    seen["boom"] = (failed.state, "exec exploded" in str(failed.result))
    await emu.restart()  # faithful replay bug: only the last function start comes back
    seen["rows_after_restart"] = [(await source.receive()).message is not None for _ in range(3)]
    try:
        seen["revert_after_restart"] = (await revert.exec(["abc"])).result
    except PluginTimeoutError:
        seen["revert_after_restart"] = "timeout"
    await source.stop()
    await sink.stop()  # the plugin's listener removes its ipc file from /tmp
    return seen


async def test_sdk_plugin_runs_unmodified_and_the_server_sees_the_same(
    ekuiper_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    with trio.fail_after(DEADLINE):
        under_sdk = await observe(ekuiper_emulator, "sdk", tmp_path)
    with trio.fail_after(DEADLINE):
        under_trio = await observe(ekuiper_emulator, "triokuiper", tmp_path)
    # the SDK loses every function but the last one started after a restart (#3784, #4077)
    assert under_sdk.pop("revert_after_restart") == "timeout"
    assert under_trio.pop("revert_after_restart") == "cba"
    assert under_trio == under_sdk
