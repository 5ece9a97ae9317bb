"""Test NBD plugins against a real trioblock server, from Trio code or pytest-trio tests.

:func:`serve_plugin` serves a plugin on a private Unix socket for the length of an
``async with`` block::

    async with serve_plugin("myplugin.py", "size=1M") as served:
        await trio.to_thread.run_sync(client_code, served.uri)

The pytest plugin (registered through the ``pytest11`` entry point, so it is active wherever
trioblock is installed) adds the ``nbd_server`` fixture, a factory of such servers that live until
the end of the test::

    async def test_reads_back(nbd_server):
        uri = await nbd_server("myplugin.py", "size=1M")
        ...  # any NBD client: libnbd's Python bindings, nbdcopy, qemu-img

Plugins are given as on the command line (a built-in name, a ``.py`` file, ``"python"`` followed
by the script, then ``key=value`` arguments) or as a ready :class:`~trioblock.Plugin` object.
Clients that block (libnbd's bindings, subprocesses) must run in a thread or a subprocess: the
server runs in the test's own Trio loop.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import trio

from .._connection import ServerConfig
from .._plugins import load_plugin
from .._plugins._backend import Plugin
from .._server import NBDServer, serve_nbd

__all__ = ["NBDServerFactory", "ServedPlugin", "serve_plugin"]

PluginSpec = Plugin | str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class ServedPlugin:
    """A plugin being served: where to connect and the running server."""

    uri: str
    """``nbd+unix:///EXPORT?socket=PATH``, ready for libnbd, nbdcopy, nbdinfo or qemu."""
    socket_path: str
    server: NBDServer


@asynccontextmanager
async def serve_plugin(
    plugin_or_spec: PluginSpec,
    *args: str,
    readonly: bool = False,
    export_name: str = "",
    config: ServerConfig | None = None,
) -> AsyncIterator[ServedPlugin]:
    """Serve a plugin on a Unix socket in a new temporary directory while the block runs.

    ``plugin_or_spec`` is a :class:`Plugin`, or a plugin as on the command line with ``args``
    its ``key=value`` arguments (loading errors raise
    :class:`~trioblock._plugins.PluginLoadError`).  ``readonly`` serves it read-only;
    ``config`` sets other server options; ``export_name`` goes into the URI.  The plugin's
    ``get_ready``/``after_fork`` run before the socket accepts, ``cleanup`` after the block.
    Leaving the block shuts the server down gracefully (in-flight requests finish); an
    exception in the block propagates unwrapped.
    """
    if isinstance(plugin_or_spec, Plugin):
        if args:
            raise TypeError("arguments are only for a plugin given by name or path")
        plugin = plugin_or_spec
    else:
        plugin = load_plugin(os.fspath(plugin_or_spec), args)
    config = config or ServerConfig()
    if readonly:
        config = dataclasses.replace(config, readonly=True)
    with tempfile.TemporaryDirectory(prefix="trioblock-test-") as tmp:
        path = os.path.join(tmp, "nbd.sock")
        try:
            async with trio.open_nursery() as nursery:
                server: NBDServer = await nursery.start(
                    partial(serve_nbd, plugin, unix_path=path, config=config)
                )
                try:
                    yield ServedPlugin(server.uri(export_name), path, server)
                finally:
                    server.shutdown()
        except BaseExceptionGroup as group:
            # The block's own exception comes back wrapped by the nursery: give it back as is.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise


class NBDServerFactory:
    """What the ``nbd_server`` fixture gives a test: ``await nbd_server(spec, *args, ...)``.

    Each call serves one more plugin (arguments as :func:`serve_plugin`) in the fixture's
    nursery and returns its URI; all of them shut down when the test ends.  :attr:`served`
    lists them, for tests that need the socket path or the :class:`~trioblock.NBDServer`.
    """

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._stop = trio.Event()
        self.served: list[ServedPlugin] = []

    async def __call__(
        self,
        plugin_or_spec: PluginSpec,
        *args: str,
        readonly: bool = False,
        export_name: str = "",
        config: ServerConfig | None = None,
    ) -> str:
        serve = partial(
            self._serve, plugin_or_spec, args, readonly=readonly, export_name=export_name,
            config=config,
        )  # fmt: skip
        served: ServedPlugin = await self._nursery.start(serve)
        self.served.append(served)
        return served.uri

    async def _serve(
        self,
        plugin_or_spec: PluginSpec,
        args: tuple[str, ...],
        *,
        readonly: bool,
        export_name: str,
        config: ServerConfig | None,
        task_status: trio.TaskStatus[ServedPlugin] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with serve_plugin(
            plugin_or_spec, *args, readonly=readonly, export_name=export_name, config=config
        ) as served:
            task_status.started(served)
            await self._stop.wait()

    def shutdown(self) -> None:
        """Stop every server (gracefully); the fixture does this when the test ends."""
        self._stop.set()
