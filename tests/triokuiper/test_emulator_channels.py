"""The emulator's channel semantics against a hand-driven nng plugin (in-process, no SDK).

Each test scripts the plugin side byte by byte with bare pynng sockets, so the server's
behaviour -- protocol-state recovery, ``h`` skipping, timeouts, decoding, cancellation -- is
checked independently of any plugin runtime.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pynng
import pytest
import trio
import trio.testing

from triokuiper.testing import (
    CommandError,
    Control,
    Emulator,
    EmulatorError,
    GoDecodeError,
    Meta,
    PluginTimeoutError,
    SinkAck,
    open_emulator,
)
from triokuiper.testing._channels import ControlChannel

DEADLINE = 10


class FakePlugin:
    """The plugin end of the control channel: a Req socket driven by the test."""

    def __init__(self, url: str) -> None:
        self.sock = pynng.Req0(resend_time=0, recv_max_size=0)
        self.sock.dial(url, block=True)

    async def hello(self) -> None:
        await self.sock.asend(b"handshake")

    async def command(self) -> dict[str, object]:
        """Receive one command (it arrives as the reply to our last request)."""
        raw = bytes(await self.sock.arecv())
        cmd = json.loads(raw)
        assert isinstance(cmd, dict)
        return {"cmd": cmd["cmd"], "arg": json.loads(cmd["arg"])}

    async def answer(self, text: bytes = b"ok") -> None:
        await self.sock.asend(text)


@asynccontextmanager
async def emulator_with_plugin(
    ipc_dir: str, **kwargs: object
) -> AsyncIterator[tuple[Emulator, FakePlugin]]:
    async with open_emulator("fake", ipc_dir=ipc_dir, **kwargs) as emu:  # type: ignore[arg-type]
        plugin = FakePlugin(emu.url("plugin_fake"))
        try:
            await plugin.hello()
            await emu.wait_handshake()
            yield emu, plugin
        finally:
            plugin.sock.close()


async def answer_commands(plugin: FakePlugin, count: int, reply: bytes = b"ok") -> None:
    for _ in range(count):
        await plugin.command()
        await plugin.answer(reply)


async def test_send_without_handshake_recovers_by_discarding_the_pending_message(
    ekuiper_ipc_dir: str,
) -> None:
    """connection_test.go: SendCmd before Handshake hits ErrProtoState, receives, resends."""
    with trio.fail_after(DEADLINE):
        url = f"ipc://{ekuiper_ipc_dir}/plugin_raw.ipc"
        channel = await ControlChannel.open(url, skip_h=True, reply_timeout=5)
        plugin = FakePlugin(url)
        await plugin.hello()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer_commands, plugin, 1)
            reply = await channel.send_cmd(b'{"cmd":"start","arg":"{}"}')
        channel.close()
        plugin.sock.close()
    assert reply == b"ok"
    assert channel.discarded == [b"handshake"]


@pytest.mark.parametrize("skip_h", [True, False])
async def test_keepalive_handshake_reply_is_skipped_only_by_ekuiper_2_2_and_later(
    ekuiper_ipc_dir: str, skip_h: bool
) -> None:
    """The plugin abandons its request and says ``handshake`` instead of answering."""
    seen: list[dict[str, object]] = []
    with trio.fail_after(DEADLINE):
        async with emulator_with_plugin(ekuiper_ipc_dir, skip_h=skip_h) as (emu, plugin):

            async def keepalive_then_answer() -> None:
                seen.append(await plugin.command())
                await plugin.answer(b"handshake")  # as if the command had been lost
                if skip_h:
                    seen.append(await plugin.command())  # the server sends it again
                    await plugin.answer(b"ok")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(keepalive_then_answer)
                if skip_h:
                    await emu.stop_symbol("revert")
                else:
                    with pytest.raises(CommandError, match=r"^receive error: handshake$"):
                        await emu.stop_symbol("revert")
    assert len(seen) == (2 if skip_h else 1)
    assert all(s["cmd"] == "stop" for s in seen)


async def test_non_ok_reply_raises_and_is_not_stored_for_replay(ekuiper_ipc_dir: str) -> None:
    with trio.fail_after(DEADLINE):
        async with (
            emulator_with_plugin(ekuiper_ipc_dir) as (emu, plugin),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(answer_commands, plugin, 1, b"symbol not found")
            with pytest.raises(CommandError) as err:
                await emu.start_symbol(Control("nope", "source", Meta("r1", "o1")))
    assert str(err.value) == "receive error: symbol not found"
    assert err.value.reply == b"symbol not found"
    assert emu.replay_map == {}
    assert emu.status.ref_count == {}


async def test_raw_send_command_returns_any_reply(ekuiper_ipc_dir: str) -> None:
    with trio.fail_after(DEADLINE):
        async with emulator_with_plugin(ekuiper_ipc_dir) as (emu, plugin):

            async def echo_back() -> None:
                raw = bytes(await plugin.sock.arecv())
                await plugin.answer(b"got " + raw)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(echo_back)
                reply = await emu.send_command(b"\x00not json")
    assert reply == b"got \x00not json"
    assert emu.sent_commands == [b"\x00not json"]


async def test_cancelled_command_does_not_desynchronise_the_channel(
    ekuiper_ipc_dir: str,
) -> None:
    with trio.fail_after(DEADLINE):
        async with emulator_with_plugin(ekuiper_ipc_dir) as (emu, plugin):
            with trio.move_on_after(0.1) as scope:
                await emu.stop_symbol("slow")  # the plugin is not answering yet
            assert scope.cancelled_caught
            first = await plugin.command()
            await plugin.answer(b"ok")  # a late answer to the cancelled command
            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer_commands, plugin, 1)
                await emu.stop_symbol("next")
    assert first["arg"] == {
        "symbolName": "slow",
        "meta": {"ruleId": "", "opId": "", "instanceId": 0},
        "pluginType": "func",
    }


async def test_handshake_timeout_marks_the_plugin_in_error(ekuiper_ipc_dir: str) -> None:
    with trio.fail_after(DEADLINE):
        async with open_emulator("silent", ipc_dir=ekuiper_ipc_dir, init_timeout=0.2) as emu:
            with pytest.raises(PluginTimeoutError, match="control handshake error"):
                await emu.wait_handshake()
    assert emu.status.status == "error"


async def test_source_decodes_like_go_and_survives_bad_payloads(ekuiper_ipc_dir: str) -> None:
    payloads = [
        b"\xff",
        b"[1]",
        b'{"message":[1]}',
        b'{"Message":{"a":1},"META":{"m":true}}',
        b'{"error":"upstream down"}',
        b"null",
    ]
    rows = []
    errors = []
    with trio.fail_after(DEADLINE):
        async with emulator_with_plugin(ekuiper_ipc_dir) as (emu, plugin):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer_commands, plugin, 1)
                source = await emu.start_source("s", rule_id="r1")
            push = pynng.Push0()
            push.dial(source.url, block=True)
            for payload in payloads:
                await push.asend(payload)
            for _ in payloads:
                try:
                    rows.append(await source.receive())
                except GoDecodeError as exc:
                    errors.append(str(exc))
            push.close()
    assert len(errors) == 3
    assert all(e.startswith("Invalid data format, cannot decode ") for e in errors)
    assert [(r.message, r.meta) for r in rows] == [
        ({"a": 1.0}, {"m": True}),
        (None, None),
        (None, None),
    ]


async def test_sink_start_fails_when_the_plugin_does_not_listen(ekuiper_ipc_dir: str) -> None:
    with trio.fail_after(DEADLINE):
        async with (
            emulator_with_plugin(ekuiper_ipc_dir) as (emu, plugin),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(answer_commands, plugin, 2)  # start, then the stop
            with pytest.raises(EmulatorError, match="can't dial on push socket"):
                await emu.start_sink("file", rule_id="r1", require_ack=True)
    assert [json.loads(c)["cmd"] for c in emu.sent_commands] == ["start", "stop"]
    assert emu.replay_map == {}


async def test_sink_acks_are_decoded_and_a_bad_ack_is_an_error(ekuiper_ipc_dir: str) -> None:
    with trio.fail_after(DEADLINE):
        async with emulator_with_plugin(ekuiper_ipc_dir) as (emu, plugin):
            data = pynng.Pull0()
            ack = pynng.Push0()

            async def start_like_the_sdk() -> None:
                await plugin.command()
                data.listen(emu.url("r1_op1_0"))  # listening before answering ok
                ack.dial(emu.url("r1_op1_0_ack"), block=True)
                await plugin.answer(b"ok")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(start_like_the_sdk)
                sink = await emu.start_sink("file", rule_id="r1", config={"requireAck": True})
            results: list[SinkAck | GoDecodeError | None] = []
            for reply in (b"{}", b'{"error":"disk full"}', b'{"error":5}'):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(ack.asend, reply)
                    try:
                        results.append(await sink.send({"n": 1}))
                    except GoDecodeError as exc:
                        results.append(exc)
            got = [bytes(await data.arecv()) for _ in range(3)]
            data.close()
            ack.close()
    assert got == [b'{"n":1}'] * 3
    assert sink.require_ack
    first, second, third = results
    assert not isinstance(first, Exception)
    assert first is not None
    assert first.ok
    assert not isinstance(second, Exception)
    assert second is not None
    assert second.error == "disk full"
    assert isinstance(third, GoDecodeError)


async def test_function_timeout_then_late_reply_is_discarded(ekuiper_ipc_dir: str) -> None:
    with trio.fail_after(DEADLINE):
        async with emulator_with_plugin(ekuiper_ipc_dir, recv_timeout=0.3) as (emu, plugin):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer_commands, plugin, 1)
                func = await emu.start_function("slow")
            req = pynng.Req0(resend_time=0)
            req.dial(emu.url("func_slow"), block=True)
            await req.asend(b"handshake")

            async def slow_function() -> None:
                first = json.loads(bytes(await req.arecv()))
                await trio.sleep(0.6)  # past the server's receive deadline
                await req.asend(json.dumps({"state": True, "result": first["arg"]}).encode())
                second = json.loads(bytes(await req.arecv()))
                await req.asend(json.dumps({"state": True, "result": second["arg"]}).encode())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow_function)
                with pytest.raises(PluginTimeoutError) as timeout:
                    await func.validate(["first"])
                await trio.sleep(0.5)  # let the late reply arrive
                reply = await func.exec(["second"], rule_id="r", op_id="o", func_id=3)
            req.close()
    assert str(timeout.value) == "time out, plugin fake status running, message: "
    assert reply.state
    assert reply.result == ["second", '{"ruleId":"r","opId":"o","instanceId":0,"funcId":3}']
    assert func.discarded == [b"handshake", b'{"state": true, "result": ["first"]}']


async def test_cancelled_source_receive_leaves_the_source_usable(ekuiper_ipc_dir: str) -> None:
    with trio.fail_after(DEADLINE):
        async with emulator_with_plugin(ekuiper_ipc_dir) as (emu, plugin):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer_commands, plugin, 2)
                source = await emu.start_source("s", rule_id="r1")
                with trio.move_on_after(0.05):
                    await source.receive()
                push = pynng.Push0()
                push.dial(source.url, block=True)
                await push.asend(b'{"message":{"x":1}}')
                row = await source.receive()
                await source.stop()
            push.close()
    assert row.message == {"x": 1.0}
    with pytest.raises(trio.ClosedResourceError):
        await source.receive()


async def test_fixture_factory_serves_an_in_process_plugin(
    ekuiper_emulator: object, ekuiper_ipc_dir: str
) -> None:
    from triokuiper.testing._pytest_plugin import EmulatorFactory

    assert isinstance(ekuiper_emulator, EmulatorFactory)
    with trio.fail_after(DEADLINE):
        emu = await ekuiper_emulator("fixtured")
        assert emu.ipc_dir == ekuiper_ipc_dir
        plugin = FakePlugin(emu.url("plugin_fixtured"))
        await plugin.hello()
        assert await emu.wait_handshake() == b"handshake"
        plugin.sock.close()
    assert len(ekuiper_ipc_dir) < 40


async def test_control_channel_scenarios_of_ekuipers_connection_test(ekuiper_ipc_dir: str) -> None:
    """TestControlCh: 3 commands; re-listen while a client is connected; a client dialing no
    server fails; a new client gets its first command without an explicit Handshake."""
    url = f"ipc://{ekuiper_ipc_dir}/plugin_test.ipc"

    async def client_run(plugin: FakePlugin, count: int) -> None:
        await plugin.hello()
        for _ in range(count):
            raw = bytes(await plugin.sock.arecv())
            await plugin.answer(raw)  # the mock echoes, so "ok" comes back as "ok"

    with trio.fail_after(DEADLINE):
        channel = await ControlChannel.open(url, skip_h=True, reply_timeout=5)
        client = FakePlugin(url)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client_run, client, 3)
            assert await channel.handshake(init_timeout=5) == b"handshake"
            replies = [await channel.send_cmd(b"ok") for _ in range(3)]
        channel.close()
        # 2. the old client is still connected: listening again must still work
        channel = await ControlChannel.open(url, skip_h=True, reply_timeout=5)
        channel.close()
        client.sock.close()
        # 3. no server: a plugin's dial is refused
        with pytest.raises(pynng.ConnectionRefused):
            FakePlugin(url)
        # 4./5. a new server and client; commands without Handshake() still get through
        channel = await ControlChannel.open(url, skip_h=True, reply_timeout=5)
        client = FakePlugin(url)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client_run, client, 2)
            late = [await channel.send_cmd(b"ok"), await channel.send_cmd(b"ok")]
        channel.close()
        client.sock.close()
    assert replies == [b"ok"] * 3
    assert late == [b"ok"] * 2
    assert channel.discarded == [b"handshake"]


async def test_any_reply_starting_with_h_makes_ekuiper_resend_the_command(
    ekuiper_ipc_dir: str,
) -> None:
    """eKuiper >= 2.2 cannot tell an error text like "hmm" from a keepalive: it resends, so a
    plugin that keeps answering "h..." keeps the command in a loop.  Plugins must not do that."""
    seen = []
    with trio.fail_after(DEADLINE):
        async with emulator_with_plugin(ekuiper_ipc_dir) as (emu, plugin):

            async def grumble_twice() -> None:
                for reply in (b"hmm, no", b"huh", b"ok"):
                    seen.append(await plugin.command())
                    await plugin.answer(reply)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(grumble_twice)
                await emu.stop_symbol("x")
    assert len(seen) == 3
    assert len(emu.sent_commands) == 1


async def test_stopping_a_source_wakes_a_pending_receive_with_closed_resource_error(
    ekuiper_ipc_dir: str,
) -> None:
    with trio.fail_after(DEADLINE):
        async with emulator_with_plugin(ekuiper_ipc_dir) as (emu, plugin):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer_commands, plugin, 1)
                source = await emu.start_source("s", rule_id="r1")
            async with trio.open_nursery() as nursery:

                async def receive_until_closed() -> None:
                    with pytest.raises(trio.ClosedResourceError):
                        await source.receive()

                nursery.start_soon(receive_until_closed)
                await trio.testing.wait_all_tasks_blocked()
                source.close()
