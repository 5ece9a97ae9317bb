"""The ``trionfs`` command line: parsing and output formats.

Verbs follow libnfs-utils (``nfs-ls``, ``nfs-cat``, ``nfs-cp``) and, where a verb has a GNU
coreutils twin, that twin's options and semantics (``cp -r`` into an existing directory vs
onto a new name, ``rm -r``/``-f``, ``mkdir -p``, ``ln -s``, ``ls -l``/``-R``/``-a``, ``df``,
``stat``).  :mod:`trionfs.__main__` runs them.
"""

from __future__ import annotations

import argparse
import os
import stat
import time
from collections.abc import Sequence

PROG = "trionfs"

DESCRIPTION = """\
An NFSv3 client on the command line.  Remote paths are nfs:// URLs
(nfs://server/export/path?uid=..&gid=..&timeo=..; see docs/trionfs.md); cp also takes
local paths."""


class CommandLineError(Exception):
    """Bad usage: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise CommandLineError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="log RPC details")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("ls", help="list a directory (nfs-ls)")
    p.add_argument("-l", dest="long", action="store_true", help="long listing")
    p.add_argument("-R", dest="recursive", action="store_true", help="recurse")
    p.add_argument("-a", dest="all", action="store_true", help="show entries starting with .")
    p.add_argument("urls", nargs="+", metavar="URL")

    p = sub.add_parser("cat", help="write files to stdout (nfs-cat)")
    p.add_argument("urls", nargs="+", metavar="URL")

    p = sub.add_parser("cp", help="copy files local<->NFS or NFS<->NFS (nfs-cp, cp)")
    p.add_argument("-r", "-R", "--recursive", dest="recursive", action="store_true",
                   help="copy directories recursively (symlinks copied as symlinks)")  # fmt: skip
    p.add_argument("--progress", choices=["auto", "always", "never"], default="auto",
                   help="a progress bar on stderr (auto: when stderr is a terminal)")  # fmt: skip
    p.add_argument("--sparse", choices=["auto", "always", "never"], default="auto",
                   help="skip all-zero blocks (auto: of sparse sources), as GNU cp")  # fmt: skip
    p.add_argument("paths", nargs="+", metavar="SOURCE... DEST")

    p = sub.add_parser("stat", help="show attributes, as stat(1)")
    p.add_argument("-L", dest="dereference", action="store_true", help="follow symlinks")
    p.add_argument("urls", nargs="+", metavar="URL")

    p = sub.add_parser("mkdir", help="make directories")
    p.add_argument("-p", dest="parents", action="store_true",
                   help="make parents as needed, no error if existing")  # fmt: skip
    p.add_argument("-m", dest="mode", type=_octal, default=0o777, help="mode (octal)")
    p.add_argument("urls", nargs="+", metavar="URL")

    p = sub.add_parser("rm", help="remove files or directories")
    p.add_argument("-r", "-R", dest="recursive", action="store_true", help="recursively")
    p.add_argument("-f", dest="force", action="store_true", help="ignore nonexistent files")
    p.add_argument("urls", nargs="+", metavar="URL")

    p = sub.add_parser("rmdir", help="remove empty directories")
    p.add_argument("urls", nargs="+", metavar="URL")

    p = sub.add_parser("mv", help="rename (on one export)")
    p.add_argument("paths", nargs="+", metavar="SOURCE... DEST")

    p = sub.add_parser("ln", help="make links (hard by default, -s symbolic)")
    p.add_argument("-s", dest="symbolic", action="store_true", help="symbolic link")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("link", metavar="LINK_URL")

    p = sub.add_parser("df", help="file system usage, as df(1) -k", conflict_handler="resolve")
    p.add_argument("-H", "--si", dest="human", action="store_true", help="powers of 1000")
    p.add_argument("-h", dest="human_iec", action="store_true", help="powers of 1024")
    p.add_argument("urls", nargs="+", metavar="URL")

    p = sub.add_parser("exports", help="the server's export list (showmount -e)")
    p.add_argument("url", metavar="nfs://SERVER")
    return parser


def _octal(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid mode: {text!r}") from None


def parse_command_line(argv: Sequence[str]) -> argparse.Namespace:
    args = build_parser().parse_args(list(argv))
    if args.verb in ("cp", "mv") and len(args.paths) < 2:
        raise CommandLineError(
            f"{PROG} {args.verb}: missing destination file operand after '{args.paths[0]}'"
        )
    return args


def is_url(path: str) -> bool:
    return path.lower().startswith("nfs://")


# -- output formats -------------------------------------------------------------------------


def mode_string(mode: int) -> str:
    return stat.filemode(mode)


def ls_long_line(name: str, st: os.stat_result, target: str | None = None,
                 now: float | None = None) -> str:  # fmt: skip
    """One ``ls -l`` line: mode, links, uid, gid, size, mtime, name (-> target)."""
    now = time.time() if now is None else now
    mtime = st.st_mtime
    fmt = "%b %e %H:%M" if abs(now - mtime) < 182 * 86400 else "%b %e  %Y"
    when = time.strftime(fmt, time.localtime(mtime))
    size = str(st.st_size)
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        size = f"{os.major(st.st_rdev)}, {os.minor(st.st_rdev)}"
    line = (f"{mode_string(st.st_mode)} {st.st_nlink:>3} {st.st_uid:>5} {st.st_gid:>5} "
            f"{size:>10} {when} {name}")  # fmt: skip
    if target is not None:
        line += f" -> {target}"
    return line


_TYPE_NAMES = {
    stat.S_IFREG: "regular file", stat.S_IFDIR: "directory", stat.S_IFLNK: "symbolic link",
    stat.S_IFCHR: "character special file", stat.S_IFBLK: "block special file",
    stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket",
}  # fmt: skip


def _stamp(ns: int) -> str:
    seconds, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))
    zone = time.strftime("%z", time.localtime(seconds))
    return f"{base}.{frac:09d} {zone}"


def stat_text(name: str, st: os.stat_result, target: str | None = None) -> str:
    """``stat(1)``'s default output."""
    kind = _TYPE_NAMES.get(stat.S_IFMT(st.st_mode), "weird file")
    if st.st_size == 0 and kind == "regular file":
        kind = "regular empty file"
    shown = f"'{name}' -> '{target}'" if target is not None else name
    return (
        f"  File: {shown}\n"
        f"  Size: {st.st_size:<15} Blocks: {st.st_blocks:<10} IO Block: {st.st_blksize:<6} "
        f"{kind}\n"
        f"Device: {st.st_dev:x}h/{st.st_dev}d\tInode: {st.st_ino:<11} Links: {st.st_nlink}\n"
        f"Access: ({stat.S_IMODE(st.st_mode):04o}/{mode_string(st.st_mode)})  "
        f"Uid: ({st.st_uid:>5})   Gid: ({st.st_gid:>5})\n"
        f"Access: {_stamp(st.st_atime_ns)}\n"
        f"Modify: {_stamp(st.st_mtime_ns)}\n"
        f"Change: {_stamp(st.st_ctime_ns)}\n"
    )


def _human(n: int, base: int) -> str:
    units = "KMGTPE"
    value = float(n)
    unit = ""
    for u in units:
        if value < base:
            break
        value /= base
        unit = u
    if not unit:
        return str(n)
    return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"


def df_lines(rows: list[tuple[str, os.statvfs_result, str]], human: int = 0) -> list[str]:
    """``df`` output: 1K-blocks (or -h/-H sizes), used, available, use%, mount point."""
    head = "Size" if human else "1K-blocks"
    out = [f"{'Filesystem':<40} {head:>12} {'Used':>12} {'Available':>12} {'Use%':>5} Mounted on"]
    for source, sv, where in rows:
        total = sv.f_blocks * sv.f_frsize
        free = sv.f_bfree * sv.f_frsize
        avail = sv.f_bavail * sv.f_frsize
        used = total - free
        pct = "-" if used + avail == 0 else f"{-(-used * 100 // (used + avail))}%"
        if human:
            cells = [_human(v, human) for v in (total, used, avail)]
        else:
            cells = [str(-(-v // 1024)) for v in (total, used, avail)]
        out.append(f"{source:<40} {cells[0]:>12} {cells[1]:>12} {cells[2]:>12} {pct:>5} {where}")
    return out
