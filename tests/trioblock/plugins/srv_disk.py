"""A 1 MiB RAM disk (API 2) for server-level tests; every callback appends to ``calls``.

Parameters shape the plugin the way nbdkit's defaults and quirks are exercised:

* ``can_X=<python literal>`` defines ``can_X(h)`` (or ``is_rotational``) returning that value,
  e.g. ``can_fua=2``, ``can_write=1`` (an int, which nbdkit reads as false);
  without it the callback is missing and the host's default applies;
* ``without=name,name`` removes callbacks (e.g. ``zero``, ``extents``, ``flush``);
* ``zero=eopnotsupp`` makes ``zero`` call ``set_error(EOPNOTSUPP)`` and raise;
* ``thread_model=<int>``; ``chatty=1`` prints from ``pread``;
* ``fail_at=<offset>``: ``pread`` there raises ZeroDivisionError, ``pwrite`` there calls
  ``set_error(fail_errno)`` (default EIO) and raises.
"""

import ast
import errno

import nbdkit

API_VERSION = 2

calls = []
disk = bytearray(1024 * 1024)
settings = {
    "zero": "ok",
    "thread_model": nbdkit.THREAD_MODEL_PARALLEL,
    "chatty": False,
    "fail_at": None,
    "fail_errno": errno.EIO,
}


def _answer(value):
    def callback(h):
        return value

    return callback


def config(key, value):
    if key == "without":
        for name in value.split(","):
            del globals()[name]
    elif key.startswith("can_") or key == "is_rotational":
        globals()[key] = _answer(ast.literal_eval(value))
    elif key == "zero":
        settings["zero"] = value
    elif key in ("thread_model", "fail_at", "fail_errno", "chatty"):
        settings[key] = int(value)
    else:
        raise ValueError(f"unknown parameter {key}")


def thread_model():
    return settings["thread_model"]


def open(readonly):
    calls.append(("open", readonly, nbdkit.export_name()))
    return {"export": nbdkit.export_name()}


def close(h):
    calls.append(("close", h["export"]))


def get_size(h):
    return len(disk)


def pread(h, buf, offset, flags):
    calls.append(("pread", len(buf), offset, flags))
    if settings["chatty"]:
        print(f"pread of {len(buf)} bytes at {offset}")
    if offset == settings["fail_at"]:
        1 / 0  # noqa: B018 -- a plugin bug
    buf[:] = disk[offset : offset + len(buf)]


def pwrite(h, buf, offset, flags):
    calls.append(("pwrite", len(buf), offset, flags))
    if offset == settings["fail_at"]:
        nbdkit.set_error(settings["fail_errno"])
        raise RuntimeError("pwrite failed on purpose")
    disk[offset : offset + len(buf)] = buf


def flush(h, flags):
    calls.append(("flush", flags))


def trim(h, count, offset, flags):
    calls.append(("trim", count, offset, flags))
    disk[offset : offset + count] = bytes(count)


def zero(h, count, offset, flags):
    calls.append(("zero", count, offset, flags))
    if settings["zero"] == "eopnotsupp":
        nbdkit.set_error(errno.EOPNOTSUPP)
        raise NotImplementedError("no fast way to zero")
    disk[offset : offset + count] = bytes(count)


def cache(h, count, offset, flags):
    calls.append(("cache", count, offset, flags))


def extents(h, count, offset, flags):
    calls.append(("extents", count, offset, flags))
    return [(offset, count, nbdkit.EXTENT_HOLE | nbdkit.EXTENT_ZERO)]
