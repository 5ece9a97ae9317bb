"""``triofd`` (the console script) and ``python -m triofd``.

``triofd watch`` prints inotify events until interrupted (``-c``/``-t`` stop it early).  Once
every watch is in place it writes ``triofd: watches established`` to stderr, as inotifywait does,
so scripts know when events start counting.  A kernel queue overflow prints
``triofd: error: inotify queue overflowed ...`` to stderr and exits with status 3: the output
so far is complete up to that point, and a consumer must rescan.  Other errors are one
``triofd: error:`` line, status 1 (2 for a bad command line); SIGINT exits 130.
"""

from __future__ import annotations

import math
import os
import signal
import sys
from collections.abc import Sequence

import trio

from ._cli import (
    EXIT_OVERFLOW,
    PROG,
    CommandLineError,
    WatchOptions,
    format_event,
    parse_command_line,
    usage,
)
from ._inotify import Inotify, InotifyOverflowError
from ._inotify_recursive import RecursiveInotify

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run a ``triofd`` command line; returns the exit status (never raises)."""
    try:
        opts = parse_command_line(sys.argv[1:] if argv is None else argv)
    except CommandLineError as exc:
        sys.stderr.write(f"{usage()}{PROG}: error: {exc}\n")
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    try:
        return trio.run(watch, opts)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except InotifyOverflowError as exc:
        print(f"{PROG}: error: {exc}; output is incomplete from here", file=sys.stderr)
        return EXIT_OVERFLOW
    except BrokenPipeError:
        # `triofd watch ... | head`: the reader is gone, which is a normal way to stop.  Point
        # stdout at /dev/null so the interpreter's final flush does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{PROG}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


async def watch(opts: WatchOptions) -> int:
    """Print events for ``opts``; returns 0 after ``count`` events or ``timeout`` seconds."""
    channel: Inotify | RecursiveInotify
    channel = RecursiveInotify(opts.mask) if opts.recursive else Inotify()
    out = sys.stdout
    seen = 0
    async with channel:
        for path in opts.paths:
            if isinstance(channel, RecursiveInotify):
                channel.add_tree(path)
            else:
                channel.add_watch(path, opts.mask)
        print(f"{PROG}: watches established", file=sys.stderr, flush=True)
        with trio.move_on_after(math.inf if opts.timeout is None else opts.timeout):
            async for event in channel:
                out.write(format_event(event, as_json=opts.json) + "\n")
                out.flush()  # line by line, so pipes see events as they happen
                seen += 1
                if opts.count is not None and seen >= opts.count:
                    break
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
