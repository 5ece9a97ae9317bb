"""Copy a local directory tree onto an NFS export, many files at once, with trionfs.

    python examples/nfs_copy_tree.py ./photos nfs://server/export/backup/photos

The destination directory must exist.  Directories are made first (top-down), then up to 16
files are copied concurrently over one mount; each file's WRITEs are pipelined, and
``async with`` makes each file durable (COMMIT) before its task ends.
"""

from __future__ import annotations

import os
import sys

import trio

import trionfs


async def copy_file(
    nfs: trionfs.NFS, local: str, remote: str, limiter: trio.CapacityLimiter
) -> int:
    async with limiter:
        data = await trio.Path(local).read_bytes()
        async with await nfs.open(remote, "wb") as f:
            await f.write(data)
        return len(data)


def plan(src: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The remote directories to make (parents first) and the (local, remote) file pairs."""
    dirs: list[str] = []
    files: list[tuple[str, str]] = []
    for top, subdirs, names in os.walk(src):
        rel = os.path.relpath(top, src)
        remote_dir = "" if rel == "." else "/" + rel.replace(os.sep, "/")
        dirs.extend(f"{remote_dir}/{d}" for d in subdirs)
        files.extend((os.path.join(top, n), f"{remote_dir}/{n}") for n in names)
    return dirs, files


async def copy_tree(src: str, url: str) -> tuple[int, int]:
    dirs, files = await trio.to_thread.run_sync(plan, src)
    total = 0
    async with trionfs.mount(url) as nfs:
        for d in dirs:
            await nfs.makedirs(d, exist_ok=True)
        limiter = trio.CapacityLimiter(16)

        async def one(local: str, remote: str) -> None:
            nonlocal total
            copied = await copy_file(nfs, local, remote, limiter)
            total += copied  # not "total += await ...": that reads total before awaiting

        async with trio.open_nursery() as nursery:
            for local, remote in files:
                nursery.start_soon(one, local, remote)
    return len(files), total


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} LOCAL_DIR nfs://server/export/DEST_DIR")
    files, total = trio.run(copy_tree, sys.argv[1], sys.argv[2])
    print(f"copied {files} files, {total} bytes")


if __name__ == "__main__":
    main()
