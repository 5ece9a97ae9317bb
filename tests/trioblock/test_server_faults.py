"""The whole server (in this test's Trio loop) against clients that misbehave, plugins that fail,
and load: raw sockets speaking the protocol through the independent ``nbdclient`` codec, and
libnbd (blocking, so always called from a worker thread).

Every test that breaks a connection also checks that the server still serves the next client.
"""

from __future__ import annotations

import errno
import resource
import struct
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import nbd
import nbdclient as c
import pytest
import trio
import trio.testing

from conftest import ServeFactory
from libnbdclient import connect, extents_of
from trioblock import NBDServer, ThreadModel
from trioblock._plugins._async import AsyncPlugin
from trioblock._plugins._memory import MemoryPlugin

T = TypeVar("T")
KiB = 1024
MiB = 1024 * KiB
SIZE = 4 * MiB
MAX_REQUEST = 64 * MiB  # nbdkit's MAX_REQUEST_SIZE; a bigger READ/WRITE gets ENOMEM

# -- a raw client --------------------------------------------------------------------------------


class RawClient:
    """One connection to the server's Unix socket, speaking bytes built by ``nbdclient``."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buf = bytearray()

    @classmethod
    async def connect(cls, server: NBDServer) -> RawClient:
        assert server.unix_path is not None
        return cls(await trio.open_unix_socket(server.unix_path))

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def send(self, *messages: bytes) -> None:
        await self.stream.send_all(b"".join(messages))

    async def receive_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            data = await self.stream.receive_some(max(64 * KiB, n - len(self._buf)))
            if not data:
                raise EOFError(f"server closed after {len(self._buf)} of {n} bytes")
            self._buf += data
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def expect_eof(self) -> None:
        """The server closes this connection without sending anything more."""
        assert not self._buf, f"unread bytes: {bytes(self._buf)!r}"
        try:
            data = await self.stream.receive_some(64 * KiB)
        except trio.BrokenResourceError:  # closed with our bytes unread: a reset
            return
        assert data == b"", f"expected the server to close, got {data[:64]!r}"

    async def greeting(self) -> int:
        return c.parse_greeting(await self.receive_exactly(18))

    async def option_reply(self) -> c.OptionReply:
        head = await self.receive_exactly(20)
        (length,) = struct.unpack_from(">I", head, 16)
        [reply] = c.parse_option_replies(head + await self.receive_exactly(length))
        return reply

    async def go_replies(self) -> c.ExportInfo:
        """Replies to NBD_OPT_GO up to its ACK; the export's size and flags."""
        export = None
        while True:
            reply = await self.option_reply()
            assert reply.opt == c.OPT_GO, reply
            assert not reply.is_error, reply
            if reply.type == c.REP_ACK:
                assert export is not None
                return export
            kind, value = c.parse_info(reply.data)
            if kind == c.INFO_EXPORT:
                assert isinstance(value, c.ExportInfo)
                export = value

    async def handshake(self, name: str = "", *, structured: bool = False) -> c.ExportInfo:
        """Greeting, flags and NBD_OPT_GO (after STRUCTURED_REPLY if asked), all in one send."""
        await self.greeting()
        sr = c.option(c.OPT_STRUCTURED_REPLY) if structured else b""
        await self.send(c.client_flags(no_zeroes=True), sr, c.go(name))
        if structured:
            reply = await self.option_reply()
            assert (reply.opt, reply.type) == (c.OPT_STRUCTURED_REPLY, c.REP_ACK)
        return await self.go_replies()

    async def simple_reply(self, data_length: int = 0) -> tuple[c.SimpleReply, bytes]:
        """A simple reply, with ``data_length`` bytes of read data if it succeeded."""
        reply, rest = c.parse_simple_reply(await self.receive_exactly(16))
        assert rest == b""
        data = await self.receive_exactly(data_length) if reply.error == 0 else b""
        return reply, data

    async def chunk(self) -> c.ChunkReply:
        head = await self.receive_exactly(20)
        (length,) = struct.unpack_from(">I", head, 16)
        [chunk] = c.parse_chunks(head + await self.receive_exactly(length))
        return chunk

    async def read(self, offset: int, length: int, *, cookie: int = 1) -> bytes:
        """READ on a connection without structured replies."""
        await self.send(c.request(c.CMD_READ, cookie=cookie, offset=offset, length=length))
        reply, data = await self.simple_reply(length)
        assert reply == c.SimpleReply(0, cookie)
        return data

    async def write(self, offset: int, data: bytes, *, cookie: int = 1) -> None:
        await self.send(c.request(c.CMD_WRITE, cookie=cookie, offset=offset, payload=data))
        reply, _ = await self.simple_reply()
        assert reply == c.SimpleReply(0, cookie)


