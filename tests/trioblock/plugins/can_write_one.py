"""can_write() returns 1, not True: nbdkit serves this export read-only."""

API_VERSION = 2
calls = []


def open(readonly):
    return None


def get_size(h):
    return 4096


def pread(h, buf, offset, flags):
    buf[:] = bytes(len(buf))


def pwrite(h, buf, offset, flags):
    calls.append("pwrite")


def can_write(h):
    return 1


def can_trim(h):
    calls.append("can_trim")
    return True


def can_fua(h):
    calls.append("can_fua")
    return 2
