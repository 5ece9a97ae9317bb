"""The examples, each served and driven by real NBD clients (nbdcopy, libnbd)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import types
from collections.abc import AsyncIterator
from pathlib import Path

import nbd
import pytest
import trio

from realpeers import need, run
from trioblock._plugins import PluginLoadError, load_plugin
from trioblock._plugins._async import AsyncPlugin
from trioblock._plugins._backend import ThreadModel
from trioblock._plugins._nbdkit_host import NbdkitPythonPlugin
from trioblock.testing import NBDServerFactory

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
RAMDISK = ROOT / "examples" / "ramdisk.py"
ASYNC_REMOTE = ROOT / "examples" / "async_remote.py"
MiB = 1024 * 1024


def sha256(path: Path, length: int | None = None) -> str:
    with path.open("rb") as f:
        return hashlib.sha256(f.read(length) if length is not None else f.read()).hexdigest()


def random_image(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def ramdisk_copy_command(tmp_path: Path) -> str:
    """nbdcopy 8 MiB of random data into the export and the whole export back out."""
    return f'nbdcopy "{tmp_path}/in.img" "$uri" && nbdcopy "$uri" "{tmp_path}/out.img"'


@pytest.mark.parametrize("server", ["trioblock", "nbdkit"])
async def test_ramdisk_nbdcopy_round_trip(tmp_path: Path, server: str) -> None:
    """The README demo's plugin: same result under trioblock and under the real nbdkit."""
    need("nbdcopy")
    argv = [sys.executable, "-m", "trioblock"] if server == "trioblock" else [need("nbdkit")]
    random_image(tmp_path / "in.img", 8 * MiB)
    await run([*argv, "-U", "-", "python", str(RAMDISK), "size=16M",
               "--run", ramdisk_copy_command(tmp_path)])  # fmt: skip
    out = tmp_path / "out.img"
    assert out.stat().st_size == 16 * MiB
    assert sha256(out, 8 * MiB) == sha256(tmp_path / "in.img")
    assert out.read_bytes()[8 * MiB :] == bytes(8 * MiB)


def zero_trim_and_unaligned_io(uri: str) -> tuple[bytes, bytes, bytes]:
    h = nbd.NBD()
    h.connect_uri(uri)
    h.pwrite(b"\xff" * (3 * 4096), 0)
    h.zero(4096, 4096)  # the middle block
    h.trim(100, 10)  # an unaligned slice of the first block
    h.pwrite(b"abc", 4095)  # across a block boundary
    result = bytes(h.pread(3 * 4096, 0)), bytes(h.pread(7, 4093)), bytes(h.pread(10, 100))
    h.shutdown()
    return result


def expected_after_zero_trim_and_unaligned_io() -> bytes:
    disk = bytearray(b"\xff" * (3 * 4096))
    disk[4096 : 2 * 4096] = bytes(4096)
    disk[10:110] = bytes(100)
    disk[4095:4098] = b"abc"
    return bytes(disk)


async def test_ramdisk_zero_trim_and_unaligned_writes(nbd_server: NBDServerFactory) -> None:
    uri = await nbd_server(RAMDISK, "size=1M")
    whole, across, trimmed = await trio.to_thread.run_sync(zero_trim_and_unaligned_io, uri)
    assert whole == expected_after_zero_trim_and_unaligned_io()
    assert across == b"\xff\xffabc\0\0"
    assert trimmed == bytes(10)


def test_ramdisk_is_an_nbdkit_plugin_with_a_default_size() -> None:
    plugin = load_plugin("python", [str(RAMDISK)])
    assert isinstance(plugin, NbdkitPythonPlugin)
    assert plugin.thread_model is ThreadModel.PARALLEL
    assert len(plugin.module.disk) == 64 * MiB


# -- the async plugin and its block store -----------------------------------------------------


def import_example(path: Path) -> types.ModuleType:
    """The example as a module of its own, for its block store (not for the plugin)."""
    name = f"example_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def block_store() -> AsyncIterator[str]:
    """A running block store (16 MiB): yields the plugin's ``server=`` argument."""
    store = import_example(ASYNC_REMOTE)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(store.serve_block_store, 16 * MiB)
        yield f"server=127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


def test_async_remote_is_recognised_as_an_async_plugin() -> None:
    plugin = load_plugin(str(ASYNC_REMOTE), ["server=localhost:1"])
    assert isinstance(plugin, AsyncPlugin)
    assert plugin.thread_model is ThreadModel.SERIALIZE_REQUESTS


def test_async_remote_needs_its_server() -> None:
    with pytest.raises(PluginLoadError, match="server=HOST:PORT is required"):
        load_plugin(str(ASYNC_REMOTE), [])


async def test_async_remote_nbdcopy_round_trip(
    tmp_path: Path, nbd_server: NBDServerFactory, block_store: str
) -> None:
    uri = await nbd_server(ASYNC_REMOTE, block_store)
    image = random_image(tmp_path / "in.img", 5 * MiB + 1234)  # not a whole number of blocks
    await run(["nbdcopy", str(image), uri])
    await run(["nbdcopy", uri, str(tmp_path / "out.img")])
    out = tmp_path / "out.img"
    assert out.stat().st_size == 16 * MiB
    assert sha256(out, image.stat().st_size) == sha256(image)
    info = await run(["nbdinfo", "--size", uri])
    assert info.strip() == str(16 * MiB)


async def test_async_remote_zero_trim_and_unaligned_writes(
    nbd_server: NBDServerFactory, block_store: str
) -> None:
    uri = await nbd_server(ASYNC_REMOTE, block_store)
    whole, across, trimmed = await trio.to_thread.run_sync(zero_trim_and_unaligned_io, uri)
    assert whole == expected_after_zero_trim_and_unaligned_io()
    assert across == b"\xff\xffabc\0\0"
    assert trimmed == bytes(10)


async def test_async_remote_connections_share_the_store(
    nbd_server: NBDServerFactory, block_store: str
) -> None:
    first = await nbd_server(ASYNC_REMOTE, block_store)
    second = await nbd_server(ASYNC_REMOTE, block_store)  # another server, the same store
    await trio.to_thread.run_sync(zero_trim_and_unaligned_io, first)

    def read(uri: str) -> bytes:
        h = nbd.NBD()
        h.connect_uri(uri)
        data = bytes(h.pread(3 * 4096, 0))
        h.shutdown()
        return data

    assert (
        await trio.to_thread.run_sync(read, second) == expected_after_zero_trim_and_unaligned_io()
    )
