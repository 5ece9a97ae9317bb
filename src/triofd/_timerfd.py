"""timerfd: kernel timers as a Trio ``ReceiveChannel`` of expiration counts.

Python 3.11 has no ``os.timerfd_*`` (added in 3.13), so the three system calls go through cffi.
Times are kept as integer nanoseconds so that what you set is exactly what the kernel gets back
(floats lose nanoseconds past ~104 days of uptime); the float properties are conveniences.
"""

from __future__ import annotations

import enum
import errno
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ._channel import FdReceiveChannel
from ._errors import reraise_oserror
from ._lib import check, ffi, lib

__all__ = [
    "TFD_CLOEXEC",
    "TFD_NONBLOCK",
    "TFD_TIMER_ABSTIME",
    "TFD_TIMER_CANCEL_ON_SET",
    "Clock",
    "ClockChangedError",
    "Timer",
    "TimerSpec",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
]

TFD_CLOEXEC = os.O_CLOEXEC
TFD_NONBLOCK = os.O_NONBLOCK
TFD_TIMER_ABSTIME = 1
TFD_TIMER_CANCEL_ON_SET = 2

_NS = 1_000_000_000
_U64 = struct.Struct("=Q")


class Clock(enum.IntEnum):
    """The clocks ``timerfd_create`` accepts (``linux/time.h`` numbering)."""

    REALTIME = 0
    MONOTONIC = 1
    BOOTTIME = 7
    REALTIME_ALARM = 8
    BOOTTIME_ALARM = 9


class ClockChangedError(OSError):
    """``ECANCELED``: a ``cancel_on_set`` realtime timer saw the wall clock jump.

    The timer stays armed for its original absolute time; call :meth:`Timer.set` again if the new
    wall-clock time changes what you wanted.
    """


def _to_ns(seconds: float, what: str) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"{what} must be a number of seconds, not {type(seconds).__name__}")
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValueError(f"{what} must be finite, not {seconds}")
    if seconds < 0:
        raise ValueError(f"{what} must be >= 0, not {seconds}")
    return round(seconds * _NS) if isinstance(seconds, float) else seconds * _NS


