"""Rename pairing (sans-I/O core and channel) and the recursive watcher, on the real kernel."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from triofd import (
    Inotify,
    InotifyEvent,
    InotifyMask,
    RecursiveInotify,
    RenameEvent,
    RenamePairer,
    RenamePairingChannel,
)

M = InotifyMask


def ev(mask: int, cookie: int = 0, name: str = "x") -> InotifyEvent:
    return InotifyEvent(1, mask, cookie, name, "/w")


# --- RenamePairer (no kernel) -----------------------------------------------------------------


def test_pairer_joins_from_and_to_with_the_same_cookie_in_place() -> None:
    pairer = RenamePairer(timeout=1.0)
    before, moved_from, moved_to, after = (
        ev(M.CREATE),
        ev(M.MOVED_FROM, 7, "a"),
        ev(M.MOVED_TO, 7, "b"),
        ev(M.DELETE),
    )
    pairer.feed(before, 0.0)
    pairer.feed(moved_from, 0.0)
    pairer.feed(after, 0.1)
    assert pairer.ready(0.2) == [before]  # `after` waits behind the pending MOVED_FROM
    pairer.feed(moved_to, 0.3)
    assert pairer.ready(0.3) == [RenameEvent(moved_from, moved_to), after]
    assert pairer.next_deadline() == float("inf")


def test_pairer_releases_an_unpaired_moved_from_as_a_move_out_at_its_deadline() -> None:
    pairer = RenamePairer(timeout=0.5)
    moved_from = ev(M.MOVED_FROM, 9)
    pairer.feed(moved_from, 10.0)
    assert pairer.next_deadline() == 10.5
    assert pairer.ready(10.49) == []
    assert pairer.ready(10.5) == [moved_from]
    late_to = ev(M.MOVED_TO, 9)  # a partner after the deadline is a move-in
    pairer.feed(late_to, 11.0)
    assert pairer.ready(11.0) == [late_to]


def test_pairer_bounds_how_many_moved_from_it_holds() -> None:
    pairer = RenamePairer(timeout=100.0, max_pending=3)
    events = [ev(M.MOVED_FROM, cookie) for cookie in range(1, 6)]
    for event in events:
        pairer.feed(event, 0.0)
    assert pairer.ready(0.0) == events[:2]  # the two oldest were released early
    assert pairer.flush() == events[2:]


def test_pairer_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="timeout"):
        RenamePairer(timeout=-1)
    with pytest.raises(ValueError, match="max_pending"):
        RenamePairer(max_pending=0)


# --- RenamePairingChannel on the kernel -------------------------------------------------------


async def test_rename_inside_the_watch_becomes_one_rename_event(tmp_watch_dir: Path) -> None:
    (tmp_watch_dir / "old").write_bytes(b"")
    (tmp_watch_dir / "d1").mkdir()
    ino = Inotify()
    ino.add_watch(tmp_watch_dir, M.MOVE | M.CREATE)
    ino.add_watch(tmp_watch_dir / "d1", M.MOVE)
    async with RenamePairingChannel(ino) as renames:
        os.rename(tmp_watch_dir / "old", tmp_watch_dir / "d1" / "new")
        (tmp_watch_dir / "after").write_bytes(b"")
        first = await renames.receive()
        second = await renames.receive()
    assert isinstance(first, RenameEvent)
    assert first.old.path == str(tmp_watch_dir / "old")
    assert first.new.path == str(tmp_watch_dir / "d1" / "new")
    assert first.cookie != 0
    assert not first.is_dir
    assert isinstance(second, InotifyEvent)
    assert second.name == "after"


async def test_move_out_of_the_watch_is_delivered_after_the_timeout(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    (watched / "leaving").write_bytes(b"")
    ino = Inotify()
    ino.add_watch(watched, M.MOVE)
    async with RenamePairingChannel(ino, timeout=5.0) as renames:
        os.rename(watched / "leaving", tmp_path / "gone")
        start = trio.current_time()
        event = await renames.receive()
        assert trio.current_time() - start == pytest.approx(5.0)
    assert isinstance(event, InotifyEvent)
    assert event.moved_from
    assert event.name == "leaving"


async def test_move_into_the_watch_passes_through_at_once(tmp_path: Path) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    (tmp_path / "outside").write_bytes(b"")
    ino = Inotify()
    ino.add_watch(watched, M.MOVE)
    async with RenamePairingChannel(ino) as renames:
        os.rename(tmp_path / "outside", watched / "inside")
        event = renames.receive_nowait()
    assert isinstance(event, InotifyEvent)
    assert event.moved_to
    assert event.name == "inside"


# --- RecursiveInotify -------------------------------------------------------------------------


async def test_recursive_watch_reports_existing_tree_changes(tmp_watch_dir: Path) -> None:
    (tmp_watch_dir / "a" / "b").mkdir(parents=True)
    async with RecursiveInotify(M.CREATE) as rec:
        assert rec.add_tree(tmp_watch_dir) == 3
        (tmp_watch_dir / "a" / "b" / "deep").write_bytes(b"")
        event = await rec.receive()
    assert event.path == str(tmp_watch_dir / "a" / "b" / "deep")


def _produce_nested_trees(root: Path, trees: int, files: int, started: threading.Event) -> set[str]:
    """mkdir -p t/x/y/z then files at every level, as fast as possible (racing the watcher)."""
    made: set[str] = set()
    started.set()
    for t in range(trees):
        deepest = root / f"t{t}" / "x" / "y" / "z"
        deepest.mkdir(parents=True)
        level = root / f"t{t}"
        made.update(str(p) for p in (level, level / "x", level / "x" / "y", deepest))
        for directory in (level, level / "x", level / "x" / "y", deepest):
            for f in range(files):
                path = directory / f"f{f}"
                path.write_bytes(b"")
                made.add(str(path))
    return made


async def test_recursive_watch_misses_no_file_created_in_new_nested_directories(
    tmp_watch_dir: Path,
) -> None:
    seen: dict[str, int] = {}
    expected: set[str] | None = None
    all_seen = trio.Event()
    async with RecursiveInotify(M.CREATE) as rec:
        rec.add_tree(tmp_watch_dir)
        started = threading.Event()
        async with trio.open_nursery() as nursery:

            async def consume() -> None:
                async for event in rec:
                    assert isinstance(event.path, str)
                    seen[event.path] = seen.get(event.path, 0) + 1
                    if expected is not None and expected <= seen.keys():
                        all_seen.set()

            nursery.start_soon(consume)
            made = await trio.to_thread.run_sync(
                _produce_nested_trees, tmp_watch_dir, 60, 5, started
            )
            expected = made
            if made <= seen.keys():
                all_seen.set()
            with trio.fail_after(20):
                await all_seen.wait()
            nursery.cancel_scope.cancel()
    assert made <= seen.keys()
    assert set(seen) == made
    assert max(seen.values()) == 1, "an entry was reported twice"


async def test_recursive_watch_follows_a_renamed_directory(tmp_watch_dir: Path) -> None:
    (tmp_watch_dir / "old" / "inner").mkdir(parents=True)
    async with RecursiveInotify(M.CREATE | M.MOVE) as rec:
        rec.add_tree(tmp_watch_dir)
        os.rename(tmp_watch_dir / "old", tmp_watch_dir / "new")
        assert [e.names for e in [await rec.receive(), await rec.receive()]] == [
            ["MOVED_FROM", "ISDIR"],
            ["MOVED_TO", "ISDIR"],
        ]
        (tmp_watch_dir / "new" / "inner" / "f").write_bytes(b"")
        event = await rec.receive()
    assert event.path == str(tmp_watch_dir / "new" / "inner" / "f")


async def test_recursive_watch_scans_a_directory_moved_in(tmp_path: Path) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    (tmp_path / "outside" / "sub").mkdir(parents=True)
    (tmp_path / "outside" / "sub" / "f").write_bytes(b"")
    async with RecursiveInotify(M.CREATE | M.MOVED_TO) as rec:
        rec.add_tree(watched)
        os.rename(tmp_path / "outside", watched / "inside")
        paths = [(await rec.receive()).path for _ in range(3)]
        (watched / "inside" / "sub" / "g").write_bytes(b"")
        paths.append((await rec.receive()).path)
    assert paths == [
        str(watched / "inside"),
        str(watched / "inside" / "sub"),
        str(watched / "inside" / "sub" / "f"),
        str(watched / "inside" / "sub" / "g"),
    ]
