"""Cross-check with libnfs: its command-line tools and a ctypes binding of ``libnfs.so``.

The tools (libnfs-utils 4.0: ``nfs-ls``, ``nfs-cat``, ``nfs-cp``) run inside a server's
namespace through ``nsenter``, so they work from any thread.  Quirks of 4.0 worth knowing:
no ``host:port`` form in URLs, unknown ``?arg=`` silently ignored, ``nfs-ls URL`` MOUNTs the
whole path (so it lists directories only), ``nfs-cp`` creates files with mode 0660 and cannot
write to ``/dev/null``.  Every helper raises :class:`LibnfsError` when the tool fails.

:class:`LibnfsMount` binds the synchronous libnfs C API (4.x signatures) for the operations
the tools lack (mkdir, chmod, many small files through one mount).  libnfs opens its sockets
on the calling thread, so it must be used from a thread inside the server's namespace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from ._ganesha import GaneshaServer, _maybe_entered, server_for_current_thread

__all__ = [
    "LibnfsError",
    "LibnfsMount",
    "LsEntry",
    "libnfs_cat",
    "libnfs_cat_async",
    "libnfs_cp",
    "libnfs_cp_async",
    "libnfs_ls",
    "libnfs_ls_async",
    "libnfs_mkdir",
    "libnfs_unavailable_reason",
]


class LibnfsError(RuntimeError):
    """A libnfs tool or call failed; the message carries libnfs's own error text."""


@dataclass(frozen=True, slots=True)
class LsEntry:
    """One line of ``nfs-ls``: ``-rw-r--r--  1     0     0            5 name``."""

    mode: str
    nlink: int
    uid: int
    gid: int
    size: int
    name: str

    @property
    def is_dir(self) -> bool:
        return self.mode.startswith("d")


def _resolve(server: GaneshaServer | None) -> GaneshaServer:
    found = server if server is not None else server_for_current_thread()
    if found is None:
        raise RuntimeError(
            "no GaneshaServer for this thread: pass server=, or call from inside server.netns()"
        )
    return found


def _checked(argv: Sequence[str], proc: subprocess.CompletedProcess[bytes]) -> bytes:
    # nfs-ls/nfs-cp exit non-zero on failure; also treat "Failed to" on stderr as failure
    # because 4.0 is not consistent about exit codes.
    err = proc.stderr.decode(errors="replace").strip()
    if proc.returncode != 0 or "Failed to" in err:
        raise LibnfsError(f"{' '.join(argv)} failed (status {proc.returncode}): {err}")
    return proc.stdout


def _parse_ls(out: bytes) -> list[LsEntry]:
    entries = []
    for line in out.decode(errors="surrogateescape").splitlines():
        if not line.strip():
            continue
        mode, nlink, uid, gid, size, name = line.split(maxsplit=5)
        if name in (".", ".."):
            continue
        entries.append(LsEntry(mode, int(nlink), int(uid), int(gid), int(size), name))
    return entries


def libnfs_ls(url: str, *, server: GaneshaServer | None = None) -> list[LsEntry]:
    """List the directory at ``url`` with ``nfs-ls`` (without ``.`` and ``..``)."""
    argv = ["nfs-ls", url]
    return _parse_ls(_checked(argv, _resolve(server).run(argv)))


def libnfs_cat(url: str, *, server: GaneshaServer | None = None) -> bytes:
    """The content of the file at ``url``, read with ``nfs-cat``."""
    argv = ["nfs-cat", url]
    return _checked(argv, _resolve(server).run(argv))


def libnfs_cp(src: str, dst: str, *, server: GaneshaServer | None = None) -> None:
    """``nfs-cp src dst``: each side a local path or an ``nfs://`` URL."""
    argv = ["nfs-cp", src, dst]
    _checked(argv, _resolve(server).run(argv))


async def _run_async(server: GaneshaServer, argv: Sequence[str]) -> bytes:
    import trio

    proc = await trio.run_process(
        server.nsenter_argv(argv), capture_stdout=True, capture_stderr=True, check=False
    )
    completed = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout, proc.stderr)
    return _checked(argv, completed)


async def libnfs_ls_async(url: str, *, server: GaneshaServer | None = None) -> list[LsEntry]:
    """:func:`libnfs_ls` without blocking the Trio loop."""
    return _parse_ls(await _run_async(_resolve(server), ["nfs-ls", url]))


async def libnfs_cat_async(url: str, *, server: GaneshaServer | None = None) -> bytes:
    """:func:`libnfs_cat` without blocking the Trio loop."""
    return await _run_async(_resolve(server), ["nfs-cat", url])


async def libnfs_cp_async(src: str, dst: str, *, server: GaneshaServer | None = None) -> None:
    """:func:`libnfs_cp` without blocking the Trio loop."""
    await _run_async(_resolve(server), ["nfs-cp", src, dst])


def libnfs_mkdir(relpath: str, *, mode: int = 0o777, server: GaneshaServer | None = None) -> str:
    """Create directory ``relpath`` in the export through NFS (libnfs); return its URL."""
    srv = _resolve(server)
    with _maybe_entered(srv), LibnfsMount(srv.host, srv.export_path) as nfs:
        nfs.mkdir(relpath)
        nfs.chmod(relpath, mode)
    return srv.url_for(relpath)


