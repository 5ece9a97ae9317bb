"""A recursive inotify watcher that misses no file created in a brand-new directory.

inotify watches one directory, not a tree.  When ``IN_CREATE|IN_ISDIR`` arrives the new directory
may already hold files (``mkdir -p a/b/c && touch a/b/c/f`` races any watcher), so on every new
directory this watcher (1) adds its watch, *then* (2) lists it and synthesises ``IN_CREATE`` for
each entry found, recursing into subdirectories.  An entry created between (1) and (2) is seen
twice — by the listing and by the kernel — so the kernel's ``IN_CREATE`` for a name already
synthesised is dropped.

A directory moved *out* of the tree keeps its watches (inotify cannot say where it went), so
its later events carry its old path; pair renames with :class:`~triofd.RenamePairingChannel` to
see move-outs and ``inotify.rm_watch`` them if that matters.

The listing runs in the Trio thread (``os.scandir`` on a directory that has just been created is
short); a watcher over slow network filesystems should run its own scan with ``trio.to_thread``.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Literal

import trio

from ._inotify import Inotify, InotifyEvent
from ._inotify_flags import InotifyMask

__all__ = ["RecursiveInotify"]

_CREATE = InotifyMask.CREATE.value
_MOVED_TO = InotifyMask.MOVED_TO.value
_ISDIR = InotifyMask.ISDIR.value
_IGNORED = InotifyMask.IGNORED.value
_GONE = (InotifyMask.DELETE | InotifyMask.MOVED_FROM).value
_ALWAYS = (InotifyMask.Q_OVERFLOW | InotifyMask.IGNORED | InotifyMask.UNMOUNT).value
# What the watcher itself needs to see, whatever the user asked for.
_MACHINERY = (InotifyMask.CREATE | InotifyMask.MOVED_TO).value
_DIR_ONLY = (InotifyMask.ONLYDIR | InotifyMask.DONT_FOLLOW).value

Path = str | bytes


class RecursiveInotify(trio.abc.ReceiveChannel[InotifyEvent]):
    """``ReceiveChannel[InotifyEvent]`` over whole directory trees (see the module docstring).

    ``mask`` selects the events delivered; ``IN_CREATE``/``IN_MOVED_TO`` are always watched
    because new directories are found through them.  Synthesised events look exactly like the
    kernel's ``IN_CREATE`` (with ``IN_ISDIR`` for directories).  A directory renamed inside the
    tree keeps its watches, and their paths follow it.
    """

    def __init__(
        self,
        mask: int = InotifyMask.ALL_EVENTS,
        *,
        overflow: Literal["raise", "event"] = "raise",
    ) -> None:
        self._user_mask = int(mask) & ~_DIR_ONLY
        self._watch_mask = self._user_mask | _MACHINERY | _DIR_ONLY
        self._inotify = Inotify(overflow=overflow)
        self._queue: deque[InotifyEvent] = deque()
        # wd -> names already reported by a synthesised IN_CREATE (dedupe against the kernel's).
        self._synthesised: dict[int, set[Path]] = {}

    @property
    def inotify(self) -> Inotify:
        """The underlying :class:`Inotify` (its watch table, ``fileno()``, ``overflows``)."""
        return self._inotify

    def fileno(self) -> int:
        return self._inotify.fileno()

    def add_tree(self, root: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> int:
        """Watch ``root`` and every directory below it (symlinks are not followed); returns the
        number of directories watched.  Existing entries produce no events."""
        given: Path = os.fspath(root)
        count = 0
        stack = [given]
        while stack:
            directory = stack.pop()
            try:
                self._inotify.add_watch(directory, self._watch_mask)
                count += 1
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
            except (FileNotFoundError, NotADirectoryError):
                # Removed while we walked: nothing to watch.
                if directory is given:
                    raise
        return count

    def receive_nowait(self) -> InotifyEvent:
        while not self._queue:
            self._handle(self._inotify.receive_nowait())
        return self._queue.popleft()

    async def receive(self) -> InotifyEvent:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._queue:
            await trio.lowlevel.cancel_shielded_checkpoint()
        while not self._queue:
            self._handle(await self._inotify.receive())
        return self._queue.popleft()

    def close(self) -> None:
        self._inotify.close()
        self._queue.clear()
        self._synthesised.clear()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    # --- the machinery ----------------------------------------------------------------------

    def _handle(self, event: InotifyEvent) -> None:
        mask = event.mask
        seen = self._synthesised.get(event.wd)
        if seen is not None and event.name in seen:
            if mask & _CREATE:
                seen.discard(event.name)
                return  # already reported by the listing
            if mask & _GONE:
                seen.discard(event.name)
        if mask & _IGNORED:
            self._synthesised.pop(event.wd, None)
        if mask & self._user_mask or mask & _ALWAYS:
            self._queue.append(event)
        if mask & _ISDIR and mask & (_CREATE | _MOVED_TO):
            path = event.path
            if path is not None:
                self._watch_new_directory(path)

    def _watch_new_directory(self, top: Path) -> None:
        stack = [top]
        while stack:
            directory = stack.pop()
            try:
                wd, old = self._inotify._add_watch(directory, self._watch_mask)
            except (FileNotFoundError, NotADirectoryError):
                continue  # already gone again: its IN_DELETE follows
            if old is not None and old != directory:
                # The inode was already watched: a directory renamed inside the tree.
                self._inotify._set_watch_path(wd, old)
                self._inotify.rebase_watches(old, directory)
                continue
            try:
                with os.scandir(directory) as entries:
                    found = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
            except (FileNotFoundError, NotADirectoryError):
                continue
            if not found:
                continue
            seen = self._synthesised.setdefault(wd, set())
            for name, is_dir in found:
                if name in seen:
                    continue
                seen.add(name)
                if self._user_mask & _CREATE:
                    mask = _CREATE | _ISDIR if is_dir else _CREATE
                    self._queue.append(InotifyEvent(wd, mask, 0, name, directory))
                if is_dir:
                    stack.append(os.path.join(directory, name))  # type: ignore[arg-type]
