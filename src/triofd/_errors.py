"""One place where an errno becomes a Python exception.

butter promised builtin exceptions but dropped the errno on the way; here every exception raised
for a failed system call is an ``OSError`` carrying ``errno``, ``strerror`` and the file name, and
the classes users catch by meaning are mixed in:

=====================================  ==========================================================
errno                                  raised as
=====================================  ==========================================================
EINVAL, EBADF, EFAULT, ENAMETOOLONG,   ``InvalidArgumentError`` (an ``OSError`` *and* a
ELOOP, EOVERFLOW, ESRCH (no process)   ``ValueError``): the caller passed something unusable
ENOMEM                                 ``KernelMemoryError`` (an ``OSError`` *and* a
                                       ``MemoryError``)
EPERM, EACCES                          ``PermissionError`` (builtin subclass of ``OSError``)
ENOENT, ENOTDIR, EEXIST, EAGAIN, ...   the builtin ``OSError`` subclass Python picks for that
                                       errno (``FileNotFoundError``, ``BlockingIOError``, ...)
EMFILE, ENFILE, ENOSPC (watch limit),  plain ``OSError`` with its errno: a resource limit
EUSERS, ENODEV, anything else
=====================================  ==========================================================

Wrong Python types (a float where a path belongs) raise ``TypeError`` before any system call.
"""

from __future__ import annotations

import errno as _errno
import os

__all__ = ["ERRNO_TO_EXCEPTION", "InvalidArgumentError", "KernelMemoryError", "raise_errno"]


class InvalidArgumentError(OSError, ValueError):
    """The kernel rejected an argument (``EINVAL``, ``EBADF``, ...); ``errno`` says which."""


class KernelMemoryError(OSError, MemoryError):
    """The kernel could not allocate memory for the call (``ENOMEM``)."""


ERRNO_TO_EXCEPTION: dict[int, type[OSError]] = {
    _errno.EINVAL: InvalidArgumentError,
    _errno.EBADF: InvalidArgumentError,
    _errno.EFAULT: InvalidArgumentError,
    _errno.ENAMETOOLONG: InvalidArgumentError,
    _errno.ELOOP: InvalidArgumentError,
    _errno.EOVERFLOW: InvalidArgumentError,
    _errno.ESRCH: InvalidArgumentError,
    _errno.ENOMEM: KernelMemoryError,
}


def make_error(err: int, syscall: str, filename: str | bytes | None = None) -> OSError:
    """The exception for ``err`` returned by ``syscall`` (see the module docstring's table)."""
    cls = ERRNO_TO_EXCEPTION.get(err, OSError)
    message = f"{syscall}: {os.strerror(err)}"
    if filename is None:
        return cls(err, message)
    return cls(err, message, filename)


def raise_errno(err: int, syscall: str, filename: str | bytes | None = None) -> None:
    """Raise :func:`make_error` for ``err``; never returns."""
    raise make_error(err, syscall, filename)


def reraise_oserror(exc: OSError, syscall: str) -> OSError:
    """Map an ``OSError`` raised by the stdlib (``os.eventfd`` ...) onto the same table."""
    if exc.errno is None or exc.errno not in ERRNO_TO_EXCEPTION:
        return exc
    return make_error(exc.errno, syscall, exc.filename)
