"""Watch a directory tree with triofd and print creations and renames as they happen.

    python examples/fd_recursive_watch.py DIR [SECONDS]

Shows the three inotify layers together: :class:`triofd.RecursiveInotify` (new subdirectories are
watched, and files created in them before their watch existed are still reported), wrapped in
:class:`triofd.RenamePairingChannel` (``MOVED_FROM``/``MOVED_TO`` become one rename), consumed
with ``async for`` under a deadline.  A queue overflow ends the program with status 3.
"""

from __future__ import annotations

import os
import sys

import trio

import triofd

M = triofd.InotifyMask


def show(path: str | bytes | None) -> str:
    return "?" if path is None else os.fsdecode(path)


async def watch_tree(root: str, seconds: float) -> None:
    tree = triofd.RecursiveInotify(M.CREATE | M.MOVE | M.DELETE)
    count = tree.add_tree(root)
    print(f"watching {count} directories under {root}", flush=True)
    async with triofd.RenamePairingChannel(tree) as events:
        with trio.move_on_after(seconds):
            async for event in events:
                if isinstance(event, triofd.RenameEvent):
                    print(f"renamed {show(event.old.path)} -> {show(event.new.path)}", flush=True)
                elif event.moved_from:
                    print(f"moved out {show(event.path)}", flush=True)
                else:
                    print(f"{','.join(event.names).lower()} {show(event.path)}", flush=True)


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or not os.path.isdir(argv[1]):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    seconds = float(argv[2]) if len(argv) == 3 else float("inf")
    try:
        trio.run(watch_tree, argv[1], seconds)
    except triofd.InotifyOverflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
