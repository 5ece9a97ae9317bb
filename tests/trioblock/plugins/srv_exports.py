"""Exports for NBD_OPT_LIST and a default export; ``open`` records ``nbdkit.export_name()``.

``without=default_export`` removes the default export (an empty name then stays empty).
"""

import nbdkit

API_VERSION = 2

opened = []


def config(key, value):
    if key != "without":
        raise ValueError(f"unknown parameter {key}")
    for name in value.split(","):
        del globals()[name]


def list_exports(readonly, is_tls):
    return [("alpha", "the first disk"), "beta", ("gr\u00fc\u00dfe-\u20ac", "d\u00e9j\u00e0 vu")]


def default_export(readonly, is_tls):
    return "alpha"


def open(readonly):
    opened.append(nbdkit.export_name())
    return None


def get_size(h):
    return 4096 * (1 + len(nbdkit.export_name()))


def pread(h, buf, offset, flags):
    buf[:] = bytes(len(buf))
