"""The ``trio.abc.ReceiveChannel`` contract, checked for every triofd kernel object.

Each subject knows how to make one item arrive (``trigger``); the same tests then check
checkpoints, ``receive_nowait``/``WouldBlock``, two receivers, closing under a waiter, async
iteration, cancellation losing nothing, and fds after 10 000 open/close cycles.
"""

from __future__ import annotations

import os
import select
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import triofd
from triofd.testing import FdLeakError, assert_no_fd_leak

_names = count()


@dataclass
class Subject:
    channel: Any
    trigger: Callable[[], Awaitable[None]]
    cleanup: list[Callable[[], None]] = field(default_factory=list)


def _until_readable(fd: int) -> None:
    """Block (briefly) until ``fd`` polls readable, without touching Trio's own wait on it."""
    assert select.select([fd], [], [], 10)[0], "the item never arrived"


async def _sync(action: Callable[[], object]) -> None:
    action()


def make_inotify(tmp: Path) -> Subject:
    ino = triofd.Inotify()
    ino.add_watch(tmp, triofd.InotifyMask.CREATE)
    return Subject(ino, lambda: _sync(lambda: (tmp / f"f{next(_names)}").touch()))


def make_recursive(tmp: Path) -> Subject:
    rec = triofd.RecursiveInotify(triofd.InotifyMask.CREATE)
    rec.add_tree(tmp)
    return Subject(rec, lambda: _sync(lambda: (tmp / f"d{next(_names)}").mkdir()))


def make_rename_pairing(tmp: Path) -> Subject:
    ino = triofd.Inotify()
    ino.add_watch(tmp, triofd.InotifyMask.CREATE)
    channel = triofd.RenamePairingChannel(ino)
    return Subject(channel, lambda: _sync(lambda: (tmp / f"f{next(_names)}").touch()))


def make_fanotify(tmp: Path) -> Subject:
    target = tmp / "f"
    target.write_bytes(b"")
    fan = triofd.Fanotify(triofd.FanInit.REPORT_FID)
    fan.add_mark(tmp, triofd.FanEvent.CREATE | triofd.FanEvent.EVENT_ON_CHILD)
    return Subject(fan, lambda: _sync(lambda: (tmp / f"f{next(_names)}").touch()))


def make_eventfd(tmp: Path) -> Subject:
    efd = triofd.EventFd()
    return Subject(efd, lambda: _sync(lambda: efd.send_nowait(1)))


def make_timer(tmp: Path) -> Subject:
    timer = triofd.Timer()

    async def fire() -> None:
        timer.set(0.000_001)
        _until_readable(timer.fileno())

    return Subject(timer, fire)


def make_signalfd(tmp: Path) -> Subject:
    receiver = triofd.SignalReceiver([signal.SIGUSR2])
    # Thread-directed, so only this (blocking) thread can get it: never the default action.
    return Subject(
        receiver, lambda: _sync(lambda: signal.pthread_kill(threading.get_ident(), signal.SIGUSR2))
    )


def make_pidfd(tmp: Path) -> Subject:
    pid = os.posix_spawn("/bin/sleep", ["sleep", "60"], os.environ)
    channel = triofd.Pidfd(pid)

    async def kill() -> None:
        os.kill(pid, signal.SIGKILL)
        _until_readable(channel.fileno())

    def reap() -> None:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass

    return Subject(channel, kill, [reap])


FACTORIES: dict[str, Callable[[Path], Subject]] = {
    "inotify": make_inotify,
    "recursive_inotify": make_recursive,
    "rename_pairing": make_rename_pairing,
    "fanotify": make_fanotify,
    "eventfd": make_eventfd,
    "timerfd": make_timer,
    "signalfd": make_signalfd,
    "pidfd": make_pidfd,
}


@pytest.fixture(params=sorted(FACTORIES))
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    made = FACTORIES[request.param](tmp_path)
    yield made
    made.channel.close()
    for cleanup in made.cleanup:
        cleanup()


def _release(item: object) -> None:
    close = getattr(item, "close", None)
    if callable(close):
        close()  # fanotify events own fds


