"""eventfd: a kernel counter as a Trio ``ReceiveChannel[int]`` *and* ``SendChannel[int]``.

The stdlib already wraps the system call (``os.eventfd``/``eventfd_read``/``eventfd_write``), so
no cffi here.  Counter mode: ``receive()`` returns the whole count and resets it to 0.  Semaphore
mode (``EFD_SEMAPHORE``): ``receive()`` returns 1 and decrements by 1.  ``send(n)`` adds ``n``,
waiting while the counter would pass its maximum (2**64 - 2).
"""

from __future__ import annotations

import os

import trio

from ._channel import FdReceiveChannel
from ._errors import reraise_oserror

__all__ = ["EFD_CLOEXEC", "EFD_NONBLOCK", "EFD_SEMAPHORE", "EventFd", "eventfd"]

EFD_CLOEXEC = os.EFD_CLOEXEC
EFD_NONBLOCK = os.EFD_NONBLOCK
EFD_SEMAPHORE = os.EFD_SEMAPHORE
EVENTFD_MAX = 2**64 - 2


def eventfd(initval: int = 0, flags: int = EFD_CLOEXEC | EFD_NONBLOCK) -> int:
    """``eventfd(2)`` (through ``os.eventfd``), errors mapped like every other triofd call."""
    _check_count(initval, "initval", 2**32 - 1)
    try:
        return os.eventfd(initval, flags)
    except OSError as exc:
        raise reraise_oserror(exc, "eventfd") from None


def _check_count(value: int, what: str, maximum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value <= maximum:
        raise ValueError(f"{what} must be between 0 and {maximum}, not {value}")


class EventFd(FdReceiveChannel[int], trio.abc.SendChannel[int]):
    """``EventFd(initial=0, semaphore=False)``: ``send(n)`` increments, ``receive()`` counts."""

    def __init__(self, initial: int = 0, *, semaphore: bool = False) -> None:
        flags = EFD_CLOEXEC | EFD_NONBLOCK | (EFD_SEMAPHORE if semaphore else 0)
        super().__init__(eventfd(initial, flags))
        self.semaphore = semaphore
        self._sending = False

    def _read_batch(self) -> list[int]:
        try:
            return [os.eventfd_read(self._holder.fileno())]
        except BlockingIOError:
            raise
        except OSError as exc:
            raise reraise_oserror(exc, "read") from None

    def send_nowait(self, value: int = 1) -> None:
        """Add ``value`` now, or raise ``trio.WouldBlock`` if the counter would overflow."""
        _check_count(value, "value", EVENTFD_MAX)
        if self._holder.closed:
            raise trio.ClosedResourceError(f"{type(self).__name__} is closed")
        try:
            os.eventfd_write(self._holder.fd, value)
        except BlockingIOError:
            raise trio.WouldBlock from None
        except OSError as exc:
            raise reraise_oserror(exc, "write") from None

    async def send(self, value: int = 1) -> None:
        """Add ``value`` to the counter, waiting until a reader makes room for it."""
        _check_count(value, "value", EVENTFD_MAX)
        if self._sending:
            raise trio.BusyResourceError(f"another task is already sending on {self!r}")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            while True:
                try:
                    self.send_nowait(value)
                except trio.WouldBlock:
                    await trio.lowlevel.wait_writable(self._holder.fileno())
                    continue
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
        finally:
            self._sending = False