class Clients:
    """Opens raw clients and closes whichever a test leaves open (the ``clients`` fixture)."""

    def __init__(self) -> None:
        self.opened: list[RawClient] = []

    async def connect(self, server: NBDServer) -> RawClient:
        client = await RawClient.connect(server)
        self.opened.append(client)
        return client

    async def connected(self, server: NBDServer, *, structured: bool = False) -> RawClient:
        """A client that completed the handshake (NBD_OPT_GO on the default export)."""
        client = await self.connect(server)
        await client.handshake(structured=structured)
        return client


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    opened = Clients()
    yield opened
    for client in opened.opened:
        await client.aclose()


async def assert_serving(server: NBDServer, offset: int = 0, expected: bytes | None = None) -> None:
    """A new client can connect, read 512 bytes (``expected`` if given) and leave cleanly."""
    with trio.fail_after(5):
        client = await RawClient.connect(server)
        try:
            await client.handshake()
            data = await client.read(offset, 512)
            if expected is not None:
                assert data == expected
            await client.send(c.request(c.CMD_DISC))
            await client.expect_eof()
        finally:
            await client.aclose()


async def wait_for_connections(server: NBDServer, count: int) -> None:
    """Until the server holds exactly ``count`` client connections."""
    with trio.fail_after(5):
        while len(server.connections) != count:  # noqa: ASYNC110 -- the server has no event
            await trio.sleep(0.005)


class AllocationMeter:
    """Peak Python allocations since :meth:`mark`, the server's included (it runs in this
    process): a buffer sized from a hostile length would show up here."""

    def __init__(self) -> None:
        self._base = 0

    def mark(self) -> None:
        tracemalloc.reset_peak()
        self._base = tracemalloc.get_traced_memory()[0]

    @property
    def peak(self) -> int:
        return tracemalloc.get_traced_memory()[1] - self._base


@pytest.fixture
def allocations() -> Iterator[AllocationMeter]:
    tracemalloc.start()
    try:
        yield AllocationMeter()
    finally:
        tracemalloc.stop()


async def send_in_chunks(client: RawClient, data: bytes | memoryview, chunk: int = MiB) -> None:
    view = memoryview(data)
    for start in range(0, len(view), chunk):
        await client.stream.send_all(view[start : start + chunk])


# -- plugins -------------------------------------------------------------------------------------

