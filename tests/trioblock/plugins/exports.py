"""list_exports() in the shape chosen by ``mode=...``; default_export() is "a"."""

import nbdkit

API_VERSION = 2
MODE = "mixed"
calls = []


def config(key, value):
    global MODE
    MODE = value


def list_exports(readonly, is_tls):
    calls.append(("list_exports", readonly, is_tls))
    if MODE == "mixed":
        return ["a", ("b", "bee"), b"c"]
    if MODE == "generator":
        return (name for name in ("x", "y"))
    if MODE == "none_description":
        return [("x", None)]
    if MODE == "not_iterable":
        return 42
    if MODE == "failing_generator":
        return failing_generator()
    raise RuntimeError("unknown mode " + MODE)


def failing_generator():
    yield "x"
    nbdkit.set_error(13)
    raise RuntimeError("generator exploded")


def default_export(readonly, is_tls):
    calls.append(("default_export", readonly, is_tls))
    return "a"


def open(readonly):
    calls.append(("open", readonly, nbdkit.export_name()))
    return None


def get_size(h):
    return 512


def pread(h, buf, offset, flags):
    buf[:] = bytes(len(buf))


def export_description(h):
    return "export " + nbdkit.export_name()
