"""The ``ReceiveChannel`` shape every triofd kernel object shares."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Self, TypeVar

import trio

from ._fd import FdHolder

__all__ = ["FdReceiveChannel"]

T = TypeVar("T")


class FdReceiveChannel(trio.abc.ReceiveChannel[T]):
    """A non-blocking kernel fd whose reads yield items of type ``T``.

    Subclasses implement :meth:`_read_batch`: one non-blocking read of as much as the kernel has,
    parsed in one pass; ``BlockingIOError`` when there is nothing.  Items read but not yet received
    wait in a queue, so a cancelled ``receive()`` never loses what the kernel already handed over.
    """

    def __init__(self, fd: int) -> None:
        self._holder = FdHolder(fd)
        self._pending: deque[T] = deque()
        self._receiving = False

    def _read_batch(self) -> Iterable[T]:
        raise NotImplementedError

    def fileno(self) -> int:
        """The fd, for ``select``/``poll`` users; raises ``ClosedResourceError`` once closed."""
        return self._holder.fileno()

    @property
    def closed(self) -> bool:
        return self._holder.closed

    def receive_nowait(self) -> T:
        """The next item if one is ready, else ``trio.WouldBlock``."""
        if self._holder.closed:
            raise trio.ClosedResourceError(f"{type(self).__name__} is closed")
        if not self._pending:
            try:
                self._pending.extend(self._read_batch())
            except BlockingIOError:
                raise trio.WouldBlock from None
            if not self._pending:
                raise trio.WouldBlock
        return self._pending.popleft()

    async def receive(self) -> T:
        if self._receiving:
            raise trio.BusyResourceError(f"another task is already receiving on {self!r}")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
            while True:
                try:
                    item = self.receive_nowait()
                except trio.WouldBlock:
                    # Raises ClosedResourceError if another task closes us meanwhile.
                    await trio.lowlevel.wait_readable(self._holder.fileno())
                    waited = True
                    continue
                # wait_readable was already a full checkpoint (as in trio's own sockets);
                # otherwise yield once, shielded so the item in hand is never dropped.
                if not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return item
        finally:
            self._receiving = False

    def close(self) -> None:
        """Close the fd now; a task blocked in ``receive()`` gets ``ClosedResourceError``."""
        self._holder.close()
        self._pending.clear()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    # Plain ``with`` for code that only polls (``receive_nowait``) or hands the fd to select().
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._holder.closed else f"fd={self._holder.fd}"
        return f"<{type(self).__module__.split('.')[0]}.{type(self).__name__} {state}>"