_PATTERN = bytes(range(251)) * (MiB // 251 + 2)


def pattern(offset: int, length: int) -> bytes:
    """The bytes PatternDisk holds at ``offset``: a period of 251, so no two nearby reads agree."""
    parts = []
    while length:
        n = min(length, MiB)
        start = offset % 251
        parts.append(_PATTERN[start : start + n])
        offset += n
        length -= n
    return b"".join(parts)


def memory(size: int = SIZE) -> MemoryPlugin:
    return MemoryPlugin.from_params([("size", str(size))])


class PatternDisk:
    """A read-only async plugin whose bytes are ``pattern(offset, length)``.  Reads yield to the
    scheduler a varying number of times, so concurrent reads complete out of order."""

    def __init__(self, size: int = SIZE, model: ThreadModel = ThreadModel.PARALLEL) -> None:
        self.size = size
        self.model = model

    def thread_model(self) -> int:
        return int(self.model)

    async def open(self, readonly: bool) -> None:
        await trio.lowlevel.checkpoint()

    async def get_size(self, h: None) -> int:
        await trio.lowlevel.checkpoint()
        return self.size

    async def pread(self, h: None, buf: memoryview, offset: int, flags: int) -> None:
        for _ in range(offset // 4096 % 7 + 1):
            await trio.lowlevel.checkpoint()
        buf[:] = pattern(offset, len(buf))


@dataclass
class Handle:
    serial: int
    fails: str | None  # the callback that raises on this connection


class FaultyDisk:
    """An async RAM-disk plugin.  ``arm(name)`` makes callback ``name`` raise for the next
    connection opened (only that one, so other clients stay healthy)."""

    def __init__(self) -> None:
        self.disk = bytearray(SIZE)
        self.armed: str | None = None
        self.opened = 0
        self.closed: list[int] = []

    def arm(self, name: str) -> None:
        self.armed = name

    @staticmethod
    def _maybe_fail(h: Handle, name: str) -> None:
        if h.fails == name:
            raise RuntimeError(f"{name} exploded")

    async def open(self, readonly: bool) -> Handle:
        await trio.lowlevel.checkpoint()
        fails, self.armed = self.armed, None
        if fails == "open":
            raise RuntimeError("open exploded")
        self.opened += 1
        return Handle(self.opened, fails)

    async def close(self, h: Handle) -> None:
        await trio.lowlevel.checkpoint()
        self.closed.append(h.serial)
        self._maybe_fail(h, "close")

    async def get_size(self, h: Handle) -> int:
        await trio.lowlevel.checkpoint()
        self._maybe_fail(h, "get_size")
        return SIZE

    async def pread(self, h: Handle, buf: memoryview, offset: int, flags: int) -> None:
        await trio.lowlevel.checkpoint()
        self._maybe_fail(h, "pread")
        buf[:] = self.disk[offset : offset + len(buf)]

    async def pwrite(self, h: Handle, buf: memoryview, offset: int, flags: int) -> None:
        await trio.lowlevel.checkpoint()
        self._maybe_fail(h, "pwrite")
        self.disk[offset : offset + len(buf)] = buf

    async def flush(self, h: Handle, flags: int) -> None:
        await trio.lowlevel.checkpoint()
        self._maybe_fail(h, "flush")

    async def trim(self, h: Handle, count: int, offset: int, flags: int) -> None:
        await trio.lowlevel.checkpoint()
        self._maybe_fail(h, "trim")
        self.disk[offset : offset + count] = bytes(count)

    async def zero(self, h: Handle, count: int, offset: int, flags: int) -> None:
        await trio.lowlevel.checkpoint()
        self._maybe_fail(h, "zero")
        self.disk[offset : offset + count] = bytes(count)

    async def cache(self, h: Handle, count: int, offset: int, flags: int) -> None:
        await trio.lowlevel.checkpoint()
        self._maybe_fail(h, "cache")

    async def extents(
        self, h: Handle, count: int, offset: int, flags: int
    ) -> list[tuple[int, int, int]]:
        await trio.lowlevel.checkpoint()
        self._maybe_fail(h, "extents")
        return [(offset, count, 0)]


# -- the handshake ------------------------------------------------------------------------------


async def test_garbage_client_flags_drop_the_connection(
    serve: ServeFactory, clients: Clients
) -> None:
    server = await serve(memory())
    client = await clients.connect(server)
    await client.greeting()
    await client.send(b"\xde\xad\xbe\xef" + c.go(""))
    with trio.fail_after(5):
        await client.expect_eof()
    await assert_serving(server)


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        c.client_flags()[:2],
        c.client_flags(),
        c.client_flags() + c.go("")[:10],
        c.client_flags() + c.go("")[:16],  # the option header, none of its payload
        c.client_flags() + c.go("")[:-1],
        c.client_flags() + c.option(c.OPT_LIST),  # LIST answered, then the client leaves
    ],
    ids=[
        "nothing",
        "half-the-flags",
        "flags",
        "partial-option-header",
        "option-header-only",
        "all-but-the-last-byte",
        "after-a-complete-option",
    ],
)
async def test_client_closing_mid_handshake_is_dropped_and_server_keeps_serving(
    serve: ServeFactory, clients: Clients, sent: bytes
) -> None:
    server = await serve(memory())
    client = await clients.connect(server)
    await client.greeting()
    await client.send(sent)
    await client.aclose()
    await wait_for_connections(server, 0)
    await assert_serving(server)


@pytest.mark.parametrize("opt", [c.OPT_GO, c.OPT_EXPORT_NAME, c.OPT_LIST, c.OPT_INFO, 0x7777])
@pytest.mark.parametrize("length", [0xFFFFFFFF, MAX_REQUEST + 1])
async def test_hostile_option_length_drops_the_client_without_allocating(
    serve: ServeFactory, clients: Clients, allocations: AllocationMeter, opt: int, length: int
) -> None:
    server = await serve(memory())
    client = await clients.connect(server)
    await client.greeting()
    allocations.mark()
    await client.send(c.client_flags(), c.option(opt, length=length), b"x" * 1000)
    with trio.fail_after(5):
        await client.expect_eof()
    assert allocations.peak < MiB
    await assert_serving(server)


