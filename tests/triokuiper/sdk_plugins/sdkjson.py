"""A portable plugin written for the OFFICIAL eKuiper Python SDK (PyPI ``ekuiper``).

Launched by the emulator exactly as eKuiper launches Python plugins.  The SDK hard-codes its
sockets under /tmp, so the plugin name and the function names come from the environment
(``SDK_PLUGIN_NAME``, ``SDK_SYMBOL_SUFFIX``) to keep concurrent test runs apart.  Everything the
SDK hands to the plugin is reported back (in source rows, in the sink's output file) so the tests
can assert what the SDK really saw.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from ekuiper import Context, Function, PluginConfig, Sink, Source, plugin

SUFFIX = os.environ.get("SDK_SYMBOL_SUFFIX", "")


class JsonSource(Source):  # type: ignore[misc]
    """Emits ``count`` rows (default 3) then idles until closed; reports its configure() args."""

    def __init__(self) -> None:
        self.datasource: Any = None
        self.conf: dict[str, Any] = {}
        self.closed = threading.Event()

    def configure(self, datasource: str, conf: dict[str, Any]) -> None:
        self.datasource = datasource
        self.conf = conf

    def open(self, ctx: Context) -> None:
        if self.conf.get("emit_error"):
            ctx.emit_error("source failed on purpose")
        for seq in range(int(self.conf.get("count", 3))):
            row = {"seq": seq, "pid": os.getpid(), "datasource": self.datasource}
            ctx.emit(row, {"conf": self.conf, "ruleId": ctx.get_rule_id()})
        self.closed.wait()

    def close(self, ctx: Context) -> None:
        self.closed.set()


class FileSink(Sink):  # type: ignore[misc]
    """Appends each payload to ``conf["path"]`` as a JSON line; acks when ``requireAck``."""

    def __init__(self) -> None:
        self.conf: dict[str, Any] = {}

    def configure(self, conf: dict[str, Any]) -> None:
        self.conf = conf

    def open(self, ctx: Context) -> None:
        pass

    def collect(self, ctx: Context, data: Any) -> None:
        with open(self.conf["path"], "a", encoding="utf-8") as out:
            out.write(json.dumps({"type": type(data).__name__, "data": data.decode()}) + "\n")
        if self.conf.get("requireAck"):
            if b"fail" in data:
                ctx.ack_error("sink refused the data")
            else:
                ctx.ack_ok()

    def close(self, ctx: Context) -> None:
        pass


class Revert(Function):  # type: ignore[misc]
    """``revert(name)``: the string reversed (eKuiper's own portable test function)."""

    def validate(self, args: list[Any]) -> str:
        return "" if len(args) == 1 else "revert function only supports 1 parameter"

    def exec(self, args: list[Any], ctx: Context) -> Any:
        return str(args[0])[::-1]

    def is_aggregate(self) -> bool:
        return False


class Echo(Function):  # type: ignore[misc]
    """Returns its arguments and the function context the SDK built."""

    def validate(self, args: list[Any]) -> str:
        return ""

    def exec(self, args: list[Any], ctx: Context) -> Any:
        return {"args": args, "rule": ctx.get_rule_id(), "op": ctx.get_op_id()}

    def is_aggregate(self) -> bool:
        return True


class Boom(Function):  # type: ignore[misc]
    """Raises in exec and in validate."""

    def validate(self, args: list[Any]) -> str:
        raise ValueError("validate exploded")

    def exec(self, args: list[Any], ctx: Context) -> Any:
        raise ValueError("exec exploded")

    def is_aggregate(self) -> bool:
        return False


if __name__ == "__main__":
    plugin.start(
        PluginConfig(
            os.environ.get("SDK_PLUGIN_NAME", "sdkjson"),
            {"pyjson": JsonSource},
            {"file": FileSink},
            {"revert" + SUFFIX: Revert, "echo" + SUFFIX: Echo, "boom" + SUFFIX: Boom},
        )
    )
