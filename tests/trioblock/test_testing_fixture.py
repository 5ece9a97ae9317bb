"""trioblock.testing: serve_plugin() and the nbd_server fixture, checked with libnbd's bindings."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nbd
import pytest
import trio

from trioblock._plugins import PluginLoadError
from trioblock._plugins._memory import MemoryPlugin
from trioblock.testing import NBDServerFactory, serve_plugin

ROOT = Path(__file__).resolve().parents[2]
RAMDISK = ROOT / "examples" / "ramdisk.py"


def write_then_read(uri: str, data: bytes, offset: int) -> bytes:
    """A libnbd client in a thread: write, read back, disconnect."""
    h = nbd.NBD()
    h.connect_uri(uri)
    h.pwrite(data, offset)
    h.flush()
    result = bytes(h.pread(len(data), offset))
    h.shutdown()
    return result


def read_only_write_fails(uri: str) -> bool:
    h = nbd.NBD()
    h.connect_uri(uri)
    try:
        h.pwrite(b"x" * 512, 0)
    except nbd.Error:
        return bool(h.is_read_only())
    finally:
        h.shutdown()
    return False


async def test_three_line_fixture_usage(nbd_server: NBDServerFactory) -> None:
    uri = await nbd_server(RAMDISK, "size=1M")
    data = await trio.to_thread.run_sync(write_then_read, uri, b"trioblock" * 100, 4096)
    assert data == b"trioblock" * 100


async def test_fixture_serves_builtins_and_plugin_objects_side_by_side(
    nbd_server: NBDServerFactory,
) -> None:
    memory_uri = await nbd_server("memory", "1M")
    object_uri = await nbd_server(MemoryPlugin(65536), export_name="disk")
    assert memory_uri != object_uri
    assert object_uri.startswith("nbd+unix:///disk?socket=")
    for uri in (memory_uri, object_uri):
        assert await trio.to_thread.run_sync(write_then_read, uri, b"\1" * 512, 0) == b"\1" * 512
    assert [served.uri for served in nbd_server.served] == [memory_uri, object_uri]
    for served in nbd_server.served:
        assert await trio.Path(served.socket_path).is_socket()


async def test_fixture_readonly(nbd_server: NBDServerFactory) -> None:
    uri = await nbd_server("python", str(RAMDISK), readonly=True)
    assert await trio.to_thread.run_sync(read_only_write_fails, uri)


async def test_fixture_reports_plugin_load_errors_to_the_test(
    nbd_server: NBDServerFactory,
) -> None:
    with pytest.raises(PluginLoadError, match="memory: could not parse size"):
        await nbd_server("memory", "size=lots")


async def test_serve_plugin_cleans_up_its_socket_directory() -> None:
    async with serve_plugin("memory", "1M") as served:
        assert served.uri == f"nbd+unix:///?socket={served.socket_path}"
        assert served.server.unix_path == served.socket_path
        directory = os.path.dirname(served.socket_path)
        assert await trio.to_thread.run_sync(write_then_read, served.uri, b"z" * 4096, 0)
    assert not await trio.Path(directory).exists()


async def test_serve_plugin_lets_the_blocks_exception_through_unwrapped() -> None:
    with pytest.raises(ZeroDivisionError):
        async with serve_plugin("null"):
            1 / 0  # noqa: B018


async def test_serve_plugin_rejects_arguments_for_a_plugin_object() -> None:
    with pytest.raises(TypeError):
        async with serve_plugin(MemoryPlugin(512), "size=1M"):
            pass  # pragma: no cover


async def test_the_fixture_is_available_to_any_project_through_the_entry_point(
    tmp_path: Path,
) -> None:
    """A plugin author's project: no conftest, just pytest-trio and trioblock installed."""
    (tmp_path / "pytest.ini").write_text("[pytest]\ntrio_mode = true\n")
    (tmp_path / "test_plugin.py").write_text(
        textwrap.dedent(
            f"""\
            import nbd, trio

            def read_size(uri):
                h = nbd.NBD()
                h.connect_uri(uri)
                return h.get_size()

            async def test_x(nbd_server):
                uri = await nbd_server({str(RAMDISK)!r}, "size=2M")
                assert await trio.to_thread.run_sync(read_size, uri) == 2 * 1024 * 1024
            """
        )
    )
    with trio.fail_after(120):
        result = await trio.run_process(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_plugin.py"],
            cwd=tmp_path, capture_stdout=True, stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout.decode()
    assert b"1 passed" in result.stdout
