"""The threaded source sender of ``triokuiper._nng``, on real nng sockets (ipc in tmp_path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pynng
import pytest
import trio
import trio.testing

from triokuiper import _nng

DEADLINE = 20


def url(tmp_path: Path, name: str) -> str:
    return f"ipc://{tmp_path}/{name}.ipc"


async def test_sender_waits_for_room_and_loses_nothing(tmp_path: Path) -> None:
    count = 4 * _nng.BUFFER
    timeouts: list[Any] = []
    with (
        pynng.Pull0() as pull,
        pynng.Push0(send_timeout=50) as push,
        trio.fail_after(DEADLINE),
    ):
        pull.listen(url(tmp_path, "rows"))
        push.dial(url(tmp_path, "rows"), block=True)
        sender = _nng.ThreadedSender(push, on_timeout=lambda: timeouts.append(1))
        sent = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)

            async def produce() -> None:
                for n in range(count):
                    await sender.send(b"%d" % n)
                await sender.finish()
                sent.set()

            nursery.start_soon(produce)
            await trio.sleep(0.3)  # nobody reads: the producer must be held, not dropping
            assert not sent.is_set()
            assert timeouts  # the stall was reported

            def pull_all() -> list[bytes]:
                return [pull.recv() for _ in range(count)]

            received = await trio.to_thread.run_sync(pull_all)
            await sent.wait()
        assert received == [b"%d" % n for n in range(count)]


async def test_sender_with_a_dead_thread_raises_closed_instead_of_hanging(
    tmp_path: Path,
) -> None:
    with pynng.Push0(send_timeout=50) as push, trio.fail_after(DEADLINE):
        push.dial(url(tmp_path, "nobody"), block=False)  # never connects: sends time out
        sender = _nng.ThreadedSender(push)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            for n in range(_nng.BUFFER):
                await sender.send(b"%d" % n)
            push.close()  # the sender thread ends on Closed

            async def flood() -> None:
                for _ in range(2 * _nng.BUFFER):
                    await sender.send(b"more")

            with pytest.raises(pynng.Closed):
                await flood()
            nursery.cancel_scope.cancel()
