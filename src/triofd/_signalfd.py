"""signalfd: signals as a Trio ``ReceiveChannel`` of fully decoded ``signalfd_siginfo`` records.

How this meets Trio's own signal handling
-----------------------------------------
``trio.open_signal_receiver`` installs a Python-level handler (``signal.signal``) and relies on
the wakeup fd.  A signalfd works the other way round: the signal is *blocked* with
``pthread_sigmask`` so it is never delivered at all, and the kernel queues it for the fd instead.
So a signal read through :class:`SignalReceiver` never reaches a Python handler, and a signal
that ``trio.open_signal_receiver`` is listening for must not also be given to a SignalReceiver
(it would be blocked, so Trio would never see it).

The mask is per *thread*.  :class:`SignalReceiver` blocks the signals in the thread that creates
it (the thread running ``trio.run``).  A process-directed signal (``kill``) goes to any thread
that does not block it, so threads started *before* the receiver (Trio's worker-thread cache,
``trio.to_thread`` workers, other libraries' threads) can still take the signal and run its
default action -- for ``SIGUSR1`` that kills the process.  Create receivers before starting
threads, or block the signals in every thread (``signal.pthread_sigmask`` in each).  Threads
started afterwards inherit the mask.  Thread-directed signals (``signal.pthread_kill``) are
always queued for the target thread.

Closing the receiver restores the mask: signals that were not blocked before it was created are
unblocked again, and any still pending are then delivered to their normal disposition.
"""

from __future__ import annotations

import os
import signal
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from ._channel import FdReceiveChannel
from ._errors import reraise_oserror
from ._lib import check, ffi, lib

__all__ = [
    "SFD_CLOEXEC",
    "SFD_NONBLOCK",
    "SIGNALFD_SIGINFO_SIZE",
    "SignalInfo",
    "SignalReceiver",
    "signalfd",
]

SFD_CLOEXEC = os.O_CLOEXEC
SFD_NONBLOCK = os.O_NONBLOCK

# linux/signalfd.h struct signalfd_siginfo: 128 bytes, every field naturally aligned.
_SIGINFO = struct.Struct("=IiiIIiIIIIiiQQQQHxxiQI28x")
SIGNALFD_SIGINFO_SIZE = _SIGINFO.size
_BATCH = 64  # records per read(): one system call drains a burst


@dataclass(frozen=True, slots=True)
class SignalInfo:
    """One ``struct signalfd_siginfo``; fields named as in ``linux/signalfd.h`` minus ``ssi_``.

    ``int_value``/``ptr_value`` are ``ssi_int``/``ssi_ptr``: the value passed with ``sigqueue``.
    Which fields mean something depends on the signal and ``code`` (see ``sigaction(2)``).
    """

    signo: int
    errno: int
    code: int
    pid: int
    uid: int
    fd: int
    tid: int
    band: int
    overrun: int
    trapno: int
    status: int
    int_value: int
    ptr_value: int
    utime: int
    stime: int
    addr: int
    addr_lsb: int
    syscall: int
    call_addr: int
    arch: int

    @property
    def signal(self) -> signal.Signals | int:
        """``signo`` as a :class:`signal.Signals` when Python knows it (real-time ones are ints)."""
        try:
            return signal.Signals(self.signo)
        except ValueError:
            return self.signo

    @classmethod
    def unpack_from(cls, buffer: bytes | bytearray | memoryview, offset: int = 0) -> SignalInfo:
        return cls(*_SIGINFO.unpack_from(buffer, offset))


def _check_signals(signals: Iterable[int]) -> frozenset[int]:
    result = set()
    for sig in signals:
        if isinstance(sig, bool) or not isinstance(sig, int):
            raise TypeError(f"signals must be ints, not {type(sig).__name__}")
        if not 1 <= sig < signal.NSIG:
            raise ValueError(f"{sig} is not a signal number (1..{signal.NSIG - 1})")
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            # The kernel silently ignores them in a signalfd mask; say so instead.
            raise ValueError(f"{signal.Signals(sig).name} cannot be caught by a signalfd")
        result.add(int(sig))
    return frozenset(result)


def signalfd(fd: int, signals: Iterable[int], flags: int = SFD_CLOEXEC | SFD_NONBLOCK) -> int:
    """``signalfd(2)``: ``fd == -1`` creates a new one, else replaces ``fd``'s mask.

    The signals must also be blocked (``signal.pthread_sigmask``) or they are delivered normally.
    """
    mask = ffi.new("sigset_t *")
    lib.sigemptyset(mask)
    for sig in _check_signals(signals):
        check(lib.sigaddset(mask, sig), "sigaddset")
    return check(lib.signalfd(int(fd), mask, int(flags)), "signalfd")


class SignalReceiver(FdReceiveChannel[SignalInfo]):
    """Blocks ``signals`` in the calling thread and receives them as :class:`SignalInfo`.

    ``async with`` / :meth:`close` restore the mask; close it in the thread that created it.
    See the module docstring for threads and ``trio.open_signal_receiver``.
    """

    def __init__(self, signals: Iterable[int]) -> None:
        wanted = _check_signals(signals)
        if not wanted:
            raise ValueError("give at least one signal")
        previously_blocked = signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
        self._blocked_by_us = frozenset(wanted - {int(s) for s in previously_blocked})
        try:
            fd = signalfd(-1, wanted)
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, self._blocked_by_us)
            raise
        self._signals = wanted
        super().__init__(fd)

    @property
    def signals(self) -> frozenset[int]:
        return self._signals

    def __contains__(self, sig: object) -> bool:
        return sig in self._signals

    def add(self, *signals: int) -> None:
        """Also receive ``signals`` (blocking them in the calling thread)."""
        extra = _check_signals(signals) - self._signals
        if not extra:
            return
        before = signal.pthread_sigmask(signal.SIG_BLOCK, extra)
        self._blocked_by_us |= extra - {int(s) for s in before}
        self._signals |= extra
        signalfd(self.fileno(), self._signals)

    def _read_batch(self) -> Iterable[SignalInfo]:
        try:
            data = os.read(self._holder.fileno(), _BATCH * SIGNALFD_SIGINFO_SIZE)
        except BlockingIOError:
            raise
        except OSError as exc:
            raise reraise_oserror(exc, "read(signalfd)") from exc
        return [SignalInfo(*fields) for fields in _SIGINFO.iter_unpack(data)]

    def close(self) -> None:
        was_open = not self.closed
        super().close()
        if was_open and self._blocked_by_us:
            # The fd is gone first, so what is still pending goes to its normal disposition.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, self._blocked_by_us)

    def __repr__(self) -> str:
        names = ",".join(sorted(signal.Signals(s).name for s in self._signals if s in _KNOWN))
        state = "closed" if self.closed else f"fd={self._holder.fd}"
        return f"<triofd.SignalReceiver {names} {state}>"


_KNOWN = frozenset(int(s) for s in signal.Signals)
