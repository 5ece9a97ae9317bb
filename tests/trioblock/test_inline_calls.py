"""Quick blocking plugin calls go inline (no thread hop); one slow call sends them back."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import nbd
import trio

from conftest import ServeFactory
from trioblock._executors import INLINE_AFTER
from trioblock._plugins._nbdkit_host import NbdkitPythonPlugin

PLUGIN = Path(__file__).parent / "plugins" / "srv_threads.py"
BLOCK = 4096


def _read_blocks(uri: str, offsets: list[int]) -> None:
    h = nbd.NBD()
    h.connect_uri(uri)
    try:
        for start in range(0, len(offsets), 32):  # 32 in flight, like a real client
            for offset in offsets[start : start + 32]:
                h.aio_pread(nbd.Buffer(BLOCK), offset)
            while h.aio_in_flight():
                h.poll(-1)
    finally:
        h.shutdown()


async def _serve_and_read(serve: ServeFactory, offsets: list[int], **config: Any) -> list[int]:
    plugin = NbdkitPythonPlugin.from_script(PLUGIN, [])
    server = await serve(plugin, **config)
    await trio.to_thread.run_sync(_read_blocks, server.uri(), offsets)
    recorded: list[int] = plugin.module.threads
    return recorded


def _quick_offsets(count: int) -> list[int]:
    return [BLOCK * (8 + i % 900) for i in range(count)]  # never the slow offset


async def test_quick_calls_move_inline_and_a_slow_one_moves_them_back(serve: ServeFactory) -> None:
    trio_thread = threading.get_ident()
    quick = _quick_offsets(2 * INLINE_AFTER)
    slow = [BLOCK * 7]
    after = _quick_offsets(200)
    threads = await _serve_and_read(serve, quick + slow + after)
    assert len(threads) == len(quick) + 1 + len(after)
    assert trio_thread not in threads[:32]  # plugins start out in worker threads
    assert trio_thread in threads[len(quick) - 300 : len(quick)]  # proven quick: inline
    assert trio_thread not in threads[-100:]  # the slow call sent them back to threads


async def test_no_inline_keeps_every_call_in_worker_threads(serve: ServeFactory) -> None:
    trio_thread = threading.get_ident()
    threads = await _serve_and_read(
        serve, _quick_offsets(INLINE_AFTER + 600), inline_quick_calls=False
    )
    assert trio_thread not in threads
