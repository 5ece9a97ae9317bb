"""``_reserve``: blocks reserved ahead of a copy with ``fallocate(FALLOC_FL_KEEP_SIZE)`` on
the real kernel (tmpfs and the disk's filesystem), never moving the size, given back at the
end, stopping quietly where ``fallocate`` fails, and never abandoning a call on cancel."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from trionfs import _reserve
from trionfs._reserve import Reserver, reserve

MiB = 1 << 20


@pytest.fixture(params=["tmpfs", "disk"])
def local_fd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[int]:
    directory = Path("/dev/shm") if request.param == "tmpfs" else tmp_path
    path = directory / f"reserve-{os.getpid()}-{threading.get_ident()}.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    try:
        yield fd
    finally:
        os.close(fd)
        path.unlink()


@pytest.fixture
def small_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_reserve, "RESERVE_STEP", 1 * MiB)
    monkeypatch.setattr(_reserve, "RESERVE_AHEAD", 2 * MiB)


def allocated(fd: int) -> int:
    return os.fstat(fd).st_blocks * 512


async def wait_for(condition: object) -> None:
    """Poll: the reserver's progress comes from a worker thread, with no event to wait on."""
    assert callable(condition)
    with trio.fail_after(10):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.001)


def test_reserve_allocates_blocks_and_keeps_the_size(local_fd: int) -> None:
    os.pwrite(local_fd, b"x" * 100, 0)
    reserve(local_fd, 0, 4 * MiB)
    assert os.fstat(local_fd).st_size == 100
    assert allocated(local_fd) >= 4 * MiB


def test_reserve_on_a_pipe_is_an_oserror() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(OSError, match="Illegal seek") as caught:
            reserve(w, 0, MiB)
        assert caught.value.errno == errno.ESPIPE
    finally:
        os.close(r)
        os.close(w)


def test_for_copy_leaves_small_copies_alone(local_fd: int) -> None:
    assert Reserver.for_copy(local_fd, 0, 2 * _reserve.RESERVE_STEP - 1) is None
    assert Reserver.for_copy(local_fd, 0, 2 * _reserve.RESERVE_STEP) is not None


async def test_reserver_stays_ahead_of_what_is_wanted_and_stops_at_the_end(
    local_fd: int, small_steps: None
) -> None:
    reserver = Reserver(local_fd, 0, 6 * MiB)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reserver.run)
        await wait_for(lambda: reserver.reserved_to == 2 * MiB)  # AHEAD from the start
        await trio.sleep(0.05)
        assert reserver.reserved_to == 2 * MiB  # and no further until asked
        reserver.want(MiB // 2)  # ahead would be 2.5 MiB: only whole steps are taken
        await trio.sleep(0.05)
        assert reserver.reserved_to == 2 * MiB
        reserver.want(1 * MiB)
        await wait_for(lambda: reserver.reserved_to == 3 * MiB)
        reserver.want(5 * MiB)  # ahead would be 7 MiB: capped at the end
        await wait_for(lambda: reserver.reserved_to == 6 * MiB)
    # run() returned by itself at the end
    assert reserver.used
    assert allocated(local_fd) >= 6 * MiB
    assert os.fstat(local_fd).st_size == 0
    os.pwrite(local_fd, b"y" * 1000, 0)
    reserver.release()
    assert os.fstat(local_fd).st_size == 1000
    assert allocated(local_fd) <= 64 << 10  # what was written, not the reservation
    assert os.pread(local_fd, 1000, 0) == b"y" * 1000


async def test_finish_stops_the_reserver_short_of_the_end(local_fd: int, small_steps: None) -> None:
    reserver = Reserver(local_fd, 0, 100 * MiB)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reserver.run)
        await wait_for(lambda: reserver.reserved_to == 2 * MiB)
        reserver.finish()
    assert reserver.reserved_to == 2 * MiB
    reserver.release()
    assert allocated(local_fd) == 0


async def test_a_failing_fallocate_ends_reserving_quietly(small_steps: None) -> None:
    r, w = os.pipe()
    try:
        reserver = Reserver(w, 0, 10 * MiB)
        with trio.fail_after(10):
            await reserver.run()  # ESPIPE: returns, nothing raised
        assert not reserver.used
        assert reserver.reserved_to == 0
        reserver.release()  # nothing reserved: no truncate of a pipe
    finally:
        os.close(r)
        os.close(w)


async def test_cancelling_the_reserver_waits_for_the_call_in_the_thread(
    local_fd: int, small_steps: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fd must stay valid while a worker thread uses it: cancellation waits for the call.
    started = threading.Event()
    finished: list[float] = []

    def slow_reserve(fd: int, offset: int, length: int) -> None:
        started.set()
        time.sleep(0.2)
        finished.append(time.monotonic())

    monkeypatch.setattr(_reserve, "reserve", slow_reserve)
    reserver = Reserver(local_fd, 0, 10 * MiB)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reserver.run)
        await trio.to_thread.run_sync(started.wait)
        nursery.cancel_scope.cancel()
    returned = time.monotonic()
    assert finished
    assert finished[0] <= returned
    # the call ran to its end, so it counts (and release() will give it back)
    assert reserver.used
    assert reserver.reserved_to == 1 * MiB
