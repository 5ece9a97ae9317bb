"""Reads with holes: OFFSET_HOLE chunks under structured replies, zeros where the client needs
bytes (simple replies, or DF)."""

from __future__ import annotations

from typing import Any

import nbd
import nbdclient as c
import pytest

from conftest import ServeFactory
from libnbdclient import with_client
from trioblock._events import Request
from trioblock._export import plan, run_blocking
from trioblock._plugins._backend import ExportInfo, Hole
from trioblock._plugins._memory import PAGE_SIZE, MemoryPlugin
from trioblock._plugins._null import NullPlugin

MiB = 1024 * 1024


class _Parts:
    """Blocking ops whose pread answers with fixed parts."""

    def __init__(self, parts: list[bytes | Hole]) -> None:
        self.parts = parts

    def pread(self, count: int, offset: int, flags: int) -> list[bytes | Hole]:
        assert count == sum(len(p) for p in self.parts)
        return self.parts


def _reply(parts: list[bytes | Hole], *, structured: bool, flags: int = 0) -> bytes:
    length = sum(len(p) for p in parts)
    req = Request(7, c.CMD_READ, flags, 1000, length)
    out = run_blocking(_Parts(parts), plan(req, ExportInfo(size=1 << 20), structured))
    return b"".join(bytes(b) for b in out)


def test_holes_become_hole_chunks_between_data_chunks_and_only_the_last_is_done() -> None:
    chunks = c.parse_chunks(_reply([b"ab", Hole(5), Hole(3), b"c", b"d", Hole(4)], structured=True))
    assert [ch.type for ch in chunks] == [
        c.TYPE_OFFSET_DATA,
        c.TYPE_OFFSET_HOLE,
        c.TYPE_OFFSET_DATA,
        c.TYPE_OFFSET_HOLE,
    ]
    assert [ch.done for ch in chunks] == [False, False, False, True]
    assert c.decode_offset_data(chunks[0]) == (1000, b"ab")
    assert c.decode_hole(chunks[1]) == (1002, 8)  # neighbouring holes merged
    assert c.decode_offset_data(chunks[2]) == (1010, b"cd")  # neighbouring data joined
    assert c.decode_hole(chunks[3]) == (1012, 4)
    assert {ch.cookie for ch in chunks} == {7}


def test_df_forbids_splitting_so_holes_are_sent_as_zeros_in_one_chunk() -> None:
    (chunk,) = c.parse_chunks(_reply([b"ab", Hole(3)], structured=True, flags=c.FLAG_DF))
    assert chunk.done
    assert c.decode_offset_data(chunk) == (1000, b"ab\0\0\0")


def test_simple_replies_send_holes_as_zeros() -> None:
    reply, data = c.parse_simple_reply(_reply([Hole(2), b"x", Hole(2 * MiB)], structured=False))
    assert reply.error == 0
    assert data == b"\0\0x" + bytes(2 * MiB)


def _read_chunks(h: Any, count: int, offset: int, flags: int = 0) -> tuple[bytes, list[int]]:
    seen: list[int] = []

    def chunk(subbuf: bytes, off: int, status: int, error: Any) -> int:
        seen.append(status)
        return 0

    buf = h.pread_structured(count, offset, chunk, flags)
    return bytes(buf), seen


async def test_libnbd_sees_hole_chunks_from_memory_and_reads_zeros(serve: ServeFactory) -> None:
    server = await serve(MemoryPlugin.from_params([("size", "4M")]))

    def body(h: Any) -> tuple[bytes, list[int], bytes, list[int]]:
        h.pwrite(b"x" * PAGE_SIZE, PAGE_SIZE)  # page 1 holds data, pages 0 and 2 are holes
        data, seen = _read_chunks(h, 3 * PAGE_SIZE, 0)
        df_data, df_seen = _read_chunks(h, 3 * PAGE_SIZE, 0, nbd.CMD_FLAG_DF)
        return data, seen, df_data, df_seen

    data, seen, df_data, df_seen = await with_client(server, body)
    expected = bytes(PAGE_SIZE) + b"x" * PAGE_SIZE + bytes(PAGE_SIZE)
    assert data == expected
    assert seen == [nbd.READ_HOLE, nbd.READ_DATA, nbd.READ_HOLE]
    assert df_data == expected
    assert df_seen == [nbd.READ_DATA]


@pytest.mark.parametrize("structured", [True, False], ids=["structured", "simple"])
async def test_null_reads_zeros_over_both_reply_kinds(
    serve: ServeFactory, structured: bool
) -> None:
    server = await serve(NullPlugin(64 * MiB), structured_replies=structured)
    data = await with_client(server, lambda h: bytes(h.pread(8 * MiB, 12345)))
    assert data == bytes(8 * MiB)
