"""Trio-native plugins: the nbdkit Python API (version 2) with ``async def`` callbacks.

An async plugin is a module (or any object) with the callbacks of :class:`AsyncPluginModule`.  They
run as plain awaits on the server's Trio thread: no worker threads, no GIL hand-offs, and a
callback may use any Trio API (sockets, locks, nurseries, timeouts).  A callback that never awaits
blocks the whole server while it runs, exactly like any other Trio code, and should end with
``await trio.lowlevel.checkpoint()`` as Trio functions do.

Differences from nbdkit's Python plugins, because async plugins are new code:

* ``can_*`` and ``is_rotational`` answers are read with ``bool()``: returning ``1`` means true
  (nbdkit's Python plugin only accepts ``True``).  ``can_fua`` / ``can_cache`` must be one of
  ``FUA_*`` / ``CACHE_*`` (0, 1 or 2; ``True`` is 1).
* Callbacks are looked up once, in :meth:`AsyncPlugin.from_object`, not on every call.
* Errors: raise :class:`OSError` with an errno to fail a request with it (no ``set_error``).  Any
  other exception (or an ``OSError`` without errno) fails it with EIO, and its traceback is logged
  to the ``trioblock.plugin`` logger.

Missing callbacks default as in nbdkit: ``can_X`` is true iff the operation exists (``can_write``
↔ ``pwrite``, ``can_flush``, ``can_trim``, ``can_zero``, ``can_extents``); ``is_rotational`` and
``can_multi_conn`` are false; ``can_fast_zero`` is ``not can_zero`` (a plugin that cannot zero
fails fast-zero requests at once instead of writing zeros); ``can_fua`` is EMULATE if ``flush``
exists, else NONE; ``can_cache`` is NATIVE if ``cache`` exists, else NONE (and CACHE is then a
no-op).  A read-only connection never calls ``can_write``, ``can_trim``, ``can_zero``,
``can_fast_zero`` or ``can_fua``: all are false.
"""

from __future__ import annotations

import errno
import inspect
import logging
import operator
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

import trio

from ._backend import (
    CACHE_NATIVE,
    CACHE_NONE,
    FUA_EMULATE,
    FUA_NONE,
    Buffer,
    ExportInfo,
    Extent,
    Plugin,
    PluginConnection,
    ThreadModel,
)
from ._params import MAX_SIZE

__all__ = ["AsyncPlugin", "AsyncPluginModule", "is_async_plugin_module"]

logger = logging.getLogger("trioblock.plugin")

_REQUIRED = ("open", "get_size", "pread")
# Callbacks that take the handle first.
_HANDLE_CALLBACKS = (
    "get_size", "pread", "pwrite", "flush", "trim", "zero", "cache", "extents", "close",
    "can_write", "can_flush", "can_trim", "can_zero", "can_fast_zero", "can_extents",
    "can_multi_conn", "is_rotational", "can_fua", "can_cache", "block_size", "export_description",
)  # fmt: skip
_GLOBAL_CALLBACKS = (
    "open", "list_exports", "default_export", "preconnect", "get_ready", "after_fork", "cleanup",
)  # fmt: skip
_SYNC_CALLBACKS = ("config", "config_complete", "thread_model")

_AsyncFn = Callable[..., Coroutine[Any, Any, Any]]


