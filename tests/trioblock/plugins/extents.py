"""extents() returns whatever the test stored in EXTENTS (a 1 MiB export)."""

API_VERSION = 2
EXTENTS = []


def open(readonly):
    return None


def get_size(h):
    return 1024 * 1024


def pread(h, buf, offset, flags):
    buf[:] = bytes(len(buf))


def extents(h, count, offset, flags):
    return EXTENTS
