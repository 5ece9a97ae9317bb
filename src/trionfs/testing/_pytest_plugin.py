"""pytest plugin (entry point ``pytest11: trionfs``): private nfs-ganesha fixtures.

Kept import-light: pytest loads it in every session wherever trionfs is installed, so the
server code is imported only when a test asks for a fixture.

Fixtures skip the test when this machine cannot run ganesha (not root, package missing);
set ``TRIONFS_REQUIRE_GANESHA=1`` to make that an error instead (CI).
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from trionfs.testing import GaneshaServer

_counter = itertools.count(1)


def _skip_if_unavailable(*, libnfs: bool = False) -> None:
    from trionfs.testing import ganesha_unavailable_reason, libnfs_unavailable_reason

    reason = ganesha_unavailable_reason()
    if reason is None and libnfs:
        reason = libnfs_unavailable_reason()
    if reason is not None:
        if os.environ.get("TRIONFS_REQUIRE_GANESHA"):
            pytest.fail(f"TRIONFS_REQUIRE_GANESHA is set but {reason}")
        pytest.skip(reason)


@pytest.fixture
def nfs_server() -> Iterator[GaneshaServer]:
    """A private nfs-ganesha for this test, started, with the test's thread in its namespace.

    ``nfs_server.url`` is the export; fault helpers: ``restart(new_epoch=...)``, ``kill()``,
    ``stop_ganesha()``/``start_ganesha()``, ``pause()``/``resume()``.  Do not combine with
    ``nfs_url`` in one test (each enters its own namespace).
    """
    _skip_if_unavailable()
    from trionfs.testing import GaneshaServer

    with GaneshaServer() as server, server.netns():
        yield server


@pytest.fixture
def nfs_server_factory() -> Iterator[Callable[..., GaneshaServer]]:
    """``server = nfs_server_factory(**options)``: start a private server (not entered).

    Options are :class:`~trionfs.testing.GaneshaServer`'s (``epoch=``, ``core_params=``,
    ``export_params=``, ...).  Every server made is stopped when the test ends.
    """
    _skip_if_unavailable()
    from trionfs.testing import GaneshaServer

    servers: list[GaneshaServer] = []

    def make(**options: Any) -> GaneshaServer:
        server = GaneshaServer(**options)
        servers.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in reversed(servers):
            server.stop()


@pytest.fixture(scope="session")
def nfs_server_shared() -> Iterator[GaneshaServer]:
    """One nfs-ganesha for the whole session (not entered: use ``nfs_url`` or ``.netns()``)."""
    _skip_if_unavailable()
    from trionfs.testing import GaneshaServer

    with GaneshaServer() as server:
        yield server


@pytest.fixture
def nfs_url(nfs_server_shared: GaneshaServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a new empty directory (mode 0777) on the shared server, for this test only.

    The directory is made through NFS (libnfs MKDIR + SETATTR), so ganesha's cache stays
    coherent.  The test's thread is inside the server's namespace until teardown.
    """
    _skip_if_unavailable(libnfs=True)
    from trionfs.testing import libnfs_mkdir

    server = nfs_server_shared
    if not server.running:  # an earlier test stopped or killed it: bring it back
        server.start_ganesha(new_epoch=False)
    else:
        server.resume()  # harmless if it was not paused
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
    with server.netns():
        yield libnfs_mkdir(f"t{next(_counter):04d}-{name}", server=server)
