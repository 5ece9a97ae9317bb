"""libnbd's Python bindings as a test client of an in-process server.

libnbd blocks, and the server runs in the test's own Trio loop, so every handle is used from a
worker thread (``with_client`` does that).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import nbd
import pytest
import trio

from trioblock import NBDServer

T = TypeVar("T")


def connect(
    server: NBDServer,
    *,
    name: str | None = None,
    setup: Callable[[Any], object] | None = None,
) -> Any:
    """A libnbd handle connected to ``server`` (asking for base:allocation).  Blocking."""
    h = nbd.NBD()
    h.add_meta_context("base:allocation")
    if setup is not None:
        setup(h)
    if name is None:
        h.connect_uri(server.uri())
    else:
        h.set_export_name(name)
        if server.unix_path is not None:
            h.connect_unix(server.unix_path)
        else:
            h.connect_tcp("127.0.0.1", str(server.port))
    return h


async def with_client(
    server: NBDServer,
    body: Callable[[Any], T],
    *,
    name: str | None = None,
    setup: Callable[[Any], object] | None = None,
) -> T:
    """Connect in a worker thread, run ``body(handle)`` there, disconnect cleanly."""

    def work() -> T:
        h = connect(server, name=name, setup=setup)
        try:
            return body(h)
        finally:
            h.shutdown()

    return await trio.to_thread.run_sync(work)


def extents_of(h: Any, count: int, offset: int, flags: int = 0) -> list[tuple[int, int]]:
    """block_status as (length, flags) pairs."""
    found: list[tuple[int, int]] = []

    def extent(metacontext: str, start: int, entries: Sequence[int], err: Any) -> int:
        assert metacontext == "base:allocation"
        assert start == offset
        found.extend(zip(entries[::2], entries[1::2], strict=True))
        return 0

    h.block_status(count, offset, extent, flags)
    return found


def fails_with(expected: int, call: Callable[[], object]) -> None:
    """``call()`` fails with the NBD error ``expected``."""
    with pytest.raises(nbd.Error) as info:
        call()
    assert info.value.errnum == expected, info.value
