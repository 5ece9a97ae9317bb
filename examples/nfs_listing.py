"""A directory listing with attributes, like ``ls -l``, from one READDIRPLUS walk.

python examples/nfs_listing.py nfs://server/export/some/dir
"""

from __future__ import annotations

import stat
import sys
import time

import trio

import trionfs


async def listing(url: str) -> None:
    async with trionfs.mount(url) as nfs:
        entries = sorted(await nfs.scandir("/"), key=lambda e: e.name)
        for e in entries:
            st = e.stat(follow_symlinks=False)
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(st.st_mtime))
            name = e.name
            if e.is_symlink():
                name += " -> " + await nfs.readlink(e.path)
            print(f"{stat.filemode(st.st_mode)} {st.st_uid:>5} {st.st_gid:>5} "
                  f"{st.st_size:>10} {when} {name}")  # fmt: skip
        usage = await nfs.statvfs()
        free = usage.f_bavail * usage.f_frsize
        print(f"{len(entries)} entries, {free // (1 << 20)} MiB available")


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} nfs://server/export/DIR")
    trio.run(listing, sys.argv[1])


if __name__ == "__main__":
    main()
