"""A fixed-rate loop driven by a kernel timer (timerfd) instead of ``trio.sleep``.

    python examples/fd_timer_loop.py --interval 0.05 --ticks 10

``trio.sleep`` in a loop drifts (each sleep starts after the work); a periodic timerfd keeps
the rate, and when the work overruns, the expiration count says how many ticks were missed.
"""

from __future__ import annotations

import argparse
import time

import trio

from triofd import Clock, Timer


async def main(interval: float, ticks: int) -> None:
    start = time.monotonic()
    seen = 0
    async with Timer(Clock.MONOTONIC) as timer:
        timer.set(interval, every=interval)
        async for expirations in timer:
            seen += expirations
            missed = f" ({expirations - 1} missed)" if expirations > 1 else ""
            print(f"tick {seen:3d} at {time.monotonic() - start:7.3f}s{missed}")
            if seen >= ticks:
                break
    print(f"done: {seen} ticks")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between ticks")
    parser.add_argument("--ticks", type=int, default=10, help="stop after this many ticks")
    args = parser.parse_args()
    trio.run(main, args.interval, args.ticks)
