"""Pairing ``IN_MOVED_FROM``/``IN_MOVED_TO`` by cookie into rename events.

:class:`RenamePairer` is the sans-I/O core (events and a clock value in, items out, never awaits);
:class:`RenamePairingChannel` is the Trio shell around any ``ReceiveChannel[InotifyEvent]``.

Order is kept: a ``MOVED_FROM`` holds back the events behind it until its ``MOVED_TO`` arrives
(the pair is delivered, where the ``MOVED_FROM`` was, as one :class:`RenameEvent`) or until
``timeout`` seconds pass, when it is delivered alone — a move out of the watched tree.
A ``MOVED_TO`` with no pending partner is a move into the tree and passes straight through.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import trio

from ._inotify import InotifyEvent
from ._inotify_flags import InotifyMask

__all__ = ["RenameEvent", "RenamePairer", "RenamePairingChannel"]

_MOVED_FROM = InotifyMask.MOVED_FROM.value
_MOVED_TO = InotifyMask.MOVED_TO.value


@dataclass(frozen=True, slots=True)
class RenameEvent:
    """``old`` (an ``IN_MOVED_FROM``) and ``new`` (the ``IN_MOVED_TO`` with the same cookie)."""

    old: InotifyEvent
    new: InotifyEvent

    @property
    def cookie(self) -> int:
        return self.old.cookie

    @property
    def is_dir(self) -> bool:
        return self.old.is_dir


class RenamePairer:
    """Sans-I/O: :meth:`feed` events, take what is :meth:`ready`, wake at :meth:`next_deadline`.

    At most ``max_pending`` unpaired ``MOVED_FROM``\\ s are held; beyond that the oldest is
    released early as a move-out, so memory stays bounded whatever the kernel sends.
    """

    def __init__(self, timeout: float = 0.05, max_pending: int = 1024) -> None:
        if not timeout >= 0:
            raise ValueError(f"timeout must be >= 0, not {timeout!r}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, not {max_pending!r}")
        self.timeout = timeout
        self.max_pending = max_pending
        # Each slot is [item, deadline]; deadline None means ready to deliver.
        self._queue: deque[list[object]] = deque()
        self._pending: dict[int, list[object]] = {}

    def feed(self, event: InotifyEvent, now: float) -> None:
        if event.mask & _MOVED_FROM and event.cookie:
            slot: list[object] = [event, now + self.timeout]
            self._queue.append(slot)
            previous = self._pending.pop(event.cookie, None)
            if previous is not None:
                previous[1] = None
            self._pending[event.cookie] = slot
            if len(self._pending) > self.max_pending:
                oldest = next(iter(self._pending))
                self._pending.pop(oldest)[1] = None
            return
        if event.mask & _MOVED_TO:
            partner = self._pending.pop(event.cookie, None)
            if partner is not None:
                old = partner[0]
                assert isinstance(old, InotifyEvent)  # only MOVED_FROM events are held
                partner[0] = RenameEvent(old, event)
                partner[1] = None
                return
        self._queue.append([event, None])

    def ready(self, now: float) -> list[InotifyEvent | RenameEvent]:
        """Items deliverable at ``now``, in order (expired ``MOVED_FROM``\\ s included)."""
        out: list[InotifyEvent | RenameEvent] = []
        queue = self._queue
        while queue:
            item, deadline = queue[0]
            if deadline is not None:
                assert isinstance(deadline, float)
                if deadline > now:
                    break
                assert isinstance(item, InotifyEvent)
                self._pending.pop(item.cookie, None)
            queue.popleft()
            assert isinstance(item, InotifyEvent | RenameEvent)
            out.append(item)
        return out

    def next_deadline(self) -> float:
        """When the head of the queue expires (``inf`` when nothing waits on time)."""
        if self._queue and self._queue[0][1] is not None:
            deadline = self._queue[0][1]
            assert isinstance(deadline, float)
            return deadline
        return math.inf

    def flush(self) -> list[InotifyEvent | RenameEvent]:
        """Everything still held, unpaired ``MOVED_FROM``\\ s as move-outs."""
        return self.ready(math.inf)


class RenamePairingChannel(trio.abc.ReceiveChannel[InotifyEvent | RenameEvent]):
    """Wraps any ``ReceiveChannel[InotifyEvent]`` (an ``Inotify``, a recursive watcher)."""

    def __init__(
        self,
        events: trio.abc.ReceiveChannel[InotifyEvent],
        *,
        timeout: float = 0.05,
        max_pending: int = 1024,
    ) -> None:
        self._events = events
        self._pairer = RenamePairer(timeout, max_pending)
        self._ready: deque[InotifyEvent | RenameEvent] = deque()

    def receive_nowait(self) -> InotifyEvent | RenameEvent:
        if not self._ready:
            self._pull_nowait()
        if not self._ready:
            raise trio.WouldBlock
        return self._ready.popleft()

    def _pull_nowait(self) -> None:
        receive_nowait = getattr(self._events, "receive_nowait", None)
        while receive_nowait is not None:
            try:
                event = receive_nowait()
            except trio.WouldBlock:
                break
            self._pairer.feed(event, trio.current_time())
        self._ready.extend(self._pairer.ready(trio.current_time()))

    async def receive(self) -> InotifyEvent | RenameEvent:
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._ready:
            self._pull_nowait()
        if self._ready:
            await trio.lowlevel.cancel_shielded_checkpoint()
        while not self._ready:
            # The inner receive is cancel-safe, so timing out on it loses nothing.
            with trio.move_on_at(self._pairer.next_deadline()):
                event = await self._events.receive()
                self._pairer.feed(event, trio.current_time())
            self._pull_nowait()
        return self._ready.popleft()

    def close(self) -> None:
        """Close the wrapped channel now, if it can be closed synchronously (triofd's can)."""
        close = getattr(self._events, "close", None)
        if callable(close):
            close()
        self._ready.clear()

    async def aclose(self) -> None:
        self._ready.clear()
        await self._events.aclose()
