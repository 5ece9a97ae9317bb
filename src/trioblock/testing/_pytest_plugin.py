"""pytest plugin (entry point ``pytest11: trioblock``): the ``nbd_server`` fixture.

Kept import-light: pytest loads it in every session of every project where trioblock is
installed, so the server is imported only when a test asks for the fixture.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from trioblock.testing import NBDServerFactory

    trio_fixture = pytest.fixture
else:
    try:  # a Trio fixture even outside trio_mode (then only Trio tests may use it)
        from pytest_trio import trio_fixture
    except ImportError:  # pragma: no cover - the fixture needs pytest-trio to run anyway
        trio_fixture = pytest.fixture


@trio_fixture
async def nbd_server() -> AsyncIterator[NBDServerFactory]:
    """A factory of NBD servers for plugins, alive until the end of the test (pytest-trio).

    ``uri = await nbd_server("myplugin.py", "size=1M", readonly=False)`` serves the plugin (a
    path to a ``.py`` plugin, a built-in name, ``"python", "script.py"``, or a ``Plugin``
    object) on a private Unix socket and returns its ``nbd+unix://`` URI.  See
    :class:`trioblock.testing.NBDServerFactory`.
    """
    import trio

    from trioblock.testing import NBDServerFactory

    async with trio.open_nursery() as nursery:
        factory = NBDServerFactory(nursery)
        try:
            yield factory
        finally:
            factory.shutdown()
