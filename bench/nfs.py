"""trionfs against libnfs, side by side on one private nfs-ganesha, in one run: each tool
copying the way it copies best.

Each round runs every measure for both clients, alternating which goes first:

* write: a random file (default 512 MiB) from local tmpfs to NFS — libnfs ``nfs-cp FILE URL``
  (one reused 1 MiB buffer) against trionfs's copy tool in-process
  (``trionfs._cli_copy.copy_fd_to_nfs``, what ``trionfs cp`` runs: the local file ``mmap``-ed,
  slices of the mapping handed to ``NFSFile.pwrite``, then ``truncate`` + close = COMMIT);
* read: the same file back from NFS to a local tmpfs file — ``nfs-cp URL FILE`` against
  ``copy_nfs_to_fd`` (what ``trionfs cp`` runs: the source is not sparse, so a window of
  4 MiB READs whose data the reader task splices from the socket into the local file at the
  right offsets); and to nowhere — ``nfs-cat URL > /dev/null`` against ``read_views`` of
  4 MiB (the READ replies themselves), dropped;
* small files: N files of 1 KiB created through ONE mount — libnfs's C API through ctypes
  (``nfs_creat`` + ``nfs_write`` + ``nfs_close`` per file, a sync loop) against
  ``trionfs.mount(url)`` with ``async with await nfs.open(name, "wb") as f: await f.write(data)``
  per file: one at a time, and K files in flight (``--concurrency``, tasks in a nursery).  The
  K-in-flight row against libnfs's loop is the target comparison.

Next to wall-clock figures it prints client CPU time (user + system from ``getrusage``) per
MiB or per file: for libnfs the ``nfs-cp``/``nfs-cat`` child (``RUSAGE_CHILDREN``; ctypes
calls in this process for small files), for trionfs this process (``RUSAGE_SELF``, worker
threads included).  On a loaded shared machine wall clock mostly measures the load.

The export lives on tmpfs (``--base-dir``, default /dev/shm) so the disk does not set the pace.
Before each timed big-file copy, either side, 512 MiB of tmpfs is filled and freed
(``recycle_pages``): on this VM freshly freed pages are far cheaper to allocate than cold ones,
and without it the side that ran second in a round won by the order alone.
Every copy is checked byte for byte (outside the timing).  Prints medians and ratios
(trionfs ÷ libnfs: above 1.0 means trionfs is faster or uses less CPU).  Needs root (the server
runs in a private network namespace, which this process enters).

    .venv/bin/python bench/nfs.py [--size 512M] [--rounds 3] [--files 2000]
                                  [--concurrency 16[,32...]] [--only write|read|small]
"""

from __future__ import annotations

import argparse
import filecmp
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import trio

from trionfs.testing import GaneshaServer, LibnfsMount, ganesha_unavailable_reason

MiB = 1 << 20
PIECE = MiB  # both sides move the data in 1 MiB pieces (nfs-cp's buffer size)
SMALL = 1024

Results = dict[str, list[float]]
Timing = tuple[float, float]
"""(wall seconds, client CPU seconds)"""


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def trionfs_run(fn: Any, *args: Any) -> Timing:
    """``trio.run(fn, *args)``: ``fn`` returns its wall seconds; add this process's CPU."""
    cpu = cpu_seconds(resource.RUSAGE_SELF)
    secs = trio.run(fn, *args)
    return secs, cpu_seconds(resource.RUSAGE_SELF) - cpu


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


# -- libnfs side ---------------------------------------------------------------------------------


def libnfs_tool(server: GaneshaServer, argv: list[str], stdout: int | None = None) -> Timing:
    """Run a libnfs tool in the server's namespace: wall seconds and the child's CPU."""
    argv = server.nsenter_argv(argv)
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=stdout or subprocess.DEVNULL, stderr=subprocess.PIPE)
    secs = time.perf_counter() - start
    return secs, cpu_seconds(resource.RUSAGE_CHILDREN) - cpu