class AsyncPluginModule(Protocol):
    """The callbacks an async plugin must define (a module's functions, or an object's methods).

    Optional callbacks, all ``async def`` unless marked sync; ``h`` is what ``open`` returned::

        config(key: str, value: str) -> None            # sync: runs before trio.run
        config_complete() -> None                       # sync
        thread_model() -> int                           # sync; default THREAD_MODEL_PARALLEL
        get_ready() / after_fork() / cleanup() -> None
        preconnect(readonly: bool) -> None              # raise to refuse the connection
        list_exports(readonly: bool, is_tls: bool) -> Iterable[str | tuple[str, str | None]]
        default_export(readonly: bool, is_tls: bool) -> str
        close(h) -> None
        export_description(h) -> str | None
        block_size(h) -> tuple[int, int, int]           # (0, 0, 0): no constraints
        can_write / can_flush / can_trim / can_zero / can_fast_zero / can_extents /
        can_multi_conn / is_rotational(h) -> bool
        can_fua(h) -> int                               # FUA_NONE / FUA_EMULATE / FUA_NATIVE
        can_cache(h) -> int                             # CACHE_NONE / CACHE_EMULATE / CACHE_NATIVE
        pwrite(h, buf: memoryview, offset: int, flags: int) -> None     # buf is read-only
        flush(h, flags: int) -> None
        trim / zero / cache(h, count: int, offset: int, flags: int) -> None
        extents(h, count: int, offset: int, flags: int) -> Iterable[tuple[int, int, int]]

    ``flags`` are the ``FLAG_*`` values; memoryviews are released when the callback returns.
    """

    async def open(self, readonly: bool) -> Any:
        """Return a handle for a new connection (any object)."""

    async def get_size(self, h: Any) -> int:
        """The export's size in bytes."""

    async def pread(self, h: Any, buf: memoryview, offset: int, flags: int) -> None:
        """Fill ``buf`` (writable) with the bytes at ``offset``."""


def is_async_plugin_module(obj: object) -> bool:
    """True when ``obj``'s ``open`` and ``pread`` are ``async def`` (an async plugin)."""
    return all(inspect.iscoroutinefunction(getattr(obj, name, None)) for name in ("open", "pread"))


def _describe(obj: object) -> str:
    name = getattr(obj, "__name__", None)
    return name if isinstance(name, str) else type(obj).__name__


def _check_callbacks(obj: object, name: str) -> dict[str, _AsyncFn]:
    """``obj``'s async callbacks by name, after checking every callback is of the right kind."""
    missing = [cb for cb in _REQUIRED if getattr(obj, cb, None) is None]
    if missing:
        raise ValueError(f"{name}: required callback(s) {', '.join(missing)} not defined")
    callbacks: dict[str, _AsyncFn] = {}
    for cb in _HANDLE_CALLBACKS + _GLOBAL_CALLBACKS:
        fn = getattr(obj, cb, None)
        if fn is None:
            continue
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"{name}: {cb} must be an async def function")
        callbacks[cb] = fn
    for cb in _SYNC_CALLBACKS:
        fn = getattr(obj, cb, None)
        if fn is not None and (not callable(fn) or inspect.iscoroutinefunction(fn)):
            raise TypeError(f"{name}: {cb} must be a plain (not async) function")
    return callbacks


