"""File -> TCP socket: triofd's splice path against ``os.sendfile`` and a read/write copy loop.

The same file (page cache warm) goes over the same kind of loopback TCP connection to a
receiver thread that drains it into one reused buffer; each method is timed from the first
byte sent to the last byte received.  Rounds alternate which method goes first.  Prints MiB/s
medians and ratios (above 1.0 means splice is faster / cheaper), both for wall-clock
throughput and for the CPU time the sending (Trio) thread spent.

    .venv/bin/python bench/fd_splice.py [--size 256M] [--rounds 5] [--receiver recv|splice]

``bench/fd.py`` imports :func:`bench_splice` and runs it with its own settings.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable

import trio

from triofd import SplicePipe, splice_file_to_socket

MiB = 1 << 20
CHUNK = 1 << 20

Sender = Callable[[int, trio.socket.SocketType, int], Awaitable[None]]


async def send_splice(fd: int, sock: trio.socket.SocketType, size: int) -> None:
    async with SplicePipe() as pipe:
        sent = await splice_file_to_socket(fd, sock, size, 0, pipe=pipe)
    assert sent == size


async def send_sendfile(fd: int, sock: trio.socket.SocketType, size: int) -> None:
    offset = 0
    while offset < size:
        try:
            offset += os.sendfile(sock.fileno(), fd, offset, size - offset)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock.fileno())


async def send_copy(fd: int, sock: trio.socket.SocketType, size: int) -> None:
    stream = trio.SocketStream(sock)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    offset = 0
    while offset < size:
        n = os.preadv(fd, [view[: min(CHUNK, size - offset)]], offset)
        await stream.send_all(view[:n])
        offset += n


METHODS: dict[str, Sender] = {
    "splice (triofd)": send_splice,
    "os.sendfile": send_sendfile,
    "read/write copy": send_copy,
}


def _drain_recv(sock: socket.socket, size: int) -> None:
    """A typical peer: copies every byte into a (reused) user-space buffer."""
    buf = bytearray(CHUNK)
    got = 0
    while got < size:
        n = sock.recv_into(buf)
        if n == 0:
            raise ConnectionError("sender closed early")
        got += n


def _drain_splice(sock: socket.socket, size: int) -> None:
    """A fast peer (socket -> pipe -> /dev/null, no copy): the sender becomes the bottleneck."""
    r, w = os.pipe()
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        got = 0
        while got < size:
            n = os.splice(sock.fileno(), w, CHUNK)
            if n == 0:
                raise ConnectionError("sender closed early")
            got += n
            while n:
                n -= os.splice(r, null, n)
    finally:
        for fd in (r, w, null):
            os.close(fd)


RECEIVERS = {"recv": _drain_recv, "splice": _drain_splice}


async def _one(
    send: Sender, fd: int, size: int, drain: Callable[[socket.socket, int], None] = _drain_recv
) -> tuple[float, float]:
    """(wall seconds, sender-thread CPU seconds) to move ``size`` bytes of ``fd``."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    with client, server:
        client.setblocking(False)
        tsock = trio.socket.from_stdlib_socket(client)
        start, cpu = time.perf_counter(), time.thread_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, drain, server, size)
            await send(fd, tsock, size)
            cpu = time.thread_time() - cpu  # the Trio thread only: the sender's own cost
        elapsed = time.perf_counter() - start
        tsock.detach()
    return elapsed, cpu


async def bench_splice(size: int, rounds: int, receiver: str = "recv") -> list[tuple[str, float]]:
    """Medians per method: ``("<method> MiB/s", x)`` and ``("<method> sender CPU ms/GiB", y)``.

    Wall-clock rates on a loaded machine drift between rounds; the sender thread's CPU time
    per GiB is the steadier figure of what each method costs the process.
    """
    drain = RECEIVERS[receiver]
    with tempfile.NamedTemporaryFile(prefix="triofd-bench-") as f:
        block = min(size, 16 * MiB)
        f.write(os.urandom(block) * (size // block))
        f.flush()
        size = os.fstat(f.fileno()).st_size
        fd = f.fileno()
        for send in METHODS.values():  # warm the page cache and the code paths
            await _one(send, fd, min(size, 32 * MiB), drain)
        wall: dict[str, list[float]] = {name: [] for name in METHODS}
        cpu: dict[str, list[float]] = {name: [] for name in METHODS}
        names = list(METHODS)
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            if r % 2:
                order.reverse()
            for name in order:
                seconds, cpu_seconds = await _one(METHODS[name], fd, size, drain)
                wall[name].append(seconds)
                cpu[name].append(cpu_seconds)
    gib = size / (1 << 30)
    results = [(f"{n} MiB/s", size / MiB / statistics.median(t)) for n, t in wall.items()]
    results += [
        (f"{n} sender CPU ms/GiB", 1000 * statistics.median(t) / gib) for n, t in cpu.items()
    ]
    return results


def print_table(results: list[tuple[str, float]]) -> None:
    """The medians of :func:`bench_splice` as a table with splice's ratio to each method."""
    table = dict(results)
    print(f"{'method':18} {'MiB/s':>8} {'splice/this':>12} {'CPU ms/GiB':>11} {'this/splice':>12}")
    ours = table["splice (triofd) MiB/s"]
    our_cpu = table["splice (triofd) sender CPU ms/GiB"]
    for name in METHODS:
        rate, cost = table[f"{name} MiB/s"], table[f"{name} sender CPU ms/GiB"]
        print(f"{name:18} {rate:8.0f} {ours / rate:12.2f} {cost:11.0f} {cost / our_cpu:12.2f}")


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.upper()
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256M", help="bytes per transfer (K/M/G suffixes)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--receiver",
        choices=sorted(RECEIVERS),
        default="recv",
        help="how the peer drains: recv_into a buffer, or splice to /dev/null (no copy)",
    )
    args = parser.parse_args()
    size = parse_size(args.size)
    results = trio.run(bench_splice, size, args.rounds, args.receiver)
    print(
        f"file -> TCP loopback, receiver {args.receiver}, {size // MiB} MiB x {args.rounds}"
        " rounds (medians)"
    )
    print_table(results)


if __name__ == "__main__":
    main()
