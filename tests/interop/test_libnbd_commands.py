"""Every NBD command and flag, driven through libnbd's Python bindings.

The server runs in this test's Trio loop, so each libnbd client (blocking) runs in a worker thread:
a test's client code is a plain function given a connected handle, run by :func:`with_client`.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import nbd
import pytest
import trio

from conftest import ServeFactory
from libnbdclient import connect, extents_of, fails_with, with_client
from trioblock._plugins._file import FilePlugin
from trioblock._plugins._memory import MemoryPlugin
from trioblock._plugins._null import NullPlugin

pytestmark = pytest.mark.interop

T = TypeVar("T")
KiB = 1024
MiB = 1024 * KiB
SIZE = 16 * MiB
HOLE_ZERO = 3  # NBD_STATE_HOLE | NBD_STATE_ZERO
DATA = 0


def memory(size: int = SIZE) -> MemoryPlugin:
    return MemoryPlugin.from_params([("size", str(size))])


async def test_pwrite_then_pread_returns_the_data(serve: ServeFactory) -> None:
    server = await serve(memory())
    data = os.urandom(300 * KiB)

    def body(h: Any) -> None:
        h.pwrite(data, 12345)
        assert h.pread(len(data), 12345) == data
        assert h.pread(12345, 0) == bytes(12345)
        assert h.pread(1, SIZE - 1) == b"\0"

    await with_client(server, body)


async def test_pwrite_with_fua_is_readable_at_once(serve: ServeFactory) -> None:
    server = await serve(memory())

    def body(h: Any) -> None:
        assert h.can_fua()
        h.pwrite(b"\x77" * 4096, 8192, nbd.CMD_FLAG_FUA)
        assert h.pread(4096, 8192) == b"\x77" * 4096

    await with_client(server, body)


async def test_pread_with_df_returns_the_data_in_one_chunk(serve: ServeFactory) -> None:
    server = await serve(memory())
    data = os.urandom(200 * KiB)
    chunks: list[tuple[int, int, int]] = []

    def chunk(subbuf: bytes, offset: int, status: int, err: Any) -> int:
        chunks.append((len(subbuf), offset, status))
        return 0

    def body(h: Any) -> bytes:
        assert h.can_df()
        h.pwrite(data, 4096)
        # (libnbd takes DF only on pread_structured: nbd_pread refuses it client-side.)
        result: bytes = h.pread_structured(len(data), 4096, chunk, nbd.CMD_FLAG_DF)
        return result

    assert await with_client(server, body) == data
    assert chunks == [(len(data), 4096, nbd.READ_DATA)]


@pytest.mark.parametrize(
    "flags",
    [
        0,
        nbd.CMD_FLAG_NO_HOLE,
        nbd.CMD_FLAG_FAST_ZERO,
        nbd.CMD_FLAG_FUA,
        nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_FUA,
    ],
    ids=["plain", "no-hole", "fast-zero", "fua", "all-flags"],
)
async def test_zero_clears_exactly_the_range(serve: ServeFactory, flags: int) -> None:
    server = await serve(memory())

    def body(h: Any) -> None:
        assert h.can_zero()
        assert h.can_fast_zero()
        h.pwrite(b"\xff" * (256 * KiB), 0)
        h.zero(100 * KiB, 50 * KiB, flags)  # unaligned: partial pages on both sides
        assert h.pread(50 * KiB, 0) == b"\xff" * (50 * KiB)
        assert h.pread(100 * KiB, 50 * KiB) == bytes(100 * KiB)
        assert h.pread(106 * KiB, 150 * KiB) == b"\xff" * (106 * KiB)

    await with_client(server, body)


async def test_zero_of_whole_pages_leaves_a_hole(serve: ServeFactory) -> None:
    server = await serve(memory())

    def body(h: Any) -> list[tuple[int, int]]:
        h.pwrite(b"\x01" * (256 * KiB), 0)
        h.zero(128 * KiB, 64 * KiB)
        return extents_of(h, 256 * KiB, 0)

    assert await with_client(server, body) == [
        (64 * KiB, DATA),
        (128 * KiB, HOLE_ZERO),
        (64 * KiB, DATA),
    ]


@pytest.mark.parametrize("flags", [0, nbd.CMD_FLAG_FUA], ids=["plain", "fua"])
async def test_trim_makes_the_range_read_as_zeros(serve: ServeFactory, flags: int) -> None:
    server = await serve(memory())

    def body(h: Any) -> list[tuple[int, int]]:
        assert h.can_trim()
        h.pwrite(b"\x09" * MiB, 0)
        h.trim(512 * KiB, 256 * KiB, flags)
        assert h.pread(256 * KiB, 0) == b"\x09" * (256 * KiB)
        assert h.pread(512 * KiB, 256 * KiB) == bytes(512 * KiB)
        assert h.pread(256 * KiB, 768 * KiB) == b"\x09" * (256 * KiB)
        return extents_of(h, MiB, 0)

    assert await with_client(server, body) == [
        (256 * KiB, DATA),
        (512 * KiB, HOLE_ZERO),
        (256 * KiB, DATA),
    ]


async def test_flush_and_cache_succeed(serve: ServeFactory) -> None:
    server = await serve(memory())

    def body(h: Any) -> None:
        assert h.can_flush()
        assert h.can_cache()
        h.pwrite(b"\x33" * 4096, 0)
        h.flush()
        h.cache(SIZE, 0)
        h.cache(4096, 4096)
        assert h.pread(4096, 0) == b"\x33" * 4096

    await with_client(server, body)


async def test_block_status_reports_data_and_hole_extents(serve: ServeFactory) -> None:
    server = await serve(memory())

    def body(h: Any) -> tuple[list[tuple[int, int]], ...]:
        assert h.can_meta_context("base:allocation")
        fresh = extents_of(h, SIZE, 0)
        h.pwrite(b"\x01" * (64 * KiB), 64 * KiB)
        h.pwrite(b"\x02" * (128 * KiB), 1 * MiB)
        whole = extents_of(h, 2 * MiB, 0)
        unaligned = extents_of(h, 100 * KiB, 100 * KiB)
        return fresh, whole, unaligned

    fresh, whole, unaligned = await with_client(server, body)
    assert fresh == [(SIZE, HOLE_ZERO)]
    assert whole == [
        (64 * KiB, HOLE_ZERO),
        (64 * KiB, DATA),
        (MiB - 128 * KiB, HOLE_ZERO),
        (128 * KiB, DATA),
        (MiB - 128 * KiB, HOLE_ZERO),
    ]
    assert unaligned == [(28 * KiB, DATA), (72 * KiB, HOLE_ZERO)]


async def test_block_status_with_req_one_returns_only_the_first_extent(
    serve: ServeFactory,
) -> None:
    server = await serve(memory())

    def body(h: Any) -> tuple[list[tuple[int, int]], ...]:
        h.pwrite(b"\x01" * (64 * KiB), 64 * KiB)
        return (
            extents_of(h, MiB, 0, nbd.CMD_FLAG_REQ_ONE),
            extents_of(h, MiB, 64 * KiB, nbd.CMD_FLAG_REQ_ONE),
            extents_of(h, MiB, 96 * KiB, nbd.CMD_FLAG_REQ_ONE),
        )

    from_start, at_data, inside_data = await with_client(server, body)
    assert from_start == [(64 * KiB, HOLE_ZERO)]
    assert at_data == [(64 * KiB, DATA)]
    assert inside_data == [(32 * KiB, DATA)]


async def test_large_32_mib_requests_round_trip(serve: ServeFactory) -> None:
    server = await serve(memory(64 * MiB))
    data = os.urandom(32 * MiB)

    def body(h: Any) -> None:
        h.pwrite(data, 16 * MiB + 512)
        assert h.pread(32 * MiB, 16 * MiB + 512) == data
        h.zero(48 * MiB, 0)
        assert h.pread(32 * MiB, 16 * MiB) == bytes(32 * MiB)

    await with_client(server, body)


async def test_memory_export_advertises_every_capability(serve: ServeFactory) -> None:
    server = await serve(memory())

    def body(h: Any) -> dict[str, Any]:
        names = ["can_cache", "can_df", "can_fast_zero", "can_flush", "can_fua"]
        names += ["can_multi_conn", "can_trim", "can_zero", "is_read_only", "is_rotational"]
        caps = {name: getattr(h, name)() for name in names}
        caps["size"] = h.get_size()
        caps["structured"] = h.get_structured_replies_negotiated()
        caps["protocol"] = h.get_protocol()
        return caps

    assert await with_client(server, body) == {
        "can_cache": True,
        "can_df": True,
        "can_fast_zero": True,
        "can_flush": True,
        "can_fua": True,
        "can_multi_conn": True,
        "can_trim": True,
        "can_zero": True,
        "is_read_only": False,
        "is_rotational": False,
        "size": SIZE,
        "structured": True,
        "protocol": "newstyle-fixed",
    }


# -- errors --------------------------------------------------------------------------------------

END = SIZE - 512  # a 1 KiB request here runs 512 bytes past the end


def _ignore(*args: object) -> int:
    return 0


OUT_OF_RANGE: dict[str, tuple[Callable[[Any], object], int]] = {
    "read": (lambda h: h.pread(1024, END), errno.EINVAL),
    "read-after-end": (lambda h: h.pread(1, SIZE), errno.EINVAL),
    "write": (lambda h: h.pwrite(b"\1" * 1024, END), errno.ENOSPC),
    "write-zeroes": (lambda h: h.zero(1024, END), errno.ENOSPC),
    "trim": (lambda h: h.trim(1024, END), errno.EINVAL),
    "cache": (lambda h: h.cache(1024, END), errno.EINVAL),
    "block-status": (lambda h: h.block_status(1024, END, _ignore), errno.EINVAL),
}


@pytest.mark.parametrize("command", OUT_OF_RANGE)
async def test_out_of_range_request_fails_and_connection_stays_usable(
    serve: ServeFactory, command: str
) -> None:
    server = await serve(memory())
    call, expected = OUT_OF_RANGE[command]

    def body(h: Any) -> None:
        h.set_strict_mode(0)  # let libnbd send what it would refuse itself
        h.pwrite(b"\x42" * 512, END)
        fails_with(expected, lambda: call(h))
        assert h.pread(512, END) == b"\x42" * 512  # nothing was written past or at the end

    await with_client(server, body)


ZERO_LENGTH: dict[str, Callable[[Any], object]] = {
    "read": lambda h: h.pread(0, 0),
    "write": lambda h: h.pwrite(b"", 0),
    "write-zeroes": lambda h: h.zero(0, 0),
    "trim": lambda h: h.trim(0, 0),
    "cache": lambda h: h.cache(0, 0),
    "block-status": lambda h: h.block_status(0, 0, _ignore),
}


@pytest.mark.parametrize("command", ZERO_LENGTH)
async def test_zero_length_request_gets_einval(serve: ServeFactory, command: str) -> None:
    server = await serve(memory())
    # nbdkit answers ENOSPC for zero-length writes (its range check fails); EINVAL is right too.
    allowed = {errno.EINVAL, errno.ENOSPC} if command.startswith("write") else {errno.EINVAL}

    def body(h: Any) -> None:
        h.set_strict_mode(0)
        with pytest.raises(nbd.Error) as info:
            ZERO_LENGTH[command](h)
        assert info.value.errnum in allowed, info.value
        assert h.pread(4, 0) == bytes(4)

    await with_client(server, body)


BAD_FLAGS: dict[str, Callable[[Any], object]] = {
    "read-no-hole": lambda h: h.pread(512, 0, nbd.CMD_FLAG_NO_HOLE),
    "read-unknown-flag": lambda h: h.pread(512, 0, 0x40),
    "write-fast-zero": lambda h: h.pwrite(b"\1" * 512, 0, nbd.CMD_FLAG_FAST_ZERO),
    "trim-df": lambda h: h.trim(512, 0, nbd.CMD_FLAG_DF),
    "zero-df": lambda h: h.zero(512, 0, nbd.CMD_FLAG_DF),
    "block-status-no-hole": lambda h: h.block_status(512, 0, _ignore, nbd.CMD_FLAG_NO_HOLE),
}


@pytest.mark.parametrize("case", BAD_FLAGS)
async def test_flag_not_valid_for_command_gets_einval(serve: ServeFactory, case: str) -> None:
    server = await serve(memory())

    def body(h: Any) -> None:
        h.set_strict_mode(0)
        fails_with(errno.EINVAL, lambda: BAD_FLAGS[case](h))
        assert h.pread(4, 0) == bytes(4)

    await with_client(server, body)


# proto.md, "Command flags": FUA "is valid for all commands, provided NBD_FLAG_SEND_FUA has been
# negotiated, in which case the server MUST accept all commands with this bit set (even by
# ignoring the bit)".  nbdkit 1.32.5 memory accepts every case below.
FUA_ANYWHERE: dict[str, Callable[[Any], object]] = {
    "read": lambda h: h.pread(512, 0, nbd.CMD_FLAG_FUA),
    "read-df": lambda h: h.pread_structured(512, 0, _ignore, nbd.CMD_FLAG_FUA | nbd.CMD_FLAG_DF),
    "flush": lambda h: h.flush(nbd.CMD_FLAG_FUA),
    "cache": lambda h: h.cache(512, 0, nbd.CMD_FLAG_FUA),
    "block-status": lambda h: h.block_status(512, 0, _ignore, nbd.CMD_FLAG_FUA),
}


@pytest.mark.parametrize("command", FUA_ANYWHERE)
async def test_fua_is_accepted_on_every_command_when_advertised(
    serve: ServeFactory, command: str
) -> None:
    server = await serve(memory())

    def body(h: Any) -> None:
        assert h.can_fua()
        h.set_strict_mode(0)
        FUA_ANYWHERE[command](h)

    await with_client(server, body)


WRITES: dict[str, Callable[[Any], object]] = {
    "write": lambda h: h.pwrite(b"\1" * 512, 0),
    "write-zeroes": lambda h: h.zero(512, 0),
    "trim": lambda h: h.trim(512, 0),
}


@pytest.mark.parametrize("command", WRITES)
async def test_readonly_server_refuses_writes_with_eperm(serve: ServeFactory, command: str) -> None:
    server = await serve(memory(), readonly=True)

    def body(h: Any) -> None:
        assert h.is_read_only()
        assert [h.can_trim(), h.can_zero(), h.can_fua(), h.can_fast_zero()] == [False] * 4
        h.set_strict_mode(0)
        fails_with(errno.EPERM, lambda: WRITES[command](h))
        assert h.pread(512, 0) == bytes(512)
        h.flush()
        h.cache(512, 0)
        assert extents_of(h, SIZE, 0) == [(SIZE, HOLE_ZERO)]

    await with_client(server, body)


# nbdkit (server/protocol.c validate_request) refuses WRITE, TRIM and WRITE_ZEROES on a read-only
# connection first, before looking at flags, range or length; verified with nbdkit 1.32.5 -r.
READONLY_FIRST: dict[str, Callable[[Any], object]] = {
    "write-fua": lambda h: h.pwrite(b"\1" * 512, 0, nbd.CMD_FLAG_FUA),
    "trim-fua": lambda h: h.trim(512, 0, nbd.CMD_FLAG_FUA),
    "write-zeroes-fua": lambda h: h.zero(512, 0, nbd.CMD_FLAG_FUA),
    "write-zeroes-fast-zero": lambda h: h.zero(512, 0, nbd.CMD_FLAG_FAST_ZERO),
    "write-out-of-range": lambda h: h.pwrite(b"\1" * 1024, END),
    "write-zero-length": lambda h: h.pwrite(b"", 0),
}


@pytest.mark.parametrize("case", READONLY_FIRST)
async def test_readonly_server_answers_eperm_before_checking_flags_or_range(
    serve: ServeFactory, case: str
) -> None:
    server = await serve(memory(), readonly=True)

    def body(h: Any) -> None:
        h.set_strict_mode(0)
        fails_with(errno.EPERM, lambda: READONLY_FIRST[case](h))

    await with_client(server, body)


async def test_libnbd_refuses_writes_to_readonly_export_itself(serve: ServeFactory) -> None:
    server = await serve(memory(), readonly=True)

    def body(h: Any) -> None:
        fails_with(errno.EPERM, lambda: h.pwrite(b"\1", 0))

    await with_client(server, body)


# -- export names and option negotiation ---------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["", "disk", "disque-é", "line\nbreak", "x" * 4096],
    ids=["empty", "ascii", "non-ascii", "newline", "4096-bytes"],
)
@pytest.mark.parametrize("tcp", [False, True], ids=["unix", "tcp"])
async def test_any_export_name_opens_the_memory_disk(
    serve: ServeFactory, name: str, tcp: bool
) -> None:
    server = await serve(memory(), tcp=tcp)

    def body(h: Any) -> tuple[int, str, str]:
        h.pwrite(b"named", 0)
        size: int = h.get_size()
        return size, h.get_export_name(), h.get_canonical_export_name()

    def full_info(h: Any) -> None:
        h.set_full_info(True)  # ask for NBD_INFO_NAME: the canonical name

    assert await with_client(server, body, name=name, setup=full_info) == (SIZE, name, name)
    # Every name is the same disk.
    assert await with_client(server, lambda h: h.pread(5, 0), name="") == b"named"


async def test_export_name_in_uri_is_decoded(serve: ServeFactory) -> None:
    server = await serve(memory())

    def body() -> str:
        h = nbd.NBD()
        h.set_full_info(True)
        h.connect_uri(server.uri("disque-é"))
        name: str = h.get_canonical_export_name()
        h.shutdown()
        return name

    assert await trio.to_thread.run_sync(body) == "disque-é"


async def test_opt_mode_lists_exports_and_meta_contexts_then_goes(serve: ServeFactory) -> None:
    server = await serve(memory())
    exports: list[tuple[str, str]] = []
    contexts: list[str] = []

    def body() -> tuple[int, int, bytes]:
        h = nbd.NBD()
        h.set_opt_mode(True)
        h.add_meta_context("base:allocation")
        h.connect_uri(server.uri())
        assert h.aio_is_negotiating()
        listed = h.opt_list(lambda name, description: exports.append((name, description)))
        found = h.opt_list_meta_context(lambda name: contexts.append(name))
        h.opt_go()
        assert not h.aio_is_negotiating()
        data: bytes = h.pread(4, 0)
        h.shutdown()
        return listed, found, data

    listed, found, data = await trio.to_thread.run_sync(body)
    assert (listed, exports) == (1, [("", "")])
    assert (found, contexts) == (1, ["base:allocation"])
    assert data == bytes(4)


async def test_opt_list_meta_context_with_base_wildcard_finds_allocation(
    serve: ServeFactory,
) -> None:
    server = await serve(memory())
    contexts: list[str] = []

    def body() -> None:
        h = nbd.NBD()
        h.set_opt_mode(True)
        h.add_meta_context("base:")
        h.connect_uri(server.uri())
        h.opt_list_meta_context(lambda name: contexts.append(name))
        h.opt_abort()

    await trio.to_thread.run_sync(body)
    assert contexts == ["base:allocation"]


@pytest.mark.parametrize("name", ["", "disque-é", "line\nbreak"], ids=["empty", "é", "newline"])
async def test_opt_info_reports_the_export_without_entering_transmission(
    serve: ServeFactory, name: str
) -> None:
    server = await serve(memory(), readonly=True)

    def body() -> tuple[int, bool, str, int]:
        h = nbd.NBD()
        h.set_opt_mode(True)
        h.set_full_info(True)
        h.connect_uri(server.uri())
        h.set_export_name(name)
        h.opt_info()
        info = (h.get_size(), h.is_read_only(), h.get_canonical_export_name())
        h.set_export_name("")
        h.opt_go()
        size: int = h.get_size()
        h.shutdown()
        return (*info, size)

    assert await trio.to_thread.run_sync(body) == (SIZE, True, name, SIZE)


async def test_without_structured_replies_reads_and_writes_still_work(
    serve: ServeFactory,
) -> None:
    server = await serve(memory(), structured_replies=False)
    data = os.urandom(MiB)

    def body(h: Any) -> None:
        assert not h.get_structured_replies_negotiated()
        assert not h.can_df()
        assert not h.can_meta_context("base:allocation")
        h.pwrite(data, 4096, nbd.CMD_FLAG_FUA)
        assert h.pread(len(data), 4096) == data
        h.zero(4096, 4096)
        h.trim(4096, 8192)
        assert h.pread(8192, 4096) == bytes(8192)
        h.flush()
        h.set_strict_mode(0)
        fails_with(errno.EINVAL, lambda: h.pread(1024, END))  # a simple error reply

    await with_client(server, body)


async def test_client_not_asking_for_structured_replies_gets_simple_ones(
    serve: ServeFactory,
) -> None:
    server = await serve(memory())

    def body(h: Any) -> None:
        assert not h.get_structured_replies_negotiated()
        h.pwrite(b"simple", 0)
        assert h.pread(6, 0) == b"simple"

    await with_client(server, body, setup=lambda h: h.set_request_structured_replies(False))


# -- concurrency -----------------------------------------------------------------------------------


def block(index: int) -> bytes:
    """4 KiB that say which block they are."""
    return struct.pack(">Q", index) * 512


async def test_64_reads_in_flight_each_get_their_own_data(serve: ServeFactory) -> None:
    server = await serve(memory())
    count = 64

    def body(h: Any) -> list[bytes]:
        writes = [h.aio_pwrite(nbd.Buffer.from_bytearray(block(i)), i * 8192) for i in range(count)]
        while h.aio_in_flight() > 0:
            h.poll(-1)
        assert all(h.aio_command_completed(cookie) for cookie in writes)
        buffers = [nbd.Buffer(4096) for _ in range(count)]
        # Issue in a scrambled order, so replies are matched by cookie, not by position.
        order = sorted(range(count), key=lambda i: (i * 37) % count)
        cookies = {i: h.aio_pread(buffers[i], i * 8192) for i in order}
        assert h.aio_in_flight() > 1
        while h.aio_in_flight() > 0:
            h.poll(-1)
        assert all(h.aio_command_completed(cookies[i]) for i in range(count))
        return [bytes(buf.to_bytearray()) for buf in buffers]

    results = await with_client(server, body)
    assert results == [block(i) for i in range(count)]


async def test_mixed_commands_in_flight_complete_in_any_order(serve: ServeFactory) -> None:
    server = await serve(memory())

    def body(h: Any) -> None:
        h.pwrite(b"\xee" * MiB, 0)
        completed: list[int] = []
        cookies = [
            h.aio_pread(nbd.Buffer(MiB), 0),
            h.aio_zero(64 * KiB, MiB, flags=nbd.CMD_FLAG_FUA),
            h.aio_trim(64 * KiB, 2 * MiB),
            h.aio_flush(),
            h.aio_cache(MiB, 0),
            h.aio_block_status(MiB, 0, _ignore),
            h.aio_pwrite(nbd.Buffer.from_bytearray(b"\x01" * 4096), 3 * MiB),
        ]
        while h.aio_in_flight() > 0:
            h.poll(-1)
        for cookie in cookies:
            assert h.aio_command_completed(cookie)
            completed.append(cookie)
        assert len(completed) == len(cookies)
        assert h.pread(4096, 3 * MiB) == b"\x01" * 4096

    await with_client(server, body)


async def test_many_connections_at_once_see_one_disk(serve: ServeFactory) -> None:
    server = await serve(memory(), tcp=True)
    clients = 8

    def writer(index: int) -> None:
        h = connect(server)
        assert h.can_multi_conn()
        for j in range(16):
            h.pwrite(block(index * 16 + j), (index * 16 + j) * 4096)
        h.flush()
        h.shutdown()

    async with trio.open_nursery() as nursery:
        for index in range(clients):
            nursery.start_soon(trio.to_thread.run_sync, writer, index)

    def reader(h: Any) -> bytes:
        data: bytes = h.pread(clients * 16 * 4096, 0)
        return data

    expected = b"".join(block(i) for i in range(clients * 16))
    assert await with_client(server, reader) == expected


async def test_client_vanishing_with_requests_in_flight_leaves_server_serving(
    serve: ServeFactory,
) -> None:
    server = await serve(memory())

    def vanish() -> None:
        h = connect(server)
        for i in range(32):
            h.aio_pwrite(nbd.Buffer.from_bytearray(b"\x05" * (64 * KiB)), i * 64 * KiB)
            h.aio_pread(nbd.Buffer(64 * KiB), i * 64 * KiB)
        del h  # the last reference: libnbd closes the socket without NBD_CMD_DISC

    await trio.to_thread.run_sync(vanish)
    assert await with_client(server, lambda h: h.pread(4, 8 * MiB)) == bytes(4)


# -- other built-in plugins ------------------------------------------------------------------------


async def test_file_plugin_serves_every_command(serve: ServeFactory, tmp_path: Path) -> None:
    backing = tmp_path / "disk.img"
    backing.write_bytes(bytes(4 * MiB))
    server = await serve(FilePlugin.from_params([("file", str(backing))]))
    data = os.urandom(MiB)

    def body(h: Any) -> None:
        assert h.get_size() == 4 * MiB
        h.pwrite(data, 0, nbd.CMD_FLAG_FUA)
        assert h.pread(MiB, 0) == data
        h.zero(64 * KiB, 64 * KiB, nbd.CMD_FLAG_NO_HOLE)
        h.zero(64 * KiB, 256 * KiB, nbd.CMD_FLAG_FUA)
        h.trim(64 * KiB, 512 * KiB)
        assert h.pread(64 * KiB, 64 * KiB) == bytes(64 * KiB)
        assert h.pread(64 * KiB, 256 * KiB) == bytes(64 * KiB)
        h.flush()
        h.cache(MiB, 0)
        extents = extents_of(h, 4 * MiB, 0)
        assert sum(length for length, _ in extents) == 4 * MiB
        h.set_strict_mode(0)
        fails_with(errno.ENOSPC, lambda: h.pwrite(b"x" * 1024, 4 * MiB - 512))
        fails_with(errno.EINVAL, lambda: h.pread(1024, 4 * MiB - 512))

    await with_client(server, body)
    contents = backing.read_bytes()
    assert contents[: 64 * KiB] == data[: 64 * KiB]
    assert contents[64 * KiB : 128 * KiB] == bytes(64 * KiB)
    assert contents[128 * KiB : 256 * KiB] == data[128 * KiB : 256 * KiB]


async def test_null_plugin_accepts_writes_and_reads_zeros(serve: ServeFactory) -> None:
    server = await serve(NullPlugin.from_params([("size", "1G")]))

    def body(h: Any) -> list[tuple[int, int]]:
        assert h.get_size() == 1 << 30
        h.pwrite(b"\xff" * MiB, 0, nbd.CMD_FLAG_FUA)
        assert h.pread(MiB, 0) == bytes(MiB)
        h.zero(1 << 29, 0, nbd.CMD_FLAG_FAST_ZERO)
        h.trim(1 << 29, 1 << 29)
        h.flush()
        h.cache(MiB, 0)
        return extents_of(h, 1 << 30, 0)

    assert await with_client(server, body) == [(1 << 30, HOLE_ZERO)]
