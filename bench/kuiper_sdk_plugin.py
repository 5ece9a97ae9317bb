"""The benchmark's plugin for the OFFICIAL ekuiper SDK (see bench/kuiper.py)."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from ekuiper import Context, Function, PluginConfig, Sink, Source, plugin

SUFFIX = os.environ.get("BENCH_SUFFIX", "")
PAYLOAD = "x" * 150


class Flood(Source):  # type: ignore[misc]
    def __init__(self) -> None:
        self.closed = threading.Event()

    def configure(self, datasource: str, conf: dict[str, Any]) -> None:
        self.count = int(conf["count"])

    def open(self, ctx: Context) -> None:
        for seq in range(self.count):
            ctx.emit({"seq": seq, "payload": PAYLOAD}, None)
        self.closed.wait()

    def close(self, ctx: Context) -> None:
        self.closed.set()


class Count(Sink):  # type: ignore[misc]
    def configure(self, conf: dict[str, Any]) -> None:
        self.expect = int(conf["expect"])
        self.seen = 0

    def open(self, ctx: Context) -> None:
        pass

    def collect(self, ctx: Context, data: Any) -> None:
        json.loads(data)  # the same work as triokuiper's runtime decoding the payload
        self.seen += 1
        if self.seen == self.expect:
            print("SINKDONE count", flush=True)

    def close(self, ctx: Context) -> None:
        pass


class Echo(Function):  # type: ignore[misc]
    def validate(self, args: list[Any]) -> str:
        return ""

    def exec(self, args: list[Any], ctx: Context) -> Any:
        return args[0]

    def is_aggregate(self) -> bool:
        return False


if __name__ == "__main__":
    plugin.start(
        PluginConfig(
            os.environ.get("BENCH_PLUGIN_NAME", "benchsdk"),
            {"flood": Flood},
            {"count": Count},
            {"echo" + SUFFIX: Echo, "echosync" + SUFFIX: Echo},
        )
    )