def libnfs_small_files(server: GaneshaServer, directory: str, count: int) -> Timing:
    data = os.urandom(SMALL)
    with LibnfsMount(server.host, server.export_path) as nfs:
        nfs.mkdir(directory)
        cpu = cpu_seconds(resource.RUSAGE_SELF)
        start = time.perf_counter()
        for i in range(count):
            nfs.write_file(f"{directory}/f{i:05d}", data)
        secs = time.perf_counter() - start
        return secs, cpu_seconds(resource.RUSAGE_SELF) - cpu


# -- trionfs side (the public API of trionfs) ------------------------------------------------------


async def trionfs_write(url: str, src: Path) -> float:
    import trionfs
    from trionfs._cli_copy import copy_fd_to_nfs

    fd = os.open(src, os.O_RDONLY)
    try:
        start = time.perf_counter()
        async with await trionfs.open(url, "wb") as f:
            n = await copy_fd_to_nfs(fd, f)
            await f.truncate(n)  # as ``trionfs cp`` does (holes are not written)
        return time.perf_counter() - start
    finally:
        os.close(fd)


async def trionfs_read(url: str, dst: Path | None) -> float:
    import trionfs
    from trionfs._cli_copy import copy_nfs_to_fd

    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) if dst is not None else -1
    try:
        start = time.perf_counter()
        async with await trionfs.open(url, "rb") as f:
            if fd >= 0:
                os.ftruncate(fd, await copy_nfs_to_fd(f, fd))
            else:
                while await f.read_views(f.rsize):
                    pass  # the replies themselves, dropped: no copy
        return time.perf_counter() - start
    finally:
        if fd >= 0:
            os.close(fd)


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


def record(results: Results, key: str, side: str, timing: Timing, amount: float) -> None:
    """Wall rate (amount per second) and client CPU in ms per unit of ``amount``."""
    secs, cpu = timing
    results[f"{key}|{side}"].append(amount / secs)
    results[f"{key}|{side}|cpu"].append(1000 * cpu / amount)


def recycle_pages(local: Path, size: int) -> None:
    """Fill and free ``size`` bytes of tmpfs right before a timed copy, for either side.

    On this VM a page the guest has not touched lately costs far more to allocate than one it
    just freed (the host backs it again), and each big copy allocates its destination's pages.
    Without this, whichever side ran second in a round reused the pages the first had just
    freed, and the order, not the tool, decided most of the difference (measured: 0.65-2.1x
    per round, alternating with the order)."""
    scratch = local / "recycle.bin"
    block = bytes(4 * MiB)
    with open(scratch, "wb") as f:
        for _ in range(0, size, len(block)):
            f.write(block)
    scratch.unlink()


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
    mib = src.stat().st_size / MiB
    targets = {side: f"w-{side}-{r}.bin" for side in sides}
    for side in sides:  # write: each side copies src to its own file on the server
        url = server.url_for(targets[side])
        recycle_pages(local, src.stat().st_size)
        if side == "libnfs":
            timing = libnfs_tool(server, ["nfs-cp", str(src), url])
        else:
            timing = trionfs_run(trionfs_write, with_options(url, args), src)
        check_same(src, server.export_dir / targets[side], f"{side} write")
        if args.only in (None, "write"):
            record(results, f"write {args.size}", side, (timing[0], timing[1] * size_mb / mib),
                   size_mb)  # fmt: skip
    if args.only in (None, "read"):
        url = server.url_for(targets[sides[0]])
        for side in sides:
            out = local / f"r-{side}.bin"
            recycle_pages(local, src.stat().st_size)
            if side == "libnfs":
                timing = libnfs_tool(server, ["nfs-cp", url, str(out)])
            else:
                timing = trionfs_run(trionfs_read, with_options(url, args), out)
            check_same(src, out, f"{side} read")
            out.unlink()
            record(results, f"read {args.size} to file", side,
                   (timing[0], timing[1] * size_mb / mib), size_mb)  # fmt: skip
        for side in reversed(sides):
            if side == "libnfs":
                with open(os.devnull, "wb") as null:
                    timing = libnfs_tool(server, ["nfs-cat", url], stdout=null.fileno())
            else:
                timing = trionfs_run(trionfs_read, with_options(url, args), None)
            record(results, f"read {args.size} to /dev/null", side,
                   (timing[0], timing[1] * size_mb / mib), size_mb)  # fmt: skip
    remove(server, *targets.values())


