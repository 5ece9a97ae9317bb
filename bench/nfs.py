"""trionfs against libnfs, side by side on one private nfs-ganesha, in one run.

Each round runs every measure for both clients, alternating which goes first:

* write: a random file (default 512 MiB) from local tmpfs to NFS — libnfs ``nfs-cp`` against
  ``trionfs.open(url, "wb")`` fed in 1 MiB pieces (both end with the data committed);
* read: the same file back from NFS to a local tmpfs file — ``nfs-cp`` against
  ``trionfs.open(url, "rb")``; and to nowhere — ``nfs-cat > /dev/null`` against reads discarded;
* small files: N files of 1 KiB created through ONE mount — libnfs's C API through ctypes
  (``nfs_creat`` + ``nfs_write`` + ``nfs_close`` per file) against ``trionfs.mount(url)`` with
  ``nfs.open(name, "wb")`` per file, one after the other; plus trionfs with 16 files in flight.

The export lives on tmpfs (``--base-dir``, default /dev/shm) so the disk does not set the pace.
Every copy is checked byte for byte (outside the timing).  Prints medians and ratios
(trionfs ÷ libnfs: above 1.0 means trionfs is faster).  Needs root (the server runs in a private
network namespace, which this process enters).

    .venv/bin/python bench/nfs.py [--size 512M] [--rounds 3] [--files 2000]
                                  [--only write|read|small]
"""

from __future__ import annotations

import argparse
import filecmp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import trio

from trionfs.testing import GaneshaServer, LibnfsMount, ganesha_unavailable_reason

MiB = 1 << 20
PIECE = MiB  # both sides move the data in 1 MiB pieces (nfs-cp's buffer size)
SMALL = 1024
CONCURRENCY = 16

Results = dict[str, list[float]]


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


# -- libnfs side ---------------------------------------------------------------------------------


def libnfs_tool(server: GaneshaServer, argv: list[str], stdout: int | None = None) -> float:
    """Run a libnfs tool in the server's namespace; the elapsed seconds."""
    argv = server.nsenter_argv(argv)
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=stdout or subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def libnfs_small_files(server: GaneshaServer, directory: str, count: int) -> float:
    data = os.urandom(SMALL)
    with LibnfsMount(server.host, server.export_path) as nfs:
        nfs.mkdir(directory)
        start = time.perf_counter()
        for i in range(count):
            nfs.write_file(f"{directory}/f{i:05d}", data)
        return time.perf_counter() - start


# -- trionfs side (the public API of trionfs) ------------------------------------------------------


async def trionfs_write(url: str, src: Path) -> float:
    import trionfs

    # Plain blocking I/O on tmpfs on purpose: a thread hop per MiB would cost more than it saves.
    with open(src, "rb", buffering=0) as local:  # noqa: ASYNC230
        start = time.perf_counter()
        async with await trionfs.open(url, "wb") as f:
            while piece := local.read(PIECE):
                await f.write(piece)
        return time.perf_counter() - start


async def trionfs_read(url: str, dst: Path | None) -> float:
    import trionfs

    local = open(dst, "wb", buffering=0) if dst is not None else None  # noqa: SIM115, ASYNC230
    try:
        start = time.perf_counter()
        async with await trionfs.open(url, "rb") as f:
            while piece := await f.read(PIECE):
                if local is not None:
                    local.write(piece)
        return time.perf_counter() - start
    finally:
        if local is not None:
            local.close()


async def trionfs_small_files(url: str, count: int, concurrency: int) -> float:
    import trionfs

    data = os.urandom(SMALL)
    async with trionfs.mount(url) as nfs:
        names = iter(range(count))

        async def worker() -> None:
            for i in names:
                async with await nfs.open(f"f{i:05d}", "wb") as f:
                    await f.write(data)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        return time.perf_counter() - start


def with_options(url: str, args: argparse.Namespace) -> str:
    return f"{url}?{args.trionfs_options}" if args.trionfs_options else url


def trionfs_api_available() -> bool:
    import trionfs

    return all(hasattr(trionfs, name) for name in ("open", "mount"))


# -- harness -------------------------------------------------------------------------------------


def check_same(a: Path, b: Path, what: str) -> None:
    if not filecmp.cmp(a, b, shallow=False):
        raise SystemExit(f"bench: {what}: the copy differs from the source")


def remove(server: GaneshaServer, *relpaths: str) -> None:
    with LibnfsMount(server.host, server.export_path) as nfs:
        for rel in relpaths:
            nfs.unlink(rel)


