"""triofd against the Python tools people use today, side by side in one run.

1. Draining 16 000 queued inotify events: ``async for ev in triofd.Inotify()`` vs inotify_simple
   (synchronous ``read()``) vs asyncinotify (asyncio ``async for``).  Events are queued before
   the clock starts; each round alternates which tool goes first.  Events/s, medians, ratios.
2. Losing nothing: a separate producer process creates and deletes 20 000 files (40 000 events)
   while each tool consumes; prints events received and overflows reported, per round.
3. eventfd ping-pong between two tasks: triofd ``EventFd`` in Trio vs ``os.eventfd`` driven by
   asyncio ``loop.add_reader``.  Round trips/s, medians, ratio.
4. ``bench/fd_splice.py`` (FD-B's file -> socket splice section), when present.

    .venv/bin/python bench/fd.py [--rounds 5] [--only drain,lossless,eventfd,splice]

Ratios are triofd / other: above 1.0 means triofd is faster.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import asyncinotify
import inotify_simple
import trio

import triofd

QUEUED = 16_000
PRODUCED_FILES = 20_000
PING_PONGS = 20_000
M = triofd.InotifyMask


def queue_events(directory: str, count: int) -> None:
    """``count`` events the kernel cannot merge: OPEN and CLOSE_NOWRITE on "f", alternating."""
    path = os.path.join(directory, "f")
    for _ in range(count // 2):
        os.close(os.open(path, os.O_RDONLY))


# --- 1. draining queued events -------------------------------------------------------------


def drain_triofd(directory: str) -> float:
    async def run() -> float:
        async with triofd.Inotify() as ino:
            ino.add_watch(directory, M.OPEN | M.CLOSE_NOWRITE)
            queue_events(directory, QUEUED)
            start = time.perf_counter()
            count = 0
            async for _ in ino:
                count += 1
                if count == QUEUED:
                    break
            return time.perf_counter() - start

    return trio.run(run)


def drain_inotify_simple(directory: str) -> float:
    with inotify_simple.INotify() as ino:
        ino.add_watch(directory, inotify_simple.flags.OPEN | inotify_simple.flags.CLOSE_NOWRITE)
        queue_events(directory, QUEUED)
        start = time.perf_counter()
        count = 0
        while count < QUEUED:
            for _ in ino.read():  # every tool touches every event
                count += 1
        return time.perf_counter() - start


def drain_asyncinotify(directory: str) -> float:
    async def run() -> float:
        with asyncinotify.Inotify() as ino:
            ino.add_watch(directory, asyncinotify.Mask.OPEN | asyncinotify.Mask.CLOSE_NOWRITE)
            queue_events(directory, QUEUED)
            start = time.perf_counter()
            count = 0
            async for _ in ino:
                count += 1
                if count == QUEUED:
                    break
            return time.perf_counter() - start

    return asyncio.run(run())


DRAINERS: dict[str, Callable[[str], float]] = {
    "triofd": drain_triofd,
    "inotify_simple": drain_inotify_simple,
    "asyncinotify": drain_asyncinotify,
}


def bench_drain(rounds: int) -> None:
    rates: dict[str, list[float]] = {name: [] for name in DRAINERS}
    names = list(DRAINERS)
    with tempfile.TemporaryDirectory(prefix="triofd-bench-") as directory:
        open(os.path.join(directory, "f"), "wb").close()
        for name in names:  # warm up
            DRAINERS[name](directory)
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                rates[name].append(QUEUED / DRAINERS[name](directory))
    ours = statistics.median(rates["triofd"])
    print(f"\n1. drain {QUEUED} queued inotify events, {rounds} rounds (median events/s)")
    print(f"{'tool':16} {'events/s':>10} {'triofd/this':>12}")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"{name:16} {rate:10.0f} {ours / rate:12.2f}")


# --- 2. losing nothing under a fast producer ------------------------------------------------

PRODUCER = """
import os, sys
d = sys.argv[1]
for i in range(int(sys.argv[2])):
    p = f"{d}/f{i}"
    os.close(os.open(p, os.O_CREAT | os.O_WRONLY))
    os.unlink(p)
