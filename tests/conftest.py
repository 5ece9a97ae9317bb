"""Shared fixtures: an in-process trioblock server on a private Unix socket, and real clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio

from trioblock import NBDServer, Plugin, ServerConfig, serve_nbd

ServeFactory = Callable[..., Awaitable[NBDServer]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[ServeFactory]:
    """``server = await serve(plugin, **config)``: serve on a Unix socket until the test ends."""
    async with trio.open_nursery() as nursery:
        count = 0

        async def start(plugin: Plugin, *, tcp: bool = False, **config: object) -> NBDServer:
            nonlocal count
            count += 1
            cfg = ServerConfig(**config)  # type: ignore[arg-type]
            path = None if tcp else str(tmp_path / f"nbd{count}.sock")
            host, port = ("127.0.0.1", 0) if tcp else (None, None)

            async def run_server(task_status: trio.TaskStatus[NBDServer]) -> None:
                await serve_nbd(
                    plugin,
                    host=host,
                    port=port,
                    unix_path=path,
                    config=cfg,
                    task_status=task_status,
                )

            server: NBDServer = await nursery.start(run_server)
            return server

        yield start
        nursery.cancel_scope.cancel()
