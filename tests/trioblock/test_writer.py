"""The reply writer: whole replies in order of queueing, bounded queue, broken streams."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trioblock._plugins._backend import Buffer
from trioblock._writer import BrokenConnection, ReplyWriter


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
