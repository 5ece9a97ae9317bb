"""Stopping the server: NBDServer.shutdown() (graceful) and cancellation (abrupt).

Each test runs ``serve_nbd`` in its own nursery, so it can watch ``serve_nbd`` return.  Plugins are
async objects whose callbacks wait on ``trio.Event`` gates: a test decides exactly when a request
is in flight and when it may finish, without sleeping.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import nbdclient as c
import pytest
import trio
import trio.testing

from trioblock import NBDServer, ServerConfig, serve_nbd
from trioblock._plugins._async import AsyncPlugin

KiB = 1024
SIZE = 1024 * KiB


# -- plugins ----------------------------------------------------------------------------------


class GatedDisk:
    """An async RAM disk recording its callbacks in :attr:`calls`.  A pread at
    :attr:`gated_offset` announces itself on :attr:`read_started` and waits for
    :attr:`release`; other reads answer at once.  No flush callback: see :class:`FlushingDisk`."""

    gated_offset = 0

    def __init__(self) -> None:
        self.disk = bytearray(b"\x3c" * SIZE)
        self.calls: list[str] = []
        self.read_started = trio.Event()
        self.release = trio.Event()

    async def get_ready(self) -> None:
        await trio.lowlevel.checkpoint()
        self.calls.append("get_ready")

    async def after_fork(self) -> None:
        await trio.lowlevel.checkpoint()
        self.calls.append("after_fork")

    async def cleanup(self) -> None:
        await trio.lowlevel.checkpoint()
        self.calls.append("cleanup")

    async def open(self, readonly: bool) -> None:
        await trio.lowlevel.checkpoint()
        self.calls.append("open")

    async def close(self, h: None) -> None:
        await trio.lowlevel.checkpoint()
        self.calls.append("close")

    async def get_size(self, h: None) -> int:
        await trio.lowlevel.checkpoint()
        return SIZE

    async def pread(self, h: None, buf: memoryview, offset: int, flags: int) -> None:
        self.calls.append(f"pread {offset}")
        if offset == self.gated_offset:
            self.read_started.set()
            await self.release.wait()
        else:
            await trio.lowlevel.checkpoint()
        buf[:] = self.disk[offset : offset + len(buf)]

    async def pwrite(self, h: None, buf: memoryview, offset: int, flags: int) -> None:
        await trio.lowlevel.checkpoint()
        self.calls.append(f"pwrite {offset}")
        self.disk[offset : offset + len(buf)] = buf


class FlushingDisk(GatedDisk):
    async def flush(self, h: None, flags: int) -> None:
        await trio.lowlevel.checkpoint()
        self.calls.append("flush")


class SlowToSize(GatedDisk):
    """get_size announces itself on :attr:`sizing` and never answers."""

    def __init__(self) -> None:
        super().__init__()
        self.sizing = trio.Event()

    async def get_size(self, h: None) -> int:
        self.sizing.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")


# -- running the server ---------------------------------------------------------------------------


@dataclass
class Running:
    server: NBDServer
    path: str
    returned: trio.Event  # serve_nbd returned (or raised)


@asynccontextmanager
async def running(
    plugin: AsyncPlugin, tmp_path: Path, config: ServerConfig | None = None
) -> AsyncIterator[tuple[Running, trio.Nursery]]:
    """Serve ``plugin`` on a Unix socket in a nursery of its own; the block gets both."""
    path = str(tmp_path / "nbd.sock")
    returned = trio.Event()

    async def serve(task_status: trio.TaskStatus[NBDServer]) -> None:
        try:
            await serve_nbd(plugin, unix_path=path, config=config, task_status=task_status)
        finally:
            returned.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server: NBDServer = await nursery.start(serve)
            yield Running(server, path, returned), nursery


class RawClient:
    """A raw NBD connection without structured replies, built with ``nbdclient``."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buf = bytearray()

    @classmethod
    async def connect(cls, path: str) -> RawClient:
        return cls(await trio.open_unix_socket(path))

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def receive_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            data = await self.stream.receive_some(64 * KiB)
            if not data:
                raise EOFError(f"server closed after {len(self._buf)} of {n} bytes")
            self._buf += data
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def receive_to_eof(self) -> bytes:
        """Everything the server still sends before it closes the connection."""
        while True:
            try:
                data = await self.stream.receive_some(64 * KiB)
            except trio.BrokenResourceError:  # closed with our bytes unread: a reset
                data = b""
            if not data:
                rest = bytes(self._buf)
                self._buf.clear()
                return rest
            self._buf += data

    async def option_reply(self) -> c.OptionReply:
        head = await self.receive_exactly(20)
        (length,) = struct.unpack_from(">I", head, 16)
        [reply] = c.parse_option_replies(head + await self.receive_exactly(length))
        return reply

    async def start_handshake(self) -> None:
        c.parse_greeting(await self.receive_exactly(18))
        await self.stream.send_all(c.client_flags(no_zeroes=True))

    async def go(self) -> None:
        await self.stream.send_all(c.go(""))
        while (reply := await self.option_reply()).type != c.REP_ACK:
            assert reply.type == c.REP_INFO, reply

    async def send_read(self, cookie: int, offset: int, length: int) -> None:
        await self.stream.send_all(
            c.request(c.CMD_READ, cookie=cookie, offset=offset, length=length)
        )

    async def read_reply(self, length: int) -> tuple[c.SimpleReply, bytes]:
        reply, _ = c.parse_simple_reply(await self.receive_exactly(16))
        return reply, (await self.receive_exactly(length) if reply.error == 0 else b"")


