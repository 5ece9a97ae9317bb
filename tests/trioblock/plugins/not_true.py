"""Every can_* returns something truthy that is not the literal True (except can_write).

nbdkit tests boolean answers with ``r == Py_True``; can_fua and can_cache are integers.
"""

API_VERSION = 2


def open(readonly):
    return None


def get_size(h):
    return 4096


def pread(h, buf, offset, flags):
    buf[:] = bytes(len(buf))


def pwrite(h, buf, offset, flags):
    pass


def can_write(h):
    return True


def can_flush(h):
    return 1


def can_trim(h):
    return "yes"


def can_zero(h):
    return 1


def can_fast_zero(h):
    return 1


def can_extents(h):
    return 1


def is_rotational(h):
    return 1


def can_multi_conn(h):
    return [True]


def can_fua(h):
    return True


def can_cache(h):
    return True
