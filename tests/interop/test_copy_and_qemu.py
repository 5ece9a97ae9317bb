"""nbdcopy and the qemu tools (qemu-img, qemu-io, qemu-nbd) against the built-in plugins."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import trio

from conftest import ServeFactory
from realpeers import run
from trioblock import NBDServer
from trioblock._plugins._file import FilePlugin
from trioblock._plugins._memory import MemoryPlugin
from trioblock._plugins._null import NullPlugin

pytestmark = pytest.mark.interop

KiB = 1024
MiB = 1024 * KiB
IMAGE_SIZE = 16 * MiB


def memory(size: str = "16M") -> MemoryPlugin:
    return MemoryPlugin.from_params([("size", size)])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """16 MiB alternating 3 MiB of random data and 1 MiB of zeros (nbdcopy sparsifies those)."""
    path = tmp_path / "in.img"
    with path.open("wb") as f:
        for _ in range(IMAGE_SIZE // (4 * MiB)):
            f.write(os.urandom(3 * MiB))
            f.write(bytes(MiB))
    return path


def unix_socket(server: NBDServer) -> str:
    assert server.unix_path is not None
    return server.unix_path


# -- nbdcopy -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [[], ["--request-size=4096"], ["--connections=1", "--synchronous"]],
    ids=["default", "4k-requests", "synchronous"],
)
async def test_nbdcopy_round_trips_random_image(
    serve: ServeFactory, image: Path, tmp_path: Path, options: list[str]
) -> None:
    server = await serve(memory())
    out = tmp_path / "out.img"
    await run(["nbdcopy", *options, str(image), server.uri()])
    await run(["nbdcopy", *options, server.uri(), str(out)])
    assert out.stat().st_size == IMAGE_SIZE
    assert sha256(out) == sha256(image)


async def test_nbdcopy_round_trips_over_tcp(
    serve: ServeFactory, image: Path, tmp_path: Path
) -> None:
    server = await serve(memory(), tcp=True)
    out = tmp_path / "out.img"
    await run(["nbdcopy", "--flush", str(image), server.uri()])
    await run(["nbdcopy", server.uri(), str(out)])
    assert sha256(out) == sha256(image)


@pytest.mark.parametrize("options", [[], ["--request-size=4096"]], ids=["default", "4k-requests"])
async def test_nbdcopy_to_null_reads_the_whole_export(
    serve: ServeFactory, image: Path, options: list[str]
) -> None:
    server = await serve(memory())
    await run(["nbdcopy", str(image), server.uri()])
    await run(["nbdcopy", *options, server.uri(), "null:"])


async def test_nbdcopy_server_to_server_preserves_data(
    serve: ServeFactory, image: Path, tmp_path: Path
) -> None:
    source = await serve(memory())
    destination = await serve(memory(), tcp=True)
    out = tmp_path / "out.img"
    await run(["nbdcopy", str(image), source.uri()])
    await run(["nbdcopy", source.uri(), destination.uri()])
    await run(["nbdcopy", destination.uri(), str(out)])
    assert sha256(out) == sha256(image)


async def test_nbdcopy_into_file_plugin_writes_the_backing_file(
    serve: ServeFactory, image: Path, tmp_path: Path
) -> None:
    backing = tmp_path / "backing.img"
    with backing.open("wb") as f:
        f.truncate(IMAGE_SIZE)
    server = await serve(FilePlugin.from_params([("file", str(backing))]))
    await run(["nbdcopy", "--flush", str(image), server.uri()])
    assert sha256(backing) == sha256(image)
    out = tmp_path / "out.img"
    await run(["nbdcopy", "--request-size=4096", server.uri(), str(out)])
    assert sha256(out) == sha256(image)


async def test_nbdcopy_from_null_plugin_gives_zeros(serve: ServeFactory, tmp_path: Path) -> None:
    server = await serve(NullPlugin.from_params([("size", "8M")]))
    out = tmp_path / "out.img"
    await run(["nbdcopy", server.uri(), str(out)])
    assert out.stat().st_size == 8 * MiB
    assert sha256(out) == hashlib.sha256(bytes(8 * MiB)).hexdigest()
    await run(["nbdcopy", server.uri(), "null:"])


# -- qemu-img ----------------------------------------------------------------------------------


async def test_qemu_img_info_reports_raw_virtual_size(serve: ServeFactory) -> None:
    server = await serve(memory("64M"))
    info = json.loads(await run(["qemu-img", "info", "--output=json", "-f", "raw", server.uri()]))
    assert info["virtual-size"] == 64 * MiB
    assert info["format"] == "raw"

    options = f"driver=nbd,server.type=unix,server.path={unix_socket(server)}"
    out = await run(["qemu-img", "info", "--image-opts", options])
    assert "virtual size: 64 MiB (67108864 bytes)" in out


async def test_qemu_img_convert_and_compare_round_trip_over_tcp(
    serve: ServeFactory, image: Path, tmp_path: Path
) -> None:
    server = await serve(memory(), tcp=True)
    uri = server.uri()
    await run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(image), uri])
    compared = await run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(image), uri])
    assert "Images are identical." in compared

    out = tmp_path / "out.img"
    await run(["qemu-img", "convert", "-f", "raw", "-O", "raw", uri, str(out)])
    assert sha256(out) == sha256(image)


async def test_qemu_img_compare_detects_a_changed_byte(serve: ServeFactory, image: Path) -> None:
    server = await serve(memory())
    uri = server.uri()
    await run(["nbdcopy", str(image), uri])
    await run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 5M 512", uri])
    result = await trio.run_process(
        ["qemu-img", "compare", "-f", "raw", "-F", "raw", str(image), uri],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert b"Content mismatch at offset 5242880!" in result.stdout


async def test_qemu_img_map_reports_data_and_zero_ranges(serve: ServeFactory) -> None:
    server = await serve(memory())
    uri = server.uri()
    await run(["qemu-io", "-f", "raw", "-c", "write -P 0x11 1M 1M", uri])
    mapped = json.loads(await run(["qemu-img", "map", "--output=json", "-f", "raw", uri]))
    assert [(m["start"], m["length"], m["data"], m["zero"]) for m in mapped] == [
        (0, MiB, False, True),
        (MiB, MiB, True, False),
        (2 * MiB, IMAGE_SIZE - 2 * MiB, False, True),
    ]


# -- qemu-io -----------------------------------------------------------------------------------

QEMU_IO_SCRIPT = [
    ("write -P 0xab 0 256k", "wrote 262144/262144 bytes at offset 0"),
    ("read -P 0xab 0 256k", "read 262144/262144 bytes at offset 0"),
    ("write -z 64k 64k", "wrote 65536/65536 bytes at offset 65536"),  # WRITE_ZEROES
    ("read -P 0 64k 64k", "read 65536/65536 bytes at offset 65536"),
    ("discard 128k 64k", "discard 65536/65536 bytes at offset 131072"),  # TRIM
    ("read -P 0 128k 64k", "read 65536/65536 bytes at offset 131072"),
    ("write -z -u 192k 64k", "wrote 65536/65536 bytes at offset 196608"),  # may unmap
    ("read -P 0 192k 64k", "read 65536/65536 bytes at offset 196608"),
    ("write -f -P 0xcd 256k 4k", "wrote 4096/4096 bytes at offset 262144"),  # FUA
    ("read -P 0xcd 256k 4k", "read 4096/4096 bytes at offset 262144"),
    ("write -z -n 0 64k", "wrote 65536/65536 bytes at offset 0"),  # FAST_ZERO
    ("read -P 0 0 64k", "read 65536/65536 bytes at offset 0"),
    ("write -z -f 1M 8k", "wrote 8192/8192 bytes at offset 1048576"),  # zero with FUA
    ("flush", ""),
    ("read -P 0 1M 8k", "read 8192/8192 bytes at offset 1048576"),
    ("read -P 0xcd 256k 4k", "read 4096/4096 bytes at offset 262144"),
]


@pytest.mark.parametrize("tcp", [False, True], ids=["unix", "tcp"])
async def test_qemu_io_write_zero_discard_fua_flush_and_verify(
    serve: ServeFactory, tcp: bool
) -> None:
    server = await serve(memory(), tcp=tcp)
    args = ["qemu-io", "-f", "raw"]
    for command, _ in QEMU_IO_SCRIPT:
        args += ["-c", command]
    out = await run([*args, server.uri()])
    assert "failed" not in out
    for _, expected in QEMU_IO_SCRIPT:
        assert expected in out


async def test_qemu_io_read_pattern_mismatch_fails(serve: ServeFactory) -> None:
    # The verifying reads above mean something only if a wrong pattern is caught.
    server = await serve(memory())
    script = ["-c", "write -P 0x01 0 4k", "-c", "read -P 0x02 0 4k"]
    result = await trio.run_process(
        ["qemu-io", "-f", "raw", *script, server.uri()],
        capture_stdout=True,
        check=False,
    )
    assert result.returncode != 0
    assert b"Pattern verification failed at offset 0" in result.stdout


async def test_qemu_io_cannot_open_readonly_export_for_writing(serve: ServeFactory) -> None:
    server = await serve(memory(), readonly=True)
    out = await run(["qemu-io", "-r", "-f", "raw", "-c", "read -P 0 0 64k", server.uri()])
    assert "read 65536/65536 bytes at offset 0" in out
    result = await trio.run_process(
        ["qemu-io", "-f", "raw", "-c", "write -P 1 0 4k", server.uri()],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode != 0
    assert b"Permission denied" in result.stderr


async def test_qemu_io_file_plugin_writes_reach_the_file(
    serve: ServeFactory, tmp_path: Path
) -> None:
    backing = tmp_path / "backing.img"
    backing.write_bytes(bytes(MiB))
    server = await serve(FilePlugin.from_params([("file", str(backing))]))
    script = ["write -P 0x42 4k 8k", "write -z 8k 4k", "discard 64k 64k", "flush"]
    args = ["qemu-io", "-f", "raw"]
    for command in script:
        args += ["-c", command]
    out = await run([*args, server.uri()])
    assert "failed" not in out
    data = backing.read_bytes()
    assert data[4 * KiB : 8 * KiB] == b"\x42" * (4 * KiB)
    assert data[8 * KiB : 12 * KiB] == bytes(4 * KiB)
    assert data[: 4 * KiB] == bytes(4 * KiB)
    assert data[12 * KiB :] == bytes(MiB - 12 * KiB)


# -- qemu-nbd ----------------------------------------------------------------------------------


async def test_qemu_nbd_lists_export_flags_and_meta_contexts(serve: ServeFactory) -> None:
    server = await serve(memory("64M"))
    out = await run(["qemu-nbd", "-L", "-k", unix_socket(server)])
    assert "exports available: 1" in out
    assert "export: ''" in out
    assert "size:  67108864" in out
    # The same flags as nbdkit's memory plugin.
    assert "flags: 0xded ( flush fua trim zeroes df multi cache fast-zero )" in out
    assert "base:allocation" in out
