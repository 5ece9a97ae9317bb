"""The built-in plugins (memory, file, null) and nbdkit's parameter parsing, without a server."""

from __future__ import annotations

import errno
import os
import re
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, strategies as st

from trioblock._plugins import _file
from trioblock._plugins._backend import (
    CACHE_NATIVE,
    EXTENT_HOLE,
    EXTENT_ZERO,
    FLAG_FUA,
    FLAG_MAY_TRIM,
    FLAG_REQ_ONE,
    FUA_NATIVE,
    FUA_NONE,
    Hole,
    PluginConnection,
    ThreadModel,
    read_bytes,
)
from trioblock._plugins._file import FilePlugin
from trioblock._plugins._memory import PAGE_SIZE, MemoryPlugin
from trioblock._plugins._null import NullPlugin
from trioblock._plugins._params import MAX_SIZE, parse_bool, parse_size

HOLE = EXTENT_HOLE | EXTENT_ZERO
DATA = 0
KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


_CYCLE = bytes(range(1, 256))


def pattern(n: int, seed: int = 1) -> bytes:
    """n non-zero bytes that differ from offset to offset (and with the seed)."""
    start = seed % 255
    return (_CYCLE * (n // 255 + 2))[start : start + n]


async def read(conn: PluginConnection, count: int, offset: int) -> bytes:
    return read_bytes(await conn.pread(count, offset, 0))


# -- parse_size / parse_bool --------------------------------------------------------------------

# nbdkit's own table (server/test-public.c, v1.32.5), plus a few edges of our own.
SIZES_ACCEPTED = [
    ("-0", 0), ("0", 0), ("+0", 0), (" 08", 8), ("1", 1), ("+1", 1),
    ("1234567890", 1234567890), ("9223372036854775807", MAX_SIZE),
    ("1s", 512), ("2S", 1024), ("1b", 1), ("1B", 1), ("1k", KiB), ("1K", KiB),
    ("1m", MiB), ("1M", MiB), ("+1M", MiB), ("1g", GiB), ("1G", GiB), ("1t", TiB), ("1T", TiB),
    ("1p", 1 << 50), ("1P", 1 << 50), ("8191p", 8191 << 50), ("1e", 1 << 60), ("1E", 1 << 60),
    ("\t\n\v\f\r 5k", 5 * KiB), ("0" * 5000 + "7", 7), ("7E", 7 << 60),
]  # fmt: skip
SIZES_REFUSED = [
    ("", "could not parse"), ("0x0", "suffix"), ("garbage", "could not parse"),
    ("0garbage", "suffix"), ("8E", "overflow"), ("8192P", "overflow"),
    ("9223372036854775808", "exceeds"), ("18446744073709551615", "exceeds"),
    ("999999999999999999999999", "exceeds"), ("9" * 5000, "exceeds"),
    ("-1", "negative"), ("-2", "negative"), ("-9223372036854775808", "negative"),
    ("-18446744073709551616", "negative"), ("M", "could not parse"), ("1MB", "suffix"),
    ("1MiB", "suffix"), ("1.5M", "suffix"), ("1 ", "suffix"), ("1k ", "suffix"),
    ("+-1", "could not parse"), ("1\u212a", "suffix"), ("\u0661", "could not parse"),
]  # fmt: skip
SCALES = {"": 1, "b": 1, "s": 512, "k": KiB, "m": MiB, "g": GiB, "t": TiB, "p": 1 << 50}
SCALES["e"] = 1 << 60


@pytest.mark.parametrize(("text", "expected"), SIZES_ACCEPTED)
def test_parse_size_accepts_what_nbdkit_accepts(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(("text", "complaint"), SIZES_REFUSED)
def test_parse_size_refuses_what_nbdkit_refuses_and_says_why(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_size(text)


@given(
    st.integers(min_value=0, max_value=MAX_SIZE) | st.integers(min_value=0, max_value=10_000),
    st.sampled_from(sorted(SCALES)),
    st.booleans(),
)
def test_parse_size_round_trips_a_number_with_any_suffix(n: int, suffix: str, upper: bool) -> None:
    text = f"{n}{suffix.upper() if upper else suffix}"
    if n * SCALES[suffix] <= MAX_SIZE:
        assert parse_size(text) == n * SCALES[suffix]
    else:
        with pytest.raises(ValueError, match="overflow"):
            parse_size(text)


@given(st.text())
def test_parse_size_either_parses_or_raises_value_error(text: str) -> None:
    try:
        size = parse_size(text)
    except ValueError:
        return
    assert 0 <= size <= MAX_SIZE


BOOL_WORDS = {"1": True, "true": True, "t": True, "yes": True, "y": True, "on": True}
BOOL_WORDS |= {"0": False, "false": False, "f": False, "no": False, "n": False, "off": False}


@pytest.mark.parametrize(("word", "expected"), sorted(BOOL_WORDS.items()))
def test_parse_bool_accepts_nbdkit_words_in_any_case(word: str, expected: bool) -> None:
    assert parse_bool(word) is expected
    assert parse_bool(word.upper()) is expected
    assert parse_bool(word.capitalize()) is expected


@pytest.mark.parametrize("text", ["", " true", "true ", "2", "01", "yes!", "enable", "\uff54rue"])
def test_parse_bool_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="could not decipher boolean"):
        parse_bool(text)


@given(st.sampled_from(sorted(BOOL_WORDS)), st.data())
def test_parse_bool_ignores_ascii_case_of_every_letter(word: str, data: st.DataObject) -> None:
    flips = data.draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    mixed = "".join(c.upper() if flip else c for c, flip in zip(word, flips, strict=True))
    assert parse_bool(mixed) is BOOL_WORDS[word]


# -- memory --------------------------------------------------------------------------------------


async def open_memory(size: int, readonly: bool = False) -> tuple[MemoryPlugin, PluginConnection]:
    plugin = MemoryPlugin(size)
    return plugin, await plugin.open(readonly, "", False)


async def test_memory_reads_zeros_and_reports_one_hole_before_any_write() -> None:
    plugin, conn = await open_memory(10 * MiB)
    assert await read(conn, 300 * KiB, 12345) == bytes(300 * KiB)
    assert await conn.extents(10 * MiB, 0, 0) == [(0, 10 * MiB, HOLE)]
    assert plugin.allocated_bytes == 0


async def test_memory_unaligned_write_across_pages_reads_back_exactly() -> None:
    _, conn = await open_memory(MiB)
    data = pattern(2 * PAGE_SIZE + 1000)
    offset = PAGE_SIZE - 300
    await conn.pwrite(memoryview(data), offset, 0)
    assert await read(conn, len(data), offset) == data
    expected = bytes(offset) + data + bytes(MiB - offset - len(data))
    for start, count in [(0, MiB), (offset - 1, 2), (PAGE_SIZE - 1, 2), (offset + 5, 3 * KiB)]:
        assert await read(conn, count, start) == expected[start : start + count]


async def test_memory_read_inside_one_page_is_a_view_of_the_page_not_a_copy() -> None:
    _, conn = await open_memory(MiB)
    await conn.pwrite(memoryview(pattern(PAGE_SIZE)), PAGE_SIZE, 0)
    view = await conn.pread(4 * KiB, PAGE_SIZE + 100, 0)
    assert isinstance(view, memoryview)
    # The documented aliasing: the view shows what the page holds when it is sent.
    await conn.pwrite(memoryview(b"\xff" * 4), PAGE_SIZE + 100, 0)
    assert bytes(view[:4]) == b"\xff" * 4


async def test_memory_read_spanning_pages_is_a_list_of_page_views_not_a_copy() -> None:
    _, conn = await open_memory(MiB)
    await conn.pwrite(memoryview(pattern(256 * KiB)), 100, 0)
    data = await conn.pread(256 * KiB, 100, 0)
    assert isinstance(data, list)
    assert len(data) == 5  # 64 KiB pages, starting 100 bytes into the first one
    assert all(isinstance(part, memoryview) for part in data)
    assert read_bytes(data) == pattern(256 * KiB)


async def test_memory_read_marks_pages_never_written_as_one_hole_each_run() -> None:
    _, conn = await open_memory(MiB)
    await conn.pwrite(memoryview(b"x" * 10), 2 * PAGE_SIZE, 0)
    data = await conn.pread(4 * PAGE_SIZE, 0, 0)
    assert isinstance(data, list)
    assert data[0] == Hole(2 * PAGE_SIZE)  # pages 0 and 1, merged
    assert read_bytes([data[1]])[:10] == b"x" * 10
    assert data[2] == Hole(PAGE_SIZE)
    assert await conn.pread(3 * PAGE_SIZE, 4 * PAGE_SIZE, 0) == [Hole(3 * PAGE_SIZE)]


async def test_memory_extents_coalesce_neighbouring_pages() -> None:
    _, conn = await open_memory(2 * MiB)
    await conn.pwrite(memoryview(b"x"), 0, 0)  # page 0
    await conn.pwrite(memoryview(pattern(PAGE_SIZE)), PAGE_SIZE + 10, 0)  # pages 1 and 2
    await conn.pwrite(memoryview(b"y"), 5 * PAGE_SIZE, 0)  # page 5
    assert await conn.extents(2 * MiB, 0, 0) == [
        (0, 3 * PAGE_SIZE, DATA),
        (3 * PAGE_SIZE, 2 * PAGE_SIZE, HOLE),
        (5 * PAGE_SIZE, PAGE_SIZE, DATA),
        (6 * PAGE_SIZE, 2 * MiB - 6 * PAGE_SIZE, HOLE),
    ]
    # A request starting and ending inside pages is clipped to exactly its range.
    assert await conn.extents(4 * PAGE_SIZE, 2 * PAGE_SIZE + 7, 0) == [
        (2 * PAGE_SIZE + 7, PAGE_SIZE - 7, DATA),
        (3 * PAGE_SIZE, 2 * PAGE_SIZE, HOLE),
        (5 * PAGE_SIZE, PAGE_SIZE, DATA),
        (6 * PAGE_SIZE, 7, HOLE),
    ]


async def test_memory_extents_with_req_one_return_only_the_first_whole_extent() -> None:
    _, conn = await open_memory(MiB)
    await conn.pwrite(memoryview(pattern(2 * PAGE_SIZE)), 2 * PAGE_SIZE, 0)
    assert await conn.extents(MiB - 100, 100, FLAG_REQ_ONE) == [(100, 2 * PAGE_SIZE - 100, HOLE)]
    assert await conn.extents(MiB - 2 * PAGE_SIZE, 2 * PAGE_SIZE, FLAG_REQ_ONE) == [
        (2 * PAGE_SIZE, 2 * PAGE_SIZE, DATA)
    ]


async def test_memory_writing_zeros_over_a_whole_page_frees_it() -> None:
    plugin, conn = await open_memory(MiB)
    await conn.pwrite(memoryview(pattern(2 * PAGE_SIZE)), 0, 0)
    assert plugin.allocated_bytes == 2 * PAGE_SIZE
    await conn.pwrite(memoryview(bytes(PAGE_SIZE)), PAGE_SIZE, 0)
    assert plugin.allocated_bytes == PAGE_SIZE
    assert await conn.extents(MiB, 0, 0) == [
        (0, PAGE_SIZE, DATA),
        (PAGE_SIZE, MiB - PAGE_SIZE, HOLE),
    ]


async def test_memory_partial_zero_writes_free_the_page_once_it_is_all_zeros() -> None:
    plugin, conn = await open_memory(MiB)
    await conn.pwrite(memoryview(b"ab"), 100, 0)
    await conn.pwrite(memoryview(bytes(1)), 100, 0)
    assert plugin.allocated_bytes == PAGE_SIZE  # "b" is still there
    assert await read(conn, 3, 100) == b"\0b\0"
    await conn.pwrite(memoryview(bytes(1)), 101, 0)
    assert plugin.allocated_bytes == 0
    await conn.pwrite(memoryview(bytes(3 * PAGE_SIZE)), 0, 0)  # zeros into holes: nothing allocated
    assert plugin.allocated_bytes == 0


async def test_memory_trim_and_zero_free_whole_pages_and_clear_partial_ones() -> None:
    plugin, conn = await open_memory(MiB)
    data = pattern(4 * PAGE_SIZE)
    for op in (conn.trim, conn.zero):
        await conn.pwrite(memoryview(data), 0, 0)
        await op(2 * PAGE_SIZE, PAGE_SIZE // 2, 0)  # half of page 0, all of 1, half of 2
        assert plugin.allocated_bytes == 3 * PAGE_SIZE
        expected = data[: PAGE_SIZE // 2] + bytes(2 * PAGE_SIZE) + data[5 * PAGE_SIZE // 2 :]
        assert await read(conn, 4 * PAGE_SIZE, 0) == expected
        assert await conn.extents(4 * PAGE_SIZE, 0, 0) == [
            (0, PAGE_SIZE, DATA),
            (PAGE_SIZE, PAGE_SIZE, HOLE),
            (2 * PAGE_SIZE, 2 * PAGE_SIZE, DATA),
        ]
        await op(MiB, 0, FLAG_FUA | FLAG_MAY_TRIM)
        assert plugin.allocated_bytes == 0


async def test_memory_one_tib_export_with_a_few_writes_stays_small() -> None:
    tracemalloc.start()
    try:
        plugin, conn = await open_memory(TiB)
        offsets = [0, 3 * GiB + 5, 512 * GiB, TiB - 4 * KiB]
        for offset in offsets:
            await conn.pwrite(memoryview(pattern(4 * KiB)), offset, 0)
        extents = await conn.extents(4 * GiB - 1, 0, 0)
        await conn.trim(4 * GiB - 1, TiB - 4 * GiB + 1, 0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert extents == [
        (0, PAGE_SIZE, DATA),
        (PAGE_SIZE, 3 * GiB - PAGE_SIZE, HOLE),
        (3 * GiB, PAGE_SIZE, DATA),
        (3 * GiB + PAGE_SIZE, GiB - PAGE_SIZE - 1, HOLE),
    ]
    assert plugin.allocated_bytes == 3 * PAGE_SIZE
    assert peak < 2 * MiB


async def test_memory_connections_share_one_disk() -> None:
    plugin = MemoryPlugin(MiB)
    writer = await plugin.open(False, "", False)
    reader = await plugin.open(True, "other-name", False)
    await writer.pwrite(memoryview(b"shared"), 1000, 0)
    assert await read(reader, 6, 1000) == b"shared"


async def test_memory_advertises_what_nbdkit_memory_does() -> None:
    _, conn = await open_memory(5 * GiB)
    info = await conn.info()
    assert (info.size, info.can_write, info.can_flush, info.can_trim) == (5 * GiB, True, True, True)
    assert (info.can_zero, info.can_fast_zero, info.can_extents) == (True, True, True)
    assert (info.can_multi_conn, info.can_fua, info.can_cache) == (True, FUA_NATIVE, CACHE_NATIVE)
    assert MemoryPlugin.thread_model is ThreadModel.PARALLEL


async def test_memory_read_only_connection_advertises_no_writes() -> None:
    _, conn = await open_memory(MiB, readonly=True)
    info = await conn.info()
    assert (info.can_write, info.can_trim, info.can_zero, info.can_fast_zero) == (False,) * 4
    assert info.can_fua == FUA_NONE


async def test_memory_requests_past_the_end_fail_without_growing_the_disk() -> None:
    plugin, conn = await open_memory(MiB)
    with pytest.raises(OSError, match="outside") as exc:
        await conn.pwrite(memoryview(b"xx"), MiB - 1, 0)
    assert exc.value.errno == errno.ENOSPC
    with pytest.raises(OSError, match="outside"):
        await conn.pread(2, MiB - 1, 0)
    assert plugin.allocated_bytes == 0


async def test_memory_every_operation_is_a_checkpoint() -> None:
    _, conn = await open_memory(MiB)
    operations: list[Callable[[], Any]] = [
        lambda: conn.info(),
        lambda: conn.pread(10, 0, 0),
        lambda: conn.pwrite(memoryview(b"x"), 0, 0),
        lambda: conn.flush(0),
        lambda: conn.trim(10, 0, 0),
        lambda: conn.zero(10, 0, 0),
        lambda: conn.cache(10, 0, 0),
        lambda: conn.extents(10, 0, 0),
        lambda: conn.close(),
    ]
    for operation in operations:
        with trio.testing.assert_checkpoints():
            await operation()


def test_memory_params_need_a_size_and_accept_nbdkit_syntax() -> None:
    assert MemoryPlugin.magic_config_key == "size"
    assert MemoryPlugin.from_params([("size", "1G")]).size == GiB
    assert MemoryPlugin.from_params([("size", "1M"), ("allocator", "sparse")]).size == MiB
    with pytest.raises(ValueError, match="you must specify size"):
        MemoryPlugin.from_params([])
    with pytest.raises(ValueError, match="unknown parameter 'colour'"):
        MemoryPlugin.from_params([("size", "1M"), ("colour", "red")])
    with pytest.raises(ValueError, match="allocator=zstd is not supported"):
        MemoryPlugin.from_params([("size", "1M"), ("allocator", "zstd")])


def test_memory_refuses_sizes_beyond_2_63_minus_1() -> None:
    assert MemoryPlugin(MAX_SIZE).size == MAX_SIZE
    with pytest.raises(ValueError, match="2\\*\\*63-1"):
        MemoryPlugin(MAX_SIZE + 1)
    with pytest.raises(ValueError, match="overflow"):
        MemoryPlugin.from_params([("size", "8E")])


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["write", "zeros", "trim", "zero"]),
            st.integers(min_value=0, max_value=4 * PAGE_SIZE - 1),
            st.integers(min_value=1, max_value=2 * PAGE_SIZE),
        ),
        max_size=12,
    )
)
async def test_memory_matches_a_flat_bytearray_and_never_keeps_a_zero_page(
    ops: list[tuple[str, int, int]],
) -> None:
    size = 4 * PAGE_SIZE
    plugin, conn = await open_memory(size)
    model = bytearray(size)
    for seed, (op, offset, count) in enumerate(ops):
        count = min(count, size - offset)
        data = pattern(count, seed) if op == "write" else bytes(count)
        if op in ("write", "zeros"):
            await conn.pwrite(memoryview(data), offset, 0)
        else:
            await getattr(conn, op)(count, offset, 0)
        model[offset : offset + count] = data
    assert await read(conn, size, 0) == model
    for offset, length, kind in await conn.extents(size, 0, 0):
        chunk = model[offset : offset + length]
        assert (kind == HOLE) == (chunk == bytes(length))
    pages = [model[i : i + PAGE_SIZE] for i in range(0, size, PAGE_SIZE)]
    assert plugin.allocated_bytes == PAGE_SIZE * sum(page != bytes(PAGE_SIZE) for page in pages)


# -- file ----------------------------------------------------------------------------------------


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(pattern(4 * MiB))
    return path


@pytest.fixture
async def file_conn(disk: Path) -> AsyncIterator[PluginConnection]:
    conn = await FilePlugin(disk).open(False, "", False)
    yield conn
    await conn.close()


async def test_file_reads_and_writes_round_trip_at_any_size_and_alignment(
    file_conn: PluginConnection, disk: Path
) -> None:
    for offset, count in [(0, 4 * KiB), (12345, 777), (MiB - 3, 3 * MiB + 3)]:  # last: threaded
        data = pattern(count, seed=count)
        await file_conn.pwrite(memoryview(data), offset, 0)
        assert await read(file_conn, count, offset) == data
        assert (await trio.Path(disk).read_bytes())[offset : offset + count] == data


async def test_file_cached_small_reads_stay_on_the_trio_thread_and_others_use_one(
    file_conn: PluginConnection, disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hops: list[object] = []
    real_run_sync = trio.to_thread.run_sync

    async def counting_run_sync(fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(fn)
        return await real_run_sync(fn, *args, **kwargs)

    fd = os.open(disk, os.O_RDONLY)
    try:
        os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            pytest.skip(f"RWF_NOWAIT reads not supported here: {exc}")
    finally:
        os.close(fd)
    monkeypatch.setattr(trio.to_thread, "run_sync", counting_run_sync)
    expected = pattern(4 * MiB)
    assert await read(file_conn, 4 * KiB, 8 * KiB) == expected[8 * KiB : 12 * KiB]
    assert hops == []  # the page cache had it: no thread hop
    assert await read(file_conn, 2 * MiB, 0) == expected[: 2 * MiB]
    assert len(hops) == 1  # above INLINE_MAX
    # Evicted from the page cache, a small read waits for the disk in a worker thread.
    fd = os.open(disk, os.O_RDONLY)
    try:
        os.fdatasync(fd)  # only clean pages can be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    assert await read(file_conn, 4 * KiB, 3 * MiB) == expected[3 * MiB : 3 * MiB + 4 * KiB]
    assert len(hops) == 2


async def test_file_trim_punches_a_hole_that_extents_report(file_conn: PluginConnection) -> None:
    assert await file_conn.extents(4 * MiB, 0, 0) == [(0, 4 * MiB, DATA)]
    await file_conn.trim(MiB, MiB, 0)
    assert await read(file_conn, MiB, MiB) == bytes(MiB)
    assert await file_conn.extents(4 * MiB, 0, 0) == [
        (0, MiB, DATA),
        (MiB, MiB, HOLE),
        (2 * MiB, 2 * MiB, DATA),
    ]
    assert await file_conn.extents(4 * MiB, MiB + 5, FLAG_REQ_ONE) == [(MiB + 5, MiB - 5, HOLE)]
    assert await file_conn.extents(MiB, MiB // 2, 0) == [
        (MiB // 2, MiB // 2, DATA),
        (MiB, MiB // 2, HOLE),
    ]


async def test_file_extents_of_a_hole_at_end_of_file_handle_enxio(tmp_path: Path) -> None:
    path = tmp_path / "sparse.img"
    with path.open("wb") as f:
        f.write(b"data")
        f.truncate(8 * MiB)
    conn = await FilePlugin(path).open(True, "", False)
    try:
        extents = await conn.extents(4 * MiB, 4 * MiB, 0)
        assert extents == [(4 * MiB, 4 * MiB, HOLE)]
        start, _, kind = (await conn.extents(8 * MiB, 0, 0))[0]
        assert (start, kind) == (0, DATA)
    finally:
        await conn.close()


async def test_file_zero_clears_data_and_may_trim_leaves_a_hole(
    file_conn: PluginConnection,
) -> None:
    await file_conn.zero(MiB, 0, 0)
    await file_conn.zero(MiB, 2 * MiB, FLAG_MAY_TRIM | FLAG_FUA)
    assert await read(file_conn, MiB, 0) == bytes(MiB)
    assert await read(file_conn, MiB, 2 * MiB) == bytes(MiB)
    assert (2 * MiB, MiB, HOLE) in await file_conn.extents(4 * MiB, 0, 0)


async def test_file_zero_asks_for_written_zeros_when_no_fallocate_mode_works(
    file_conn: PluginConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[int] = []

    def unsupported(fd: int, mode: int, offset: int, length: int) -> None:
        attempts.append(mode)
        raise OSError(errno.EOPNOTSUPP, "not here")

    monkeypatch.setattr(_file, "_fallocate", lambda: unsupported)
    with pytest.raises(OSError, match="write zeros instead") as exc:
        await file_conn.zero(MiB, 0, FLAG_MAY_TRIM)
    assert exc.value.errno == errno.EOPNOTSUPP
    punch = _file.FALLOC_FL_PUNCH_HOLE | _file.FALLOC_FL_KEEP_SIZE
    assert attempts == [punch, _file.FALLOC_FL_ZERO_RANGE]
    with pytest.raises(OSError, match="write zeros instead"):
        await file_conn.zero(MiB, 0, 0)
    assert len(attempts) == 2  # each unsupported mode is tried once per connection
    await file_conn.trim(MiB, 0, FLAG_FUA)  # trim is advisory: quietly does nothing
    assert await read(file_conn, 4, 0) == pattern(4)


async def test_file_read_only_connection_refuses_pwrite(disk: Path) -> None:
    conn = await FilePlugin(disk).open(True, "", False)
    try:
        info = await conn.info()
        assert (info.can_write, info.can_trim, info.can_zero, info.can_fast_zero) == (False,) * 4
        assert info.can_fua == FUA_NONE
        with pytest.raises(OSError, match="Bad file descriptor") as exc:
            await conn.pwrite(memoryview(b"nope"), 0, 0)
        assert exc.value.errno == errno.EBADF
    finally:
        await conn.close()
    assert (await trio.Path(disk).read_bytes())[:4] == pattern(4)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may open a read-only file for writing")
async def test_file_without_write_permission_is_served_read_only(disk: Path) -> None:
    await trio.Path(disk).chmod(0o444)
    conn = await FilePlugin(disk).open(False, "", False)
    try:
        assert not (await conn.info()).can_write
    finally:
        await conn.close()


async def test_file_advertises_what_nbdkit_file_does(file_conn: PluginConnection) -> None:
    info = await file_conn.info()
    assert (info.size, info.can_write, info.can_flush, info.can_trim) == (4 * MiB, True, True, True)
    assert (info.can_zero, info.can_fast_zero, info.can_extents) == (True, False, True)
    assert (info.can_multi_conn, info.can_fua, info.can_cache) == (True, FUA_NATIVE, CACHE_NATIVE)


async def test_file_flush_fua_write_and_cache_succeed(file_conn: PluginConnection) -> None:
    await file_conn.pwrite(memoryview(b"durable"), 0, FLAG_FUA)
    await file_conn.flush(0)
    await file_conn.cache(MiB, 0, 0)
    assert await read(file_conn, 7, 0) == b"durable"


async def test_file_read_past_the_end_of_a_shrunk_file_fails_with_eio(
    file_conn: PluginConnection, disk: Path
) -> None:
    os.truncate(disk, MiB)
    with pytest.raises(OSError, match="unexpected end of file") as exc:
        await file_conn.pread(4 * KiB, 2 * MiB, 0)
    assert exc.value.errno == errno.EIO


async def test_file_each_connection_has_its_own_descriptor_closed_by_close(disk: Path) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    plugin = FilePlugin(disk)
    conns = [await plugin.open(False, "", False) for _ in range(3)]
    assert open_fds() == before + 3
    for conn in conns:
        await conn.close()
    assert open_fds() == before


def test_file_plugin_refuses_missing_files_directories_and_char_devices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="No such file"):
        FilePlugin(tmp_path / "missing")
    with pytest.raises(ValueError, match="is a directory"):
        FilePlugin(tmp_path)
    with pytest.raises(ValueError, match="not regular or block device"):
        FilePlugin("/dev/null")


def test_file_params_follow_nbdkit(disk: Path) -> None:
    assert FilePlugin.magic_config_key == "file"
    assert FilePlugin.from_params([("file", str(disk)), ("fadvise", "random")]).path == str(disk)
    with pytest.raises(ValueError, match=re.escape("[file=]<FILENAME>")):
        FilePlugin.from_params([])
    with pytest.raises(ValueError, match="unknown fadvise mode"):
        FilePlugin.from_params([("file", str(disk)), ("fadvise", "wild")])
    with pytest.raises(ValueError, match="unknown parameter 'size'"):
        FilePlugin.from_params([("file", str(disk)), ("size", "1")])


def test_file_fallocate_and_ioctl_constants_match_the_kernel_headers() -> None:
    headers = Path("/usr/include/linux/falloc.h"), Path("/usr/include/linux/fs.h")
    if not all(h.exists() for h in headers):
        pytest.skip("kernel headers not installed")
    text = headers[0].read_text() + headers[1].read_text()
    for name in ("FALLOC_FL_KEEP_SIZE", "FALLOC_FL_PUNCH_HOLE", "FALLOC_FL_ZERO_RANGE"):
        m = re.search(rf"#define\s+{name}\s+(0x[0-9a-fA-F]+)", text)
        assert m is not None
        assert int(m.group(1), 16) == getattr(_file, name)
    for name in ("BLKSSZGET", "BLKZEROOUT"):
        m = re.search(rf"#define\s+{name}\s+_IO\((0x[0-9a-fA-F]+),\s*(\d+)\)", text)
        assert m is not None
        assert (int(m.group(1), 16) << 8) | int(m.group(2)) == getattr(_file, name)  # _IO()


# -- null ----------------------------------------------------------------------------------------


async def test_null_reads_are_holes_without_any_allocation() -> None:
    conn = await NullPlugin(GiB).open(False, "", False)
    assert await conn.pread(4 * KiB, 0, 0) == [Hole(4 * KiB)]
    assert await conn.pread(32 * MiB, 12345, 0) == [Hole(32 * MiB)]
    assert await read(conn, 64 * KiB, 0) == bytes(64 * KiB)


async def test_null_accepts_every_write_and_reports_one_hole() -> None:
    conn = await NullPlugin(GiB).open(False, "", False)
    await conn.pwrite(memoryview(b"gone"), 0, FLAG_FUA)
    await conn.trim(MiB, 0, 0)
    await conn.zero(MiB, 0, FLAG_MAY_TRIM)
    await conn.flush(0)
    await conn.cache(MiB, 0, 0)
    assert await read(conn, 4, 0) == bytes(4)
    assert await conn.extents(MiB, 5, 0) == [(5, MiB, HOLE)]
    assert await conn.extents(GiB, 100, 0) == [(100, GiB - 100, HOLE)]
    info = await conn.info()
    assert (info.size, info.can_write, info.can_fast_zero, info.can_multi_conn) == (
        GiB,
        True,
        True,
        True,
    )
    assert (info.can_fua, info.can_cache, info.can_extents) == (FUA_NATIVE, CACHE_NATIVE, True)
    await conn.close()


def test_null_size_defaults_to_zero_and_is_its_only_parameter() -> None:
    assert NullPlugin.from_params([]).size == 0
    assert NullPlugin.from_params([("size", "2k")]).size == 2 * KiB
    with pytest.raises(ValueError, match="unknown parameter 'file'"):
        NullPlugin.from_params([("file", "x")])
    assert NullPlugin.thread_model is ThreadModel.PARALLEL