class AsyncPlugin(Plugin):
    """An async plugin object adapted to :class:`Plugin`; build it with :meth:`from_object`."""

    def __init__(self, obj: object) -> None:
        """Wrap an already configured plugin object: checks its callbacks, calls thread_model."""
        self.name = _describe(obj)
        self.obj = obj
        self.callbacks = _check_callbacks(obj, self.name)
        model = ThreadModel.PARALLEL
        if (thread_model := getattr(obj, "thread_model", None)) is not None:
            value = thread_model()
            try:
                model = ThreadModel(operator.index(value))
            except (TypeError, ValueError):
                raise ValueError(
                    f"{self.name}: thread_model() returned invalid value {value!r}"
                ) from None
        self.thread_model = model

    @classmethod
    def from_object(cls, obj: object, params: Sequence[tuple[str, str]] = ()) -> AsyncPlugin:
        """Check ``obj``'s callbacks, call ``config`` for each param, ``config_complete`` and
        ``thread_model``, in nbdkit's order.

        Missing required callbacks or parameters without ``config`` raise :class:`ValueError`;
        a sync/async mismatch raises :class:`TypeError`; exceptions from ``config``,
        ``config_complete`` and ``thread_model`` propagate.
        """
        name = _describe(obj)
        _check_callbacks(obj, name)
        if params:
            config = getattr(obj, "config", None)
            if config is None:
                raise ValueError(f"{name}: this plugin takes no parameters (no config)")
            for key, value in params:
                config(key, value)
        if (config_complete := getattr(obj, "config_complete", None)) is not None:
            config_complete()
        return cls(obj)

    async def call(self, name: str, *args: object) -> Any:
        """Await callback ``name``, mapping its failures to ``OSError`` (see the module doc)."""
        try:
            return await self.callbacks[name](*args)
        except OSError as exc:
            if exc.errno:
                logger.debug("%s: %s: %s", self.name, name, exc)
                raise
            logger.error("%s: %s raised OSError without errno", self.name, name, exc_info=True)
            raise OSError(errno.EIO, f"{name} failed: {exc}") from exc
        except Exception as exc:
            logger.error("%s: %s failed", self.name, name, exc_info=True)
            raise OSError(errno.EIO, f"{name} failed: {exc!r}") from exc

    async def _call_optional(self, name: str, *args: object) -> Any:
        if name in self.callbacks:
            return await self.call(name, *args)
        await trio.lowlevel.checkpoint()
        return None

    def _bad_value(self, name: str, value: object) -> OSError:
        logger.error("%s: %s returned an invalid value: %r", self.name, name, value)
        return OSError(errno.EIO, f"{name} returned an invalid value")

    async def get_ready(self) -> None:
        await self._call_optional("get_ready")

    async def after_fork(self) -> None:
        await self._call_optional("after_fork")

    async def cleanup(self) -> None:
        await self._call_optional("cleanup")

    async def preconnect(self, readonly: bool) -> None:
        await self._call_optional("preconnect", readonly)

    async def list_exports(self, readonly: bool, is_tls: bool) -> Sequence[tuple[str, str | None]]:
        if "list_exports" not in self.callbacks:
            return await super().list_exports(readonly, is_tls)
        result = await self.call("list_exports", readonly, is_tls)
        exports: list[tuple[str, str | None]] = []
        try:
            for item in result:
                name, desc = (item, None) if isinstance(item, str) else item
                if not isinstance(name, str) or not isinstance(desc, str | None):
                    raise TypeError
                exports.append((name, desc))
        except (TypeError, ValueError):
            raise self._bad_value("list_exports", result) from None
        return exports

    async def default_export(self, readonly: bool, is_tls: bool) -> str:
        if "default_export" not in self.callbacks:
            return await super().default_export(readonly, is_tls)
        name = await self.call("default_export", readonly, is_tls)
        if not isinstance(name, str):
            raise self._bad_value("default_export", name)
        return name

    async def open(self, readonly: bool, export_name: str, is_tls: bool) -> PluginConnection:
        handle = await self.call("open", readonly)
        return _AsyncConnection(self, handle, readonly)