async def in_transmission(path: str) -> RawClient:
    client = await RawClient.connect(path)
    await client.start_handshake()
    await client.go()
    return client


# -- graceful shutdown ----------------------------------------------------------------------------


@pytest.mark.parametrize("plugin_class", [FlushingDisk, GatedDisk], ids=["can-flush", "no-flush"])
async def test_shutdown_lets_in_flight_requests_finish_then_flushes_and_closes(
    tmp_path: Path, plugin_class: type[GatedDisk]
) -> None:
    disk = plugin_class()
    async with running(AsyncPlugin.from_object(disk), tmp_path) as (run, _):
        client = await in_transmission(run.path)
        await client.send_read(1, 0, 4096)
        await disk.read_started.wait()

        run.server.shutdown()
        await trio.testing.wait_all_tasks_blocked()
        assert "close" not in disk.calls  # the read is still in flight: nothing closed yet
        assert not run.returned.is_set()

        disk.release.set()
        assert await client.read_reply(4096) == (c.SimpleReply(0, 1), b"\x3c" * 4096)
        assert await client.receive_to_eof() == b""
        await run.returned.wait()
        await client.aclose()
    end = ["pread 0", "flush", "close"] if plugin_class is FlushingDisk else ["pread 0", "close"]
    assert disk.calls[disk.calls.index("pread 0") :] == [*end, "cleanup"]


async def test_shutdown_lets_every_connections_in_flight_requests_finish(tmp_path: Path) -> None:
    disk = FlushingDisk()
    async with running(AsyncPlugin.from_object(disk), tmp_path) as (run, _):
        clients = [await in_transmission(run.path) for _ in range(3)]
        for client in clients:
            await client.send_read(7, 0, 512)
        await trio.testing.wait_all_tasks_blocked()
        assert disk.calls.count("pread 0") == 3
        run.server.shutdown()
        await trio.testing.wait_all_tasks_blocked()
        disk.release.set()
        for client in clients:
            assert await client.read_reply(512) == (c.SimpleReply(0, 7), b"\x3c" * 512)
            assert await client.receive_to_eof() == b""
            await client.aclose()
        await run.returned.wait()
    assert disk.calls.count("flush") == 3
    assert disk.calls.count("close") == 3


