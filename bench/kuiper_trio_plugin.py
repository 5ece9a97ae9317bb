"""The benchmark's triokuiper plugin (bench/kuiper.py): the symbols of kuiper_sdk_plugin.py.

Names come from the environment (``BENCH_PLUGIN_NAME``, ``BENCH_SUFFIX``) like the SDK plugin's.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import trio

import triokuiper

log = logging.getLogger("bench")
SUFFIX = os.environ.get("BENCH_SUFFIX", "")
PAYLOAD = "x" * 150  # with the envelope and seq: about 200 bytes on the wire


class Flood(triokuiper.Source):
    def configure(self, datasource: str, conf: dict[str, Any]) -> None:
        self.count = int(conf["count"])

    async def open(self, ctx: triokuiper.SourceContext) -> None:
        for seq in range(self.count):
            await ctx.emit({"seq": seq, "payload": PAYLOAD}, None)
        await trio.sleep_forever()


class Count(triokuiper.Sink):
    # the runtime JSON-decodes each payload once (the SDK plugin's collect calls json.loads)

    def configure(self, conf: dict[str, Any]) -> None:
        self.expect = int(conf["expect"])
        self.seen = 0

    async def collect(self, ctx: triokuiper.SinkContext, data: Any) -> None:
        self.seen += 1
        if self.seen == self.expect:
            log.warning("SINKDONE %s", ctx.symbol_name)


class CountSync(Count):
    """The same sink with a plain ``def collect`` (served from a worker thread)."""

    def collect(self, ctx: triokuiper.SinkContext, data: Any) -> None:  # type: ignore[override]
        self.seen += 1
        if self.seen == self.expect:
            log.warning("SINKDONE %s", ctx.symbol_name)


class Echo(triokuiper.Function):
    async def exec(self, args: list[Any], ctx: triokuiper.FunctionContext) -> Any:
        await trio.lowlevel.checkpoint()
        return args[0]


class EchoSync(triokuiper.Function):
    def exec(self, args: list[Any], ctx: triokuiper.FunctionContext) -> Any:
        return args[0]


if __name__ == "__main__":
    triokuiper.run(
        triokuiper.PluginConfig(
            os.environ.get("BENCH_PLUGIN_NAME", "benchtrio"),
            sources={"flood": Flood},
            sinks={"count": Count, "countsync": CountSync},
            functions={"echo" + SUFFIX: Echo, "echosync" + SUFFIX: EchoSync},
        )
    )