class _AsyncConnection(PluginConnection):
    def __init__(self, plugin: AsyncPlugin, handle: object, readonly: bool) -> None:
        self._plugin = plugin
        self._h = handle
        self._readonly = readonly

    def _has(self, name: str) -> bool:
        return name in self._plugin.callbacks

    async def _flag(self, name: str, default: bool) -> bool:
        if not self._has(name):
            return default
        return bool(await self._plugin.call(name, self._h))

    async def _level(self, name: str, default: int) -> int:
        if not self._has(name):
            return default
        value = await self._plugin.call(name, self._h)
        try:
            level = operator.index(value)
        except TypeError:
            level = -1
        if level not in (0, 1, 2):
            raise self._plugin._bad_value(name, value)
        return level

    async def info(self) -> ExportInfo:
        p = self._plugin
        value = await p.call("get_size", self._h)
        try:
            size = operator.index(value)
        except TypeError:
            size = -1
        if not 0 <= size <= MAX_SIZE:
            raise p._bad_value("get_size", value)
        can_write = not self._readonly and await self._flag("can_write", self._has("pwrite"))
        can_zero = can_write and await self._flag("can_zero", self._has("zero"))
        default_fua = FUA_EMULATE if self._has("flush") else FUA_NONE
        return ExportInfo(
            size=size,
            can_write=can_write,
            can_flush=await self._flag("can_flush", self._has("flush")),
            can_trim=can_write and await self._flag("can_trim", self._has("trim")),
            can_zero=can_zero,
            can_fast_zero=can_write and await self._flag("can_fast_zero", not can_zero),
            can_extents=await self._flag("can_extents", self._has("extents")),
            can_multi_conn=await self._flag("can_multi_conn", False),
            is_rotational=await self._flag("is_rotational", False),
            can_fua=await self._level("can_fua", default_fua) if can_write else FUA_NONE,
            can_cache=await self._level(
                "can_cache", CACHE_NATIVE if self._has("cache") else CACHE_NONE
            ),
            block_size=await self._block_size(),
            description=await self._description(),
        )

    async def _block_size(self) -> tuple[int, int, int] | None:
        if not self._has("block_size"):
            return None
        value = await self._plugin.call("block_size", self._h)
        try:
            minimum, preferred, maximum = (operator.index(v) for v in value)
        except (TypeError, ValueError):
            raise self._plugin._bad_value("block_size", value) from None
        if minimum == preferred == maximum == 0:
            return None
        if not _valid_block_size(minimum, preferred, maximum):
            raise self._plugin._bad_value("block_size", value)
        return minimum, preferred, maximum

    async def _description(self) -> str | None:
        if not self._has("export_description"):
            return None
        value = await self._plugin.call("export_description", self._h)
        if value is not None and not isinstance(value, str):
            raise self._plugin._bad_value("export_description", value)
        return value

    async def pread(self, count: int, offset: int, flags: int) -> Buffer:
        buf = bytearray(count)
        with memoryview(buf) as view:
            await self._plugin.call("pread", self._h, view, offset, flags)
        return buf

    async def pwrite(self, buf: memoryview, offset: int, flags: int) -> None:
        if not self._has("pwrite"):
            return await super().pwrite(buf, offset, flags)
        with buf.toreadonly() as view:
            await self._plugin.call("pwrite", self._h, view, offset, flags)

    async def flush(self, flags: int) -> None:
        if not self._has("flush"):
            return await super().flush(flags)
        await self._plugin.call("flush", self._h, flags)

    async def trim(self, count: int, offset: int, flags: int) -> None:
        if not self._has("trim"):
            return await super().trim(count, offset, flags)
        await self._plugin.call("trim", self._h, count, offset, flags)

    async def zero(self, count: int, offset: int, flags: int) -> None:
        if not self._has("zero"):
            return await super().zero(count, offset, flags)
        await self._plugin.call("zero", self._h, count, offset, flags)

    async def cache(self, count: int, offset: int, flags: int) -> None:
        # Without cache(), CACHE_NATIVE means "nothing to do" (nbdkit's rule).
        await self._plugin._call_optional("cache", self._h, count, offset, flags)

    async def extents(self, count: int, offset: int, flags: int) -> Sequence[Extent]:
        if not self._has("extents"):
            return await super().extents(count, offset, flags)
        result = await self._plugin.call("extents", self._h, count, offset, flags)
        try:
            return [(operator.index(o), operator.index(n), operator.index(t)) for o, n, t in result]
        except (TypeError, ValueError):
            raise self._plugin._bad_value("extents", result) from None

    async def close(self) -> None:
        close = self._plugin.callbacks.get("close")
        if close is None:
            await trio.lowlevel.checkpoint()
            return
        try:
            await close(self._h)
        except Exception:
            # Like nbdkit: a failing close is reported, and the connection ends anyway.
            logger.error("%s: close failed", self._plugin.name, exc_info=True)


def _valid_block_size(minimum: int, preferred: int, maximum: int) -> bool:
    """nbdkit's rules (server/plugins.c): powers of two within limits, min <= pref <= max."""

    def power_of_2(n: int) -> bool:
        return n > 0 and n & (n - 1) == 0

    return (
        1 <= minimum <= 65536
        and power_of_2(minimum)
        and power_of_2(preferred)
        and 512 <= preferred <= 32 * 1024 * 1024
        and (maximum == 0xFFFFFFFF or maximum % minimum == 0)
        and minimum <= preferred <= maximum <= 0xFFFFFFFF
    )