async def test_requests_sent_after_shutdown_are_not_served(tmp_path: Path) -> None:
    disk = GatedDisk()
    async with running(AsyncPlugin.from_object(disk), tmp_path) as (run, _):
        client = await in_transmission(run.path)
        await client.send_read(1, 0, 512)
        await disk.read_started.wait()
        run.server.shutdown()
        await trio.testing.wait_all_tasks_blocked()
        await client.send_read(2, 4096, 512)
        await trio.testing.wait_all_tasks_blocked()
        disk.release.set()
        assert await client.read_reply(512) == (c.SimpleReply(0, 1), b"\x3c" * 512)
        rest = await client.receive_to_eof()
        # Either silence or a refusal for the late request (ESHUTDOWN), never its data.
        refusal = struct.pack(">IIQ", c.SIMPLE_MAGIC, c.ESHUTDOWN, 2)
        assert rest in (b"", refusal)
        await client.aclose()
        await run.returned.wait()
    assert "pread 4096" not in disk.calls


async def test_idle_connection_is_closed_and_disconnected_at_shutdown(tmp_path: Path) -> None:
    disk = FlushingDisk()
    async with running(AsyncPlugin.from_object(disk), tmp_path) as (run, _):
        client = await in_transmission(run.path)
        run.server.shutdown()
        assert await client.receive_to_eof() == b""
        await client.aclose()
        await run.returned.wait()
    assert disk.calls == ["get_ready", "after_fork", "open", "flush", "close", "cleanup"]


async def test_connection_in_the_handshake_is_dropped_at_shutdown(tmp_path: Path) -> None:
    disk = GatedDisk()
    async with running(AsyncPlugin.from_object(disk), tmp_path) as (run, _):
        client = await RawClient.connect(run.path)
        await client.start_handshake()
        await client.stream.send_all(c.option(c.OPT_STRUCTURED_REPLY))
        assert (await client.option_reply()).type == c.REP_ACK  # mid-negotiation now
        run.server.shutdown()
        assert await client.receive_to_eof() == b""
        await client.aclose()
        await run.returned.wait()
    assert "open" not in disk.calls


async def test_client_that_has_not_sent_its_flags_is_dropped_at_shutdown(tmp_path: Path) -> None:
    async with running(AsyncPlugin.from_object(GatedDisk()), tmp_path) as (run, _):
        client = await RawClient.connect(run.path)
        c.parse_greeting(await client.receive_exactly(18))
        run.server.shutdown()
        assert await client.receive_to_eof() == b""
        await client.aclose()
        await run.returned.wait()


async def test_shutdown_while_the_plugin_sizes_the_export_closes_the_opened_handle(
    tmp_path: Path,
) -> None:
    disk = SlowToSize()
    async with running(AsyncPlugin.from_object(disk), tmp_path) as (run, _):
        client = await RawClient.connect(run.path)
        await client.start_handshake()
        await client.stream.send_all(c.go(""))
        await disk.sizing.wait()
        run.server.shutdown()
        assert await client.receive_to_eof() == b""
        await client.aclose()
        await run.returned.wait()
    assert disk.calls.count("open") == disk.calls.count("close") == 1


async def test_request_outliving_the_grace_period_is_cancelled_and_its_handle_closed(
    tmp_path: Path,
) -> None:
    disk = FlushingDisk()
    async with running(
        AsyncPlugin.from_object(disk), tmp_path, ServerConfig(shutdown_grace=0.2)
    ) as (run, _):
        client = await in_transmission(run.path)
        await client.send_read(1, 0, 512)
        await disk.read_started.wait()  # and is never released
        run.server.shutdown()
        with trio.fail_after(5):
            await run.returned.wait()
        assert await client.receive_to_eof() == b""  # no reply: the request was abandoned
        await client.aclose()
    assert disk.calls[-2:] == ["close", "cleanup"]


