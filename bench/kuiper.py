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
Both sides do the same work per message: 200-byte rows, the sink payload JSON-decoded once
(``json.loads`` in the SDK plugin's ``collect``, the runtime's decode for triokuiper), no
requireAck (nobody acks, on either side).  Beside the rates it prints the plugin process's CPU
time (user+sys of every thread, from /proc/PID/stat) per message, which shifts much less than
wall time when other jobs load the machine.
Prints medians and ratios against the SDK (above 1.0 = faster than the SDK; for CPU per message
the ratio is SDK / runtime, so above 1.0 is cheaper than the SDK).

    .venv/bin/python bench/kuiper.py [--rounds 3] [--rows 20000] [--calls 5000] [--phases sink]
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

from triokuiper._nng import ipc_path
from triokuiper._pull_listener import PullListener
from triokuiper.testing import PORTABLE_CONF_ARG, Control, Emulator, Meta, open_emulator
from triokuiper.testing._goshapes import TYPE_SOURCE

HERE = Path(__file__).resolve().parent
TRIO_PLUGIN = HERE / "kuiper_trio_plugin.py"
SDK_PLUGIN = HERE / "kuiper_sdk_plugin.py"
PAYLOAD = "x" * 150
RUNTIMES = tuple(os.environ.get("BENCH_RUNTIMES", "triokuiper,sdk,compat").split(","))


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float:
    """User+sys CPU time of every thread of ``pid`` (fields 14 and 15 of /proc/PID/stat)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def launch_options(runtime: str, tag: str) -> dict[str, Any]:
    env = dict(os.environ, BENCH_PLUGIN_NAME=f"bench{tag}", BENCH_SUFFIX=f"_{tag}")
    if runtime == "triokuiper":
        return {"executable": TRIO_PLUGIN, "env": env}
    if runtime == "sdk":
        return {"executable": SDK_PLUGIN, "env": env}
    command = [sys.executable, "-u", "-m", "triokuiper", "compat", str(SDK_PLUGIN),
               PORTABLE_CONF_ARG]  # fmt: skip
    return {"command": command, "cwd": HERE, "env": env}


async def bench_source(
    emu: Emulator, tag: str, rows: int, reader: str = "fast"
) -> tuple[float, float]:
    if reader == "nng":
        return await _bench_source_nng(emu, tag, rows)
    # eKuiper's reader is Go (mangos): its ipc receive costs a few us per message, while a pynng
    # Pull costs ~36 us (nng's threads) and would cap both plugins alike.  triokuiper's own SP
    # Pull listener is the closest Python stand-in: same wire, ~4 us per message.
    meta = Meta(f"r{tag}", "op1", 0)
    stem = f"{meta.rule_id}_{meta.op_id}_{meta.instance_id}"
    listener = PullListener(ipc_path(emu.ipc_dir, stem))
    await listener.listen()
    control = Control("flood", TYPE_SOURCE, meta, "", {"count": rows})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.run)
        await emu.start_symbol(control)
        first = await listener.receive_batch()
        assert len(first[0]) >= 190, len(first[0])
        got = len(first) - 1
        cpu = cpu_seconds(emu.pid)
        start = time.perf_counter()
        while got < rows - 1:
            got += len(await listener.receive_batch())
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds(emu.pid) - cpu
        await emu.stop_symbol(control)
        nursery.cancel_scope.cancel()
    return got / elapsed, cpu / got


async def _bench_source_nng(emu: Emulator, tag: str, rows: int) -> tuple[float, float]:
    source = await emu.start_source("flood", rule_id=f"r{tag}", config={"count": rows})
    sock = source._sock
    assert sock is not None

    def pull() -> tuple[float, float]:
        first = sock.recv()
        assert len(first) >= 190, len(first)
        cpu = cpu_seconds(emu.pid)
        start = time.perf_counter()
        for _ in range(rows - 1):
            sock.recv()
        return time.perf_counter() - start, cpu_seconds(emu.pid) - cpu

    elapsed, cpu = await trio.to_thread.run_sync(pull)
    await source.stop()
    return (rows - 1) / elapsed, cpu / (rows - 1)


async def bench_sink(
    emu: Emulator, tag: str, rows: int, symbol: str = "count"
) -> tuple[float, float]:
    sink = await emu.start_sink(symbol, rule_id=f"r{tag}", op_id=symbol,
                                config={"expect": rows})  # fmt: skip
    sock = sink._data
    assert sock is not None
    payload = json.dumps([{"seq": 123456, "payload": PAYLOAD}]).encode()

    def push() -> None:
        for _ in range(rows):
            sock.send(payload)

    cpu = cpu_seconds(emu.pid)
    start = time.perf_counter()
    await trio.to_thread.run_sync(push)
    await emu.wait_output(f"SINKDONE {symbol}".encode())
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(emu.pid) - cpu
    await sink.stop()
    return rows / elapsed, cpu / rows


async def bench_function(emu: Emulator, name: str, calls: int) -> tuple[float, float]:
    function = await emu.start_function(name)
    assert (await function.exec(["warm"])).result == "warm"  # handshake taken, Rep may send
    sock = function._channel.sock  # type: ignore[union-attr]
    ctx = json.dumps({"ruleId": "r", "opId": "o", "instanceId": 0, "funcId": 0})
    call = json.dumps({"func": "Exec", "arg": ["abc", ctx]}).encode()

    def loop() -> tuple[float, float]:
        cpu = cpu_seconds(emu.pid)
        start = time.perf_counter()
        for _ in range(calls):
            sock.send(call)
            reply = sock.recv()
            while reply[:1] == b"h":  # a keepalive: eKuiper sends the call again
                sock.send(call)
                reply = sock.recv()
        return time.perf_counter() - start, cpu_seconds(emu.pid) - cpu

    elapsed, cpu = await trio.to_thread.run_sync(loop)
    return calls / elapsed, cpu / calls


async def one_run(runtime: str, args: argparse.Namespace) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    results: dict[str, float] = {}
    async with open_emulator(f"bench{tag}", ipc_dir="/tmp", **launch_options(runtime, tag)) as emu:
        await emu.wait_handshake()
        phases = args.phases.split(",")
        native = runtime == "triokuiper"
        if "source" in phases:
            record(results, "source", await bench_source(emu, tag, args.rows, args.reader))
        if "sink" in phases:
            record(results, "sink", await bench_sink(emu, tag, args.rows))
            if native:
                record(results, "sink (def)", await bench_sink(emu, tag, args.rows, "countsync"))
        if "function" in phases:
            record(results, "function", await bench_function(emu, f"echo_{tag}", args.calls))
            if native:
                calls = await bench_function(emu, f"echosync_{tag}", args.calls)
                record(results, "function (def)", calls)
    return results


def record(results: dict[str, float], name: str, measured: tuple[float, float]) -> None:
    rate, cpu = measured
    results[f"{name} msg/s"] = rate
    results[f"{name} cpu us/msg"] = cpu * 1e6


async def main_async(args: argparse.Namespace) -> None:
    samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for round_no in range(args.rounds):
        order = RUNTIMES if round_no % 2 == 0 else tuple(reversed(RUNTIMES))
        for runtime in order:
            for metric, value in (await one_run(runtime, args)).items():
                samples[runtime][metric].append(value)
                print(f"round {round_no + 1} {runtime:10} {metric:28} {value:10.1f}", flush=True)
    print("\nmedians (ratio above 1.0 = better than the official SDK: faster, or less CPU)")
    sdk = {m: statistics.median(v) for m, v in samples["sdk"].items()}
    for runtime in RUNTIMES:
        for metric, values in samples[runtime].items():
            median = statistics.median(values)
            base = sdk.get(metric.replace(" (def)", ""), median)
            ratio = base / median if "cpu" in metric else median / base
            print(f"{runtime:10} {metric:28} {median:10.1f}   x{ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--phases", default="source,sink,function", help="what to measure")
    parser.add_argument(
        "--reader",
        choices=("fast", "nng"),
        default="fast",
        help="the source rows' reader: an SP Pull in Trio (Go-like cost) or pynng",
    )
    trio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
