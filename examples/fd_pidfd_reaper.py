"""Supervise child processes with pidfds: one task per child, exits reported as they happen.

    python examples/fd_pidfd_reaper.py

Starts a few children with plain ``os.posix_spawnp`` (no ``subprocess.Popen`` reaping behind
our back), waits for each in its own task, and kills the one that overstays its deadline with
``pidfd_send_signal`` -- which can never hit a recycled pid, unlike ``os.kill``.
"""

from __future__ import annotations

import os

import trio

from triofd import Pidfd

CHILDREN = [
    ("quick", "sleep 0.05; exit 0"),
    ("fails", "sleep 0.1; exit 3"),
    ("hangs", "exec sleep 60"),
]
DEADLINE = 0.5


async def supervise(name: str, script: str) -> None:
    # posix_spawn returns as soon as the child exists: it never waits for it.
    pid = os.posix_spawnp("sh", ["sh", "-c", script], dict(os.environ))  # noqa: ASYNC221
    async with Pidfd(pid) as child:
        with trio.move_on_after(DEADLINE):
            result = await child.wait()
            print(f"{name:6s} pid {pid}: exited, returncode {result.returncode}", flush=True)
            return
        child.kill()
        result = await child.wait()
        how = result.signal.name if result.signal else "?"
        print(f"{name:6s} pid {pid}: killed after {DEADLINE}s by {how}", flush=True)


async def main() -> None:
    async with trio.open_nursery() as nursery:
        for name, script in CHILDREN:
            nursery.start_soon(supervise, name, script)
    print("all children reaped")


if __name__ == "__main__":
    trio.run(main)