async def test_option_over_the_buffer_limit_is_drained_and_refused_then_go_works(
    serve: ServeFactory, clients: Clients, allocations: AllocationMeter
) -> None:
    server = await serve(memory())
    client = await clients.connect(server)
    await client.greeting()
    payload = bytes(4 * MiB)
    allocations.mark()
    await client.send(c.client_flags(no_zeroes=True), c.option(c.OPT_INFO, length=len(payload)))
    await send_in_chunks(client, payload)
    reply = await client.option_reply()
    assert (reply.opt, reply.type) == (c.OPT_INFO, c.REP_ERR_TOO_BIG)
    assert allocations.peak < MiB
    await client.send(c.go(""))
    assert (await client.go_replies()).size == SIZE
    assert await client.read(0, 512) == bytes(512)


async def test_client_that_sends_nothing_is_dropped_after_the_handshake_timeout(
    serve: ServeFactory,
    clients: Clients,
) -> None:
    server = await serve(memory(), handshake_timeout=0.5)
    client = await clients.connect(server)
    start = trio.current_time()
    await client.greeting()
    with trio.fail_after(5):
        await client.expect_eof()
    assert 0.4 <= trio.current_time() - start < 3
    await assert_serving(server)


async def test_handshake_timeout_bounds_the_whole_negotiation_not_each_read(
    serve: ServeFactory,
    clients: Clients,
) -> None:
    server = await serve(memory(), handshake_timeout=0.5)
    client = await clients.connect(server)
    start = trio.current_time()
    await client.greeting()
    await client.send(c.client_flags())
    with trio.fail_after(5):
        while True:  # keep talking, never finish: options are answered until the deadline
            try:
                await client.send(c.option(c.OPT_STRUCTURED_REPLY))
                await client.option_reply()
            except (EOFError, trio.BrokenResourceError):
                break
            await trio.sleep(0.1)
    assert 0.4 <= trio.current_time() - start < 3


async def test_handshake_timeout_does_not_apply_once_transmission_started(
    serve: ServeFactory,
    clients: Clients,
) -> None:
    server = await serve(memory(), handshake_timeout=0.3)
    client = await clients.connected(server)
    await trio.sleep(0.6)
    assert await client.read(0, 512) == bytes(512)


class SlowToSize(FaultyDisk):
    """get_size never answers: the handshake hangs after open() returned a handle."""

    def __init__(self) -> None:
        super().__init__()
        self.sizing = trio.Event()

    async def get_size(self, h: Handle) -> int:
        self.sizing.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_handshake_timeout_while_the_plugin_sizes_the_export_closes_the_handle(
    serve: ServeFactory, clients: Clients
) -> None:
    disk = SlowToSize()
    server = await serve(AsyncPlugin.from_object(disk), handshake_timeout=0.3)
    client = await clients.connect(server)
    await client.greeting()
    await client.send(c.client_flags(no_zeroes=True), c.go(""))
    with trio.fail_after(5):
        await disk.sizing.wait()
        await client.expect_eof()
    await wait_for_connections(server, 0)
    assert disk.closed == [1]


# -- bad requests ------------------------------------------------------------------------------