"""


def _producer(directory: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", PRODUCER, directory, str(PRODUCED_FILES)])


def lossless_triofd(directory: str) -> tuple[int, int]:
    async def run() -> tuple[int, int]:
        count = overflows = 0
        async with triofd.Inotify() as ino:
            ino.add_watch(directory, M.CREATE | M.DELETE)
            proc = _producer(directory)
            while True:
                with trio.move_on_after(0.5) as idle:
                    try:
                        async for _ in ino:
                            count += 1
                    except triofd.InotifyOverflowError:
                        overflows += 1
                if idle.cancelled_caught and proc.poll() is not None:
                    return count, overflows

    return trio.run(run)


def lossless_inotify_simple(directory: str) -> tuple[int, int]:
    count = overflows = 0
    with inotify_simple.INotify() as ino:
        ino.add_watch(directory, inotify_simple.flags.CREATE | inotify_simple.flags.DELETE)
        proc = _producer(directory)
        while True:
            events = ino.read(timeout=500)
            for event in events:
                if event.mask & inotify_simple.flags.Q_OVERFLOW:
                    overflows += 1
                else:
                    count += 1
            if not events and proc.poll() is not None:
                return count, overflows


def lossless_asyncinotify(directory: str) -> tuple[int, int]:
    async def run() -> tuple[int, int]:
        count = overflows = 0
        with asyncinotify.Inotify() as ino:
            ino.add_watch(directory, asyncinotify.Mask.CREATE | asyncinotify.Mask.DELETE)
            proc = _producer(directory)
            while True:
                try:
                    event = await asyncio.wait_for(ino.get(), 0.5)
                except TimeoutError:
                    if proc.poll() is not None:
                        return count, overflows
                    continue
                if event.mask & asyncinotify.Mask.Q_OVERFLOW:
                    overflows += 1
                else:
                    count += 1

    return asyncio.run(run())


def bench_lossless(rounds: int) -> None:
    tools: dict[str, Callable[[str], tuple[int, int]]] = {
        "triofd": lossless_triofd,
        "inotify_simple": lossless_inotify_simple,
        "asyncinotify": lossless_asyncinotify,
    }
    expected = 2 * PRODUCED_FILES
    results: dict[str, list[tuple[int, int]]] = {name: [] for name in tools}
    names = list(tools)
    with tempfile.TemporaryDirectory(prefix="triofd-bench-") as directory:
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                results[name].append(tools[name](directory))
    print(f"\n2. producer creating+deleting {PRODUCED_FILES} files ({expected} events), per round")
    print(f"{'tool':16} {'lossless rounds':>16} {'events received (overflows)':>30}")
    for name, runs in results.items():
        whole = sum(1 for got, over in runs if got == expected and over == 0)
        detail = "  ".join(f"{got}({over})" for got, over in runs)
        print(f"{name:16} {whole:>10}/{len(runs):<5} {detail}")


# --- 3. eventfd ping-pong ---------------------------------------------------------------------


def pingpong_triofd(n: int) -> float:
    async def run() -> float:
        async with triofd.EventFd() as ping, triofd.EventFd() as pong:

            async def echo() -> None:
                for _ in range(n):
                    await pong.send(await ping.receive())

            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(echo)
                for _ in range(n):
                    await ping.send(1)
                    await pong.receive()
            return time.perf_counter() - start

    return trio.run(run)


def pingpong_asyncio(n: int) -> float:
    async def run() -> float:
        loop = asyncio.get_running_loop()
        flags = os.EFD_NONBLOCK | os.EFD_CLOEXEC
        ping, pong = os.eventfd(0, flags), os.eventfd(0, flags)

        async def receive(fd: int) -> int:
            while True:
                try:
                    return os.eventfd_read(fd)
                except BlockingIOError:
                    ready = loop.create_future()
                    loop.add_reader(fd, ready.set_result, None)
                    try:
                        await ready
                    finally:
                        loop.remove_reader(fd)

        async def echo() -> None:
            for _ in range(n):
                os.eventfd_write(pong, await receive(ping))

        try:
            start = time.perf_counter()
            task = asyncio.create_task(echo())
            for _ in range(n):
                os.eventfd_write(ping, 1)
                await receive(pong)
            await task
            return time.perf_counter() - start
        finally:
            os.close(ping)
            os.close(pong)

    return asyncio.run(run())


def bench_eventfd(rounds: int) -> None:
    tools = {"triofd EventFd (trio)": pingpong_triofd, "asyncio add_reader": pingpong_asyncio}
    rates: dict[str, list[float]] = {name: [] for name in tools}
    names = list(tools)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            rates[name].append(PING_PONGS / tools[name](PING_PONGS))
    ours = statistics.median(rates[names[0]])
    print(f"\n3. eventfd ping-pong, {PING_PONGS} round trips x {rounds} rounds (median trips/s)")
    print(f"{'tool':24} {'trips/s':>10} {'triofd/this':>12}")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"{name:24} {rate:10.0f} {ours / rate:12.2f}")


# --- 4. splice (FD-B) ----------------------------------------------------------------------------


def bench_splice_section(rounds: int) -> None:
    try:
        from fd_splice import bench_splice
    except ImportError:
        print("\n4. splice: bench/fd_splice.py not present, skipped")
        return
    size = 64 << 20
    results = trio.run(bench_splice, size, rounds)
    print(f"\n4. file -> TCP loopback, {size >> 20} MiB x {rounds} rounds (medians, fd_splice.py)")
    for name, value in results:
        print(f"{name:40} {value:10.0f}")


SECTIONS: dict[str, Callable[[int], None]] = {
    "drain": bench_drain,
    "lossless": bench_lossless,
    "eventfd": bench_eventfd,
    "splice": bench_splice_section,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    args = parser.parse_args()
    print(f"triofd benchmark: python {sys.version.split()[0]}, kernel {os.uname().release}")
    for name in args.only.split(","):
        SECTIONS[name](args.rounds)


if __name__ == "__main__":
    main()
