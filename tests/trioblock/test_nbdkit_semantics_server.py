"""nbdkit's Python-plugin semantics, end to end: plugin scripts hosted by NbdkitPythonPlugin,
served by the whole server, driven by libnbd (and nbdinfo).

The scripts (``plugins/srv_*.py``) record the callbacks they see in module-level lists that the
tests read through ``plugin.module``.  libnbd blocks, and the server runs in this test's Trio
loop, so every libnbd call happens in a worker thread.
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import nbd
import pytest
import trio

from conftest import ServeFactory
from libnbdclient import connect, extents_of, fails_with, with_client
from realpeers import run
from trioblock import NBDServer
from trioblock._plugins._nbdkit_host import NbdkitPythonPlugin

T = TypeVar("T")
PLUGINS = Path(__file__).parent / "plugins"
KiB = 1024
SIZE = 1024 * KiB  # srv_disk's size

# nbdkit's flags as plugins see them (not the NBD wire bits).
MAY_TRIM, FUA, REQ_ONE, FAST_ZERO = 1, 2, 4, 8
HOLE_ZERO = 3  # NBD_STATE_HOLE | NBD_STATE_ZERO
DATA = 0

SERIALIZE_CONNECTIONS, SERIALIZE_ALL_REQUESTS, SERIALIZE_REQUESTS, PARALLEL = 0, 1, 2, 3


def load(name: str, **params: str) -> NbdkitPythonPlugin:
    return NbdkitPythonPlugin.from_script(PLUGINS / f"{name}.py", list(params.items()))


def disk(**params: str) -> NbdkitPythonPlugin:
    return load("srv_disk", **params)


def calls(plugin: NbdkitPythonPlugin) -> list[tuple[Any, ...]]:
    recorded: list[tuple[Any, ...]] = plugin.module.calls
    return recorded


def data_calls(plugin: NbdkitPythonPlugin) -> list[tuple[Any, ...]]:
    """Recorded calls other than open/close, and forget them."""
    recorded = calls(plugin)
    out = [call for call in recorded if call[0] not in ("open", "close")]
    recorded.clear()
    return out


def not_strict(h: Any) -> None:
    """Let libnbd send what the server advertised against: the server must refuse it itself."""
    h.set_strict_mode(0)


@pytest.mark.parametrize(
    "params",
    [{"can_fua": "1"}, {"can_fua": "True"}, {}],
    ids=["can_fua-1", "can_fua-True", "can_fua-missing-with-flush"],
)
async def test_fua_emulate_runs_the_operation_without_the_flag_then_flush(
    serve: ServeFactory, params: dict[str, str]
) -> None:
    plugin = disk(**params)
    server = await serve(plugin)

    def body(h: Any) -> list[list[tuple[Any, ...]]]:
        assert h.can_fua()
        seen = []
        data_calls(plugin)
        h.pwrite(b"\x01" * 4096, 8192, nbd.CMD_FLAG_FUA)
        seen.append(data_calls(plugin))
        h.trim(4096, 8192, nbd.CMD_FLAG_FUA)
        seen.append(data_calls(plugin))
        h.zero(4096, 8192, nbd.CMD_FLAG_FUA)
        seen.append(data_calls(plugin))
        h.pwrite(b"\x01" * 4096, 8192)
        seen.append(data_calls(plugin))
        return seen

    assert await with_client(server, body) == [
        [("pwrite", 4096, 8192, 0), ("flush", 0)],
        [("trim", 4096, 8192, 0), ("flush", 0)],
        [("zero", 4096, 8192, MAY_TRIM), ("flush", 0)],
        [("pwrite", 4096, 8192, 0)],  # no FUA asked: no flush
    ]


async def test_fua_native_passes_the_flag_and_never_flushes(serve: ServeFactory) -> None:
    plugin = disk(can_fua="2")
    server = await serve(plugin)

    def body(h: Any) -> list[tuple[Any, ...]]:
        assert h.can_fua()
        data_calls(plugin)
        h.pwrite(b"\x01" * 4096, 8192, nbd.CMD_FLAG_FUA)
        h.trim(4096, 8192, nbd.CMD_FLAG_FUA)
        h.zero(4096, 8192, nbd.CMD_FLAG_FUA)
        h.zero(4096, 8192, nbd.CMD_FLAG_FUA | nbd.CMD_FLAG_NO_HOLE)
        return data_calls(plugin)

    assert await with_client(server, body) == [
        ("pwrite", 4096, 8192, FUA),
        ("trim", 4096, 8192, FUA),
        ("zero", 4096, 8192, FUA | MAY_TRIM),
        ("zero", 4096, 8192, FUA),
    ]


@pytest.mark.parametrize(
    "params",
    [{"can_fua": "0"}, {"without": "flush"}],
    ids=["can_fua-0", "can_fua-and-flush-missing"],
)
async def test_fua_none_is_not_advertised_and_refused(
    serve: ServeFactory, params: dict[str, str]
) -> None:
    plugin = disk(**params)
    server = await serve(plugin)

    def body(h: Any) -> None:
        assert not h.can_fua()
        fails_with(errno.EINVAL, lambda: h.pwrite(b"\x01" * 512, 0, nbd.CMD_FLAG_FUA))
        h.pwrite(b"\x01" * 512, 0)

    await with_client(server, body, setup=not_strict)


# -- WRITE_ZEROES --------------------------------------------------------------------------------


ZeroResult = tuple[bytes, list[tuple[Any, ...]]]


def fill_then_zero(plugin: NbdkitPythonPlugin, flags: int = 0) -> Callable[[Any], ZeroResult]:
    """Fill 128 KiB with 0xff, zero 64 KiB at 4096, return (data read back, calls of the zero)."""

    def body(h: Any) -> ZeroResult:
        h.pwrite(b"\xff" * (128 * KiB), 0)
        data_calls(plugin)
        h.zero(64 * KiB, 4096, flags)
        seen = data_calls(plugin)
        data: bytes = h.pread(128 * KiB, 0)
        return data, seen

    return body


EXPECTED_AFTER_ZERO = b"\xff" * 4096 + bytes(64 * KiB) + b"\xff" * (60 * KiB)


async def test_zero_refused_with_eopnotsupp_falls_back_to_writing_zeros(
    serve: ServeFactory,
) -> None:
    plugin = disk(zero="eopnotsupp")
    server = await serve(plugin)
    data, seen = await with_client(server, fill_then_zero(plugin))
    assert data == EXPECTED_AFTER_ZERO
    assert seen == [("zero", 64 * KiB, 4096, MAY_TRIM), ("pwrite", 64 * KiB, 4096, 0)]


async def test_zero_fallback_with_emulated_fua_flushes_after_the_zeros(
    serve: ServeFactory,
) -> None:
    plugin = disk(zero="eopnotsupp")
    server = await serve(plugin)
    data, seen = await with_client(server, fill_then_zero(plugin, nbd.CMD_FLAG_FUA))
    assert data == EXPECTED_AFTER_ZERO
    assert seen == [
        ("zero", 64 * KiB, 4096, MAY_TRIM),
        ("pwrite", 64 * KiB, 4096, 0),
        ("flush", 0),
    ]


@pytest.mark.parametrize(
    "params",
    [{"zero": "eopnotsupp"}, {"zero": "eopnotsupp", "without": "flush"}, {"without": "zero"}],
    ids=["refusing-zero", "refusing-zero-no-flush", "no-zero-callback"],
)
async def test_zero_fallback_with_native_fua_passes_fua_to_pwrite(
    serve: ServeFactory, params: dict[str, str]
) -> None:
    plugin = disk(can_fua="2", **params)
    server = await serve(plugin)
    data, seen = await with_client(server, fill_then_zero(plugin, nbd.CMD_FLAG_FUA))
    assert data == EXPECTED_AFTER_ZERO
    assert seen[-1] == ("pwrite", 64 * KiB, 4096, FUA)


async def test_fast_zero_that_the_plugin_refuses_fails_with_enotsup_without_writing(
    serve: ServeFactory,
) -> None:
    plugin = disk(zero="eopnotsupp", can_fast_zero="True")
    server = await serve(plugin)

    def body(h: Any) -> tuple[bytes, list[tuple[Any, ...]]]:
        assert h.can_fast_zero()
        h.pwrite(b"\xff" * 8192, 0)
        data_calls(plugin)
        fails_with(errno.ENOTSUP, lambda: h.zero(4096, 0, nbd.CMD_FLAG_FAST_ZERO))
        seen = data_calls(plugin)
        return h.pread(8192, 0), seen

    data, seen = await with_client(server, body)
    assert data == b"\xff" * 8192
    assert seen == [("zero", 4096, 0, MAY_TRIM | FAST_ZERO)]


async def test_plugin_with_zero_does_not_advertise_fast_zero_by_default(
    serve: ServeFactory,
) -> None:
    server = await serve(disk())
    assert not await with_client(server, lambda h: h.can_fast_zero())


async def test_plugin_without_zero_writes_zeros_and_fails_fast_zero_with_enotsup(
    serve: ServeFactory,
) -> None:
    plugin = disk(without="zero")
    server = await serve(plugin)

    def body(h: Any) -> ZeroResult:
        assert h.can_zero()  # WRITE_ZEROES is always offered on a writable export
        assert h.can_fast_zero()  # can_fast_zero defaults to "not can_zero": fail fast
        fails_with(errno.ENOTSUP, lambda: h.zero(4096, 0, nbd.CMD_FLAG_FAST_ZERO))
        assert data_calls(plugin) == []
        return fill_then_zero(plugin)(h)

    data, seen = await with_client(server, body)
    assert data == EXPECTED_AFTER_ZERO
    assert seen == [("pwrite", 64 * KiB, 4096, 0)]


# -- CACHE, extents, can_write -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "advertised", "expected"),
    [
        ({"can_cache": "1"}, True, [("pread", 8192, 4096, 0)]),
        ({"can_cache": "2"}, True, [("cache", 8192, 4096, 0)]),
        ({}, True, [("cache", 8192, 4096, 0)]),  # cache() defined: NATIVE
        ({"can_cache": "0"}, False, None),
        ({"without": "cache"}, False, None),
    ],
    ids=["emulate", "native", "default-native", "none", "missing"],
)
async def test_cache_follows_can_cache(
    serve: ServeFactory,
    params: dict[str, str],
    advertised: bool,
    expected: list[tuple[Any, ...]] | None,
) -> None:
    plugin = disk(**params)
    server = await serve(plugin)

    def body(h: Any) -> list[tuple[Any, ...]] | None:
        assert h.can_cache() == advertised
        if not advertised:
            return None
        data_calls(plugin)
        h.cache(8192, 4096)
        return data_calls(plugin)

    assert await with_client(server, body) == expected


async def test_cache_native_without_a_cache_callback_fails_with_eio(serve: ServeFactory) -> None:
    # nbdkit's generic rule makes such a CACHE a no-op, but its Python plugin always provides
    # .cache, which fails "cache not implemented" (plugins/python/plugin.c py_cache): EIO.
    plugin = disk(can_cache="2", without="cache")
    server = await serve(plugin)

    def body(h: Any) -> None:
        assert h.can_cache()
        fails_with(errno.EIO, lambda: h.cache(8192, 4096))
        assert h.pread(512, 0) == bytes(512)

    await with_client(server, body)


async def test_emulated_cache_reads_the_whole_range(serve: ServeFactory) -> None:
    plugin = disk(can_cache="1")
    server = await serve(plugin)

    def body(h: Any) -> list[tuple[Any, ...]]:
        data_calls(plugin)
        h.cache(SIZE, 0)
        return data_calls(plugin)

    reads = await with_client(server, body)
    assert all(call[0] == "pread" for call in reads)
    assert sum(call[1] for call in reads) == SIZE
    assert [call[2] for call in reads] == sorted(call[2] for call in reads)


@pytest.mark.parametrize(
    "params",
    [{"without": "extents"}, {"can_extents": "False"}, {"can_extents": "1"}],
    ids=["no-extents", "can_extents-False", "can_extents-1"],
)
async def test_without_extents_block_status_reports_one_data_extent(
    serve: ServeFactory, params: dict[str, str]
) -> None:
    plugin = disk(**params)
    server = await serve(plugin)

    def body(h: Any) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        return extents_of(h, 64 * KiB, 4096), extents_of(h, SIZE, 0)

    assert await with_client(server, body) == ([(64 * KiB, DATA)], [(SIZE, DATA)])
    assert all(call[0] != "extents" for call in calls(plugin))


async def test_with_extents_block_status_reports_the_plugins_answer(serve: ServeFactory) -> None:
    plugin = disk()
    server = await serve(plugin)
    assert await with_client(server, lambda h: extents_of(h, 64 * KiB, 4096)) == [
        (64 * KiB, HOLE_ZERO)
    ]
    assert ("extents", 64 * KiB, 4096, 0) in calls(plugin)


@pytest.mark.parametrize("value", ["1", "'yes'", "False"])
async def test_can_write_that_is_not_true_makes_the_export_read_only(
    serve: ServeFactory, value: str
) -> None:
    plugin = disk(can_write=value)
    server = await serve(plugin)

    def body(h: Any) -> None:
        assert h.is_read_only()
        fails_with(errno.EPERM, lambda: h.pwrite(b"x" * 512, 0))
        fails_with(errno.EPERM, lambda: h.zero(512, 0))
        fails_with(errno.EPERM, lambda: h.trim(512, 0))
        assert h.pread(512, 0) == bytes(512)

    await with_client(server, body, setup=not_strict)
    assert all(call[0] not in ("pwrite", "zero", "trim") for call in calls(plugin))
    assert calls(plugin)[0] == ("open", False, "")  # the server is not read-only: the plugin is


async def test_can_write_true_makes_the_export_writable(serve: ServeFactory) -> None:
    server = await serve(disk(can_write="True"))

    def body(h: Any) -> bytes:
        assert not h.is_read_only()
        h.pwrite(b"x" * 512, 0)
        data: bytes = h.pread(512, 0)
        return data

    assert await with_client(server, body) == b"x" * 512


# -- exports ------------------------------------------------------------------------------------

LISTED = [
    ("alpha", "the first disk"),
    ("beta", ""),
    ("gr\u00fc\u00dfe-\u20ac", "d\u00e9j\u00e0 vu"),
]


async def test_nbdinfo_list_shows_the_plugins_exports_and_descriptions(
    serve: ServeFactory,
) -> None:
    plugin = load("srv_exports")
    server = await serve(plugin)
    listed = json.loads(await run(["nbdinfo", "--list", "--json", server.uri()], limit=30))
    exports = {e["export-name"]: e for e in listed["exports"]}
    assert list(exports) == [name for name, _ in LISTED]
    for name, description in LISTED:
        assert exports[name].get("description", "") == description
        assert exports[name]["export-size"] == 4096 * (1 + len(name))


async def test_libnbd_opt_list_sees_the_exports_and_go_on_empty_name_opens_the_default(
    serve: ServeFactory,
) -> None:
    plugin = load("srv_exports")
    server = await serve(plugin)

    def body() -> tuple[list[tuple[str, str]], str, int]:
        h = nbd.NBD()
        h.set_opt_mode(True)
        h.set_full_info(True)
        assert server.unix_path is not None
        h.connect_unix(server.unix_path)
        found: list[tuple[str, str]] = []

        def listed(name: str, description: str) -> int:
            found.append((name, description))
            return 0

        h.opt_list(listed)
        h.set_export_name("")
        h.opt_go()
        canonical: str = h.get_canonical_export_name()
        size: int = h.get_size()
        h.shutdown()
        return found, canonical, size

    found, canonical, size = await trio.to_thread.run_sync(body)
    assert found == LISTED
    assert canonical == "alpha"  # NBD_INFO_NAME names the export the default resolved to
    assert size == 4096 * 6
    assert plugin.module.opened == ["alpha"]


async def test_without_default_export_the_list_is_still_the_plugins(serve: ServeFactory) -> None:
    plugin = load("srv_exports", without="default_export")
    server = await serve(plugin)
    listed = json.loads(await run(["nbdinfo", "--list", "--json", server.uri()], limit=30))
    assert [e["export-name"] for e in listed["exports"]] == [name for name, _ in LISTED]
    await with_client(server, lambda h: None)
    assert plugin.module.opened[-1] == ""


@pytest.mark.parametrize(
    "name",
    ["", "d\u00efsk-\u20ac-\U0001f600", "line one\nline two", " spaced / slashed ", "x" * 4096],
    ids=["empty", "non-ascii", "newline", "spaces-and-slashes", "4096-bytes"],
)
async def test_export_name_reaches_the_plugin_unchanged(serve: ServeFactory, name: str) -> None:
    plugin = disk()
    server = await serve(plugin)
    await with_client(server, lambda h: h.pread(512, 0), name=name)
    assert calls(plugin)[0] == ("open", False, name)
    assert calls(plugin)[-1] == ("close", name)


# -- thread models -------------------------------------------------------------------------------


Event = tuple[str, int, str]  # ("enter" | "exit", handle serial, callback)


def max_overlap(events: Sequence[Event], serial: int | None = None) -> int:
    """The most callbacks (of handle ``serial``, or any) running at once, from enter/exit events."""
    running = peak = 0
    for kind, who, _ in events:
        if serial is not None and who != serial:
            continue
        if kind == "enter":
            running += 1
            peak = max(peak, running)
        else:
            running -= 1
    return peak


def entered(events: Sequence[Event], callback: str) -> list[int]:
    """Serials of the handles ``callback`` ran for, in order."""
    return [who for kind, who, name in events if kind == "enter" and name == callback]


def aio_reads(h: Any, count: int) -> None:
    """``count`` 4 KiB reads in flight at once on ``h``; waits for all of them."""
    buffers = [nbd.Buffer(4096) for _ in range(count)]
    cookies = [h.aio_pread(buf, i * 4096) for i, buf in enumerate(buffers)]
    while h.aio_in_flight():
        h.poll(-1)
    assert all(h.aio_command_completed(cookie) for cookie in cookies)


async def reads_on_two_connections(server: NBDServer, reads: int) -> None:
    """Two connections, both connected first, then ``reads`` aio reads on each at once."""
    handles = [await trio.to_thread.run_sync(connect, server) for _ in range(2)]
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            for h in handles:
                nursery.start_soon(trio.to_thread.run_sync, aio_reads, h, reads)
    for h in handles:
        await trio.to_thread.run_sync(h.shutdown)


def concurrency(model: int, **params: str) -> NbdkitPythonPlugin:
    return load("srv_concurrency", thread_model=str(model), **params)


def events_of(plugin: NbdkitPythonPlugin) -> list[Event]:
    recorded: list[Event] = plugin.module.events
    return recorded


async def test_serialize_all_requests_never_runs_two_callbacks_at_once(
    serve: ServeFactory,
) -> None:
    plugin = concurrency(SERIALIZE_ALL_REQUESTS)
    server = await serve(plugin)
    await reads_on_two_connections(server, 6)
    events = events_of(plugin)
    assert sorted(entered(events, "pread")) == [1] * 6 + [2] * 6
    assert max_overlap(events) == 1


async def test_serialize_all_requests_serialises_open_and_close_with_other_clients_reads(
    serve: ServeFactory,
) -> None:
    plugin = concurrency(SERIALIZE_ALL_REQUESTS, delay_ms="20")
    server = await serve(plugin)
    events = events_of(plugin)
    first = await trio.to_thread.run_sync(connect, server)

    def second_client() -> None:
        h = connect(server)
        h.pread(512, 0)
        h.shutdown()

    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, aio_reads, first, 10)
            while not entered(events, "pread"):  # noqa: ASYNC110 -- the plugin runs in threads
                await trio.sleep(0.005)
            await trio.to_thread.run_sync(second_client)  # while the first one's reads run
    await trio.to_thread.run_sync(first.shutdown)
    assert entered(events, "open") == [1, 2]
    assert max_overlap(events) == 1


async def test_serialize_requests_serialises_each_connection_but_not_connections(
    serve: ServeFactory,
) -> None:
    plugin = concurrency(SERIALIZE_REQUESTS, delay_ms="30")
    server = await serve(plugin)
    await reads_on_two_connections(server, 6)
    events = events_of(plugin)
    assert max_overlap(events, 1) == 1
    assert max_overlap(events, 2) == 1
    assert max_overlap(events) == 2


async def test_parallel_runs_preads_of_one_connection_concurrently(serve: ServeFactory) -> None:
    plugin = concurrency(PARALLEL)
    server = await serve(plugin)
    await with_client(server, lambda h: aio_reads(h, 8))
    assert max_overlap(events_of(plugin)) > 1


async def test_serialize_connections_makes_a_second_client_wait_for_the_first(
    serve: ServeFactory,
) -> None:
    plugin = concurrency(SERIALIZE_CONNECTIONS)
    server = await serve(plugin)
    events = events_of(plugin)
    first = await trio.to_thread.run_sync(connect, server)
    second: list[Any] = []

    async def connect_second() -> None:
        second.append(await trio.to_thread.run_sync(connect, server, abandon_on_cancel=True))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connect_second)
            while len(server.connections) < 2:  # noqa: ASYNC110 -- the server has no event
                await trio.sleep(0.01)
            await trio.sleep(0.3)  # ample time to open, were the server not serialising
            assert not second
            assert entered(events, "open") == [1]
            await trio.to_thread.run_sync(first.pread, 512, 0)  # the first one still works
            await trio.to_thread.run_sync(first.shutdown)
    lifecycle = [(name, who) for kind, who, name in events if kind == "enter" and name != "pread"]
    assert lifecycle == [("open", 1), ("get_size", 1), ("close", 1), ("open", 2), ("get_size", 2)]
    await trio.to_thread.run_sync(second[0].shutdown)


@pytest.mark.parametrize(
    ("model", "multi_conn", "advertised"),
    [
        (PARALLEL, "True", True),
        (SERIALIZE_REQUESTS, "True", True),
        (SERIALIZE_ALL_REQUESTS, "True", True),
        (SERIALIZE_CONNECTIONS, "True", False),
        (PARALLEL, "1", False),  # not True: nbdkit reads it as false
        (PARALLEL, "False", False),
        (PARALLEL, None, False),  # missing: false
    ],
)
async def test_multi_conn_is_advertised_only_for_true_outside_serialize_connections(
    serve: ServeFactory, model: int, multi_conn: str | None, advertised: bool
) -> None:
    params = {} if multi_conn is None else {"multi_conn": multi_conn}
    server = await serve(concurrency(model, delay_ms="0", **params))
    assert await with_client(server, lambda h: h.can_multi_conn()) == advertised


# -- output and errors ---------------------------------------------------------------------------


async def test_plugin_print_inside_pread_does_not_disturb_the_protocol(
    serve: ServeFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin = disk(chatty="1")
    server = await serve(plugin)

    def body(h: Any) -> None:
        h.pwrite(b"\x07" * 8192, 0)
        for _ in range(3):
            assert h.pread(8192, 0) == b"\x07" * 8192

    await with_client(server, body)
    assert capsys.readouterr().out.count("pread of 8192 bytes at 0\n") == 3


async def test_exception_in_pread_is_eio_with_the_traceback_in_the_log(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = disk(fail_at="8192")
    server = await serve(plugin)

    def body(h: Any) -> bytes:
        h.pwrite(b"\x09" * 4096, 0)
        with pytest.raises(nbd.Error) as info:
            h.pread(4096, 8192)
        assert info.value.errnum == errno.EIO
        assert "ZeroDivisionError" not in str(info.value)
        data: bytes = h.pread(4096, 0)  # the same connection goes on
        return data

    with caplog.at_level(logging.ERROR, logger="trioblock.plugin"):
        assert await with_client(server, body) == b"\x09" * 4096
    failures = [r for r in caplog.records if r.exc_info and r.exc_info[0] is ZeroDivisionError]
    assert failures
    assert "Traceback (most recent call last)" in caplog.text
    assert "srv_disk.py" in caplog.text
    assert await with_client(server, lambda h: h.pread(4096, 0)) == b"\x09" * 4096


@pytest.mark.parametrize(
    ("plugin_errno", "client_errno"),
    [
        (errno.EIO, errno.EIO),
        (errno.EPERM, errno.EPERM),
        (errno.EROFS, errno.EPERM),
        (errno.ENOSPC, errno.ENOSPC),
        (errno.EDQUOT, errno.ENOSPC),
        (errno.EFBIG, errno.ENOSPC),
        (errno.ENOMEM, errno.ENOMEM),
        (errno.EINVAL, errno.EINVAL),
        (errno.ESHUTDOWN, errno.ESHUTDOWN),
        (errno.EOPNOTSUPP, errno.EINVAL),  # ENOTSUP only answers FAST_ZERO
        (errno.EOVERFLOW, errno.EINVAL),  # EOVERFLOW only answers DF reads
        (errno.EACCES, errno.EINVAL),  # anything else
    ],
    ids=errno.errorcode.get,
)
async def test_set_error_in_pwrite_reaches_the_client_as_nbdkit_maps_it(
    serve: ServeFactory, plugin_errno: int, client_errno: int
) -> None:
    server = await serve(disk(fail_at="8192", fail_errno=str(plugin_errno)))

    def body(h: Any) -> None:
        fails_with(client_errno, lambda: h.pwrite(b"x" * 512, 8192))
        h.pwrite(b"x" * 512, 0)

    await with_client(server, body)