async def test_bad_request_magic_drops_the_connection(
    serve: ServeFactory, clients: Clients
) -> None:
    server = await serve(memory())
    client = await clients.connected(server)
    await client.send(c.request(c.CMD_READ, length=512, magic=0x12345678))
    with trio.fail_after(5):
        await client.expect_eof()
    await assert_serving(server)


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (c.request(c.CMD_READ, offset=SIZE, length=1), c.EINVAL),
        (c.request(c.CMD_READ, offset=SIZE - 1, length=2), c.EINVAL),
        (c.request(c.CMD_READ, offset=2**64 - 1, length=2), c.EINVAL),
        (c.request(c.CMD_READ, offset=0, length=0xFFFFFFFF), c.EINVAL),
        (c.request(c.CMD_WRITE, offset=SIZE - 2, payload=b"abcd"), c.ENOSPC),
        (c.request(c.CMD_WRITE_ZEROES, offset=SIZE, length=512), c.ENOSPC),
        (c.request(c.CMD_TRIM, offset=SIZE - 512, length=1024), c.EINVAL),
        (c.request(c.CMD_CACHE, offset=2**63, length=512), c.EINVAL),
        (c.request(c.CMD_READ, length=0), c.EINVAL),
        (c.request(c.CMD_WRITE, length=0), c.EINVAL),
        (c.request(c.CMD_TRIM, length=0), c.EINVAL),
        (c.request(c.CMD_WRITE_ZEROES, length=0), c.EINVAL),
        (c.request(c.CMD_CACHE, length=0), c.EINVAL),
        (c.request(c.CMD_FLUSH, offset=512), c.EINVAL),
        (c.request(c.CMD_FLUSH, length=512), c.EINVAL),
        (c.request(8, length=512), c.EINVAL),  # RESIZE: experimental, not offered
        (c.request(42, length=512), c.EINVAL),
        (c.request(0xFFFF), c.EINVAL),
        (c.request(c.CMD_READ, length=512, flags=1 << 5), c.EINVAL),
        (c.request(c.CMD_READ, length=512, flags=1 << 15), c.EINVAL),
        (c.request(c.CMD_READ, length=512, flags=c.FLAG_REQ_ONE), c.EINVAL),
        (c.request(c.CMD_READ, length=512, flags=c.FLAG_DF), c.EINVAL),  # DF needs SR
        (c.request(c.CMD_WRITE, payload=b"x" * 512, flags=c.FLAG_NO_HOLE), c.EINVAL),
        (c.request(c.CMD_FLUSH, flags=c.FLAG_FAST_ZERO), c.EINVAL),
        (c.request(c.CMD_BLOCK_STATUS, length=512), c.EINVAL),  # needs SR + base:allocation
    ],
    ids=[
        "read-at-end",
        "read-across-end",
        "read-offset-wraps",
        "read-4-gib",
        "write-across-end",
        "zero-beyond-end",
        "trim-across-end",
        "cache-far-away",
        "read-zero-length",
        "write-zero-length",
        "trim-zero-length",
        "zero-zero-length",
        "cache-zero-length",
        "flush-with-offset",
        "flush-with-length",
        "resize",
        "command-42",
        "command-65535",
        "unknown-flag-bit-5",
        "unknown-flag-bit-15",
        "req-one-on-read",
        "df-without-structured-replies",
        "no-hole-on-write",
        "fast-zero-on-flush",
        "block-status-without-context",
    ],
)
async def test_invalid_request_gets_its_errno_and_the_connection_keeps_working(
    serve: ServeFactory, clients: Clients, message: bytes, error: int
) -> None:
    server = await serve(memory())
    client = await clients.connected(server)
    await client.write(4096, b"\x5a" * 512)
    cookie = struct.unpack_from(">Q", message, 8)[0]
    # The next READ rides in the same send: a refused WRITE's payload must have been drained.
    await client.send(message, c.request(c.CMD_READ, cookie=77, offset=4096, length=512))
    reply, data = await client.simple_reply()
    assert reply == c.SimpleReply(error, cookie)
    reply, data = await client.simple_reply(512)
    assert reply == c.SimpleReply(0, 77)
    assert data == b"\x5a" * 512
    assert await client.read(SIZE - 512, 512) == bytes(512)


async def test_invalid_read_gets_an_error_chunk_under_structured_replies(
    serve: ServeFactory,
    clients: Clients,
) -> None:
    server = await serve(memory())
    client = await clients.connected(server, structured=True)
    await client.send(
        c.request(c.CMD_READ, cookie=5, offset=SIZE, length=512),
        c.request(c.CMD_READ, cookie=6, offset=SIZE - 512, length=512),
    )
    error = await client.chunk()
    assert (error.cookie, error.done) == (5, True)
    assert c.decode_error(error).error == c.EINVAL
    data = await client.chunk()
    assert (data.cookie, data.done) == (6, True)
    assert c.decode_hole(data) == (SIZE - 512, 512)  # never written: a hole chunk


@pytest.mark.parametrize(
    ("offset", "length"),
    [(1, 1), (1, 3), (4097, 13), (65535, 2), (SIZE - 1, 1), (12345, 100_001)],
)
async def test_misaligned_requests_work_because_no_block_size_was_advertised(
    serve: ServeFactory, clients: Clients, offset: int, length: int
) -> None:
    server = await serve(memory())
    client = await clients.connected(server)
    data = pattern(offset, length)
    await client.write(offset, data)
    assert await client.read(offset, length) == data
    around = await client.read(offset - 1, length + 1) if offset else b""
    assert around[1:] == data
    assert around[:1] in (b"", b"\0")
    await client.send(c.request(c.CMD_WRITE_ZEROES, cookie=2, offset=offset, length=length))
    assert (await client.simple_reply())[0] == c.SimpleReply(0, 2)
    assert await client.read(offset, length) == bytes(length)


