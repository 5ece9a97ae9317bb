"""The ``triofd`` command line: parsing and event formatting (no I/O here).

``triofd watch [-r] [-e EVENTS] [--json] [-c COUNT] [-t SECONDS] PATH...`` is ``inotifywait -m``:
one line per event on stdout, ``EVENTS PATH`` (``CREATE,ISDIR /tmp/d/sub``) or, with ``--json``,
one JSON object per line.  A queue overflow is never silent: see :mod:`triofd.__main__`.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

from ._inotify import InotifyEvent
from ._inotify_flags import InotifyMask, mask_names, parse_mask

PROG = "triofd"
EXIT_OVERFLOW = 3
"""Exit status of ``triofd watch`` when the kernel queue overflowed (events were lost)."""


class CommandLineError(Exception):
    """A bad command line; the message is printed as one ``triofd: error:`` line (status 2)."""


@dataclass(frozen=True, slots=True)
class WatchOptions:
    paths: tuple[str, ...]
    mask: InotifyMask
    recursive: bool = False
    json: bool = False
    count: int | None = None
    timeout: float | None = None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise CommandLineError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Linux fd-based kernel objects as Trio channels.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    watch = commands.add_parser(
        "watch",
        help="print inotify events for PATHs (like inotifywait -m)",
        description="Print one line per inotify event until interrupted. On queue overflow a"
        f" line goes to stderr and the exit status is {EXIT_OVERFLOW}.",
    )
    watch.add_argument("paths", nargs="+", metavar="PATH")
    watch.add_argument("-r", "--recursive", action="store_true", help="watch whole trees")
    watch.add_argument(
        "-e",
        "--events",
        default="all_events",
        help="comma-separated events (create,modify,...; default all_events)",
    )
    watch.add_argument("--json", action="store_true", help="one JSON object per line")
    watch.add_argument("-c", "--count", type=int, help="exit 0 after COUNT events")
    watch.add_argument("-t", "--timeout", type=float, help="exit 0 after SECONDS")
    return parser


def parse_command_line(argv: Sequence[str]) -> WatchOptions:
    args = _parser().parse_args(list(argv))
    try:
        mask = parse_mask(args.events)
    except ValueError as exc:
        raise CommandLineError(f"-e: {exc}") from None
    if args.count is not None and args.count < 1:
        raise CommandLineError("--count must be at least 1")
    if args.timeout is not None and not args.timeout > 0:
        raise CommandLineError("--timeout must be positive")
    return WatchOptions(
        tuple(args.paths), mask, args.recursive, args.json, args.count, args.timeout
    )


def _text(value: str | bytes | None) -> str | None:
    if value is None:
        return None
    return os.fsdecode(value)


def format_event(event: InotifyEvent, *, as_json: bool) -> str:
    """One output line (no newline) for ``event``."""
    names = mask_names(event.mask)
    path = _text(event.path)
    if as_json:
        record = {
            "wd": event.wd,
            "mask": names,
            "cookie": event.cookie,
            "name": _text(event.name),
            "path": path,
        }
        return json.dumps(record)
    line = f"{','.join(names)} {path if path is not None else '-'}"
    if event.cookie:
        line += f" (cookie {event.cookie})"
    return line


def usage() -> str:
    return _parser().format_usage()
