"""Host unmodified nbdkit Python plugins (nbdkit-python-plugin(3), 1.32) as a :class:`Plugin`.

:meth:`NbdkitPythonPlugin.from_script` loads a script the way ``nbdkit python script.py k=v ...``
does (synchronously, before ``trio.run``).  Every later callback is blocking plugin code, so it runs
in a worker thread through ``trio.to_thread.run_sync``.  A connection also offers its data path as
blocking methods (``conn.blocking``) for the server to batch several requests per hop; each call
installs the connection's context, so ``nbdkit.export_name()`` answers the name that was opened.
Locking for the thread model is the server's job (it reads :attr:`NbdkitPythonPlugin.thread_model`);
this module only caps worker threads with one :class:`trio.CapacityLimiter` per plugin
(:attr:`NbdkitPythonPlugin.limiter`, :data:`DEFAULT_THREAD_LIMIT` tokens unless one is passed in),
because trio's default limiter (40 threads, process-wide) would throttle a few PARALLEL
connections that each allow 16 requests in flight.

Errors follow nbdkit: a callback that raises is logged with its traceback to the
``trioblock.plugin`` logger and fails with ``OSError(errno)``, errno being what the callback passed
to ``nbdkit.set_error`` or else EIO (an ``OSError`` raised by the plugin does *not* choose the
errno).  A return value nbdkit would reject is logged and fails with EIO.

A plugin's ``print()`` writes to ``sys.stdout``: wrap the server in :func:`redirect_plugin_stdout`
whenever stdout carries the NBD stream.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import logging
import operator
import os
import platform
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import trio

from .. import nbdkit as _nbdkit
from . import _context
from ._backend import (
    CACHE_EMULATE,
    CACHE_NATIVE,
    CACHE_NONE,
    FLAG_MAY_TRIM,
    FUA_EMULATE,
    FUA_NATIVE,
    FUA_NONE,
    Buffer,
    ExportInfo,
    Extent,
    Plugin,
    PluginConnection,
    ThreadModel,
)
from ._buffers import ReadBufferPool

__all__ = ["DEFAULT_THREAD_LIMIT", "NbdkitPythonPlugin", "redirect_plugin_stdout"]

logger = logging.getLogger("trioblock.plugin")

DEFAULT_THREAD_LIMIT = 256
"""Worker threads one plugin may use at once: 16 PARALLEL connections of 16 requests each."""

MAX_API_VERSION = 2
_NBD_MAX_STRING = 4096  # bytes; the NBD limit on names and descriptions
_MAX_EXPORTS = 10_000  # nbdkit's cap on list_exports
_MAX_EXTENTS = 1 << 20  # nbdkit silently drops extents beyond this many
_INT64_MAX = 2**63 - 1
_NOT_SUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP})

_T = TypeVar("_T")


@contextlib.contextmanager
def redirect_plugin_stdout() -> Iterator[None]:
    """Send ``sys.stdout`` (so a plugin's ``print()``) to ``sys.stderr`` while the block runs.

    Use it around ``trio.run`` and around :meth:`NbdkitPythonPlugin.from_script` (the script body
    runs at load time) when the NBD stream is the process's stdout.  Only Python-level writes are
    redirected: the server must write the protocol to fd 1 through its own stream, and plugin code
    writing to fd 1 directly is not caught.  Output meant for the real stdout can use
    ``sys.__stdout__``.
    """
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _as_str(value: object) -> str | None:
    """A str or bytes return value as nbdkit accepts it (UTF-8, no NUL), else None."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(value, str) and "\0" not in value:
        return value
    return None


def _is_power_of_2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class NbdkitPythonPlugin(Plugin):
    """An nbdkit Python plugin script, adapted to the async :class:`Plugin` interface."""

    name = "python"

    def __init__(
        self,
        module: types.ModuleType,
        *,
        script: str,
        api_version: int,
        thread_model: ThreadModel,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        """Wrap an already loaded and configured script; normally use :meth:`from_script`."""
        self.module = module
        self.script = script
        self.api_version = api_version
        self.thread_model = thread_model
        self.limiter = (
            limiter if limiter is not None else trio.CapacityLimiter(DEFAULT_THREAD_LIMIT)
        )
        """Caps this plugin's worker threads; the server's own hops into it should use it too."""
        self._cleaned_up = False

    @classmethod
    def from_script(
        cls,
        path: str | os.PathLike[str],
        params: Sequence[tuple[str, str]] = (),
        *,
        config_complete: bool = True,
        limiter: trio.CapacityLimiter | None = None,
    ) -> NbdkitPythonPlugin:
        """Load, check and configure a plugin script, as nbdkit does before serving.

        The script runs in a fresh module named ``__main__`` (nbdkit runs it as ``__main__``, so
        ``if __name__ == "__main__":`` blocks run too); that module stands in
        ``sys.modules["__main__"]`` only while the script body runs.  Then ``open``, ``get_size``
        and ``pread`` must exist and ``API_VERSION`` (default 1) must be 1 or 2, else
        :class:`ValueError`; ``config(key, value)`` is called for each of ``params`` (params but
        no ``config`` → :class:`ValueError`), then ``config_complete()`` unless
        ``config_complete=False`` (nbdkit skips it for ``--dump-plugin``), then
        ``thread_model()``.  Exceptions raised by the script or those callbacks propagate.
        """
        script = os.fspath(path)
        if sys.modules.get("nbdkit") is not _nbdkit:
            sys.modules["nbdkit"] = _nbdkit
        module = types.ModuleType("__main__")
        module.__file__ = script
        module.__dict__["__cached__"] = None
        with io.open_code(script) as f:
            code = compile(f.read(), script, "exec", dont_inherit=True)
        saved_main = sys.modules.get("__main__")
        sys.modules["__main__"] = module
        try:
            exec(code, module.__dict__)
        finally:
            if saved_main is None:
                del sys.modules["__main__"]
            else:
                sys.modules["__main__"] = saved_main

        plugin = cls(
            module, script=script, api_version=1, thread_model=ThreadModel.PARALLEL, limiter=limiter
        )
        missing = [n for n in ("open", "get_size", "pread") if plugin._callback(n) is None]
        if missing:
            raise ValueError(
                f"{script}: required callback {' and '.join(missing)} is not defined by this "
                "Python script; nbdkit plugins need open, get_size and pread"
            )
        version = getattr(module, "API_VERSION", 1)
        try:
            plugin.api_version = operator.index(version)
        except TypeError:
            raise ValueError(f"{script}: API_VERSION must be an integer, not {version!r}") from None
        if not 1 <= plugin.api_version <= MAX_API_VERSION:
            raise ValueError(
                f"{script}: API_VERSION requested unknown version {plugin.api_version}; "
                f"supported versions are 1 to {MAX_API_VERSION}"
            )

        if params:
            config = plugin._callback("config")
            if config is None:
                raise ValueError(f"{script}: this plugin does not need command line configuration")
            for key, value in params:
                config(key, value)
        if config_complete and (fn := plugin._callback("config_complete")) is not None:
            fn()
        model = int(ThreadModel.SERIALIZE_ALL_REQUESTS)
        if (fn := plugin._callback("thread_model")) is not None:
            model = operator.index(fn())
            if model < 0:
                raise ValueError(f"{script}: thread_model() returned invalid value {model}")
        plugin.thread_model = ThreadModel(min(model, ThreadModel.PARALLEL))
        return plugin

    # -- calling into the plugin (the *_sync helpers run in a worker thread) -----------------

    def _callback(self, name: str) -> Callable[..., Any] | None:
        # Looked up on every call, as nbdkit does; a non-callable attribute counts as missing.
        fn = getattr(self.module, name, None)
        return fn if callable(fn) else None

    def _failure(self, name: str, exc: BaseException) -> OSError:
        err = _nbdkit._last_error() or errno.EIO
        logger.error("%s: %s: error: %r", self.script, name, exc, exc_info=exc)
        return OSError(err, f"{name}: {os.strerror(err)}")

    def _bad_return(self, name: str, message: str) -> OSError:
        logger.error("%s: %s: %s", self.script, name, message)
        return OSError(errno.EIO, f"{name}: {message}")

    def _invoke(self, name: str, fn: Callable[..., _T], *args: object) -> _T:
        _nbdkit._clear_error()
        try:
            return fn(*args)
        except Exception as exc:
            raise self._failure(name, exc) from exc

    def _items(self, name: str, result: Any) -> Iterator[object]:
        """Iterate a returned iterable; the plugin's own iterator code may fail too."""
        try:
            it = iter(result)
        except TypeError:
            raise self._bad_return(name, "did not return something which is iterable") from None
        except Exception as exc:
            raise self._failure(name, exc) from exc
        while True:
            try:
                item = next(it)
            except StopIteration:
                return
            except Exception as exc:
                raise self._failure(name, exc) from exc
            yield item

    async def _run(self, fn: Callable[[], _T]) -> _T:
        return await trio.to_thread.run_sync(fn, limiter=self.limiter)

    async def _optional(self, name: str, *args: object) -> None:
        fn = self._callback(name)
        if fn is None:
            await trio.lowlevel.checkpoint()
        else:
            await self._run(lambda: self._invoke(name, fn, *args))

    # -- Plugin -----------------------------------------------------------------------------

    async def get_ready(self) -> None:
        await self._optional("get_ready")

    async def after_fork(self) -> None:
        await self._optional("after_fork")

    async def cleanup(self) -> None:
        """Call the plugin's ``cleanup()`` at most once, even from a cancelled scope."""
        if self._cleaned_up:
            await trio.lowlevel.checkpoint()
            return
        self._cleaned_up = True
        with trio.CancelScope(shield=True):
            await self._optional("cleanup")

    async def preconnect(self, readonly: bool) -> None:
        await self._optional("preconnect", readonly)

    def _default_export_sync(self, readonly: bool, is_tls: bool) -> str:
        fn = self._callback("default_export")
        if fn is None:
            return ""
        name = _as_str(self._invoke("default_export", fn, readonly, is_tls))
        if name is None:
            raise self._bad_return("default_export", "did not return a string")
        return name

    async def default_export(self, readonly: bool, is_tls: bool) -> str:
        return await self._run(lambda: self._default_export_sync(readonly, is_tls))

    def _list_exports_sync(self, readonly: bool, is_tls: bool) -> list[tuple[str, str | None]]:
        fn = self._callback("list_exports")
        if fn is None:  # nbdkit_use_default_export: the default export, by its canonical name
            return [(self._default_export_sync(readonly, is_tls), None)]
        exports: list[tuple[str, str | None]] = []
        for item in self._items("list_exports", self._invoke("list_exports", fn, readonly, is_tls)):
            name, desc = _as_str(item), None
            if name is None:
                if not isinstance(item, tuple) or len(item) != 2:
                    raise self._bad_return("list_exports", "items must be names or 2-tuples")
                name, desc = _as_str(item[0]), _as_str(item[1])
                if name is None or desc is None:
                    raise self._bad_return("list_exports", "2-tuples must hold two strings")
            if len(exports) == _MAX_EXPORTS:
                raise self._bad_return("list_exports", "too many exports")
            if max(len(name.encode()), len((desc or "").encode())) > _NBD_MAX_STRING:
                raise self._bad_return("list_exports", "string too long")
            exports.append((name, desc))
        return exports

    async def list_exports(self, readonly: bool, is_tls: bool) -> Sequence[tuple[str, str | None]]:
        """The plugin's exports; without ``list_exports()``, the default export alone."""
        return await self._run(lambda: self._list_exports_sync(readonly, is_tls))

    async def open(self, readonly: bool, export_name: str, is_tls: bool) -> PluginConnection:
        """Call ``open(readonly)``.

        From ``open`` on, this connection's callbacks see ``export_name`` and ``is_tls`` through
        ``nbdkit.export_name()`` / ``nbdkit.is_tls()``, whatever the task's context says: nbdkit
        1.32 likewise reports the name it opened, i.e. after default_export resolution.
        """
        conn_context = dataclasses.replace(
            _context.current.get(), export_name=export_name, is_tls=is_tls
        )

        def open_sync() -> _NbdkitHandle:
            fn = self._callback("open")
            if fn is None:
                raise self._bad_return("open", "missing callback: open")
            token = _context.current.set(conn_context)
            try:
                h = self._invoke("open", fn, readonly)
            finally:
                _context.current.reset(token)
            return _NbdkitHandle(self, h, readonly, conn_context)

        return _NbdkitConnection(await self._run(open_sync))

    def dump_plugin(self) -> list[str]:
        """Host facts, then what the script's ``dump_plugin()`` prints (captured, line by line)."""
        lines = [
            f"python_version={platform.python_version()}",
            f"nbdkit_python_maximum_api_version={MAX_API_VERSION}",
        ]
        fn = self._callback("dump_plugin")
        if fn is not None:
            out = io.StringIO()
            try:
                with contextlib.redirect_stdout(out):
                    fn()
            except Exception:
                logger.exception("%s: dump_plugin: error", self.script)
            lines += out.getvalue().splitlines()
        return lines


class _NbdkitHandle:
    """The plugin's handle, with blocking data-path methods (:class:`BlockingOps`).

    The public methods may run in any worker thread, several per hop: each installs the
    connection's context around the plugin code, for ``nbdkit.export_name()`` and friends.
    """

    def __init__(
        self,
        host: NbdkitPythonPlugin,
        h: object,
        readonly: bool,
        conn_context: _context.ConnectionContext,
    ) -> None:
        self.host = host
        self._h = h
        self._readonly = readonly
        self._conn_context = conn_context
        self._v1 = host.api_version == 1
        self._size: int | None = None  # known once info() ran; extents are clipped to it
        self._buffers = ReadBufferPool()  # API 2 pread buffers, reused once their reply is sent

    def _in_context(self, fn: Callable[..., _T], *args: Any) -> _T:
        token = _context.current.set(self._conn_context)
        try:
            return fn(*args)
        finally:
            _context.current.reset(token)

    def _call(self, name: str, *args: object) -> Any:
        fn = self.host._callback(name)
        if fn is None:
            raise self.host._bad_return(name, f"{name} not implemented")
        return self.host._invoke(name, fn, self._h, *args)

    def _int(self, name: str, value: Any) -> int:
        try:
            return operator.index(value)
        except TypeError:
            raise self.host._bad_return(name, f"returned {value!r}, not an integer") from None

    # -- info ---------------------------------------------------------------------------------

    def _bool(self, name: str, op: str | None = None) -> bool:
        # nbdkit tests "r == Py_True": 1 or "yes" mean false.  Missing: true iff the op exists.
        if self.host._callback(name) is not None:
            return self._call(name) is True
        return op is not None and self.host._callback(op) is not None

    def _level(self, name: str, default: int) -> int:
        if self.host._callback(name) is None:
            return default
        level = self._int(name, self._call(name))
        if level < 0:
            raise self.host._bad_return(name, f"returned {level}")
        return level

    def _block_size(self) -> tuple[int, int, int] | None:
        if self.host._callback("block_size") is None:
            return None
        r = self._call("block_size")
        if not isinstance(r, tuple) or len(r) != 3:
            raise self.host._bad_return("block_size", "must return (minimum, preferred, maximum)")
        # Python's "III" format: unsigned 32-bit, wrapping (so -1 is 0xffffffff).
        minimum, preferred, maximum = (self._int("block_size", v) & 0xFFFF_FFFF for v in r)
        if minimum == preferred == maximum == 0:
            return None
        problem = None
        if not (1 <= minimum <= 65536 and _is_power_of_2(minimum)):
            problem = "minimum block size must be a power of 2 between 1 and 64K"
        elif not (512 <= preferred <= 32 << 20 and _is_power_of_2(preferred)):
            problem = "preferred block size must be a power of 2 between 512 and 32M"
        elif maximum != 0xFFFF_FFFF and maximum % minimum:
            problem = "maximum block size must be -1 or a multiple of minimum block size"
        elif not minimum <= preferred <= maximum:
            problem = "block sizes must be minimum <= preferred <= maximum"
        if problem is not None:
            raise self.host._bad_return("block_size", problem)
        return minimum, preferred, maximum

    def _description(self) -> str | None:
        if self.host._callback("export_description") is None:
            return None
        try:
            desc = _as_str(self._call("export_description"))
        except OSError:  # already logged; nbdkit then sends no description
            return None
        if desc is None:  # nbdkit logs it and sends no description
            logger.error("%s: export_description: did not return a string", self.host.script)
        return desc

    def _info(self) -> ExportInfo:
        # The order and the skipped calls follow nbdkit's protocol_common_open and backend.c.
        size = self._int("get_size", self._call("get_size"))
        if not 0 <= size <= _INT64_MAX:
            raise self.host._bad_return("get_size", f"returned invalid value ({size})")
        can_write = not self._readonly and self._bool("can_write", "pwrite")
        can_zero = can_fast_zero = can_trim = False
        can_fua = FUA_NONE
        if can_write:
            can_zero = self._bool("can_zero", "zero")
            if self.host._callback("can_fast_zero") is not None:
                can_fast_zero = self._bool("can_fast_zero")
            else:  # fail fast rather than fall back to writing zeros
                can_fast_zero = not can_zero
            can_trim = self._bool("can_trim", "trim")
            fua = self._level("can_fua", FUA_EMULATE if self.host._callback("flush") else FUA_NONE)
            # Any value but NONE/NATIVE makes nbdkit advertise FUA and emulate it with flush.
            can_fua = fua if fua in (FUA_NONE, FUA_NATIVE) else FUA_EMULATE
        can_flush = self._bool("can_flush", "flush")
        is_rotational = self._bool("is_rotational")
        can_multi_conn = self._bool("can_multi_conn")
        cache = self._level("can_cache", CACHE_NATIVE if self.host._callback("cache") else 0)
        can_cache = cache if cache in (CACHE_NONE, CACHE_EMULATE) else CACHE_NATIVE
        can_extents = self._bool("can_extents", "extents")
        info = ExportInfo(
            size=size,
            can_write=can_write,
            can_flush=can_flush,
            can_trim=can_trim,
            can_zero=can_zero,
            can_fast_zero=can_fast_zero,
            can_extents=can_extents,
            can_multi_conn=can_multi_conn,
            is_rotational=is_rotational,
            can_fua=can_fua,
            can_cache=can_cache,
            block_size=self._block_size(),
            description=self._description(),
        )
        self._size = size
        return info

    def info(self) -> ExportInfo:
        return self._in_context(self._info)

    # -- data path (BlockingOps) ----------------------------------------------------------------

    def _pread(self, count: int, offset: int, flags: int) -> Buffer:
        if not self._v1:
            buf = self._buffers.take(count)
            self._call("pread", memoryview(buf), offset, flags)
            return buf
        r = self._call("pread", count, offset)
        if isinstance(r, bytes) and len(r) == count:
            return r
        try:
            view = memoryview(r).cast("B")
        except TypeError:
            raise self.host._bad_return("pread", "returned value is not a buffer") from None
        if view.nbytes < count:
            raise self.host._bad_return("pread", "buffer returned from pread is too small")
        return bytes(view[:count])  # copied: the plugin may reuse its buffer

    def pread(self, count: int, offset: int, flags: int) -> Buffer:
        return self._in_context(self._pread, count, offset, flags)

    def pwrite(self, buf: memoryview, offset: int, flags: int) -> None:
        view = buf.toreadonly()  # nbdkit hands the plugin a read-only view
        args = (view, offset) if self._v1 else (view, offset, flags)
        self._in_context(self._call, "pwrite", *args)

    def flush(self, flags: int) -> None:
        self._in_context(self._call, "flush", *(() if self._v1 else (flags,)))

    def trim(self, count: int, offset: int, flags: int) -> None:
        args = (count, offset) if self._v1 else (count, offset, flags)
        self._in_context(self._call, "trim", *args)

    def _zero(self, count: int, offset: int, flags: int) -> None:
        fn = self.host._callback("zero")
        if fn is None:
            logger.debug("zero missing, falling back to pwrite")
            raise OSError(errno.EOPNOTSUPP, "zero: not supported")
        args = (count, offset, bool(flags & FLAG_MAY_TRIM)) if self._v1 else (count, offset, flags)
        _nbdkit._clear_error()
        error: Exception | None = None
        try:
            fn(self._h, *args)
        except Exception as exc:
            error = exc
        # set_error(EOPNOTSUPP/ENOTSUP) asks for the pwrite fallback, raising or not.
        if (err := _nbdkit._last_error()) in _NOT_SUPPORTED:
            logger.debug("zero requested falling back to pwrite")
            raise OSError(err, "zero: not supported")
        if error is not None:
            raise self.host._failure("zero", error) from error

    def zero(self, count: int, offset: int, flags: int) -> None:
        """Raises ``OSError(EOPNOTSUPP)`` when the server should write zeros with pwrite."""
        self._in_context(self._zero, count, offset, flags)

    def cache(self, count: int, offset: int, flags: int) -> None:
        self._in_context(self._call, "cache", count, offset, flags)

    def _extents(self, count: int, offset: int, flags: int) -> list[Extent]:
        if self.host._callback("extents") is None:
            return [(offset, count, 0)]  # nbdkit: one allocated extent
        bad = self.host._bad_return
        # nbdkit_add_extent: contiguous and ascending; clipped to [offset, size); equal types merge.
        end = self._size
        merged: list[list[int]] = []
        next_offset: int | None = None
        returned = 0
        for item in self.host._items("extents", self._call("extents", count, offset, flags)):
            returned += 1
            if not isinstance(item, tuple) or len(item) != 3:
                raise bad("extents", "must return an iterable of (offset, length, type) tuples")
            e_offset, length, kind = (self._int("extents", v) for v in item)
            if not (0 <= e_offset < 1 << 64 and 0 <= length < 1 << 64 and 0 <= kind < 1 << 32):
                raise bad("extents", f"extent {item!r} out of range")
            if next_offset is not None and e_offset != next_offset:
                raise bad("extents", "extents must be ascending and contiguous")
            next_offset = e_offset + length
            if length == 0 or (end is not None and e_offset >= end) or len(merged) >= _MAX_EXTENTS:
                continue
            if end is not None:
                length = min(length, end - e_offset)
            if not merged:
                if e_offset + length <= offset:
                    continue
                if e_offset > offset:
                    raise bad("extents", f"first extent must not start after {offset}")
                length -= offset - e_offset
                e_offset = offset
            if merged and merged[-1][2] == kind:
                merged[-1][1] += length
            else:
                merged.append([e_offset, length, kind])
        if returned == 0:
            raise bad("extents", "extents method cannot return an empty list")
        if not merged:
            raise bad("extents", f"no extent covers offset {offset}")
        return [(o, n, t) for o, n, t in merged]

    def extents(self, count: int, offset: int, flags: int) -> list[Extent]:
        """Validated and normalised as nbdkit_add_extent would (clipped, merged)."""
        return self._in_context(self._extents, count, offset, flags)

    def close(self) -> None:
        """Call the plugin's ``close(h)``; errors are logged, not raised (nbdkit ignores them)."""
        with contextlib.suppress(OSError):  # already logged
            self._in_context(self._call, "close")


class _NbdkitConnection(PluginConnection):
    """The async face of a :class:`_NbdkitHandle`, which the server may also use directly."""

    def __init__(self, handle: _NbdkitHandle) -> None:
        self.blocking = handle
        self._handle = handle
        self._host = handle.host
        self._closed = False

    async def info(self) -> ExportInfo:
        """Every ``can_*``, size, block size and description, in one worker-thread hop."""
        return await self._host._run(self._handle.info)

    async def pread(self, count: int, offset: int, flags: int) -> Buffer:
        return await self._host._run(lambda: self._handle.pread(count, offset, flags))

    async def pwrite(self, buf: memoryview, offset: int, flags: int) -> None:
        await self._host._run(lambda: self._handle.pwrite(buf, offset, flags))

    async def flush(self, flags: int) -> None:
        await self._host._run(lambda: self._handle.flush(flags))

    async def trim(self, count: int, offset: int, flags: int) -> None:
        await self._host._run(lambda: self._handle.trim(count, offset, flags))

    async def zero(self, count: int, offset: int, flags: int) -> None:
        """Raises ``OSError(EOPNOTSUPP)`` when the server should write zeros with pwrite."""
        await self._host._run(lambda: self._handle.zero(count, offset, flags))

    async def cache(self, count: int, offset: int, flags: int) -> None:
        await self._host._run(lambda: self._handle.cache(count, offset, flags))

    async def extents(self, count: int, offset: int, flags: int) -> Sequence[Extent]:
        return await self._host._run(lambda: self._handle.extents(count, offset, flags))

    async def close(self) -> None:
        """Call the plugin's ``close(h)`` once, even from a cancelled scope."""
        if self._closed or self._host._callback("close") is None:
            self._closed = True
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            await self._host._run(self._handle.close)
