"""``trionfs.mount`` (an async context manager yielding an :class:`~trionfs.NFS`) and the
context-free ``trionfs.open``."""

from __future__ import annotations

import errno
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, overload

import trio

from ._context import NFS
from ._file import BinaryMode, NFSFile, TextMode
from ._mountsession import open_session
from ._textfile import NFSTextFile
from ._url import NFSURL, normalize_path, parse_url

__all__ = ["mount", "open"]

log = logging.getLogger("trionfs")

EXIT_FLUSH = 10.0
"""Seconds the mount's exit may spend flushing open files when leaving on an exception."""


def _unwrap_group(exc: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception inside a one-leaf group (our background tasks never raise, so a group
    from the mount's nursery only wraps the body's own exception)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]  # type: ignore[assignment]
    return exc


@asynccontextmanager
async def mount(url: str | NFSURL, **options: Any) -> AsyncIterator[NFS]:
    """``async with trionfs.mount("nfs://server/export?uid=1000") as nfs:`` — mount, yield an
    :class:`NFS`, flush open files and unmount at the end.

    Keyword ``options`` override URL arguments (``timeo=50``, ``rsize=65536``, ...).  The URL
    path is the export, or a directory inside one (it becomes the mount's root).
    """
    parsed = url if isinstance(url, NFSURL) else parse_url(url)
    if options:
        parsed = parse_url(parsed.geturl() + ("&" if "?" in parsed.geturl() else "?")
                           + "&".join(f"{k}={_fmt(v)}" for k, v in options.items()))  # fmt: skip
    try:
        async with open_session(parsed) as session, trio.open_nursery() as nursery:
            nfs = NFS(session, nursery)
            try:
                yield nfs
            except BaseException:
                # Leaving on an error or a cancellation: still try to store what open files
                # hold, but briefly (a dead server must not hold up the exit), and let the
                # original exception through.
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + min(parsed.total_timeout, EXIT_FLUSH)
                    try:
                        await nfs.aclose()
                    except Exception as exc:
                        log.warning("flushing files at unmount failed: %s", exc)
                if scope.cancelled_caught:
                    log.warning("flushing files at unmount gave up after %ss", EXIT_FLUSH)
                raise
            else:
                await nfs.aclose()  # a normal exit: flush errors are raised
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise _unwrap_group(group) from None


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ",".join(map(str, value))
    return str(value)


@overload
async def open(
    url: str | NFSURL,
    mode: BinaryMode,
    *,
    encoding: None = None,
    errors: None = None,
    newline: None = None,
    perms: int = 0o666,
    sync: bool | None = None,
) -> NFSFile: ...


@overload
async def open(
    url: str | NFSURL,
    mode: TextMode = "r",
    *,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    perms: int = 0o666,
    sync: bool | None = None,
) -> NFSTextFile: ...


@overload
async def open(
    url: str | NFSURL,
    mode: str,
    *,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    perms: int = 0o666,
    sync: bool | None = None,
) -> NFSFile | NFSTextFile: ...


async def open(
    url: str | NFSURL,
    mode: str = "r",
    *,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    perms: int = 0o666,
    sync: bool | None = None,
) -> NFSFile | NFSTextFile:
    """Context-free ``open``: ``async with await trionfs.open("nfs://h/export/f.txt") as f``.

    The URL's path is an export (or a directory in one) followed by the file's name: the
    file's directory is mounted, and closing the file unmounts.  The mount's connection lives
    in the calling task: close the file in that task, before leaving any ``with`` block or
    nursery entered after this call (``async with`` does exactly that).
    """
    parsed = url if isinstance(url, NFSURL) else parse_url(url)
    path = normalize_path(parsed.path)
    directory, _, name = path.rpartition("/")
    if not name:
        raise IsADirectoryError(errno.EISDIR, "the URL names no file", parsed.path)
    stack = AsyncExitStack()
    nfs = await stack.enter_async_context(mount(parsed.with_path(directory or "/")))
    try:
        f = await nfs.open(name, mode, encoding=encoding, errors=errors, newline=newline,
                           perms=perms, sync=sync)  # fmt: skip
    except BaseException:
        await stack.aclose()
        raise
    raw = f.buffer if isinstance(f, NFSTextFile) else f
    raw._on_close = stack.aclose
    return f
