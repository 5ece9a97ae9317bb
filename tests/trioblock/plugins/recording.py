"""API 2 plugin over a 1 MiB RAM disk that records every callback and its arguments in ``calls``.

It defines every callback except the ``can_*`` ones, so the host's defaults apply.
"""

import sys
import threading

import nbdkit

API_VERSION = 2

LOADED_AS = __name__
MAIN_WHILE_LOADING = sys.modules["__main__"].__dict__ is globals()

calls = []
threads = []
disk = bytearray(1024 * 1024)


def config(key, value):
    calls.append(("config", key, value))


def config_complete():
    calls.append(("config_complete",))


def thread_model():
    calls.append(("thread_model",))
    return nbdkit.THREAD_MODEL_PARALLEL


def get_ready():
    calls.append(("get_ready",))


def after_fork():
    calls.append(("after_fork",))


def cleanup():
    calls.append(("cleanup",))


def preconnect(readonly):
    calls.append(("preconnect", readonly))


def open(readonly):
    threads.append(threading.get_ident())
    calls.append(("open", readonly, nbdkit.export_name()))
    return {"readonly": readonly}


def close(h):
    calls.append(("close", h))


def get_size(h):
    calls.append(("get_size",))
    return len(disk)


def pread(h, buf, offset, flags):
    calls.append(("pread", type(buf).__name__, buf.readonly, len(buf), offset, flags))
    buf[:] = disk[offset : offset + len(buf)]


def pwrite(h, buf, offset, flags):
    calls.append(("pwrite", type(buf).__name__, buf.readonly, bytes(buf), offset, flags))
    disk[offset : offset + len(buf)] = buf


def flush(h, flags):
    calls.append(("flush", flags))


def trim(h, count, offset, flags):
    calls.append(("trim", count, offset, flags))


def zero(h, count, offset, flags):
    calls.append(("zero", count, offset, flags))
    disk[offset : offset + count] = bytes(count)


def cache(h, count, offset, flags):
    calls.append(("cache", count, offset, flags))


def extents(h, count, offset, flags):
    calls.append(("extents", count, offset, flags))
    return [(offset, count, nbdkit.EXTENT_HOLE | nbdkit.EXTENT_ZERO)]


def dump_plugin():
    print("recording_calls=" + str(len(calls)))
