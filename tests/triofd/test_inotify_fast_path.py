"""The per-event path of ``Inotify``: records parsed as they are received, names reused.

``async for`` inlines the parse that ``receive()``/``receive_nowait()`` use; these tests hold the
two to the same output, and check what the lazy parse promises: no event object before it is
asked for (so no garbage collection during a drain), paths from the watch table as it stands on
delivery, and a run of events on one name decoding it once, never mixing str and bytes.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import trio

from triofd import Inotify, InotifyEvent, InotifyMask

M = InotifyMask
MASK = M.CREATE | M.OPEN | M.CLOSE_NOWRITE | M.DELETE | M.ATTRIB


def drain(ino: Inotify) -> list[InotifyEvent]:
    events = []
    while True:
        try:
            events.append(ino.receive_nowait())
        except trio.WouldBlock:
            return events


def _variety(directory: Path) -> None:
    """Events with no name, short, long (255 bytes), multi-byte and repeated names."""
    names = ["f", "é" * 10, "x" * 255, "f", "ünï.txt", "f"]
    for name in names:
        path = directory / name
        path.touch()
        os.close(os.open(path, os.O_RDONLY))
    os.chmod(directory, 0o755)  # ATTRIB on the watched directory itself: no name
    for name in set(names):
        os.unlink(directory / name)


def _shape(event: InotifyEvent) -> tuple[int, int, str | bytes, str | bytes | None]:
    return event.mask, event.cookie, event.name, event.path


async def test_async_for_and_receive_nowait_give_identical_events(tmp_path: Path) -> None:
    with Inotify() as by_iteration, Inotify() as by_receive:
        watched = tmp_path / "w"
        watched.mkdir()
        wd_iter = by_iteration.add_watch(watched, MASK)
        by_receive.add_watch(watched, MASK)
        _variety(watched)
        by_iteration.rm_watch(wd_iter)
        expected = [_shape(event) for event in drain(by_receive)]
        got = []
        async for event in by_iteration:
            got.append(_shape(event))
            if event.ignored:
                break
    assert len(expected) >= 20
    assert got == [*expected, (M.IGNORED, 0, "", str(watched))]
    assert wd_iter not in by_iteration.watches  # IN_IGNORED handled on the fast path too


async def test_async_for_builds_no_event_ahead_so_a_drain_never_collects_garbage(
    tmp_watch_dir: Path,
) -> None:
    (tmp_watch_dir / "f").touch()
    with Inotify() as ino:
        ino.add_watch(tmp_watch_dir, M.OPEN | M.CLOSE_NOWRITE)
        for _ in range(5000):  # 10 000 events, ~14 gen-0 collections if built as a batch
            os.close(os.open(tmp_watch_dir / "f", os.O_RDONLY))
        collections = 0

        def count(phase: str, info: dict[str, int]) -> None:
            nonlocal collections
            if phase == "start":
                collections += 1

        gc.callbacks.append(count)
        try:
            received = 0
            async for _ in ino:
                received += 1
                if received == 10_000:
                    break
        finally:
            gc.callbacks.remove(count)
    assert collections <= 2


async def test_events_read_but_not_yet_received_follow_a_rebase(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    with Inotify() as ino:
        ino.add_watch(old, M.CREATE)
        (old / "a").touch()
        (old / "b").touch()
        first = ino.receive_nowait()  # one read took both records from the kernel
        old.rename(new)
        ino.rebase_watches(str(old), str(new))
        second = ino.receive_nowait()
    assert first.path == str(old / "a")
    assert second.path == str(new / "b")


async def test_a_run_of_events_on_one_name_shares_one_decoded_name(tmp_watch_dir: Path) -> None:
    with Inotify() as ino:
        ino.add_watch(tmp_watch_dir, M.CREATE | M.OPEN | M.CLOSE_NOWRITE | M.DELETE)
        for name in ("é", "é", "x", "é"):
            path = tmp_watch_dir / name
            path.touch()
            os.close(os.open(path, os.O_RDONLY))
            path.unlink()
        events = []
        async for event in ino:
            events.append(event)
            if len(events) == 16:
                break
    assert [e.name for e in events] == ["é"] * 8 + ["x"] * 4 + ["é"] * 4
    assert all(e.name is events[0].name for e in events[1:8])  # decoded once for the run
    assert events[12].name == events[0].name  # and again, correctly, after another name


async def test_str_and_bytes_watches_in_one_instance_keep_their_own_name_types(
    tmp_path: Path,
) -> None:
    as_str, as_bytes = tmp_path / "s", tmp_path / "b"
    as_str.mkdir()
    as_bytes.mkdir()
    with Inotify() as ino:
        ino.add_watch(as_str, M.CREATE)
        ino.add_watch(os.fsencode(as_bytes), M.CREATE)
        for _ in range(2):
            for directory in (as_str, as_bytes):
                (directory / "same").touch()
                (directory / "same").unlink()
        events = []
        async for event in ino:
            events.append((event.name, event.path))
            if len(events) == 4:
                break
    s, b = ("same", str(as_str / "same")), (b"same", os.fsencode(as_bytes / "same"))
    assert events == [s, b, s, b]
