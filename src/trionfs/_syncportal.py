"""A Trio event loop in a background thread, for the blocking face (:mod:`trionfs.sync`).

``Portal.start(factory)`` starts a thread running ``trio.run``; inside it the async context
manager from ``factory()`` is entered (``trionfs.mount(url)``), and its value is handed back.
``portal.call(fn, *args)`` runs ``await fn(*args)`` in that loop (``trio.from_thread.run``) and
returns or raises its result in the calling thread; any number of threads may call at once,
each call is its own Trio task.  ``close()`` exits the context manager and joins the thread.

The thread is created by the thread that calls ``start``, so it inherits that thread's network
namespace (the test fixtures rely on it).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, TypeVar

import trio

T = TypeVar("T")
V = TypeVar("V")


class Portal(Generic[V]):
    """See the module docstring."""

    def __init__(self, name: str = "trionfs") -> None:
        self._name = name
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._value: V | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self, factory: Callable[[], AbstractAsyncContextManager[V]]) -> V:
        """Start the loop and enter ``factory()`` in it; raises what entering raised."""
        self._thread = threading.Thread(
            target=trio.run, args=(self._main, factory), name=self._name, daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._closed = True
            error, self._error = self._error, None
            raise error
        assert self._value is not None
        return self._value

    async def _main(self, factory: Callable[[], AbstractAsyncContextManager[V]]) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        entered = False
        try:
            async with factory() as value:
                self._value = value
                entered = True
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # handed to the thread that waits for us, re-raised there
            self._error = exc
        finally:
            if not entered:
                self._ready.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` in the loop; blocks this thread until it is done."""
        if self._closed or self._token is None:
            raise ValueError("I/O operation on a closed NFS mount")
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def close(self) -> None:
        """Exit the context manager (flushing and unmounting) and stop the thread; raises what
        exiting raised."""
        if self._closed:
            return
        self._closed = True
        assert self._token is not None
        assert self._stop is not None
        assert self._thread is not None
        try:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        except trio.RunFinishedError:
            pass
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
