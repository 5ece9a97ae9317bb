"""timerfd against the real kernel clock: coarse tolerances only (autojump_clock can't drive it)."""

from __future__ import annotations

import errno
import os
import time

import pytest
import trio

from triofd._errors import InvalidArgumentError
from triofd._timerfd import (
    Clock,
    ClockChangedError,
    Timer,
    TimerSpec,
    timerfd_create,
    timerfd_gettime,
    timerfd_settime,
)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_one_shot_timer_yields_one_expiration() -> None:
    async with Timer() as timer:
        timer.set(0.02)
        with trio.fail_after(5):
            assert await timer.receive() == 1
        with pytest.raises(trio.WouldBlock):
            timer.receive_nowait()


async def test_periodic_timer_counts_expirations_missed_while_not_reading() -> None:
    async with Timer() as timer:
        timer.set(0.05, every=0.05)
        await trio.sleep(0.2)
        with trio.fail_after(5):
            first = await timer.receive()
        # Coarse: at least one period went by; the count coalesces the ones we slept through.
        assert first >= 1
        with trio.fail_after(5):
            assert await timer.receive() >= 1


async def test_async_for_yields_counts_until_closed() -> None:
    got: list[int] = []
    async with Timer() as timer:
        timer.set(0.01, every=0.01)
        with trio.fail_after(5):
            async for count in timer:
                got.append(count)
                if len(got) == 3:
                    break
    assert len(got) == 3
    assert all(c >= 1 for c in got)


async def test_absolute_timer_fires_at_clock_value() -> None:
    async with Timer(Clock.MONOTONIC) as timer:
        timer.set(at=time.clock_gettime(time.CLOCK_MONOTONIC) + 0.02)
        with trio.fail_after(5):
            assert await timer.receive() == 1


async def test_absolute_time_in_the_past_fires_immediately() -> None:
    async with Timer() as timer:
        timer.set(at=1.0)
        with trio.fail_after(5):
            assert await timer.receive() == 1


async def test_get_reports_interval_exactly_and_value_counting_down() -> None:
    async with Timer() as timer:
        previous = timer.set(30, every=0.25)
        assert previous == TimerSpec(0, 0)
        current = timer.get()
        assert current.interval_ns == 250_000_000
        assert 0 < current.value_ns <= 30 * 10**9
        assert current.armed
        assert current.periodic
        assert bool(current)
        old = timer.disarm()
        assert old.interval == 0.25
        assert not timer.get()


async def test_receive_nowait_on_disarmed_timer_would_block() -> None:
    async with Timer() as timer:
        with pytest.raises(trio.WouldBlock):
            timer.receive_nowait()


@pytest.mark.parametrize("clock", list(Clock))
async def test_every_timerfd_clock_can_be_armed(clock: Clock) -> None:
    async with Timer(clock) as timer:
        if clock in (Clock.REALTIME, Clock.REALTIME_ALARM):
            timer.set(at=time.time() + 0.01)
        else:
            timer.set(0.01)
        with trio.fail_after(5):
            assert await timer.receive() == 1


async def test_cancelled_receive_loses_no_expiration() -> None:
    async with Timer() as timer:
        with trio.move_on_after(0.01) as scope:
            await timer.receive()
        assert scope.cancelled_caught
        timer.set(0.01)
        await trio.sleep(0.05)
        with trio.CancelScope() as cancelled:
            cancelled.cancel()
            await timer.receive()  # raises Cancelled before reading
        assert timer.receive_nowait() == 1


async def test_close_wakes_blocked_receiver_with_closed_resource_error() -> None:
    timer = Timer()
    async with trio.open_nursery() as nursery:

        async def receiver() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await timer.receive()

        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        await timer.aclose()
    with pytest.raises(trio.ClosedResourceError):
        timer.receive_nowait()
    with pytest.raises(trio.ClosedResourceError):
        timer.set(1)


