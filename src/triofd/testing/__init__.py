"""Test helpers for triofd's users: count open fds, fail a block that leaks one.

The pytest plugin (:mod:`triofd.testing._pytest_plugin`, loaded automatically) wraps these in the
``no_fd_leak`` and ``tmp_watch_dir`` fixtures.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["FdLeakError", "assert_no_fd_leak", "open_fds"]


class FdLeakError(AssertionError):
    """File descriptors opened inside the checked block were still open at its end."""


def open_fds() -> dict[int, str]:
    """This process's open fds → what they point at (``/proc/self/fd``)."""
    result = {}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            result[fd] = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:
            continue  # the fd listdir itself used, already closed
    return result


@contextmanager
def assert_no_fd_leak() -> Iterator[None]:
    """Raise :class:`FdLeakError` if the block ends with fds open that it did not start with."""
    before = open_fds()
    yield
    after = open_fds()
    leaked = {fd: target for fd, target in after.items() if before.get(fd) != target}
    if leaked:
        listing = ", ".join(f"{fd} -> {target}" for fd, target in sorted(leaked.items()))
        raise FdLeakError(f"{len(leaked)} fd(s) leaked: {listing}")
