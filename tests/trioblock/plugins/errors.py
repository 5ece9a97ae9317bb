"""Callbacks that fail in the ways nbdkit distinguishes (see each function)."""

import errno

import nbdkit

API_VERSION = 2


def open(readonly):
    return "h"


def close(h):
    raise RuntimeError("close exploded")


def get_size(h):
    return 1024 * 1024


def pread(h, buf, offset, flags):
    raise RuntimeError("pread exploded")  # no set_error: EIO


def pwrite(h, buf, offset, flags):
    nbdkit.set_error(errno.ENOSPC)
    raise RuntimeError("disk full")


def flush(h, flags):
    raise OSError(errno.EROFS, "an OSError does not choose the errno")


def trim(h, count, offset, flags):
    nbdkit.set_error(errno.ENOSPC)  # ignored: trim returns normally


def zero(h, count, offset, flags):
    if offset == 0:
        nbdkit.set_error(errno.EOPNOTSUPP)
        return None
    if offset == 1:
        nbdkit.set_error(errno.ENOTSUP)
        raise NotImplementedError("fall back, please")
    raise ValueError("zero exploded")


def cache(h, count, offset, flags):
    nbdkit.set_error(errno.EPERM)
    raise RuntimeError("cache refused")
