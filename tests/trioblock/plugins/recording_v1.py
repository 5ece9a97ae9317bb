"""API 1 plugin (no API_VERSION) that records every callback and its arguments in ``calls``.

``short=1`` makes pread return one byte too few; ``pread=str`` makes it return a str.
"""

calls = []
settings = {}
disk = bytearray(b"abcdefgh" * 512)


def config(key, value):
    settings[key] = value


def open(readonly):
    return "v1-handle"


def get_size(h):
    return len(disk)


def pread(h, count, offset):
    calls.append(("pread", h, count, offset))
    if settings.get("pread") == "str":
        return "not a buffer"
    if settings.get("short") == "1":
        count -= 1
    return disk[offset : offset + count]


def pwrite(h, buf, offset):
    calls.append(("pwrite", h, bytes(buf), offset))


def flush(h):
    calls.append(("flush", h))


def trim(h, count, offset):
    calls.append(("trim", h, count, offset))


def zero(h, count, offset, may_trim):
    calls.append(("zero", h, count, offset, may_trim))


def cache(h, count, offset, flags):
    calls.append(("cache", h, count, offset, flags))


def extents(h, count, offset, flags):
    calls.append(("extents", h, count, offset, flags))
    return [(offset, count, 0)]