@dataclass(frozen=True, slots=True)
class TimerSpec:
    """One ``struct itimerspec``: time to the next expiration and the repeat interval, in ns.

    ``value_ns == 0`` means disarmed, and a disarmed spec is falsy (butter's ``TimerVal`` got
    ``__bool__`` backwards).  ``interval_ns == 0`` means one-shot.
    """

    value_ns: int = 0
    interval_ns: int = 0

    def __post_init__(self) -> None:
        for name in ("value_ns", "interval_ns"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int, not {type(v).__name__}")
            if v < 0:
                raise ValueError(f"{name} must be >= 0, not {v}")

    @classmethod
    def after(cls, seconds: float, *, every: float = 0) -> TimerSpec:
        """First expiration ``seconds`` from now (or at that clock value if absolute)."""
        value = _to_ns(seconds, "seconds")
        if value == 0:
            # 0 would disarm: the earliest possible expiration is 1 ns.
            value = 1
        return cls(value, _to_ns(every, "every"))

    @classmethod
    def disarmed(cls) -> TimerSpec:
        return cls(0, 0)

    @property
    def value(self) -> float:
        return self.value_ns / _NS

    @property
    def interval(self) -> float:
        return self.interval_ns / _NS

    @property
    def armed(self) -> bool:
        return self.value_ns != 0

    @property
    def periodic(self) -> bool:
        return self.interval_ns != 0

    def __bool__(self) -> bool:
        return self.armed

    def _fill(self, c: Any) -> None:
        c.it_value.tv_sec, c.it_value.tv_nsec = divmod(self.value_ns, _NS)
        c.it_interval.tv_sec, c.it_interval.tv_nsec = divmod(self.interval_ns, _NS)

    @classmethod
    def _from_c(cls, c: Any) -> TimerSpec:
        v = c.it_value
        i = c.it_interval
        return cls(v.tv_sec * _NS + v.tv_nsec, i.tv_sec * _NS + i.tv_nsec)


# --- the system calls, 1:1 -------------------------------------------------------------------


def timerfd_create(clock: int = Clock.MONOTONIC, flags: int = TFD_CLOEXEC | TFD_NONBLOCK) -> int:
    """``timerfd_create(2)``: a new timer fd (close-on-exec and non-blocking by default)."""
    return check(lib.timerfd_create(int(clock), int(flags)), "timerfd_create")


def timerfd_settime(fd: int, flags: int, spec: TimerSpec) -> TimerSpec:
    """``timerfd_settime(2)``: arm (or disarm) the timer; returns the previous setting."""
    new = ffi.new("struct itimerspec *")
    old = ffi.new("struct itimerspec *")
    spec._fill(new)
    check(lib.timerfd_settime(int(fd), int(flags), new, old), "timerfd_settime")
    return TimerSpec._from_c(old)


def timerfd_gettime(fd: int) -> TimerSpec:
    """``timerfd_gettime(2)``: time left to the next expiration and the interval."""
    cur = ffi.new("struct itimerspec *")
    check(lib.timerfd_gettime(int(fd), cur), "timerfd_gettime")
    return TimerSpec._from_c(cur)


# --- the channel -----------------------------------------------------------------------------


class Timer(FdReceiveChannel[int]):
    """A timerfd; each item received is the number of expirations since the last receive (>= 1).

    ``async with Timer() as t: t.set(0.5, every=0.5); async for n in t: ...``.  A periodic timer
    that fires while nobody reads coalesces: the count says how many periods went by.
    """

    def __init__(self, clock: Clock | int = Clock.MONOTONIC) -> None:
        self.clock = Clock(clock)
        super().__init__(timerfd_create(self.clock))

    def set(
        self,
        after: float | None = None,
        *,
        every: float = 0,
        at: float | None = None,
        cancel_on_set: bool = False,
    ) -> TimerSpec:
        """Arm: first expiration ``after`` seconds from now, or ``at`` an absolute clock value.

        ``every`` repeats.  ``cancel_on_set`` (absolute ``REALTIME`` timers only) makes the next
        receive raise :class:`ClockChangedError` when the wall clock is set.  Returns the previous
        setting.  Pending expirations not yet received are discarded by the kernel.
        """
        if (after is None) == (at is None):
            raise TypeError("give exactly one of after= or at=")
        flags = 0
        if at is not None:
            flags |= TFD_TIMER_ABSTIME
            spec = TimerSpec.after(at, every=every)
        elif after is not None:
            spec = TimerSpec.after(after, every=every)
        if cancel_on_set:
            if at is None or self.clock not in (Clock.REALTIME, Clock.REALTIME_ALARM):
                raise ValueError("cancel_on_set needs an absolute (at=) REALTIME timer")
            flags |= TFD_TIMER_CANCEL_ON_SET
        return self.set_spec(spec, flags)

    def set_spec(self, spec: TimerSpec, flags: int = 0) -> TimerSpec:
        """``timerfd_settime`` with an explicit :class:`TimerSpec`; returns the previous one."""
        return timerfd_settime(self.fileno(), flags, spec)

    def disarm(self) -> TimerSpec:
        """Stop the timer; returns what it was set to."""
        return self.set_spec(TimerSpec.disarmed())

    def get(self) -> TimerSpec:
        """The current setting: ``value`` counts down to the next expiration."""
        return timerfd_gettime(self.fileno())

    def _read_batch(self) -> Iterable[int]:
        try:
            data = os.read(self._holder.fileno(), 8)
        except BlockingIOError:
            raise
        except OSError as exc:
            if exc.errno == errno.ECANCELED:
                raise ClockChangedError(
                    errno.ECANCELED, "timerfd read: the realtime clock was set (cancel_on_set)"
                ) from None
            raise reraise_oserror(exc, "read(timerfd)") from exc
        return (_U64.unpack(data)[0],)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self._holder.fd}"
        return f"<triofd.Timer {self.clock.name} {state}>"
