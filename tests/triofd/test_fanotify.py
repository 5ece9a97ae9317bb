"""fanotify against the real kernel (root): fd events, FID/DFID_NAME/RENAME records, permissions."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import trio

from triofd import (
    FanEvent,
    FanInit,
    FanMark,
    Fanotify,
    FanotifyEvent,
    FanotifyOverflowError,
    FidRecord,
    InfoType,
    fanotify_supports,
)
from triofd.testing import open_fds

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="fanotify fd mode needs root")


def drain(fan: Fanotify) -> list[FanotifyEvent]:
    events = []
    while True:
        try:
            events.append(fan.receive_nowait())
        except trio.WouldBlock:
            return events


async def test_notification_event_carries_an_owned_fd_resolving_to_the_path(
    tmp_watch_dir: Path,
) -> None:
    target = tmp_watch_dir / "f"
    target.write_bytes(b"x")
    async with Fanotify() as fan:
        fan.add_mark(target, FanEvent.CLOSE_WRITE | FanEvent.OPEN)
        os.close(os.open(target, os.O_WRONLY | os.O_APPEND))
        events = drain(fan)
        # fanotify merges events on one object that nobody has read yet.
        assert [e.flags for e in events] == [FanEvent.OPEN | FanEvent.CLOSE_WRITE]
        for event in events:
            assert event.pid == os.getpid()
            assert event.path == str(target)
            assert event.fd in open_fds()
            fd = event.fd
            event.close()
            assert fd not in open_fds() or open_fds()[fd] != str(target)
            assert event.path is None
        assert events[0].open
        assert events[0].close_write
        assert events[0].close_event


async def test_queued_events_fds_are_closed_with_the_channel(tmp_watch_dir: Path) -> None:
    first, second = tmp_watch_dir / "a", tmp_watch_dir / "b"
    first.write_bytes(b"")
    second.write_bytes(b"")
    before = set(open_fds())
    fan = Fanotify()
    fan.add_mark(first, FanEvent.OPEN)
    fan.add_mark(second, FanEvent.OPEN)
    first.read_bytes()
    second.read_bytes()  # two objects: two events, two fds
    with fan.receive_nowait() as received:
        assert received.path == str(first)
    assert len(fan._pending) == 1  # the second event (and its fd) is queued in the channel
    queued_fd = fan._pending[0].fd
    assert open_fds()[queued_fd] == str(second)
    fan.close()
    assert set(open_fds()) == before


async def test_mount_and_filesystem_marks_see_events_on_any_path(tmp_path: Path) -> None:
    target = tmp_path / "anything"
    async with Fanotify() as fan:
        fan.add_mark(tmp_path, FanEvent.CLOSE_WRITE, FanMark.MOUNT)
        target.write_bytes(b"")
        events = [e for e in drain(fan) if e.path == str(target)]
        assert events
        assert events[0].close_write
        for e in events:
            e.close()
    async with Fanotify(FanInit.REPORT_FID) as fan:
        fan.add_mark(tmp_path, FanEvent.CREATE | FanEvent.ONDIR, FanMark.FILESYSTEM)
        (tmp_path / "newdir").mkdir()
        events = drain(fan)
        assert any(e.on_dir and e.flags & FanEvent.CREATE for e in events)


async def test_fid_and_dfid_name_records_identify_object_and_name(tmp_watch_dir: Path) -> None:
    flags = FanInit.REPORT_FID | FanInit.REPORT_DFID_NAME
    async with Fanotify(flags) as fan:
        fan.add_mark(tmp_watch_dir, FanEvent.CREATE | FanEvent.DELETE | FanEvent.EVENT_ON_CHILD)
        (tmp_watch_dir / "doomed").write_bytes(b"")
        drain(fan)
        (tmp_watch_dir / "child").write_bytes(b"")
        os.unlink(tmp_watch_dir / "doomed")
        create, delete = drain(fan)
    assert (create.name, delete.name) == (b"child", b"doomed")
    for event in (create, delete):
        assert event.fd == -1
        assert event.path is None
        dfid = event.dfid_name
        assert isinstance(dfid, FidRecord)
        assert dfid.info_type == InfoType.DFID_NAME
        assert len(dfid.fsid) == 8
        assert len(dfid.handle) > 0
    # The same directory has the same handle in both events.
    assert create.dfid_name is not None
    assert delete.dfid_name is not None
    assert create.dfid_name.handle == delete.dfid_name.handle


async def test_fid_only_reports_the_object_handle(tmp_watch_dir: Path) -> None:
    target = tmp_watch_dir / "f"
    target.write_bytes(b"")
    async with Fanotify(FanInit.REPORT_FID) as fan:
        fan.add_mark(target, FanEvent.MODIFY)
        target.write_bytes(b"changed")
        (event,) = drain(fan)
    assert event.fid is not None
    assert event.fid.info_type == InfoType.FID
    assert event.name is None


async def test_rename_event_reports_old_and_new_names(tmp_watch_dir: Path) -> None:
    if not fanotify_supports(FanInit.REPORT_DFID_NAME | FanInit.REPORT_FID):
        pytest.skip("kernel lacks FAN_REPORT_DFID_NAME")
    (tmp_watch_dir / "before").write_bytes(b"")
    async with Fanotify(FanInit.REPORT_DFID_NAME | FanInit.REPORT_FID) as fan:
        fan.add_mark(tmp_watch_dir, FanEvent.RENAME)
        os.rename(tmp_watch_dir / "before", tmp_watch_dir / "after")
        (event,) = drain(fan)
    assert event.flags & FanEvent.RENAME
    assert event.old_name == b"before"
    assert event.new_name == b"after"
    types = [r.info_type for r in event.records if isinstance(r, FidRecord)]
    assert InfoType.OLD_DFID_NAME in types
    assert InfoType.NEW_DFID_NAME in types


async def test_pidfd_record_is_an_fd_owned_by_the_event(tmp_watch_dir: Path) -> None:
    if not fanotify_supports(FanInit.REPORT_PIDFD):
        pytest.skip("kernel lacks FAN_REPORT_PIDFD")
    target = tmp_watch_dir / "f"
    target.write_bytes(b"")
    async with Fanotify(FanInit.REPORT_PIDFD) as fan:
        fan.add_mark(target, FanEvent.OPEN)
        target.read_bytes()
        (event,) = drain(fan)
        with event:
            assert event.pidfd >= 0
            assert open_fds()[event.pidfd] == "anon_inode:[pidfd]"
            pidfd = event.pidfd
        assert pidfd not in open_fds() or open_fds()[pidfd] != "anon_inode:[pidfd]"


def _open_for_reading(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode()
    except OSError as exc:
        return errno.errorcode[exc.errno or 0]


@pytest.mark.parametrize(("allow", "outcome"), [(False, "EPERM"), (True, "secret")])
async def test_permission_event_answer_decides_the_openers_fate(
    tmp_watch_dir: Path, allow: bool, outcome: str
) -> None:
    target = tmp_watch_dir / "guarded"
    target.write_bytes(b"secret")
    async with Fanotify(FanInit.CLASS_CONTENT) as fan:
        fan.add_mark(target, FanEvent.OPEN_PERM)
        async with trio.open_nursery() as nursery:
            result: list[str] = []

            async def opener() -> None:
                result.append(await trio.to_thread.run_sync(_open_for_reading, target))

            nursery.start_soon(opener)
            with trio.fail_after(10):
                event = await fan.receive()
            with event:
                assert event.is_permission
                assert event.open_perm
                assert event.path == str(target)
                event.respond(allow)
                with pytest.raises(ValueError, match="already answered"):
                    event.respond(allow)
    assert result == [outcome]


async def test_unanswered_permission_event_is_allowed_when_closed(
    tmp_watch_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_watch_dir / "guarded"
    target.write_bytes(b"ok")
    async with Fanotify(FanInit.CLASS_CONTENT) as fan:
        fan.add_mark(target, FanEvent.OPEN_PERM)
        async with trio.open_nursery() as nursery:
            result: list[str] = []

            async def opener() -> None:
                result.append(await trio.to_thread.run_sync(_open_for_reading, target))

            nursery.start_soon(opener)
            with trio.fail_after(10):
                (await fan.receive()).close()
    assert result == ["ok"]
    assert "closed unanswered" in caplog.text


async def test_respond_refuses_a_notification_event(tmp_watch_dir: Path) -> None:
    target = tmp_watch_dir / "f"
    target.write_bytes(b"")
    async with Fanotify() as fan:
        fan.add_mark(target, FanEvent.OPEN)
        target.read_bytes()
        with fan.receive_nowait() as event, pytest.raises(ValueError, match="not a permission"):
            event.deny()


def test_feature_probe_answers_for_known_and_impossible_flags() -> None:
    assert fanotify_supports(FanInit.CLASS_NOTIF) is True
    assert fanotify_supports(0x80000000) is False


def _fanotify_queue_limit() -> int:
    return int(Path("/proc/sys/fs/fanotify/max_queued_events").read_text())


@pytest.mark.slow  # ~2 s: the kernel's merge check makes each of the 17 000 events costly
async def test_queue_overflow_raises_after_the_queued_events(tmp_watch_dir: Path) -> None:
    limit = _fanotify_queue_limit()
    async with Fanotify(FanInit.REPORT_DFID_NAME | FanInit.REPORT_FID) as fan:
        fan.add_mark(tmp_watch_dir, FanEvent.CREATE | FanEvent.EVENT_ON_CHILD)
        for i in range(limit + 500):  # distinct names: the kernel cannot merge them
            os.mknod(tmp_watch_dir / f"n{i}")
        delivered = 0

        async def receive_until_overflow() -> None:
            nonlocal delivered
            while True:
                with await fan.receive():
                    delivered += 1

        with pytest.raises(FanotifyOverflowError, match="overflowed"):
            await receive_until_overflow()
        assert delivered == limit
        os.mknod(tmp_watch_dir / "after")
        with await fan.receive() as event:
            assert event.name == b"after"