def big_file_round(
    server: GaneshaServer,
    local: Path,
    src: Path,
    args: argparse.Namespace,
    sides: list[str],
    r: int,
    results: Results,
) -> None:
    size_mb = src.stat().st_size / 1e6
    targets = {side: f"w-{side}-{r}.bin" for side in sides}
    for side in sides:  # write: each side copies src to its own file on the server
        url = server.url_for(targets[side])
        if side == "libnfs":
            secs = libnfs_tool(server, ["nfs-cp", str(src), url])
        else:
            secs = trio.run(trionfs_write, with_options(url, args), src)
        check_same(src, server.export_dir / targets[side], f"{side} write")
        if args.only in (None, "write"):
            results[f"write {args.size} MB/s|{side}"].append(size_mb / secs)
    if args.only in (None, "read"):
        url = server.url_for(targets["libnfs"])
        for side in sides:
            out = local / f"r-{side}.bin"
            if side == "libnfs":
                secs = libnfs_tool(server, ["nfs-cp", url, str(out)])
            else:
                secs = trio.run(trionfs_read, with_options(url, args), out)
            check_same(src, out, f"{side} read")
            out.unlink()
            results[f"read {args.size} to file MB/s|{side}"].append(size_mb / secs)
        for side in sides:
            if side == "libnfs":
                with open(os.devnull, "wb") as null:
                    secs = libnfs_tool(server, ["nfs-cat", url], stdout=null.fileno())
            else:
                secs = trio.run(trionfs_read, with_options(url, args), None)
            results[f"read {args.size} to /dev/null MB/s|{side}"].append(size_mb / secs)
    remove(server, *targets.values())


def small_files_round(
    server: GaneshaServer, args: argparse.Namespace, sides: list[str], r: int, results: Results
) -> None:
    count = args.files
    for side in [*sides, "trionfs-concurrent"] if "trionfs" in sides else sides:
        directory = f"small-{side}-{r}"
        if side == "libnfs":
            secs = libnfs_small_files(server, directory, count)
            key = f"{count} x 1 KiB files, files/s|libnfs"
        else:
            with LibnfsMount(server.host, server.export_path) as nfs:
                nfs.mkdir(directory)
            concurrency = CONCURRENCY if side == "trionfs-concurrent" else 1
            url = with_options(server.url_for(directory), args)
            secs = trio.run(trionfs_small_files, url, count, concurrency)
            key = f"{count} x 1 KiB files, files/s|trionfs"
            if concurrency > 1:
                key = f"{count} x 1 KiB files, {concurrency} in flight, files/s|trionfs"
        made = list((server.export_dir / directory).iterdir())
        if len(made) != count or any(p.stat().st_size != SMALL for p in made):
            raise SystemExit(f"bench: {side} small files: wrong count or sizes")
        results[key].append(count / secs)


def one_round(
    server: GaneshaServer,
    local: Path,
    src: Path,
    args: argparse.Namespace,
    r: int,
    results: Results,
) -> None:
    sides = ["libnfs", "trionfs"] if r % 2 == 0 else ["trionfs", "libnfs"]
    if not trionfs_api_available():
        sides.remove("trionfs")
    if args.only in (None, "write", "read"):
        big_file_round(server, local, src, args, sides, r, results)
    if args.only in (None, "small"):
        small_files_round(server, args, sides, r, results)


def report(results: Results) -> None:
    measures = list(dict.fromkeys(key.split("|")[0] for key in results))
    print(f"{'measure (median)':48} {'trionfs':>10} {'libnfs':>10} {'ratio':>7}")
    for measure in measures:
        ours = results.get(f"{measure}|trionfs")
        theirs = results.get(f"{measure}|libnfs")
        a = statistics.median(ours) if ours else None
        b = statistics.median(theirs) if theirs else None
        cells = [f"{v:10.1f}" if v is not None else f"{'-':>10}" for v in (a, b)]
        ratio = f"{a / b:7.2f}" if a and b else f"{'-':>7}"
        print(f"{measure:48} {cells[0]} {cells[1]} {ratio}")
        if "files/s" in measure:
            ms = [f"{1000 / v:.2f}" if v else "-" for v in (a, b)]
            print(f"{'   = ms per file':48} {ms[0]:>10} {ms[1]:>10}")
    print(
        "all rounds:",
        {k: [round(v, 1) for v in vals] for k, vals in results.items()},
        file=sys.stderr,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", default="512M", help="size of the big file (default 512M)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--files", type=int, default=2000, help="small files per round (default 2000)")
    ap.add_argument("--only", choices=["write", "read", "small"])
    ap.add_argument("--base-dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    ap.add_argument(
        "--trionfs-options",
        default="",
        help="URL arguments for the trionfs side only, e.g. 'rsize=4194304&wsize=4194304'",
    )
    args = ap.parse_args()
    reason = ganesha_unavailable_reason()
    if reason:
        sys.exit(f"bench: {reason}")
    size = parse_size(args.size)
    if not trionfs_api_available():
        print(
            "bench: trionfs.open/trionfs.mount are missing: measuring libnfs only", file=sys.stderr
        )
    results: Results = defaultdict(list)
    with tempfile.TemporaryDirectory(dir=args.base_dir, prefix="trionfs-bench-") as tmp:
        local = Path(tmp) / "local"
        local.mkdir()
        src = local / "random.bin"
        with open(src, "wb") as f:
            for _ in range(size // MiB):
                f.write(os.urandom(MiB))
            f.write(os.urandom(size % MiB))
        with GaneshaServer(base_dir=Path(tmp) / "server") as server, server.netns():
            for r in range(args.rounds):
                one_round(server, local, src, args, r, results)
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    report(results)


if __name__ == "__main__":
    main()
