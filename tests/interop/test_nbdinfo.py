"""nbdinfo (libnbd's inspection tool) against the built-in plugins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbd
import pytest
import trio

from conftest import ServeFactory
from realpeers import run
from trioblock._plugins._file import FilePlugin
from trioblock._plugins._memory import MemoryPlugin
from trioblock._plugins._null import NullPlugin

pytestmark = pytest.mark.interop

MiB = 1024 * 1024
SIZE = 64 * MiB


def memory() -> MemoryPlugin:
    return MemoryPlugin.from_params([("size", "64M")])


async def nbdinfo_json(*args: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(await run(["nbdinfo", "--json", *args]))
    return info


def parse_map(text: str) -> list[tuple[int, int, int, str]]:
    """``nbdinfo --map`` lines: (offset, length, type, description)."""
    extents = []
    for line in text.splitlines():
        offset, length, kind, description = line.split(maxsplit=3)
        extents.append((int(offset), int(length), int(kind), description))
    return extents


async def with_handle(uri: str, *calls: tuple[str, tuple[object, ...]]) -> None:
    """Connect with libnbd (in a thread: the server shares this event loop) and make ``calls``."""

    def client() -> None:
        h = nbd.NBD()
        h.connect_uri(uri)
        for method, args in calls:
            getattr(h, method)(*args)
        h.shutdown()

    await trio.to_thread.run_sync(client)


async def test_nbdinfo_shows_size_and_capabilities_of_memory_export(serve: ServeFactory) -> None:
    server = await serve(memory())
    out = await run(["nbdinfo", server.uri()])
    assert "protocol: newstyle-fixed without TLS, using structured packets" in out
    assert 'export="":' in out
    assert f"export-size: {SIZE} (64M)" in out
    assert "base:allocation" in out
    for capability in ("can_trim", "can_zero", "can_fua", "can_flush", "can_multi_conn"):
        assert f"{capability}: true" in out
    assert "is_read_only: false" in out


async def test_nbdinfo_size_over_tcp(serve: ServeFactory) -> None:
    server = await serve(memory(), tcp=True)
    assert server.uri().startswith("nbd://127.0.0.1:")
    assert (await run(["nbdinfo", "--size", server.uri()])).strip() == str(SIZE)


async def test_nbdinfo_list_includes_the_default_export(serve: ServeFactory) -> None:
    server = await serve(memory())
    out = await run(["nbdinfo", "--list", server.uri()])
    assert 'export="":' in out
    assert f"export-size: {SIZE}" in out

    listed = await nbdinfo_json("--list", server.uri())
    assert [export["export-name"] for export in listed["exports"]] == [""]
    assert listed["exports"][0]["export-size"] == SIZE


async def test_nbdinfo_map_shows_written_data_and_trimmed_holes(serve: ServeFactory) -> None:
    server = await serve(memory())
    uri = server.uri()
    assert parse_map(await run(["nbdinfo", "--map", uri])) == [(0, SIZE, 3, "hole,zero")]

    await with_handle(uri, ("pwrite", (b"\xa5" * (2 * MiB), MiB)))
    assert parse_map(await run(["nbdinfo", "--map", uri])) == [
        (0, MiB, 3, "hole,zero"),
        (MiB, 2 * MiB, 0, "data"),
        (3 * MiB, SIZE - 3 * MiB, 3, "hole,zero"),
    ]

    await with_handle(uri, ("trim", (MiB, MiB)))
    assert parse_map(await run(["nbdinfo", "--map", uri])) == [
        (0, 2 * MiB, 3, "hole,zero"),
        (2 * MiB, MiB, 0, "data"),
        (3 * MiB, SIZE - 3 * MiB, 3, "hole,zero"),
    ]

    mapped = json.loads(await run(["nbdinfo", "--map", "--json", uri]))
    assert [(e["offset"], e["length"], e["type"]) for e in mapped] == [
        (0, 2 * MiB, 3),
        (2 * MiB, MiB, 0),
        (3 * MiB, SIZE - 3 * MiB, 3),
    ]


async def test_nbdinfo_totals_counts_data_after_zeroing(serve: ServeFactory) -> None:
    server = await serve(memory())
    uri = server.uri()
    await with_handle(uri, ("pwrite", (b"\x01" * (4 * MiB), 0)), ("zero", (MiB, 0)))
    totals = await run(["nbdinfo", "--map", "--totals", uri])
    # "SIZE PERCENT TYPE DESCRIPTION" per type: 3 MiB of data, the rest hole+zero.
    rows = {int(line.split()[2]): int(line.split()[0]) for line in totals.splitlines()}
    assert rows == {0: 3 * MiB, 3: SIZE - 3 * MiB}


async def test_nbdinfo_json_reports_writable_capabilities(serve: ServeFactory) -> None:
    server = await serve(memory())
    info = await nbdinfo_json(server.uri())
    assert info["protocol"] == "newstyle-fixed"
    assert info["TLS"] is False
    assert info["structured"] is True
    (export,) = info["exports"]
    assert export["export-name"] == ""
    assert export["export-size"] == SIZE
    assert export["contexts"] == ["base:allocation"]
    expected = {
        "is_read_only": False,
        "is_rotational": False,
        "can_cache": True,
        "can_df": True,
        "can_fast_zero": True,
        "can_flush": True,
        "can_fua": True,
        "can_multi_conn": True,
        "can_trim": True,
        "can_zero": True,
    }
    assert {key: export[key] for key in expected} == expected


async def test_nbdinfo_json_reports_readonly_server_cannot_write(serve: ServeFactory) -> None:
    server = await serve(memory(), readonly=True)
    (export,) = (await nbdinfo_json(server.uri()))["exports"]
    assert export["export-size"] == SIZE
    assert export["is_read_only"] is True
    for capability in ("can_trim", "can_zero", "can_fast_zero", "can_fua"):
        assert export[capability] is False, capability
    for capability in ("can_flush", "can_multi_conn", "can_cache", "can_df"):
        assert export[capability] is True, capability


async def test_nbdinfo_without_structured_replies_reports_simple_protocol(
    serve: ServeFactory,
) -> None:
    server = await serve(memory(), structured_replies=False)
    info = await nbdinfo_json(server.uri())
    assert info["structured"] is False
    (export,) = info["exports"]
    assert export["can_df"] is False
    assert export["export-size"] == SIZE


async def test_nbdinfo_can_and_is_queries_exit_status(serve: ServeFactory) -> None:
    writable = await serve(memory())
    readonly = await serve(memory(), readonly=True)
    await run(["nbdinfo", "--can", "trim", writable.uri()])
    await run(["nbdinfo", "--is", "readonly", readonly.uri()])
    # nbdinfo exits 2 for "false".
    result = await trio.run_process(
        ["nbdinfo", "--can", "write", readonly.uri()], capture_stdout=True, check=False
    )
    assert result.returncode == 2


async def test_nbdinfo_null_plugin_is_all_zero_hole(serve: ServeFactory) -> None:
    server = await serve(NullPlugin.from_params([("size", "16M")]))
    (export,) = (await nbdinfo_json(server.uri()))["exports"]
    assert export["export-size"] == 16 * MiB
    assert parse_map(await run(["nbdinfo", "--map", server.uri()])) == [
        (0, 16 * MiB, 3, "hole,zero")
    ]


async def test_nbdinfo_file_plugin_reports_file_size_and_sparseness(
    serve: ServeFactory, tmp_path: Path
) -> None:
    image = tmp_path / "disk.img"
    with image.open("wb") as f:
        f.truncate(8 * MiB)
        f.seek(2 * MiB)
        f.write(b"\x5a" * MiB)
    server = await serve(FilePlugin.from_params([("file", str(image))]))
    (export,) = (await nbdinfo_json(server.uri()))["exports"]
    assert export["export-size"] == 8 * MiB
    assert export["can_trim"] is True
    extents = parse_map(await run(["nbdinfo", "--map", server.uri()]))
    data = [(offset, length) for offset, length, kind, _ in extents if kind == 0]
    assert sum(length for _, length in data) >= MiB
    assert all(offset <= 2 * MiB and offset + length >= 3 * MiB for offset, length in data)
