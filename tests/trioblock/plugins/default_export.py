"""default_export() but no list_exports(): nbdkit lists the default export by its name."""

API_VERSION = 2


def default_export(readonly, is_tls):
    return "disk0"


def open(readonly):
    return None


def get_size(h):
    return 512


def pread(h, buf, offset, flags):
    buf[:] = bytes(len(buf))