async def test_cancel_on_set_realtime_timer_raises_clock_changed_error() -> None:
    async with Timer(Clock.REALTIME) as timer:
        timer.set(at=time.time() + 3600, cancel_on_set=True)
        # Setting the clock to (almost exactly) its own value is a "clock was set" event.
        try:
            time.clock_settime_ns(time.CLOCK_REALTIME, time.clock_gettime_ns(time.CLOCK_REALTIME))
        except PermissionError:
            pytest.skip("needs CAP_SYS_TIME")
        with trio.fail_after(5), pytest.raises(ClockChangedError) as info:
            await timer.receive()
        assert info.value.errno == errno.ECANCELED
        assert isinstance(info.value, OSError)
        # The timer is still armed for its absolute time.
        assert timer.get().armed


async def test_cancel_on_set_needs_absolute_realtime_timer() -> None:
    async with Timer(Clock.MONOTONIC) as timer:
        with pytest.raises(ValueError, match="cancel_on_set"):
            timer.set(at=5.0, cancel_on_set=True)
    async with Timer(Clock.REALTIME) as timer:
        with pytest.raises(ValueError, match="cancel_on_set"):
            timer.set(5.0, cancel_on_set=True)


def test_set_needs_exactly_one_of_after_and_at() -> None:
    timer = Timer()
    try:
        with pytest.raises(TypeError):
            timer.set()
        with pytest.raises(TypeError):
            timer.set(1, at=2)
    finally:
        timer.close()


def test_timer_spec_is_immutable_validated_and_falsy_when_disarmed() -> None:
    spec = TimerSpec.after(1.5, every=0.5)
    assert (spec.value_ns, spec.interval_ns) == (1_500_000_000, 500_000_000)
    assert spec.value == 1.5
    assert spec.interval == 0.5
    assert spec
    assert not TimerSpec.disarmed()
    assert TimerSpec.after(0).value_ns == 1  # 0 would silently disarm
    with pytest.raises(AttributeError):
        spec.value_ns = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match=">= 0"):
        TimerSpec(-1)
    with pytest.raises(ValueError, match="finite"):
        TimerSpec.after(float("nan"))
    with pytest.raises(ValueError, match="every must be >= 0"):
        TimerSpec.after(1, every=-0.5)
    with pytest.raises(TypeError):
        TimerSpec(True)
    with pytest.raises(TypeError):
        TimerSpec.after("1")  # type: ignore[arg-type]


def test_low_level_layer_round_trips_itimerspec() -> None:
    fd = timerfd_create(Clock.MONOTONIC)
    try:
        flags = os.get_inheritable(fd), os.get_blocking(fd)
        assert flags == (False, False)
        spec = TimerSpec(123 * 10**9 + 456, 7 * 10**9 + 89)
        assert timerfd_settime(fd, 0, spec) == TimerSpec(0, 0)
        got = timerfd_gettime(fd)
        assert got.interval_ns == spec.interval_ns
        assert spec.value_ns - 10**9 < got.value_ns <= spec.value_ns
    finally:
        os.close(fd)


def test_timer_objects_leak_no_fd_over_10000_cycles() -> None:
    before = _open_fds()
    for _ in range(10_000):
        timer = Timer()
        timer.close()
    assert _open_fds() == before


def test_timerfd_errors_keep_errno() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        timerfd_create(99)
    assert info.value.errno == errno.EINVAL
    r, w = os.pipe()
    try:
        with pytest.raises(InvalidArgumentError) as info:
            timerfd_gettime(r)  # not a timerfd
        assert info.value.errno == errno.EINVAL
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(InvalidArgumentError) as info:
        timerfd_settime(987654, 0, TimerSpec(1))
    assert info.value.errno == errno.EBADF
    fd = timerfd_create()
    try:
        with pytest.raises(InvalidArgumentError) as info:
            timerfd_settime(fd, 0xFF, TimerSpec(1))
        assert info.value.errno == errno.EINVAL
    finally:
        os.close(fd)
