"""pidfd: a process as an fd -- wait for its exit in Trio, signal it race-free, copy its fds.

Children of ``trio.run_process``/``trio.lowlevel.open_process``
---------------------------------------------------------------
A ``trio.Process`` reaps its own child (``Process.wait`` waits on its own pidfd, then calls
``Popen.wait``).  :class:`Pidfd` therefore never ``waitid``-reaps a ``trio.Process``: it waits for
its pidfd to become readable (the kernel's "this process exited") and then asks the Process
itself (``Process.poll()``, the stdlib reaper), so ``Process.returncode``, ``Process.wait()`` and
our :class:`ProcessExit` always agree and nobody gets ``ECHILD``.

For a plain pid that is our child, :class:`Pidfd` reaps with ``waitid(P_PIDFD, ...)`` unless
``reap=False`` (then ``WNOWAIT``: the zombie stays for someone else to reap).  For a process that
is not our child, only the fact that it exited is known: ``ProcessExit.returncode`` is ``None``.
"""

from __future__ import annotations

import errno
import os
import select
import signal
from collections.abc import Iterable
from dataclasses import dataclass

import trio

from ._channel import FdReceiveChannel
from ._errors import reraise_oserror
from ._lib import check, ffi, lib

__all__ = [
    "PIDFD_NONBLOCK",
    "Pidfd",
    "ProcessExit",
    "pidfd_getfd",
    "pidfd_open",
    "pidfd_send_signal",
    "waitid_pidfd",
]

PIDFD_NONBLOCK = os.O_NONBLOCK


@dataclass(frozen=True, slots=True)
class ProcessExit:
    """How a process ended: ``code`` is ``CLD_EXITED``/``CLD_KILLED``/``CLD_DUMPED``.

    ``status`` is the exit code for ``CLD_EXITED``, else the signal number.  Both are ``None``
    when the process was not our child (the kernel tells only its parent).
    """

    pid: int
    code: int | None
    status: int | None

    @property
    def returncode(self) -> int | None:
        """Like ``subprocess``: the exit code, or ``-signal`` when killed by a signal."""
        if self.code is None or self.status is None:
            return None
        return self.status if self.code == os.CLD_EXITED else -self.status

    @property
    def signal(self) -> signal.Signals | None:
        """The signal that killed it, if one did."""
        rc = self.returncode
        return signal.Signals(-rc) if rc is not None and rc < 0 else None


# --- the system calls, 1:1 -------------------------------------------------------------------


def pidfd_open(pid: int, flags: int = 0) -> int:
    """``pidfd_open(2)``: a close-on-exec fd for ``pid`` (``ESRCH`` -> InvalidArgumentError)."""
    try:
        return os.pidfd_open(pid, flags)
    except OSError as exc:
        raise reraise_oserror(exc, "pidfd_open") from None


def pidfd_send_signal(pidfd: int, sig: int, flags: int = 0) -> None:
    """``pidfd_send_signal(2)`` with ``info = NULL`` (the kernel fills it like ``kill``)."""
    check(lib.pidfd_send_signal(int(pidfd), int(sig), ffi.NULL, int(flags)), "pidfd_send_signal")


def pidfd_getfd(pidfd: int, targetfd: int, flags: int = 0) -> int:
    """``pidfd_getfd(2)``: a duplicate (close-on-exec) of the target process's fd ``targetfd``.

    Needs ``PTRACE_MODE_ATTACH`` over the target (same uid and ptrace scope allowing it, or root).
    """
    return check(lib.pidfd_getfd(int(pidfd), int(targetfd), int(flags)), "pidfd_getfd")


def waitid_pidfd(pidfd: int, options: int = os.WEXITED | os.WNOHANG) -> ProcessExit | None:
    """``waitid(P_PIDFD, pidfd, options)``; ``None`` when ``WNOHANG`` and still running."""
    try:
        result = os.waitid(os.P_PIDFD, pidfd, options)
    except OSError as exc:
        raise reraise_oserror(exc, "waitid") from None
    if result is None:
        return None
    return ProcessExit(result.si_pid, result.si_code, result.si_status)


# --- the channel -----------------------------------------------------------------------------


class Pidfd(FdReceiveChannel[ProcessExit]):
    """One process.  Receives exactly one :class:`ProcessExit`, then ``trio.EndOfChannel``.

    ``Pidfd(pid)`` or ``Pidfd(process)`` for a ``trio.Process`` (see the module docstring for
    who reaps).  ``await pidfd.wait()`` is the one-shot form.
    """

    def __init__(self, process: int | trio.Process, *, reap: bool = True) -> None:
        if isinstance(process, trio.Process):
            self._process: trio.Process | None = process
            self.pid = process.pid
        elif isinstance(process, int) and not isinstance(process, bool):
            if process <= 0:
                raise ValueError(f"pid must be > 0, not {process}")
            self._process = None
            self.pid = process
        else:
            raise TypeError(f"expected a pid or a trio.Process, not {type(process).__name__}")
        self._reap = reap
        self._delivered = False
        super().__init__(pidfd_open(self.pid, PIDFD_NONBLOCK))

    def send_signal(self, sig: int) -> None:
        """Signal the process; never hits a recycled pid (``ESRCH`` once it has been reaped)."""
        pidfd_send_signal(self.fileno(), sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def getfd(self, targetfd: int) -> int:
        """A duplicate of the process's fd ``targetfd`` (the caller owns and closes it)."""
        return pidfd_getfd(self.fileno(), targetfd)

    async def wait(self) -> ProcessExit:
        """Wait for the process to exit (a second call after receiving it raises EndOfChannel)."""
        return await self.receive()

    def receive_nowait(self) -> ProcessExit:
        if self._delivered and not self.closed and not self._pending:
            raise trio.EndOfChannel
        item = super().receive_nowait()
        self._delivered = True
        return item

    def _exited(self) -> bool:
        poller = select.poll()
        poller.register(self._holder.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    def _read_batch(self) -> Iterable[ProcessExit]:
        if self._process is not None:
            if not self._exited():
                raise BlockingIOError(errno.EAGAIN, "process still running")
            rc = self._process.poll()
            if rc is None:  # exited but the stdlib could not reap it yet; try again
                raise BlockingIOError(errno.EAGAIN, "process not reaped yet")
            code = os.CLD_EXITED if rc >= 0 else os.CLD_KILLED
            return (ProcessExit(self.pid, code, abs(rc)),)
        options = os.WEXITED | os.WNOHANG | (0 if self._reap else os.WNOWAIT)
        try:
            result = waitid_pidfd(self._holder.fileno(), options)
        except ChildProcessError:
            # Not our child: the kernel only says *that* it exited.
            if not self._exited():
                raise BlockingIOError(errno.EAGAIN, "process still running") from None
            return (ProcessExit(self.pid, None, None),)
        if result is None:
            raise BlockingIOError(errno.EAGAIN, "process still running")
        return (result,)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self._holder.fd}"
        return f"<triofd.Pidfd pid={self.pid} {state}>"