# -- oversized and interrupted writes ----------------------------------------------------------


async def test_write_over_64_mib_gets_enomem_after_its_payload_is_drained(
    serve: ServeFactory, clients: Clients, allocations: AllocationMeter
) -> None:
    server = await serve(memory(2 * MAX_REQUEST))  # in range: only the length is wrong
    client = await clients.connected(server)
    await client.write(0, b"\x11" * 4096)
    length = MAX_REQUEST + 1
    # A payload made of READ requests: were any of it parsed as requests, replies would appear.
    lure = c.request(c.CMD_READ, cookie=0xBAD, offset=0, length=4096)
    chunk = (lure * (MiB // len(lure) + 1))[:MiB]
    allocations.mark()
    await client.send(c.request(c.CMD_WRITE, cookie=9, offset=0, length=length))
    with trio.fail_after(15):
        for _ in range(32):
            await client.stream.send_all(chunk)
        await assert_serving(server, 0, b"\x11" * 512)  # halfway: other clients are served
        for _ in range(32):
            await client.stream.send_all(chunk)
        with trio.move_on_after(0.1):  # all but one byte sent: no reply yet
            early = await client.stream.receive_some(100)
            pytest.fail(f"reply before the payload was drained: {early!r}")
        assert allocations.peak < 4 * MiB  # the payload was never buffered whole
        await client.send(b"\0")
        reply, _ = await client.simple_reply()
        assert reply == c.SimpleReply(c.ENOMEM, 9)
        assert await client.read(0, 4096, cookie=10) == b"\x11" * 4096  # nothing was written


async def test_write_header_claiming_4_gib_then_leaving_allocates_nothing(
    serve: ServeFactory, clients: Clients, allocations: AllocationMeter
) -> None:
    server = await serve(memory())
    client = await clients.connected(server)
    payload = bytes(2 * MiB)
    allocations.mark()
    await client.send(c.request(c.CMD_WRITE, cookie=1, length=0xFFFFFFFF))
    await send_in_chunks(client, payload)
    await client.aclose()
    await wait_for_connections(server, 0)
    assert allocations.peak < MiB
    await assert_serving(server)


@pytest.mark.parametrize("sent", [0, 1, 256 * KiB, 512 * KiB - 1])
async def test_client_vanishing_mid_write_payload_writes_nothing(
    serve: ServeFactory, clients: Clients, sent: int
) -> None:
    server = await serve(memory())
    setup = await clients.connected(server)
    await setup.write(0, b"\x55" * (512 * KiB))
    writer = await clients.connected(server)
    await writer.send(c.request(c.CMD_WRITE, cookie=1, offset=0, length=512 * KiB), b"\xaa" * sent)
    await writer.aclose()
    await wait_for_connections(server, 1)
    assert await setup.read(0, 512 * KiB) == b"\x55" * (512 * KiB)
    await assert_serving(server, 0, b"\x55" * 512)


# -- failing plugins ---------------------------------------------------------------------------


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await trio.to_thread.run_sync(fn, *args)


def healthy_io(h: Any, offset: int) -> None:
    """Every operation works on handle ``h``."""
    h.pwrite(b"\x42" * 4096, offset)
    assert h.pread(4096, offset) == b"\x42" * 4096
    h.flush()
    h.trim(4096, offset)
    h.zero(4096, offset)
    h.cache(4096, offset)
    assert extents_of(h, 4096, offset) == [(4096, 0)]


DATA_CALLBACKS: dict[str, Callable[[Any], object]] = {
    "pread": lambda h: h.pread(4096, 0),
    "pwrite": lambda h: h.pwrite(b"x" * 4096, 0),
    "flush": lambda h: h.flush(),
    "trim": lambda h: h.trim(4096, 0),
    "zero": lambda h: h.zero(4096, 0),
    "cache": lambda h: h.cache(4096, 0),
    "extents": lambda h: extents_of(h, 4096, 0),
}


@pytest.mark.parametrize("callback", list(DATA_CALLBACKS))
async def test_plugin_raising_in_a_data_callback_fails_that_request_with_eio(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture, callback: str
) -> None:
    disk = FaultyDisk()
    server = await serve(AsyncPlugin.from_object(disk))
    bystander = await in_thread(connect, server)
    disk.arm(callback)
    victim = await in_thread(connect, server)

    with pytest.raises(nbd.Error) as failure:
        await in_thread(DATA_CALLBACKS[callback], victim)
    assert failure.value.errnum == errno.EIO
    assert f"{callback} exploded" not in str(failure.value)  # the traceback stays in the log
    assert any(
        r.name == "trioblock.plugin" and r.exc_info and f"{callback} exploded" in str(r.exc_info[1])
        for r in caplog.records
    )
    # The failed request did not break anything: the victim's other operations still work ...
    others = [name for name in DATA_CALLBACKS if name != callback]
    for name in others:
        await in_thread(DATA_CALLBACKS[name], victim)
    # ... and neither the bystander nor a new client noticed.
    await in_thread(healthy_io, bystander, 8192)
    await in_thread(victim.shutdown)
    await in_thread(bystander.shutdown)
    await assert_serving(server)
    await wait_for_connections(server, 0)
    assert sorted(disk.closed) == [1, 2, 3]


@pytest.mark.parametrize("callback", ["open", "get_size"])
async def test_plugin_raising_while_opening_refuses_go_with_err_unknown_and_retry_works(
    serve: ServeFactory, clients: Clients, callback: str
) -> None:
    disk = FaultyDisk()
    server = await serve(AsyncPlugin.from_object(disk))
    bystander = await in_thread(connect, server)
    disk.arm(callback)
    client = await clients.connect(server)
    await client.greeting()
    await client.send(c.client_flags(no_zeroes=True), c.go(""))
    reply = await client.option_reply()
    assert (reply.opt, reply.type) == (c.OPT_GO, c.REP_ERR_UNKNOWN)
    if callback == "get_size":
        assert disk.closed == [2]  # the handle that failed its size was closed
    # Negotiation goes on: the next GO opens a healthy handle.
    await client.send(c.go(""))
    assert (await client.go_replies()).size == SIZE
    assert await client.read(0, 512) == bytes(512)
    await in_thread(healthy_io, bystander, 0)
    await in_thread(bystander.shutdown)


@pytest.mark.parametrize("callback", ["open", "get_size"])
async def test_plugin_exception_text_at_open_stays_in_the_log_not_the_option_reply(
    serve: ServeFactory, clients: Clients, caplog: pytest.LogCaptureFixture, callback: str
) -> None:
    disk = FaultyDisk()
    server = await serve(AsyncPlugin.from_object(disk))
    disk.arm(callback)
    client = await clients.connect(server)
    await client.greeting()
    await client.send(c.client_flags(no_zeroes=True), c.go(""))
    reply = await client.option_reply()
    assert reply.type == c.REP_ERR_UNKNOWN
    assert f"{callback} exploded" in caplog.text
    assert b"exploded" not in reply.data
    assert b"RuntimeError" not in reply.data


async def test_failing_open_after_export_name_closes_the_connection_at_once(
    serve: ServeFactory, clients: Clients
) -> None:
    # EXPORT_NAME has no error reply: the server must hang up, not wait for the timeout.
    disk = FaultyDisk()
    server = await serve(AsyncPlugin.from_object(disk), handshake_timeout=60)
    disk.arm("open")
    client = await clients.connect(server)
    await client.greeting()
    await client.send(c.client_flags(no_zeroes=True), c.export_name(""))
    with trio.fail_after(5):
        await client.expect_eof()
    await assert_serving(server)


async def test_libnbd_sees_a_failing_open_as_a_connection_error(serve: ServeFactory) -> None:
    disk = FaultyDisk()
    server = await serve(AsyncPlugin.from_object(disk))
    disk.arm("open")
    with pytest.raises(nbd.Error):
        await in_thread(connect, server)
    await assert_serving(server)


async def test_plugin_raising_in_close_is_logged_and_the_server_keeps_serving(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    disk = FaultyDisk()
    server = await serve(AsyncPlugin.from_object(disk))
    bystander = await in_thread(connect, server)
    disk.arm("close")
    victim = await in_thread(connect, server)
    await in_thread(healthy_io, victim, 0)
    await in_thread(victim.shutdown)  # a clean NBD_CMD_DISC: the client sees nothing wrong
    await wait_for_connections(server, 1)
    assert disk.closed == [2]
    assert any("close exploded" in str(r.exc_info and r.exc_info[1]) for r in caplog.records)
    await in_thread(healthy_io, bystander, 4096)
    await in_thread(bystander.shutdown)
    await assert_serving(server)


# -- load and ordering ---------------------------------------------------------------------------


@pytest.fixture
def many_fds() -> Iterator[None]:
    """Room for 500 clients and their 500 server ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_500_simultaneous_connections_each_read_their_data(
    serve: ServeFactory, many_fds: None
) -> None:
    clients = 500
    server = await serve(AsyncPlugin.from_object(PatternDisk()))
    ready = 0
    all_ready = trio.Event()
    connected_at_once: list[int] = []

    async def one_client(i: int) -> None:
        nonlocal ready
        client = await RawClient.connect(server)
        try:
            await client.handshake()
            ready += 1
            if ready == clients:
                connected_at_once.append(len(server.connections))
                all_ready.set()
            await all_ready.wait()
            offset = i * 4099 + 1
            assert await client.read(offset, 512, cookie=i) == pattern(offset, 512)
            await client.send(c.request(c.CMD_DISC))
            await client.expect_eof()
        finally:
            await client.aclose()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for i in range(clients):
                nursery.start_soon(one_client, i)
    assert connected_at_once == [clients]
    await wait_for_connections(server, 0)
    await assert_serving(server, 1, pattern(1, 512))


class GatedReads(PatternDisk):
    """PatternDisk whose read at offset 0 waits for :attr:`gate`."""

    def __init__(self, model: ThreadModel) -> None:
        super().__init__(model=model)
        self.gate = trio.Event()
        self.first_started = trio.Event()
        self.started: list[int] = []

    async def pread(self, h: None, buf: memoryview, offset: int, flags: int) -> None:
        self.started.append(offset)
        if offset == 0:
            self.first_started.set()
            await self.gate.wait()
        await super().pread(h, buf, offset, flags)


async def test_parallel_plugin_replies_out_of_order(serve: ServeFactory, clients: Clients) -> None:
    disk = GatedReads(ThreadModel.PARALLEL)
    server = await serve(AsyncPlugin.from_object(disk))
    client = await clients.connected(server)
    with trio.fail_after(5):
        await client.send(
            c.request(c.CMD_READ, cookie=1, offset=0, length=4096),
            c.request(c.CMD_READ, cookie=2, offset=4096, length=4096),
        )
        reply, data = await client.simple_reply(4096)
        assert reply.cookie == 2
        assert data == pattern(4096, 4096)
        assert not disk.gate.is_set()
        disk.gate.set()
        reply, data = await client.simple_reply(4096)
        assert reply.cookie == 1
        assert data == pattern(0, 4096)


@pytest.mark.parametrize(
    "model",
    [
        ThreadModel.SERIALIZE_CONNECTIONS,
        ThreadModel.SERIALIZE_ALL_REQUESTS,
        ThreadModel.SERIALIZE_REQUESTS,
    ],
)
async def test_serializing_thread_models_reply_in_request_order(
    serve: ServeFactory, clients: Clients, model: ThreadModel
) -> None:
    disk = GatedReads(model)
    server = await serve(AsyncPlugin.from_object(disk))
    client = await clients.connected(server)
    with trio.fail_after(5):
        await client.send(
            c.request(c.CMD_READ, cookie=1, offset=0, length=4096),
            c.request(c.CMD_READ, cookie=2, offset=4096, length=4096),
        )
        await disk.first_started.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert disk.started == [0]  # the second read waits for the first
        disk.gate.set()
        replies = [await client.simple_reply(4096) for _ in range(2)]
    assert replies == [
        (c.SimpleReply(0, 1), pattern(0, 4096)),
        (c.SimpleReply(0, 2), pattern(4096, 4096)),
    ]


async def test_64_concurrent_1_mib_reads_never_interleave_their_replies(
    serve: ServeFactory,
) -> None:
    count = 64
    server = await serve(AsyncPlugin.from_object(PatternDisk(size=count * MiB + MiB)))

    def read_all(h: Any) -> list[bytes]:
        buffers = [nbd.Buffer(MiB) for _ in range(count)]
        # Offsets one MiB and a few bytes apart: each read has its own phase of the pattern.
        cookies = [h.aio_pread(buf, i * (MiB + 3)) for i, buf in enumerate(buffers)]
        assert h.aio_in_flight() == count
        while h.aio_in_flight():
            h.poll(-1)
        assert all(h.aio_command_completed(cookie) for cookie in cookies)
        return [bytes(buf.to_bytearray()) for buf in buffers]

    def body() -> list[bytes]:
        h = connect(server)
        try:
            return read_all(h)
        finally:
            h.shutdown()

    with trio.fail_after(15):
        results = await in_thread(body)
    for i, data in enumerate(results):
        assert data == pattern(i * (MiB + 3), MiB), f"read {i} got another read's bytes"
