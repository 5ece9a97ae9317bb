"""An eKuiper portable plugin written with triokuiper: a source, a sink and two functions.

eKuiper starts it as ``python -u triodemo.py '{"sendTimeout":1000}'``.  Build the zip to upload
with ``triokuiper package examples/kuiper_plugin -o triodemo.zip``.

* source ``ticker``: emits ``{"seq": n, "datasource": ...}`` every ``interval`` seconds
  (stream config, default 0.01), at most ``count`` rows (default: no limit);
* sink ``checker``: logs each row; a row without a string ``name`` and an integer ``count`` is
  refused (with the rule's ``requireAck`` eKuiper gets the error, and the sink goes on);
* functions ``revert(s)`` (async) and ``shout(s)`` (a plain ``def``: runs in a worker thread).
"""

from __future__ import annotations

import logging
from typing import Any

import trio

import triokuiper

log = logging.getLogger("triodemo")


class Ticker(triokuiper.Source):
    def configure(self, datasource: str, conf: dict[str, Any]) -> None:
        self.datasource = datasource
        self.interval = float(conf.get("interval", 0.01))
        self.count = conf.get("count")
        if self.interval < 0:
            raise ValueError("interval must not be negative")

    async def open(self, ctx: triokuiper.SourceContext) -> None:
        seq = 0
        while self.count is None or seq < self.count:
            await ctx.emit({"seq": seq, "datasource": self.datasource}, {"rule": ctx.rule_id})
            seq += 1
            await trio.sleep(self.interval)
        await trio.sleep_forever()  # a finished source stays idle until the rule stops it


class Checker(triokuiper.Sink):
    def configure(self, conf: dict[str, Any]) -> None:
        self.conf = conf

    async def collect(self, ctx: triokuiper.SinkContext, data: Any) -> None:
        rows = data if isinstance(data, list) else [data]
        for row in rows:
            name, count = row.get("name"), row.get("count")
            if not isinstance(name, str) or not isinstance(count, int):
                raise ValueError(f"bad row {row!r}")
            log.info("received name=%s count=%d", name, count)
        await trio.lowlevel.checkpoint()


class Revert(triokuiper.Function):
    def validate(self, args: list[Any]) -> str | None:
        return None if len(args) == 1 else "revert takes exactly one argument"

    async def exec(self, args: list[Any], ctx: triokuiper.FunctionContext) -> Any:
        await trio.lowlevel.checkpoint()
        return str(args[0])[::-1]


class Shout(triokuiper.Function):
    def exec(self, args: list[Any], ctx: triokuiper.FunctionContext) -> Any:
        if args and args[0] == "":
            raise ValueError("nothing to shout")
        return " ".join(str(a) for a in args).upper() + "!"


CONFIG = triokuiper.PluginConfig(
    "triodemo",
    sources={"ticker": Ticker},
    sinks={"checker": Checker},
    functions={"revert": Revert, "shout": Shout},
)

if __name__ == "__main__":
    triokuiper.run(CONFIG)