# -- the server itself ----------------------------------------------------------------------------


async def test_shutdown_without_clients_returns_removes_the_socket_and_cleans_up_once(
    tmp_path: Path,
) -> None:
    disk = GatedDisk()
    async with running(AsyncPlugin.from_object(disk), tmp_path) as (run, _):
        assert await trio.Path(run.path).exists()
        assert disk.calls == ["get_ready", "after_fork"]
        run.server.shutdown()
        run.server.shutdown()  # idempotent
        await run.returned.wait()
    assert not await trio.Path(run.path).exists()
    assert disk.calls == ["get_ready", "after_fork", "cleanup"]


async def test_shutdown_after_clients_came_and_went_removes_the_socket(tmp_path: Path) -> None:
    disk = FlushingDisk()
    async with running(AsyncPlugin.from_object(disk), tmp_path) as (run, _):
        for _ in range(3):
            client = await in_transmission(run.path)
            await client.send_read(1, 4096, 512)
            assert await client.read_reply(512) == (c.SimpleReply(0, 1), b"\x3c" * 512)
            await client.stream.send_all(c.request(c.CMD_DISC))
            assert await client.receive_to_eof() == b""
            await client.aclose()
        run.server.shutdown()
        await run.returned.wait()
    assert not await trio.Path(run.path).exists()
    assert disk.calls.count("cleanup") == 1
    assert disk.calls.count("close") == 3
    assert "flush" not in disk.calls  # a client's own disconnect does not flush


async def test_no_new_connections_are_accepted_after_shutdown(tmp_path: Path) -> None:
    disk = GatedDisk()
    async with running(AsyncPlugin.from_object(disk), tmp_path) as (run, _):
        run.server.shutdown()
        await run.returned.wait()
        with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
            await trio.open_unix_socket(run.path)


async def test_shutdown_threadsafe_from_another_thread_stops_the_server(tmp_path: Path) -> None:
    disk = GatedDisk()
    async with running(AsyncPlugin.from_object(disk), tmp_path) as (run, _):
        client = await in_transmission(run.path)
        await trio.to_thread.run_sync(run.server.shutdown_threadsafe)
        assert await client.receive_to_eof() == b""
        await client.aclose()
        await run.returned.wait()
    assert disk.calls[-2:] == ["close", "cleanup"]


# -- cancellation -------------------------------------------------------------------------------


async def test_cancelling_the_server_closes_plugin_handles_without_hanging(tmp_path: Path) -> None:
    disk = FlushingDisk()
    async with running(AsyncPlugin.from_object(disk), tmp_path) as (run, nursery):
        busy = await in_transmission(run.path)
        await busy.send_read(1, 0, 512)
        await disk.read_started.wait()  # never released
        idle = await in_transmission(run.path)
        handshaking = await RawClient.connect(run.path)
        await handshaking.start_handshake()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    # The nursery exited in time (running() would have failed after 10 s).
    assert run.returned.is_set()
    assert disk.calls.count("open") == 2
    assert disk.calls.count("close") == 2
    assert disk.calls.count("cleanup") == 1
    assert disk.calls[-1] == "cleanup"
    assert not await trio.Path(run.path).exists()
    for client in (busy, idle, handshaking):
        assert await client.receive_to_eof() == b""
        await client.aclose()


async def test_cancelling_the_server_mid_handshake_leaves_no_handle_open(tmp_path: Path) -> None:
    disk = GatedDisk()
    async with running(AsyncPlugin.from_object(disk), tmp_path) as (run, nursery):
        client = await RawClient.connect(run.path)
        await client.start_handshake()
        await client.stream.send_all(c.info(""))
        while (await client.option_reply()).type != c.REP_ACK:
            pass
        nursery.cancel_scope.cancel()
    assert disk.calls.count("open") == disk.calls.count("close") == 1  # INFO opens and closes
    await client.aclose()
