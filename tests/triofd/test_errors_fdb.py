"""Every low-level call of timerfd/signalfd/pidfd/splice/memfd/system, given a closed fd.

The errno must survive (butter dropped it for EMFILE/ENOSPC/...), and the class must follow the
one table in ``_errors.py``: EBADF is an ``InvalidArgumentError`` (an OSError and a ValueError).
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Callable

import pytest

from triofd._errors import InvalidArgumentError
from triofd._memfd import memfd_add_seals, memfd_get_seals
from triofd._pidfd import pidfd_getfd, pidfd_send_signal, waitid_pidfd
from triofd._signalfd import signalfd
from triofd._splice import splice, tee, vmsplice
from triofd._system import setns
from triofd._timerfd import TimerSpec, timerfd_gettime, timerfd_settime


def _closed_fd() -> int:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    return r


CALLS: dict[str, Callable[[int], object]] = {
    "timerfd_settime": lambda fd: timerfd_settime(fd, 0, TimerSpec(1)),
    "timerfd_gettime": timerfd_gettime,
    "signalfd": lambda fd: signalfd(fd, [signal.SIGUSR1]),
    "pidfd_send_signal": lambda fd: pidfd_send_signal(fd, 0),
    "pidfd_getfd": lambda fd: pidfd_getfd(fd, 0),
    "waitid_pidfd": waitid_pidfd,
    "splice": lambda fd: splice(fd, fd, 1),
    "tee": lambda fd: tee(fd, fd, 1),
    "vmsplice": lambda fd: vmsplice(fd, [b"x"]),
    "memfd_add_seals": lambda fd: memfd_add_seals(fd, 1),
    "memfd_get_seals": memfd_get_seals,
    "setns": setns,
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_closed_fd_raises_invalid_argument_with_ebadf(name: str) -> None:
    fd = _closed_fd()
    with pytest.raises(InvalidArgumentError) as info:
        CALLS[name](fd)
    assert info.value.errno == errno.EBADF
    assert isinstance(info.value, ValueError)
    assert os.strerror(errno.EBADF) in str(info.value)
