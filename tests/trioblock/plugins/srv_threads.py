# An nbdkit-style plugin that records which thread ran each pread; a read at SLOW_OFFSET sleeps.
import threading
import time

import nbdkit

API_VERSION = 2
SIZE = 4 * 1024 * 1024
SLOW_OFFSET = 4096 * 7
threads = []


def thread_model():
    return nbdkit.THREAD_MODEL_PARALLEL


def open(readonly):
    return 1


def get_size(h):
    return SIZE


def pread(h, buf, offset, flags):
    threads.append(threading.get_ident())
    if offset == SLOW_OFFSET:
        time.sleep(0.01)
    buf[:] = bytes(len(buf))
