"""A plugin that records when its callbacks start and end, to measure concurrency.

``events`` gets ("enter", serial, callback) and ("exit", serial, callback) around ``open``,
``get_size``, ``pread`` and ``close`` (list.append is atomic: no lock that could itself serialise
the callbacks); ``serial`` numbers the handle.  Each callback sleeps in between (``pread``
``delay_ms``, the others half as long), releasing the GIL, to widen the window for overlap.

Parameters: ``thread_model=<int>``, ``delay_ms=<int>``, ``multi_conn=<python literal>`` defines
``can_multi_conn`` returning it.
"""

import ast
import itertools
import time

import nbdkit

API_VERSION = 2

events = []
serials = itertools.count(1)
settings = {"thread_model": nbdkit.THREAD_MODEL_SERIALIZE_ALL_REQUESTS, "delay_ms": 20}


def config(key, value):
    if key == "multi_conn":
        answer = ast.literal_eval(value)
        globals()["can_multi_conn"] = lambda h: answer
    elif key in settings:
        settings[key] = int(value)
    else:
        raise ValueError(f"unknown parameter {key}")


def thread_model():
    return settings["thread_model"]


def _busy(serial, callback, share=1.0):
    events.append(("enter", serial, callback))
    time.sleep(settings["delay_ms"] * share / 1000)
    events.append(("exit", serial, callback))


def open(readonly):
    serial = next(serials)
    _busy(serial, "open", 0.5)
    return serial


def close(h):
    _busy(h, "close", 0.5)


def get_size(h):
    _busy(h, "get_size", 0.5)
    return 1024 * 1024


def pread(h, buf, offset, flags):
    _busy(h, "pread")
    buf[:] = bytes(len(buf))
