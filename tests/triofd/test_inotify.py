"""inotify against the real kernel: every mask bit, str/bytes paths, watch flags, overflow."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
import trio

from triofd import Inotify, InotifyEvent, InotifyMask, InotifyOverflowError, parse_mask

M = InotifyMask


def drain(ino: Inotify) -> list[InotifyEvent]:
    """Everything queued now (inotify queues events before the system call returns)."""
    events = []
    while True:
        try:
            events.append(ino.receive_nowait())
        except trio.WouldBlock:
            return events


def touch(path: Path) -> None:
    path.write_bytes(b"data")


# Each action runs in a directory holding a file "f" and a subdirectory "sub"; the watch is on
# the directory unless the name says "self".
ACTIONS: dict[str, tuple[M, Callable[[Path], object], str]] = {
    "access": (M.ACCESS, lambda d: (d / "f").read_bytes(), "f"),
    "modify": (M.MODIFY, lambda d: (d / "f").write_bytes(b"more"), "f"),
    "attrib": (M.ATTRIB, lambda d: os.chmod(d / "f", 0o600), "f"),
    "close_write": (M.CLOSE_WRITE, lambda d: os.close(os.open(d / "f", os.O_WRONLY)), "f"),
    "close_nowrite": (M.CLOSE_NOWRITE, lambda d: os.close(os.open(d / "f", os.O_RDONLY)), "f"),
    "open": (M.OPEN, lambda d: os.close(os.open(d / "f", os.O_RDONLY)), "f"),
    "moved_from": (M.MOVED_FROM, lambda d: os.rename(d / "f", d / "g"), "f"),
    "moved_to": (M.MOVED_TO, lambda d: os.rename(d / "f", d / "g"), "g"),
    "create": (M.CREATE, lambda d: touch(d / "new"), "new"),
    "delete": (M.DELETE, lambda d: os.unlink(d / "f"), "f"),
    "is_dir": (M.CREATE, lambda d: os.mkdir(d / "newdir"), "newdir"),
}


@pytest.mark.parametrize("helper", sorted(ACTIONS))
async def test_each_event_bit_is_reported_with_name_path_and_helper(
    tmp_watch_dir: Path, helper: str
) -> None:
    bit, action, name = ACTIONS[helper]
    touch(tmp_watch_dir / "f")
    (tmp_watch_dir / "sub").mkdir()
    async with Inotify() as ino:
        wd = ino.add_watch(str(tmp_watch_dir), bit)
        action(tmp_watch_dir)
        events = drain(ino)
    assert events, f"no event for {bit!r}"
    event = events[0]
    assert event.wd == wd
    assert event.mask & bit
    assert event.name == name
    assert event.path == os.path.join(str(tmp_watch_dir), name)
    assert getattr(event, helper) is True
    assert event.is_dir is (helper == "is_dir")


async def test_delete_self_and_move_self_on_the_watched_object(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    async with Inotify() as ino:
        ino.add_watch(victim, M.MOVE_SELF | M.DELETE_SELF)
        os.rename(victim, tmp_path / "moved")
        os.rmdir(tmp_path / "moved")
        events = drain(ino)
    assert [e.names for e in events] == [["MOVE_SELF"], ["DELETE_SELF"], ["IGNORED"]]
    assert events[0].move_self
    assert events[1].delete_self
    assert events[2].ignored
    assert events[0].name == ""
    assert events[0].path == str(victim)


async def test_close_helper_covers_both_close_bits(tmp_watch_dir: Path) -> None:
    touch(tmp_watch_dir / "f")
    async with Inotify() as ino:
        ino.add_watch(tmp_watch_dir, M.CLOSE)
        os.close(os.open(tmp_watch_dir / "f", os.O_RDONLY))
        os.close(os.open(tmp_watch_dir / "f", os.O_WRONLY))
        events = drain(ino)
    assert [e.names for e in events] == [["CLOSE_NOWRITE"], ["CLOSE_WRITE"]]
    assert all(e.close for e in events)


def test_unmount_event_then_ignored(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "none", str(mnt)], check=True)
    try:
        (mnt / "inside").mkdir()
        ino = Inotify()
        ino.add_watch(mnt / "inside", M.ALL_EVENTS)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    with closing(ino):
        events = drain(ino)
    assert [e.names for e in events] == [["UNMOUNT", "ISDIR"], ["IGNORED"]]
    assert events[0].unmount
    assert events[1].ignored
    assert ino.watches == {}


async def test_rm_watch_delivers_ignored_and_forgets_the_wd(tmp_watch_dir: Path) -> None:
    async with Inotify() as ino:
        wd = ino.add_watch(tmp_watch_dir)
        assert ino.watches == {wd: str(tmp_watch_dir)}
        ino.rm_watch(wd)
        (event,) = drain(ino)
        assert event.ignored
        assert event.wd == wd
        assert event.path == str(tmp_watch_dir)
        assert ino.watches == {}


async def test_bytes_watch_gives_bytes_names_and_paths(tmp_watch_dir: Path) -> None:
    raw_name = b"caf\xe9-not-utf8"
    async with Inotify() as ino:
        ino.add_watch(os.fsencode(tmp_watch_dir), M.CREATE)
        ino.add_watch(tmp_watch_dir / "..", M.CREATE)  # str watch on the parent
        os.close(os.open(os.fsencode(tmp_watch_dir) + b"/" + raw_name, os.O_CREAT | os.O_WRONLY))
        os.mkdir(tmp_watch_dir.parent / "sibling")
        by_bytes, by_str = drain(ino)
    assert by_bytes.name == raw_name
    assert by_bytes.path == os.fsencode(tmp_watch_dir) + b"/" + raw_name
    assert by_str.name == "sibling"
    assert isinstance(by_str.path, str)


async def test_str_watch_decodes_undecodable_names_with_surrogateescape(
    tmp_watch_dir: Path,
) -> None:
    raw_name = b"\xff\xfe"
    async with Inotify() as ino:
        ino.add_watch(str(tmp_watch_dir), M.CREATE)
        os.close(os.open(os.fsencode(tmp_watch_dir) + b"/" + raw_name, os.O_CREAT | os.O_WRONLY))
        (event,) = drain(ino)
    assert isinstance(event.name, str)
    assert os.fsencode(event.name) == raw_name


async def test_oneshot_reports_once_then_ignored(tmp_watch_dir: Path) -> None:
    async with Inotify() as ino:
        ino.add_watch(tmp_watch_dir, M.CREATE | M.ONESHOT)
        touch(tmp_watch_dir / "a")
        touch(tmp_watch_dir / "b")
        events = drain(ino)
    assert [(e.names, e.name) for e in events] == [(["CREATE"], "a"), (["IGNORED"], "")]


async def test_mask_add_combines_and_mask_create_refuses_existing(tmp_watch_dir: Path) -> None:
    async with Inotify() as ino:
        wd = ino.add_watch(tmp_watch_dir, M.CREATE)
        assert ino.add_watch(tmp_watch_dir, M.DELETE | M.MASK_ADD) == wd
        touch(tmp_watch_dir / "a")
        os.unlink(tmp_watch_dir / "a")
        assert [e.names for e in drain(ino)] == [["CREATE"], ["DELETE"]]
        with pytest.raises(FileExistsError):
            ino.add_watch(tmp_watch_dir, M.CREATE | M.MASK_CREATE)


async def test_onlydir_refuses_a_file_and_dont_follow_watches_the_link(tmp_path: Path) -> None:
    target = tmp_path / "target"
    touch(target)
    link = tmp_path / "link"
    link.symlink_to(target)
    async with Inotify() as ino:
        with pytest.raises(NotADirectoryError):
            ino.add_watch(target, M.ATTRIB | M.ONLYDIR)
        ino.add_watch(link, M.ATTRIB | M.DONT_FOLLOW)
        os.chmod(target, 0o600)  # the target's attributes: not the link's
        assert drain(ino) == []
        os.utime(link, follow_symlinks=False)
        assert [e.names for e in drain(ino)] == [["ATTRIB"]]


async def test_excl_unlink_stops_events_for_unlinked_children(tmp_watch_dir: Path) -> None:
    async with Inotify() as ino:
        ino.add_watch(tmp_watch_dir, M.MODIFY | M.EXCL_UNLINK)
        fd = os.open(tmp_watch_dir / "f", os.O_CREAT | os.O_WRONLY)
        try:
            drain(ino)
            os.unlink(tmp_watch_dir / "f")
            os.write(fd, b"after unlink")
        finally:
            os.close(fd)
        assert drain(ino) == []


async def test_receive_waits_for_an_event(tmp_watch_dir: Path) -> None:
    async with Inotify() as ino:
        ino.add_watch(tmp_watch_dir, M.CREATE)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, touch, tmp_watch_dir / "late")
            event = await ino.receive()
    assert event.name == "late"
    assert event.create


async def test_async_for_over_a_burst_is_cancellable_and_loses_nothing(
    tmp_watch_dir: Path,
) -> None:
    touch(tmp_watch_dir / "f")
    async with Inotify() as ino:
        ino.add_watch(tmp_watch_dir, M.OPEN | M.CLOSE_NOWRITE)
        _flood(tmp_watch_dir, 500)
        iterated = 0
        with trio.CancelScope() as scope:
            async for _ in ino:
                iterated += 1
                if iterated == 10:
                    scope.cancel()
        assert 10 <= iterated <= 10 + 32  # a cancel point at least every 32 events
        assert iterated + len(drain(ino)) == 1000


async def test_async_for_over_a_long_burst_lets_other_tasks_run(tmp_watch_dir: Path) -> None:
    touch(tmp_watch_dir / "f")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with Inotify(read_size=4096) as ino, trio.open_nursery() as nursery:
        ino.add_watch(tmp_watch_dir, M.OPEN | M.CLOSE_NOWRITE)
        _flood(tmp_watch_dir, 2000)
        nursery.start_soon(ticker)
        await trio.lowlevel.checkpoint()  # the ticker is running
        before = ticks
        count = 0
        async for _ in ino:
            count += 1
            if count == 4000:
                break
        assert ticks - before >= 4000 * 32 // 4096  # at least one yield per kernel read
        nursery.cancel_scope.cancel()


def _flood(directory: Path, opens: int) -> None:
    """2 x opens events that the kernel cannot merge (OPEN, CLOSE_NOWRITE alternate)."""
    path = directory / "f"
    for _ in range(opens):
        os.close(os.open(path, os.O_RDONLY))


def _max_queued_events() -> int:
    return int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())


async def test_overflow_raises_after_every_earlier_event_is_delivered(
    tmp_watch_dir: Path,
) -> None:
    touch(tmp_watch_dir / "f")
    async with Inotify() as ino:
        ino.add_watch(tmp_watch_dir, M.OPEN | M.CLOSE_NOWRITE)
        _flood(tmp_watch_dir, 10_000)  # 20 000 events while nobody reads
        delivered = 0

        async def receive_until_overflow() -> None:
            nonlocal delivered
            while True:
                await ino.receive()
                delivered += 1

        with pytest.raises(InotifyOverflowError, match="overflowed"):
            await receive_until_overflow()
        assert delivered == _max_queued_events()
        assert ino.overflows == 1
        # The channel keeps working after the overflow was reported.
        touch(tmp_watch_dir / "after")
        event = await ino.receive()
        assert event.name == "after"


async def test_overflow_as_event_when_asked(tmp_watch_dir: Path) -> None:
    touch(tmp_watch_dir / "f")
    async with Inotify(overflow="event") as ino:
        ino.add_watch(tmp_watch_dir, M.OPEN | M.CLOSE_NOWRITE)
        _flood(tmp_watch_dir, 10_000)
        events = drain(ino)
    assert len(events) == _max_queued_events() + 1
    last = events[-1]
    assert last.q_overflow
    assert last.wd == -1
    assert last.path is None
    assert not any(e.q_overflow for e in events[:-1])


def test_parse_mask_accepts_names_and_rejects_unknown_words() -> None:
    assert parse_mask("create,IN_MODIFY|close") == M.CREATE | M.MODIFY | M.CLOSE
    assert parse_mask("all_events") == M.ALL_EVENTS
    with pytest.raises(ValueError, match="'bogus'"):
        parse_mask("create,bogus")
    with pytest.raises(ValueError, match="no inotify events"):
        parse_mask(" , ")


def test_constructor_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="overflow"):
        Inotify(overflow="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="read_size"):
        Inotify(read_size=10)
