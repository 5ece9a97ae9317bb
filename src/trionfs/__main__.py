"""``trionfs`` (the console script) and ``python -m trionfs``: NFS from the command line.

``main(argv)`` parses with :mod:`trionfs._cli` and runs one verb in ``trio.run``.  Every
failure is one line ``trionfs: <verb>: <path>: <reason>`` on stderr and a non-zero status
(1; 2 for bad usage), never a traceback (``-v`` logs it).  Like coreutils, a verb given
several paths goes on after a failure and exits 1 at the end.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import posixpath
import stat
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack

import trio

from ._cli import (
    PROG,
    CommandLineError,
    df_lines,
    is_url,
    ls_long_line,
    parse_command_line,
    stat_text,
)
from ._cli_copy import Copier, LocalSide, NFSSide, Side
from ._context import NFS
from ._errors import RPCError
from ._mount import mount
from ._mountsession import list_exports
from ._url import NFSURL, normalize_path, parse_url

log = logging.getLogger("trionfs.cli")


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command line (default ``sys.argv[1:]``); returns the exit status."""
    args_list = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_command_line(args_list)
    except CommandLineError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format=f"{PROG}: %(name)s: %(message)s")
    runner = Runner(args)
    try:
        trio.run(runner.run)
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:  # one line, never a traceback
        if isinstance(exc, SystemExit):
            raise
        log.debug("unexpected failure", exc_info=exc)
        print(f"{PROG}: {args.verb}: {reason(exc)}", file=sys.stderr)
        return 1
    return runner.status