async def test_receive_of_a_ready_item_is_a_checkpoint(subject: Subject) -> None:
    await subject.trigger()
    with trio.testing.assert_checkpoints():
        _release(await subject.channel.receive())


async def test_receive_nowait_raises_wouldblock_when_empty(subject: Subject) -> None:
    with pytest.raises(trio.WouldBlock):
        subject.channel.receive_nowait()
    await subject.trigger()
    _release(subject.channel.receive_nowait())


async def test_receive_waits_until_an_item_arrives(subject: Subject) -> None:
    async with trio.open_nursery() as nursery:
        got: list[object] = []

        async def receiver() -> None:
            got.append(await subject.channel.receive())

        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        await subject.trigger()
    assert len(got) == 1
    _release(got[0])


async def test_second_receiver_gets_busy_resource_error(subject: Subject) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(subject.channel.receive)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await subject.channel.receive()
        nursery.cancel_scope.cancel()


async def test_closing_wakes_a_waiting_receiver_with_closed_resource_error(
    subject: Subject,
) -> None:
    async with trio.open_nursery() as nursery:
        failures: list[BaseException] = []

        async def receiver() -> None:
            try:
                await subject.channel.receive()
            except trio.ClosedResourceError as exc:
                failures.append(exc)

        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        with trio.testing.assert_checkpoints():
            await subject.channel.aclose()
    assert len(failures) == 1
    with pytest.raises(trio.ClosedResourceError):
        await subject.channel.receive()
    with pytest.raises(trio.ClosedResourceError):
        subject.channel.receive_nowait()


async def test_cancelled_receive_loses_nothing(subject: Subject) -> None:
    with trio.move_on_after(0.01):
        await subject.channel.receive()
    await subject.trigger()
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await subject.channel.receive()  # cancelled before it could take the item
    _release(await subject.channel.receive())


async def test_async_with_closes_and_async_for_yields_items(subject: Subject) -> None:
    async with subject.channel as channel:
        await subject.trigger()
        async for item in channel:
            _release(item)
            break
    with pytest.raises(trio.ClosedResourceError):
        subject.channel.receive_nowait()


BARE: dict[str, Callable[[], Any]] = {
    "inotify": triofd.Inotify,
    "fanotify": triofd.Fanotify,
    "eventfd": triofd.EventFd,
    "timerfd": triofd.Timer,
    "signalfd": lambda: triofd.SignalReceiver([signal.SIGUSR2]),
}


@pytest.mark.parametrize("kind", sorted(BARE))
def test_ten_thousand_open_close_cycles_leak_no_fd(kind: str) -> None:
    with assert_no_fd_leak():
        for _ in range(10_000):
            BARE[kind]().close()


@pytest.mark.parametrize("kind", ["inotify", "recursive_inotify", "fanotify"])
def test_open_watch_close_cycles_leak_no_fd(kind: str, tmp_path: Path) -> None:
    # Fewer cycles: the kernel waits for an SRCU grace period (~8 ms) when a group with marks
    # is destroyed, so 10 000 of them would take over a minute.
    with assert_no_fd_leak():
        for _ in range(100):
            FACTORIES[kind](tmp_path).channel.close()


def test_pidfd_open_close_cycles_leak_no_fd() -> None:
    with assert_no_fd_leak():
        for _ in range(10_000):
            triofd.Pidfd(os.getpid(), reap=False).close()


def test_no_fd_leak_fixture_accepts_objects_that_were_closed(
    no_fd_leak: None, tmp_watch_dir: Path
) -> None:
    for factory in (make_inotify, make_fanotify, make_eventfd):
        factory(tmp_watch_dir).channel.close()


def test_fd_leak_checker_names_the_leaked_fd() -> None:
    kept: list[triofd.EventFd] = []
    try:
        pattern = r"1 fd\(s\) leaked: \d+ -> anon_inode:\[eventfd\]"
        with pytest.raises(FdLeakError, match=pattern), assert_no_fd_leak():
            kept.append(triofd.EventFd())
    finally:
        for channel in kept:
            channel.close()