def small_files_round(
    server: GaneshaServer, args: argparse.Namespace, sides: list[str], r: int, results: Results
) -> None:
    count = args.files
    runs: list[tuple[str, int]] = []
    for side in sides:
        if side == "libnfs":
            runs.append(("libnfs", 1))
        else:
            runs += [("trionfs", n) for n in [1, *args.concurrency]]
    if r % 2:
        runs.reverse()
    libnfs: Timing | None = None
    ours: dict[int, Timing] = {}
    for side, concurrency in runs:
        directory = f"small-{side}-{concurrency}-{r}"
        if side == "libnfs":
            libnfs = libnfs_small_files(server, directory, count)
        else:
            with LibnfsMount(server.host, server.export_path) as nfs:
                nfs.mkdir(directory)
            url = with_options(server.url_for(directory), args)
            ours[concurrency] = trionfs_run(trionfs_small_files, url, count, concurrency)
        made = list((server.export_dir / directory).iterdir())
        if len(made) != count or any(p.stat().st_size != SMALL for p in made):
            raise SystemExit(f"bench: {side} small files: wrong count or sizes")
    for concurrency, timing in ours.items():
        how = "one at a time" if concurrency == 1 else f"trionfs {concurrency} in flight"
        key = f"{count} x 1 KiB files, {how}"
        record(results, key, "trionfs", timing, count)
        if libnfs is not None:
            record(results, key, "libnfs", libnfs, count)  # the same loop, every row


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


def median(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


def round_ratios(results: Results, measure: str) -> list[float]:
    """trionfs ÷ libnfs round by round: the two sides of a round ran back to back, so this
    ratio is less exposed to the machine drifting during a run than the ratio of medians."""
    pairs = zip(results[f"{measure}|trionfs"], results[f"{measure}|libnfs"], strict=True)
    return [a / b for a, b in pairs]


def report(results: Results) -> None:
    measures = list(dict.fromkeys(key.split("|")[0] for key in results))
    print(f"{'measure (median)':44} {'trionfs':>9} {'libnfs':>9} {'ratio':>6} {'paired':>6}"
          f"   {'client CPU: trionfs':>19} {'libnfs':>7} {'ratio':>6}")  # fmt: skip
    for measure in measures:
        files = "files" in measure
        unit, cpu_unit = ("files/s", "ms/file") if files else ("MB/s", "ms/MiB")
        a, b = (median(results.get(f"{measure}|{side}")) for side in ("trionfs", "libnfs"))
        ca, cb = (median(results.get(f"{measure}|{side}|cpu")) for side in ("trionfs", "libnfs"))
        cells = [f"{v:9.1f}" if v is not None else f"{'-':>9}" for v in (a, b)]
        ratio = f"{a / b:6.2f}" if a and b else f"{'-':>6}"
        paired = f"{median(round_ratios(results, measure)):6.2f}" if a and b else f"{'-':>6}"
        cpu_cells = [f"{v:7.3f}" if v is not None else f"{'-':>7}" for v in (ca, cb)]
        cpu_ratio = f"{cb / ca:6.2f}" if ca and cb else f"{'-':>6}"
        print(f"{measure + ' ' + unit:44} {cells[0]} {cells[1]} {ratio} {paired}"
              f"   {cpu_cells[0]:>12} {cpu_unit} {cpu_cells[1]} {cpu_ratio}")  # fmt: skip
        if files:
            ms = [f"{1000 / v:.3f}" if v else "-" for v in (a, b)]
            print(f"{'   = wall ms per file':44} {ms[0]:>9} {ms[1]:>9}")
    print(
        "all rounds:",
        {k: [round(v, 3 if k.endswith("cpu") else 1) for v in vals] for k, vals in results.items()},
        file=sys.stderr,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", default="512M", help="size of the big file (default 512M)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--files", type=int, default=2000, help="small files per round (default 2000)")
    ap.add_argument(
        "--concurrency",
        default="16",
        type=lambda text: [int(n) for n in text.split(",")],
        help="trionfs small files in flight, comma-separated for several rows (default 16)",
    )
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