def reason(exc: BaseException) -> str:
    """The human part of an error line."""
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return reason(exc.exceptions[0])
    if isinstance(exc, OSError) and exc.errno is not None and not isinstance(exc, TimeoutError):
        return os.strerror(exc.errno)
    if isinstance(exc, TimeoutError):
        return f"timed out: {exc}" if str(exc) else "timed out"
    if isinstance(exc, trio.BrokenResourceError):
        return f"connection lost: {exc.__cause__ or exc}"
    if isinstance(exc, RPCError | ValueError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class Mounts:
    """The mounts one command needs, opened on first use, closed at the end."""

    def __init__(self, stack: AsyncExitStack) -> None:
        self._stack = stack
        self._mounts: dict[str, NFS] = {}
        self._exports: dict[str, list[str]] = {}

    async def locate(self, url: str) -> tuple[NFS, str]:
        """The mount holding ``url``'s path, and the path inside it."""
        parsed = parse_url(url)
        path = normalize_path(parsed.path)
        export, rel = await self._split(parsed, path)
        key = parsed.with_path(export).geturl()
        nfs = self._mounts.get(key)
        if nfs is None:
            nfs = await self._stack.enter_async_context(mount(parsed.with_path(export)))
            self._mounts[key] = nfs
        return nfs, rel

    async def _split(self, parsed: NFSURL, path: str) -> tuple[str, str]:
        host_key = parsed.with_path("/").geturl()
        exports = self._exports.get(host_key)
        if exports is None:
            try:
                entries = await list_exports(parsed)
                exports = sorted((normalize_path(e.directory) for e in entries),
                                 key=len, reverse=True)  # fmt: skip
            except (OSError, RPCError, trio.BrokenResourceError) as exc:
                log.debug("EXPORT failed (%s): mounting the path itself", exc)
                exports = []
            self._exports[host_key] = exports
        for export in exports:
            if path == export or path.startswith(export.rstrip("/") + "/"):
                return export, path[len(export) :] or "/"
        return path, "/"


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.verb: str = args.verb
        self.status = 0

    def fail(self, path: str, exc: BaseException | str) -> None:
        text = exc if isinstance(exc, str) else reason(exc)
        print(f"{PROG}: {self.verb}: {path}: {text}", file=sys.stderr)
        self.status = 1

    async def run(self) -> None:
        async with AsyncExitStack() as stack:
            self.mounts = Mounts(stack)
            await getattr(self, "do_" + self.verb)()

    async def _each(self, urls: Sequence[str], fn: object) -> None:
        for url in urls:
            try:
                if not is_url(url):
                    raise ValueError("not an nfs:// URL")
                await fn(url)  # type: ignore[operator]
            except (OSError, RPCError, ValueError, trio.BrokenResourceError) as exc:
                log.debug("%s %s failed", self.verb, url, exc_info=exc)
                self.fail(url, exc)

    # -- verbs ---------------------------------------------------------------------------

    async def do_ls(self) -> None:
        await self._each(self.args.urls, self._ls)

    async def _ls(self, url: str) -> None:
        nfs, rel = await self.mounts.locate(url)
        st = await nfs.lstat(rel)
        if not stat.S_ISDIR(st.st_mode):
            print(await self._ls_line(nfs, rel, posixpath.basename(rel) or rel, st))
            return
        await self._ls_dir(nfs, rel, url, top=True)

    async def _ls_line(self, nfs: NFS, path: str, name: str, st: os.stat_result) -> str:
        if not self.args.long:
            return name
        target = await nfs.readlink(path) if stat.S_ISLNK(st.st_mode) else None
        return ls_long_line(name, st, target)

    async def _ls_dir(self, nfs: NFS, rel: str, shown: str, top: bool) -> None:
        entries = sorted(await nfs.scandir(rel), key=lambda e: e.name)
        if not self.args.all:
            entries = [e for e in entries if not e.name.startswith(".")]
        if self.args.recursive:
            print(f"{'' if top else chr(10)}{shown}:")
        for e in entries:
            print(await self._ls_line(nfs, e.path, e.name, e.stat(follow_symlinks=False)))
        if self.args.recursive:
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    await self._ls_dir(nfs, e.path, shown.rstrip("/") + "/" + e.name, False)

    async def do_cat(self) -> None:
        out = sys.stdout.buffer

        async def cat(url: str) -> None:
            nfs, rel = await self.mounts.locate(url)
            async with await nfs.open(rel, "rb") as f:
                while chunk := await f.read(nfs.rsize):
                    out.write(chunk)
            out.flush()

        await self._each(self.args.urls, cat)

    async def do_stat(self) -> None:
        async def show(url: str) -> None:
            nfs, rel = await self.mounts.locate(url)
            st = await nfs.stat(rel, follow_symlinks=self.args.dereference)
            target = None
            if stat.S_ISLNK(st.st_mode):
                target = await nfs.readlink(rel)
            print(stat_text(url, st, target), end="")

        await self._each(self.args.urls, show)

    async def do_mkdir(self) -> None:
        async def mk(url: str) -> None:
            nfs, rel = await self.mounts.locate(url)
            if self.args.parents:
                await nfs.makedirs(rel, self.args.mode, exist_ok=True)
            else:
                await nfs.mkdir(rel, self.args.mode)

        await self._each(self.args.urls, mk)

    async def do_rmdir(self) -> None:
        async def rd(url: str) -> None:
            nfs, rel = await self.mounts.locate(url)
            await nfs.rmdir(rel)

        await self._each(self.args.urls, rd)

    async def do_rm(self) -> None:
        async def rm(url: str) -> None:
            nfs, rel = await self.mounts.locate(url)
            try:
                st = await nfs.lstat(rel)
            except FileNotFoundError:
                if self.args.force:
                    return
                raise
            if stat.S_ISDIR(st.st_mode):
                if not self.args.recursive:
                    raise IsADirectoryError(errno.EISDIR, "Is a directory")
                if normalize_path(rel) == "/":
                    raise OSError(errno.EPERM, "refusing to remove the mount's root")
                await _remove_tree(nfs, rel)
            else:
                await nfs.unlink(rel)

        await self._each(self.args.urls, rm)

    async def do_mv(self) -> None:
        paths = self.args.paths
        *sources, dest = paths
        for p in paths:
            if not is_url(p):
                self.fail(p, "mv works on nfs:// URLs only (use cp, then rm)")
                return
        dnfs, drel = await self.mounts.locate(dest)
        dest_is_dir = await dnfs.isdir(drel)
        if len(sources) > 1 and not dest_is_dir:
            self.fail(dest, "Not a directory")
            return

        async def mv(src: str) -> None:
            snfs, srel = await self.mounts.locate(src)
            if snfs is not dnfs:
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            target = posixpath.join(drel, posixpath.basename(srel)) if dest_is_dir else drel
            await snfs.rename(srel, target)

        await self._each(sources, mv)

    async def do_ln(self) -> None:
        async def ln(link_url: str) -> None:
            nfs, rel = await self.mounts.locate(link_url)
            target = self.args.target
            if await nfs.isdir(rel):
                base = posixpath.basename(parse_url(target).path if is_url(target) else target)
                rel = posixpath.join(rel, base)
            if self.args.symbolic:
                await nfs.symlink(target, rel)
                return
            if not is_url(target):
                raise ValueError("a hard link's TARGET must be an nfs:// URL")
            tnfs, trel = await self.mounts.locate(target)
            if tnfs is not nfs:
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            await nfs.link(trel, rel, follow_symlinks=False)

        await self._each([self.args.link], ln)

    async def do_df(self) -> None:
        rows: list[tuple[str, os.statvfs_result, str]] = []

        async def df(url: str) -> None:
            nfs, rel = await self.mounts.locate(url)
            sv = await nfs.statvfs(rel)
            rows.append((f"{nfs.url.host}:{nfs.export}", sv, url))

        await self._each(self.args.urls, df)
        if rows:
            human = 1000 if self.args.human else 1024 if self.args.human_iec else 0
            print("\n".join(df_lines(rows, human)))

    async def do_exports(self) -> None:
        async def exports(url: str) -> None:
            parsed = parse_url(url)
            entries = await list_exports(parsed)
            print(f"Export list for {parsed.host}:")
            for e in entries:
                print(f"{e.directory} {','.join(e.groups) or '(everyone)'}")

        await self._each([self.args.url], exports)

    async def do_cp(self) -> None:
        paths = self.args.paths
        *sources, dest = paths
        progress = self.args.progress == "always" or (
            self.args.progress == "auto" and sys.stderr.isatty()
        )
        copier = Copier(recursive=self.args.recursive, progress=progress, fail=self.fail,
                        sparse=self.args.sparse)  # fmt: skip
        try:
            dside, dpath = await self._side(dest)
        except (OSError, RPCError, ValueError, trio.BrokenResourceError) as exc:
            self.fail(dest, exc)
            return
        dest_is_dir = await dside.isdir(dpath)
        if len(sources) > 1 and not dest_is_dir:
            self.fail(dest, "target is not a directory")
            return
        for src in sources:
            try:
                sside, spath = await self._side(src)
                target = dpath
                if dest_is_dir:
                    target = dside.join(dpath, sside.basename(spath))
                await copier.copy(sside, spath, dside, target, shown=src)
            except (OSError, RPCError, ValueError, trio.BrokenResourceError) as exc:
                log.debug("cp %s failed", src, exc_info=exc)
                self.fail(src, exc)
        if copier.failed:
            self.status = 1

    async def _side(self, path: str) -> tuple[Side, str]:
        if is_url(path):
            nfs, rel = await self.mounts.locate(path)
            return NFSSide(nfs), rel
        return LocalSide(), path


async def _remove_tree(nfs: NFS, path: str) -> None:
    for entry in await nfs.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            await _remove_tree(nfs, entry.path)
        else:
            await nfs.unlink(entry.path)
    await nfs.rmdir(path)


if __name__ == "__main__":
    sys.exit(main())
