"""eventfd: counter and semaphore modes, the SendChannel side, overflow waiting."""

from __future__ import annotations

import os
from contextlib import closing

import pytest
import trio
import trio.testing

from triofd import EventFd, InvalidArgumentError, eventfd

MAX = 2**64 - 2


async def test_counter_mode_receives_the_sum_and_resets() -> None:
    async with EventFd(5) as efd:
        await efd.send(3)
        efd.send_nowait(2)
        assert await efd.receive() == 10
        with pytest.raises(trio.WouldBlock):
            efd.receive_nowait()


async def test_semaphore_mode_receives_one_per_increment() -> None:
    async with EventFd(semaphore=True) as efd:
        await efd.send(3)
        assert [await efd.receive() for _ in range(3)] == [1, 1, 1]
        with pytest.raises(trio.WouldBlock):
            efd.receive_nowait()


async def test_send_waits_while_the_counter_is_full() -> None:
    async with EventFd() as efd:
        efd.send_nowait(MAX)
        with pytest.raises(trio.WouldBlock):
            efd.send_nowait(1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(efd.send, 7)
            await trio.testing.wait_all_tasks_blocked()
            assert await efd.receive() == MAX  # makes room; the sender completes
        assert await efd.receive() == 7


async def test_send_checkpoints_and_second_sender_is_busy() -> None:
    async with EventFd() as efd:
        with trio.testing.assert_checkpoints():
            await efd.send(1)
        efd.send_nowait(MAX - 1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(efd.send, 1)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await efd.send(1)
            nursery.cancel_scope.cancel()


async def test_closing_wakes_a_blocked_sender() -> None:
    efd = EventFd(0)
    efd.send_nowait(MAX)
    async with trio.open_nursery() as nursery:

        async def sender() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await efd.send(1)

        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        await efd.aclose()
    with pytest.raises(trio.ClosedResourceError):
        efd.send_nowait(1)


async def test_ping_pong_between_two_tasks() -> None:
    async with EventFd() as ping, EventFd() as pong:

        async def echo() -> None:
            for _ in range(100):
                await pong.send(await ping.receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            for i in range(1, 101):
                await ping.send(i)
                assert await pong.receive() == i


def test_fd_is_nonblocking_and_close_on_exec() -> None:
    with closing(EventFd()) as efd:
        assert not os.get_inheritable(efd.fileno())
        assert not os.get_blocking(efd.fileno())


@pytest.mark.parametrize("bad", [-1, MAX + 1, 2**64])
def test_out_of_range_values_are_value_errors(bad: int) -> None:
    with closing(EventFd()) as efd, pytest.raises(ValueError, match="between 0 and"):
        efd.send_nowait(bad)


def test_wrong_types_are_type_errors() -> None:
    with closing(EventFd()) as efd, pytest.raises(TypeError):
        efd.send_nowait(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        EventFd(True)


def test_eventfd_bad_flags_is_einval_with_errno() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        eventfd(0, 0x7FFFFFFF)
    assert info.value.errno == 22
    assert isinstance(info.value, ValueError)
