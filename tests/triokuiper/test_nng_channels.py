"""The threaded data channels of ``triokuiper._nng``, on real nng sockets (ipc in tmp_path)."""

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


async def test_receiver_hands_over_every_message_in_order_then_reports_closed(
    tmp_path: Path,
) -> None:
    count = 3 * _nng.BUFFER + 7  # more than the deque holds: the thread must pause and resume
    with pynng.Pull0() as pull, pynng.Push0() as push, trio.fail_after(DEADLINE):
        pull.listen(url(tmp_path, "data"))
        push.dial(url(tmp_path, "data"), block=True)
        receiver = _nng.ThreadedReceiver(pull)
        received: list[bytes] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver.run)

            def push_all() -> None:
                for n in range(count):
                    push.send(b"%d" % n)

            nursery.start_soon(trio.to_thread.run_sync, push_all)
            while len(received) < count:
                received += await receiver.receive_batch()
            nursery.cancel_scope.cancel()
        assert received == [b"%d" % n for n in range(count)]
        with pytest.raises(pynng.Closed):
            await receiver.receive_batch()


async def test_receiver_wakes_a_waiting_task_when_the_socket_closes(tmp_path: Path) -> None:
    with pynng.Pull0() as pull, trio.fail_after(DEADLINE):
        pull.listen(url(tmp_path, "idle"))
        receiver = _nng.ThreadedReceiver(pull)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver.run)
            await trio.testing.wait_all_tasks_blocked()
            pull.close()  # the thread's recv fails: the waiting task must not hang
            with pytest.raises(pynng.Closed):
                await receiver.receive_batch()


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
