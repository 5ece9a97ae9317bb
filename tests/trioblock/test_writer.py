"""The reply writer: whole replies in order of queueing, bounded queue, broken streams, large
replies written at once."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from trioblock._plugins._backend import Buffer
from trioblock._writer import WRITE_AT_ONCE, BrokenConnection, ReplyWriter


async def _drain(stream: trio.abc.ReceiveStream, expected: int) -> bytes:
    data = bytearray()
    while len(data) < expected:
        chunk = await stream.receive_some()
        assert chunk
        data += chunk
    return bytes(data)


async def test_many_senders_blocked_on_a_full_queue_all_get_through() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    writer = ReplyWriter(ours)
    writer.LIMIT = 10  # every send below is over the limit, so every sender waits for room
    replies: list[Buffer] = [bytes([i]) * 50 for i in range(8)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        async with trio.open_nursery() as senders:
            for reply in replies:
                senders.start_soon(writer.send, [reply])
            received = await _drain(theirs, 400)
        writer.close()
    # Each reply arrives whole (never interleaved), whatever order the senders ran in.
    chunks = sorted(received[i : i + 50] for i in range(0, 400, 50))
    assert chunks == sorted(bytes(r) for r in replies)


async def test_close_sends_what_is_queued_then_the_task_ends() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    writer = ReplyWriter(ours)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await writer.send([b"head", memoryview(b"-body")])
        writer.close()
        assert await _drain(theirs, 9) == b"head-body"
    with pytest.raises(trio.ClosedResourceError):
        await writer.send([b"late"])


async def test_a_broken_stream_fails_the_writer_and_later_senders() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    writer = ReplyWriter(ours)
    await theirs.aclose()
    with pytest.RaisesGroup(BrokenConnection):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            await writer.send([b"reply"])
    with pytest.raises(BrokenConnection):
        await writer.send([b"another"])


def _socket_streams() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


async def test_a_large_reply_is_written_at_once_without_the_task() -> None:
    ours, theirs = _socket_streams()
    writer = ReplyWriter(ours)
    big = b"d" * WRITE_AT_ONCE
    assert writer.send_nowait([b"head", big])  # no writer task runs: written right here
    assert await _drain(theirs, 4 + len(big)) == b"head" + big
    await ours.aclose()
    await theirs.aclose()


async def test_small_replies_wait_for_the_task_and_keep_their_order() -> None:
    ours, theirs = _socket_streams()
    writer = ReplyWriter(ours)
    big = b"B" * WRITE_AT_ONCE
    assert not writer.send_nowait([b"small-"])  # queued for the task
    assert not writer.send_nowait([b"big-", big])  # behind a queued reply: queued too
    with trio.move_on_after(0.05):
        assert not await theirs.receive_some()  # nothing left before the task ran
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        assert await _drain(theirs, 6 + 4 + len(big)) == b"small-big-" + big
        writer.close()
    await ours.aclose()
    await theirs.aclose()


async def test_what_a_full_socket_does_not_take_is_sent_by_the_task_in_order() -> None:
    ours, theirs = _socket_streams()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    writer = ReplyWriter(ours)
    first = bytes(range(256)) * 16 * 1024  # 4 MiB: more than the socket takes at once
    second = b"s" * WRITE_AT_ONCE
    assert writer.send_nowait([b"one", first])
    assert not writer.send_nowait([b"two", second])  # the rest of the first one is queued
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        received = await _drain(theirs, 3 + len(first) + 3 + len(second))
        writer.close()
    assert received == b"one" + first + b"two" + second
    await ours.aclose()
    await theirs.aclose()


async def test_replies_on_other_streams_always_go_through_the_task() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    writer = ReplyWriter(ours)
    big = b"x" * WRITE_AT_ONCE
    assert not writer.send_nowait([big])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        assert await _drain(theirs, len(big)) == big
        writer.close()