# -- ctypes binding of libnfs.so (4.x API) ----------------------------------------------------

_lib: ctypes.CDLL | None = None


def libnfs_unavailable_reason() -> str | None:
    """Why the libnfs helpers cannot run here (library or tools missing), or ``None``."""
    import shutil

    missing = [tool for tool in ("nfs-ls", "nfs-cat", "nfs-cp") if shutil.which(tool) is None]
    if missing:
        return f"the libnfs helpers need {', '.join(missing)} (apt: libnfs-utils)"
    try:
        _libnfs()
    except LibnfsError as exc:
        return str(exc)
    return None


def _libnfs() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("nfs") or "libnfs.so.13"
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            raise LibnfsError(f"cannot load libnfs ({name}): {exc}") from exc
        vp, cp, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
        pvp = ctypes.POINTER(ctypes.c_void_p)
        signatures: dict[str, tuple[list[type], type | None]] = {
            "nfs_init_context": ([], vp),
            "nfs_destroy_context": ([vp], None),
            "nfs_get_error": ([vp], cp),
            "nfs_mount": ([vp, cp, cp], i),
            "nfs_mkdir": ([vp, cp], i),
            "nfs_rmdir": ([vp, cp], i),
            "nfs_chmod": ([vp, cp, i], i),
            "nfs_unlink": ([vp, cp], i),
            "nfs_creat": ([vp, cp, i, pvp], i),
            "nfs_open": ([vp, cp, i, pvp], i),
            "nfs_close": ([vp, vp], i),
            # 4.x: (nfs, fh, count, buf); libnfs 6 swapped the last two.
            "nfs_write": ([vp, vp, ctypes.c_uint64, cp], i),
            "nfs_read": ([vp, vp, ctypes.c_uint64, vp], i),
        }
        for fname, (argtypes, restype) in signatures.items():
            fn = getattr(lib, fname)
            fn.argtypes = argtypes
            fn.restype = restype
        _lib = lib
    return _lib


class LibnfsMount:
    """One libnfs context mounted on ``host:export`` (blocking calls on the calling thread).

    Paths are relative to the export (``"dir/file"`` or ``"/dir/file"``).  Use as a context
    manager or call :meth:`close`.
    """

    def __init__(self, host: str, export: str) -> None:
        self._lib = _libnfs()
        ctx = self._lib.nfs_init_context()
        if not ctx:
            raise LibnfsError("nfs_init_context failed")
        self._ctx: int | None = ctx
        self._check(
            self._lib.nfs_mount(ctx, host.encode(), export.encode()), f"mount {host}:{export}"
        )

    def __enter__(self) -> LibnfsMount:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._ctx is not None:
            self._lib.nfs_destroy_context(self._ctx)
            self._ctx = None

    @property
    def _c(self) -> int:
        if self._ctx is None:
            raise LibnfsError("the libnfs context is closed")
        return self._ctx

    def _check(self, rc: int, what: str) -> int:
        if rc < 0:
            msg = self._lib.nfs_get_error(self._ctx)
            text = msg.decode(errors="replace") if msg else f"errno {-rc}"
            raise LibnfsError(f"libnfs {what}: {text}")
        return rc

    @staticmethod
    def _path(path: str) -> bytes:
        return ("/" + path.lstrip("/")).encode()

    def mkdir(self, path: str) -> None:
        self._check(self._lib.nfs_mkdir(self._c, self._path(path)), f"mkdir {path}")

    def rmdir(self, path: str) -> None:
        self._check(self._lib.nfs_rmdir(self._c, self._path(path)), f"rmdir {path}")

    def chmod(self, path: str, mode: int) -> None:
        self._check(self._lib.nfs_chmod(self._c, self._path(path), mode), f"chmod {path}")

    def unlink(self, path: str) -> None:
        self._check(self._lib.nfs_unlink(self._c, self._path(path)), f"unlink {path}")

    def write_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        """Create (or truncate) ``path`` and write ``data``; close commits (UNSTABLE + COMMIT)."""
        fh = ctypes.c_void_p()
        self._check(
            self._lib.nfs_creat(self._c, self._path(path), mode, ctypes.byref(fh)), f"creat {path}"
        )
        try:
            view = memoryview(data)
            done = 0
            while done < len(view):
                chunk = bytes(view[done : done + (1 << 20)])
                done += self._check(
                    self._lib.nfs_write(self._c, fh, len(chunk), chunk), f"write {path}"
                )
        finally:
            self._check(self._lib.nfs_close(self._c, fh), f"close {path}")

    def read_file(self, path: str) -> bytes:
        """The whole content of ``path``."""
        fh = ctypes.c_void_p()
        self._check(
            self._lib.nfs_open(self._c, self._path(path), 0, ctypes.byref(fh)), f"open {path}"
        )
        try:
            parts = []
            buf = ctypes.create_string_buffer(1 << 20)
            while n := self._check(self._lib.nfs_read(self._c, fh, len(buf), buf), f"read {path}"):
                parts.append(buf.raw[:n])
            return b"".join(parts)
        finally:
            self._check(self._lib.nfs_close(self._c, fh), f"close {path}")
