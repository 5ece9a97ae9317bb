"""triokuiper's runtime driven by the eKuiper emulator, with the plugin served in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pynng
import pytest
import trio

import triokuiper
from triokuiper._pull_listener import PullListener
from triokuiper._push_dialer import PushDialer
from triokuiper._req_dialer import ReqDialer
from triokuiper.testing import CommandError, Control, Emulator, EmulatorFactory


class Counter(triokuiper.Source):
    """Emits ``count`` rows (default 3) naming its datasource, then idles until stopped."""

    def configure(self, datasource: str, conf: dict[str, Any]) -> None:
        if conf.get("fail"):
            raise ValueError("bad source config")
        self.datasource = datasource
        self.count = int(conf.get("count", 3))

    async def open(self, ctx: triokuiper.SourceContext) -> None:
        for seq in range(self.count):
            await ctx.emit({"seq": seq, "ds": self.datasource}, {"rule": ctx.rule_id})
        await trio.sleep_forever()


class Recorder(triokuiper.Sink):
    """Keeps every payload in ``received``; raises on rows named "boom"."""

    received: list[Any] = []

    def configure(self, conf: dict[str, Any]) -> None:
        self.conf = conf

    async def collect(self, ctx: triokuiper.SinkContext, data: Any) -> None:
        await trio.lowlevel.checkpoint()
        rows = data if isinstance(data, list) else [data]
        if any(row.get("name") == "boom" for row in rows):
            raise RuntimeError("boom row")
        Recorder.received.append(data)


class SyncRecorder(Recorder):
    """A plain ``def collect``: served from a worker thread."""

    def collect(self, ctx: triokuiper.SinkContext, data: Any) -> None:  # type: ignore[override]
        rows = data if isinstance(data, list) else [data]
        if any(row.get("name") == "boom" for row in rows):
            raise RuntimeError("boom row")
        Recorder.received.append(data)


class Revert(triokuiper.Function):
    def validate(self, args: list[Any]) -> str | None:
        return None if len(args) == 1 else "revert takes one argument"

    async def exec(self, args: list[Any], ctx: triokuiper.FunctionContext) -> Any:
        await trio.lowlevel.checkpoint()
        if args[0] == "raise":
            raise ValueError("asked to raise")
        return str(args[0])[::-1]


class Upper(triokuiper.Function):
    """A plain ``def exec``: served from a worker thread."""

    def exec(self, args: list[Any], ctx: triokuiper.FunctionContext) -> Any:
        return str(args[0]).upper()

    def is_aggregate(self) -> bool:
        return True


CONFIG = triokuiper.PluginConfig(
    "trioplug",
    sources={"counter": Counter},
    sinks={"recorder": Recorder, "syncrecorder": SyncRecorder},
    functions={"revert": Revert, "upper": Upper},
)


DEADLINE = 20  # seconds; never reached when things work


@pytest.fixture
async def served(
    ekuiper_emulator: EmulatorFactory, ekuiper_ipc_dir: str
) -> AsyncIterator[tuple[Emulator, triokuiper.Plugin]]:
    Recorder.received = []
    emu = await ekuiper_emulator("trioplug", recv_timeout=2.0)
    async with trio.open_nursery() as nursery:
        plugin: triokuiper.Plugin = await nursery.start(
            partial(triokuiper.serve, CONFIG, ipc_dir=ekuiper_ipc_dir, keepalive=0.3)
        )
        await emu.wait_handshake()
        with trio.fail_after(DEADLINE):
            yield emu, plugin
        nursery.cancel_scope.cancel()


Served = tuple[Emulator, triokuiper.Plugin]


async def test_source_rows_reach_the_server_twice_across_a_stop(served: Served) -> None:
    emu, plugin = served
    for _ in range(2):
        src = await emu.start_source("counter", config={"datasource": "demo"}, rule_id="r1")
        rows = [await src.receive() for _ in range(3)]
        assert [r.message for r in rows] == [{"seq": i, "ds": "demo"} for i in range(3)]
        assert rows[0].meta == {"rule": "r1"}
        assert list(plugin.instances) == ["r1_op1_0_counter"]
        await src.stop()
        assert plugin.instances == {}


async def test_source_configure_error_fails_the_start(served: Served) -> None:
    emu, plugin = served
    with pytest.raises(CommandError, match="ValueError: bad source config"):
        await emu.start_source("counter", config={"fail": True})
    assert plugin.instances == {}


@pytest.mark.parametrize("require_ack", [True, False])
async def test_sink_payloads_with_and_without_ack(served: Served, require_ack: bool) -> None:
    emu, _ = served
    sink = await emu.start_sink("recorder", require_ack=require_ack)
    acks = [await sink.send([{"name": "hello", "count": 5}]),
            await sink.send({"name": "world", "count": 10})]  # fmt: skip
    while len(Recorder.received) < 2:  # noqa: ASYNC110 - filled from the plugin's side
        await trio.sleep(0.01)
    assert Recorder.received == [[{"name": "hello", "count": 5}], {"name": "world", "count": 10}]
    if require_ack:
        assert [a and a.raw for a in acks] == [b"{}", b"{}"]
    else:
        assert acks == [None, None]
    await sink.stop()


@pytest.mark.parametrize("symbol", ["recorder", "syncrecorder"])
@pytest.mark.parametrize("require_ack", [True, False])
async def test_sink_survives_collect_errors_and_non_json_bytes(
    served: Served, require_ack: bool, symbol: str
) -> None:
    emu, _ = served
    sink = await emu.start_sink(symbol, require_ack=require_ack)
    boom = await sink.send([{"name": "boom"}])
    garbage = await sink.send(b"\x89PNG not json")
    after = await sink.send({"name": "after"})
    while not Recorder.received:  # noqa: ASYNC110 - filled from the plugin's side
        await trio.sleep(0.01)
    assert Recorder.received == [{"name": "after"}]  # the sink kept going
    if require_ack:
        assert boom is not None
        assert boom.error == "RuntimeError: boom row"
        assert garbage is not None
        assert garbage.error.startswith("sink payload is not valid JSON")
        assert after is not None
        assert after.ok
    await sink.stop()


async def test_function_exec_async_sync_and_raising(served: Served) -> None:
    emu, _ = served
    revert = await emu.start_function("revert")
    assert (await revert.exec(["twelve"])).result == "evlewt"
    bad = await revert.exec(["raise"])
    assert bad.state is False
    assert "asked to raise" in str(bad.result)
    upper = await emu.start_function("upper")
    assert (await upper.exec(["abc"])).result == "ABC"
    assert await upper.is_aggregate() is True


async def test_function_validate_and_unknown_calls(served: Served) -> None:
    emu, _ = served
    revert = await emu.start_function("revert")
    assert (await revert.validate(["a"])).state is True
    refused = await revert.validate(["a", "b"])
    assert (refused.state, refused.result) == (False, "revert takes one argument")
    assert await revert.is_aggregate() is False
    unknown = await revert.request("Frobnicate", [])
    assert (unknown.state, unknown.result) == (False, "invalid func Frobnicate")
    assert (await revert.exec(["still works"])).result == "skrow llits"


async def test_idle_function_and_control_channels_keep_working(served: Served) -> None:
    emu, _ = served
    revert = await emu.start_function("revert")
    upper = await emu.start_function("upper")
    await trio.sleep(1.0)  # > 3 keepalive periods (0.3 s) on both function channels
    assert (await revert.exec(["abc"])).result == "cba"
    assert (await upper.exec(["abc"])).result == "ABC"
    assert b"handshake" in revert.discarded
    src = await emu.start_source("counter")
    assert (await src.receive()).message == {"seq": 0, "ds": ""}


async def test_unknown_symbols_and_types_are_refused_and_the_plugin_lives_on(
    served: Served,
) -> None:
    emu, _ = served
    with pytest.raises(CommandError, match="symbol nosuch not found"):
        await emu.start_source("nosuch")
    with pytest.raises(CommandError, match="symbol nosuch not found"):
        await emu.start_function("nosuch")
    sources = '{"symbolName":"counter","meta":{},"pluginType":"sources"}'
    reply = await emu.send_command({"cmd": "start", "arg": sources})
    assert reply == b"invalid command: unknown pluginType 'sources'"
    assert await emu.send_command(b"{not json") == b"invalid command: not JSON"
    assert (await emu.send_command({"cmd": "start", "arg": 5})).startswith(b"invalid command")
    revert = await emu.start_function("revert")
    assert (await revert.exec(["ok"])).result == "ko"


async def test_stop_of_a_symbol_that_is_not_running_is_ok(served: Served) -> None:
    emu, _ = served
    await emu.stop_symbol("counter", "source", rule_id="never", op_id="started")
    await emu.stop_symbol("revert", "func")


async def test_serve_returns_when_the_server_goes_away(ekuiper_ipc_dir: str) -> None:
    from triokuiper.testing import open_emulator

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            async with open_emulator("trioplug", ipc_dir=ekuiper_ipc_dir) as emu:
                plugin = await nursery.start(partial(triokuiper.serve, CONFIG,
                                                     ipc_dir=ekuiper_ipc_dir))  # fmt: skip
                src = await emu.start_source("counter", config={"count": 10**9})
                await src.receive()
            await plugin.server_gone.wait()  # serve() returned on its own: the nursery closes
    assert plugin.instances == {} or all(i.done.is_set() for i in plugin.instances.values())


async def test_cancelling_serve_closes_every_symbol(
    ekuiper_emulator: EmulatorFactory, ekuiper_ipc_dir: str
) -> None:
    closed: list[str] = []

    class Tracked(Counter):
        async def close(self, ctx: triokuiper.SourceContext) -> None:
            await trio.lowlevel.checkpoint()
            closed.append(ctx.rule_id)

    class TrackedSink(Recorder):
        async def close(self, ctx: triokuiper.SinkContext) -> None:
            await trio.lowlevel.checkpoint()
            closed.append(f"sink {ctx.rule_id}")

    config = triokuiper.PluginConfig(
        "tracked",
        sources={"counter": Tracked},
        sinks={"recorder": TrackedSink},
        functions={"revert": Revert, "upper": Upper},
    )
    emu = await ekuiper_emulator("tracked")
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            plugin = await nursery.start(partial(triokuiper.serve, config,
                                                 ipc_dir=ekuiper_ipc_dir))  # fmt: skip
            for rule in ("a", "b"):
                await (await emu.start_source("counter", rule_id=rule)).receive()
            await emu.start_sink("recorder", rule_id="c", require_ack=False)
            revert = await emu.start_function("revert")
            upper = await emu.start_function("upper")
            assert (await revert.exec(["ab"])).result == "ba"
            assert (await upper.exec(["ab"])).result == "AB"
            instances = [*plugin.instances.values(), *plugin.functions.values()]
            sockets = [s for i in instances for s in i.sockets]
            nursery.cancel_scope.cancel()
    assert sorted(closed) == ["a", "b", "sink c"]
    assert all(i.done.is_set() for i in instances)
    for sock in sockets:
        if isinstance(sock, PullListener):  # a sink's data channel: closed, file removed
            assert sock.closed
            assert not await trio.Path(sock.path).exists()
            continue
        if isinstance(sock, ReqDialer):  # an async function's channel
            assert not sock.connected
            with pytest.raises(trio.ClosedResourceError):
                await sock.request(b"x")
            continue
        if isinstance(sock, PushDialer):  # a source's data channel
            with pytest.raises(pynng.Closed):
                sock.send_blocking(b"x")
            continue
        with pytest.raises(pynng.Closed):
            sock.send(b"x", block=False)


async def test_a_stalled_server_holds_source_rows_without_loss(
    ekuiper_emulator: EmulatorFactory, ekuiper_ipc_dir: str
) -> None:
    emu = await ekuiper_emulator("trioplug")
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(triokuiper.serve, CONFIG, ipc_dir=ekuiper_ipc_dir,
                                        send_timeout=50))  # fmt: skip
            src = await emu.start_source("counter", config={"count": 3000})
            await trio.sleep(0.5)  # nng buffers fill, sends time out (50 ms) again and again
            seqs = [(await src.receive()).message["seq"] for _ in range(3000)]  # type: ignore[index]
            assert seqs == list(range(3000))
            nursery.cancel_scope.cancel()


async def test_stopping_a_function_closes_its_channel_and_a_new_start_reopens_it(
    served: Served,
) -> None:
    emu, plugin = served
    revert = await emu.start_function("revert")
    assert (await revert.exec(["ab"])).result == "ba"
    channel = plugin.functions["revert"]
    await emu.stop_symbol("revert", "func")
    assert channel.done.is_set()
    assert "revert" not in plugin.functions
    await emu.start_symbol(Control("revert", "func"))  # the emulator keeps its channel
    assert (await revert.exec(["cd"])).result == "dc"


async def test_in_process_restart_brings_back_every_symbol(
    ekuiper_emulator: EmulatorFactory, ekuiper_ipc_dir: str
) -> None:
    """Three rows in and out, twice, across a restart; both functions answer afterwards
    although eKuiper replays only the last function start (its replay-map bug)."""
    Recorder.received = []
    emu = await ekuiper_emulator("trioplug", recv_timeout=2.0)

    async def serve_in(scope: trio.CancelScope, done: trio.Event) -> None:
        try:
            with scope:
                await triokuiper.serve(CONFIG, ipc_dir=ekuiper_ipc_dir)
        finally:
            done.set()

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            first, first_done = trio.CancelScope(), trio.Event()
            nursery.start_soon(serve_in, first, first_done)
            source = await emu.start_source("counter", rule_id="r")
            sink = await emu.start_sink("recorder", rule_id="r", op_id="sink", require_ack=True)
            revert = await emu.start_function("revert")
            upper = await emu.start_function("upper")
            for _ in range(2):
                rows = [await source.receive() for _ in range(3)]
                assert [r.message["seq"] for r in rows if r.message] == [0, 1, 2]
                ack = await sink.send([{"name": "hello", "count": 5}])
                assert ack is not None
                assert ack.ok
                first.cancel()
                await first_done.wait()
                first, first_done = trio.CancelScope(), trio.Event()
                nursery.start_soon(serve_in, first, first_done)
                replays = await emu.restart()
                assert [r.error for r in replays] == [None, None, None]
                assert (await revert.exec(["abc"])).result == "cba"
                assert (await upper.exec(["abc"])).result == "ABC"
            nursery.cancel_scope.cancel()
    assert len(Recorder.received) == 2


@pytest.mark.parametrize(
    ("skip_h", "control_keepalive"),
    [(False, False), (True, False), (True, True)],
    ids=["ekuiper<2.2-default", "ekuiper>=2.2-default", "ekuiper>=2.2-keepalive"],
)
async def test_commands_after_idling_work_with_old_and_new_servers(
    ekuiper_emulator: EmulatorFactory, ekuiper_ipc_dir: str, skip_h: bool, control_keepalive: bool
) -> None:
    """Control keepalive is off by default: eKuiper < 2.2 (no 'h' skip) keeps working."""
    emu = await ekuiper_emulator("trioplug", skip_h=skip_h)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(triokuiper.serve, CONFIG, ipc_dir=ekuiper_ipc_dir, keepalive=0.2,
                        control_keepalive=control_keepalive)
            )  # fmt: skip
            await emu.wait_handshake()
            await trio.sleep(0.7)  # > 3 keepalive periods
            source = await emu.start_source("counter")
            assert (await source.receive()).message == {"seq": 0, "ds": ""}
            nursery.cancel_scope.cancel()


async def test_control_keepalive_breaks_servers_before_2_2_which_is_why_it_is_off(
    ekuiper_emulator: EmulatorFactory, ekuiper_ipc_dir: str
) -> None:
    emu = await ekuiper_emulator("trioplug", skip_h=False)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(triokuiper.serve, CONFIG, ipc_dir=ekuiper_ipc_dir, keepalive=0.2,
                        control_keepalive=True)
            )  # fmt: skip
            await emu.wait_handshake()
            await trio.sleep(0.7)
            with pytest.raises(CommandError, match="receive error: handshake"):
                await emu.start_source("counter")
            nursery.cancel_scope.cancel()
