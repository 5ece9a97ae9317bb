"""triofd against the Python tools people use today, side by side in one run.

1. Draining 16 000 queued inotify events, first on one repeated name, then on 16 000 distinct
   names: ``async for ev in triofd.Inotify()`` vs inotify_simple (synchronous ``read()``) vs
   asyncinotify (asyncio ``async for``), each taking every event's name.
   Events are queued before the clock starts; rounds rotate (and reverse) the order.
   Events per wall-clock second and per CPU second (steadier on a shared machine), medians.
2. Losing nothing: a separate producer process creates and deletes 20 000 files (40 000 events)
   while each tool consumes; prints events received and overflows reported, per round.
3. eventfd ping-pong between two tasks: triofd ``EventFd`` in Trio vs ``os.eventfd`` driven by
   asyncio ``loop.add_reader``.  Round trips/s, medians, ratio.
4. ``bench/fd_splice.py``: file -> TCP socket, triofd splice vs ``os.sendfile`` vs a read/write
   copy loop, with a copying (``recv``) and a zero-copy (``splice``) receiver; MiB/s and the
   sending thread's CPU ms per GiB.

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
from typing import NamedTuple

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


def queue_distinct(directory: str, count: int) -> None:
    """``count`` IN_OPEN events, each on another file (made by :func:`bench_drain`)."""
    for i in range(count):
        os.close(os.open(os.path.join(directory, f"n{i:05d}"), os.O_RDONLY))


# --- 1. draining queued events -------------------------------------------------------------
#
# Each drainer returns (wall seconds, CPU seconds) for the drain alone: the process is one thread
# in all three, so its CPU time is what the tool cost, minus the time other jobs on this shared
# machine took the core away (which wall clock counts).  Every loop takes each event's name, the
# same work for all three (each tool builds the name when it parses).
#
# Two workloads: "repeated", the (OPEN/CLOSE_NOWRITE on one file: one name), and
# "distinct" (OPEN on 16 000 files: every name new), so that no tool's name handling is
# measured only at its best.

Timing = tuple[float, float]


class Workload(NamedTuple):
    queue: Callable[[str, int], None]
    triofd_mask: int
    simple_mask: int
    asyncinotify_mask: asyncinotify.Mask
    check: Callable[[str], bool]  # the last event's name, as str


WORKLOADS = {
    "repeated": Workload(
        queue_events,
        M.OPEN | M.CLOSE_NOWRITE,
        inotify_simple.flags.OPEN | inotify_simple.flags.CLOSE_NOWRITE,
        asyncinotify.Mask.OPEN | asyncinotify.Mask.CLOSE_NOWRITE,
        lambda name: name == "f",
    ),
    "distinct": Workload(
        queue_distinct,
        M.OPEN,
        inotify_simple.flags.OPEN,
        asyncinotify.Mask.OPEN,
        lambda name: name == f"n{QUEUED - 1:05d}",
    ),
}


def _clock() -> Timing:
    return time.perf_counter(), time.process_time()


def _since(start: Timing) -> Timing:
    return time.perf_counter() - start[0], time.process_time() - start[1]


def drain_triofd(directory: str, work: Workload) -> Timing:
    async def run() -> Timing:
        async with triofd.Inotify() as ino:
            ino.add_watch(directory, work.triofd_mask)
            work.queue(directory, QUEUED)
            start = _clock()
            count = 0
            async for event in ino:
                name = event.name
                count += 1
                if count == QUEUED:
                    break
            elapsed = _since(start)
            assert work.check(str(name))
            return elapsed

    return trio.run(run)


def drain_inotify_simple(directory: str, work: Workload) -> Timing:
    with inotify_simple.INotify() as ino:
        ino.add_watch(directory, work.simple_mask)
        work.queue(directory, QUEUED)
        start = _clock()
        count = 0
        while count < QUEUED:
            for event in ino.read():
                name = event.name
                count += 1
        elapsed = _since(start)
        assert work.check(name)
        return elapsed


def drain_asyncinotify(directory: str, work: Workload) -> Timing:
    async def run() -> Timing:
        with asyncinotify.Inotify() as ino:
            ino.add_watch(directory, work.asyncinotify_mask)
            work.queue(directory, QUEUED)
            start = _clock()
            count = 0
            async for event in ino:
                name = event.name
                count += 1
                if count == QUEUED:
                    break
            elapsed = _since(start)
            assert work.check(str(name))
            return elapsed

    return asyncio.run(run())


DRAINERS: dict[str, Callable[[str, Workload], Timing]] = {
    "triofd": drain_triofd,
    "inotify_simple": drain_inotify_simple,
    "asyncinotify": drain_asyncinotify,
}


def bench_drain(rounds: int) -> None:
    for label, work in WORKLOADS.items():
        with tempfile.TemporaryDirectory(prefix="triofd-bench-") as directory:
            for name in ["f"] if label == "repeated" else [f"n{i:05d}" for i in range(QUEUED)]:
                open(os.path.join(directory, name), "wb").close()
            _bench_drain_workload(directory, label, work, rounds)


def _bench_drain_workload(directory: str, label: str, work: Workload, rounds: int) -> None:
    wall: dict[str, list[float]] = {name: [] for name in DRAINERS}
    cpu: dict[str, list[float]] = {name: [] for name in DRAINERS}
    names = list(DRAINERS)
    for name in names:  # warm up
        DRAINERS[name](directory, work)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        if r % 2:
            order.reverse()
        for name in order:
            seconds, cpu_seconds = DRAINERS[name](directory, work)
            wall[name].append(QUEUED / seconds)
            cpu[name].append(QUEUED / cpu_seconds)
    ours, our_cpu = statistics.median(wall["triofd"]), statistics.median(cpu["triofd"])
    print(f"\n1. drain {QUEUED} queued inotify events ({label} names), {rounds} rounds (medians)")
    print(
        f"{'tool':16} {'events/s':>10} {'triofd/this':>12} {'events/CPU-s':>13} {'triofd/this':>12}"
    )
    for name in names:
        rate, cpu_rate = statistics.median(wall[name]), statistics.median(cpu[name])
        ratio, cpu_ratio = ours / rate, our_cpu / cpu_rate
        print(f"{name:16} {rate:10.0f} {ratio:12.2f} {cpu_rate:13.0f} {cpu_ratio:12.2f}")
    # Per-round ratios show the spread that medians hide.
    for other in names[1:]:
        ratios = sorted(a / b for a, b in zip(wall["triofd"], wall[other], strict=True))
        print(f"  triofd/{other} per round (wall): {' '.join(f'{x:.2f}' for x in ratios)}")


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


# --- 4. splice ---------------------------------------------------------------------------------


def bench_splice_section(rounds: int) -> None:
    try:
        from fd_splice import bench_splice, print_table
    except ImportError:
        print("\n4. splice: bench/fd_splice.py not present, skipped")
        return
    size = 256 << 20
    for receiver in ("recv", "splice"):
        results = trio.run(bench_splice, size, rounds, receiver)
        print(
            f"\n4. file -> TCP loopback, {size >> 20} MiB x {rounds} rounds, receiver"
            f" {receiver} (medians, fd_splice.py)"
        )
        print_table(results)


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
