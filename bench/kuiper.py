"""triokuiper against the official eKuiper Python SDK, side by side in one run.

Each round launches, in turn (alternating which goes first), the same plugin under

* ``triokuiper``: bench/kuiper_trio_plugin.py, a native Trio plugin;
* ``sdk``: bench/kuiper_sdk_plugin.py under the SDK's own runtime (threads, blocking pynng);
* ``compat``: the same SDK script under ``python -m triokuiper compat``,

each launched by the emulated eKuiper (``triokuiper.testing``) exactly as eKuiper launches
Python plugins.  The emulator sends the control commands; the bulk traffic is then driven from a
worker thread with blocking pynng calls on the emulator's own sockets, so the Python emulator
is not the bottleneck (eKuiper's Go side is fast too).  Measured: source rows/s received
(200-byte messages), sink payloads/s pushed until the plugin reports the last one, and
function Exec round trips/s (one at a time, as eKuiper's per-function mutex does).
Prints medians and ratios against the SDK (above 1.0 = faster than the SDK).

    .venv/bin/python bench/kuiper.py [--rounds 3] [--rows 20000] [--calls 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import trio

from triokuiper.testing import PORTABLE_CONF_ARG, Emulator, open_emulator

HERE = Path(__file__).resolve().parent
TRIO_PLUGIN = HERE / "kuiper_trio_plugin.py"
SDK_PLUGIN = HERE / "kuiper_sdk_plugin.py"
PAYLOAD = "x" * 150
RUNTIMES = tuple(os.environ.get("BENCH_RUNTIMES", "triokuiper,sdk,compat").split(","))


def launch_options(runtime: str, tag: str) -> dict[str, Any]:
    env = dict(os.environ, BENCH_PLUGIN_NAME=f"bench{tag}", BENCH_SUFFIX=f"_{tag}")
    if runtime == "triokuiper":
        return {"executable": TRIO_PLUGIN, "env": env}
    if runtime == "sdk":
        return {"executable": SDK_PLUGIN, "env": env}
    command = [sys.executable, "-u", "-m", "triokuiper", "compat", str(SDK_PLUGIN),
               PORTABLE_CONF_ARG]  # fmt: skip
    return {"command": command, "cwd": HERE, "env": env}


async def bench_source(emu: Emulator, tag: str, rows: int) -> float:
    source = await emu.start_source("flood", rule_id=f"r{tag}", config={"count": rows})
    sock = source._sock
    assert sock is not None

    def pull() -> float:
        first = sock.recv()
        assert len(first) >= 190, len(first)
        start = time.perf_counter()
        for _ in range(rows - 1):
            sock.recv()
        return time.perf_counter() - start

    elapsed = await trio.to_thread.run_sync(pull)
    await source.stop()
    return (rows - 1) / elapsed


async def bench_sink(emu: Emulator, tag: str, rows: int, symbol: str = "count") -> float:
    sink = await emu.start_sink(symbol, rule_id=f"r{tag}", op_id=symbol,
                                config={"expect": rows})  # fmt: skip
    sock = sink._data
    assert sock is not None
    payload = json.dumps([{"seq": 123456, "payload": PAYLOAD}]).encode()

    def push() -> None:
        for _ in range(rows):
            sock.send(payload)

    start = time.perf_counter()
    await trio.to_thread.run_sync(push)
    await emu.wait_output(f"SINKDONE {symbol}".encode())
    elapsed = time.perf_counter() - start
    await sink.stop()
    return rows / elapsed


async def bench_function(emu: Emulator, name: str, calls: int) -> float:
    function = await emu.start_function(name)
    assert (await function.exec(["warm"])).result == "warm"  # handshake taken, Rep may send
    sock = function._channel.sock  # type: ignore[union-attr]
    ctx = json.dumps({"ruleId": "r", "opId": "o", "instanceId": 0, "funcId": 0})
    call = json.dumps({"func": "Exec", "arg": ["abc", ctx]}).encode()

    def loop() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            sock.send(call)
            reply = sock.recv()
            while reply[:1] == b"h":  # a keepalive: eKuiper sends the call again
                sock.send(call)
                reply = sock.recv()
        return time.perf_counter() - start

    elapsed = await trio.to_thread.run_sync(loop)
    return calls / elapsed


async def one_run(runtime: str, args: argparse.Namespace) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    results: dict[str, float] = {}
    async with open_emulator(f"bench{tag}", ipc_dir="/tmp", **launch_options(runtime, tag)) as emu:
        await emu.wait_handshake()
        results["source rows/s"] = await bench_source(emu, tag, args.rows)
        results["sink payloads/s"] = await bench_sink(emu, tag, args.rows)
        results["function calls/s"] = await bench_function(emu, f"echo_{tag}", args.calls)
        if runtime == "triokuiper":
            results["sink payloads/s (def collect)"] = await bench_sink(
                emu, tag, args.rows, "countsync"
            )
            results["function calls/s (def exec)"] = await bench_function(
                emu, f"echosync_{tag}", args.calls
            )
    return results


async def main_async(args: argparse.Namespace) -> None:
    samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for round_no in range(args.rounds):
        order = RUNTIMES if round_no % 2 == 0 else tuple(reversed(RUNTIMES))
        for runtime in order:
            for metric, value in (await one_run(runtime, args)).items():
                samples[runtime][metric].append(value)
                print(f"round {round_no + 1} {runtime:10} {metric:28} {value:10.0f}", flush=True)
    print("\nmedians (ratio = runtime / sdk; above 1.0 is faster than the official SDK)")
    sdk = {m: statistics.median(v) for m, v in samples["sdk"].items()}
    for runtime in RUNTIMES:
        for metric, values in samples[runtime].items():
            median = statistics.median(values)
            base = sdk.get(metric.split(" (")[0], 1.0)
            print(f"{runtime:10} {metric:28} {median:10.0f}   x{median / base:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--calls", type=int, default=5000)
    trio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
