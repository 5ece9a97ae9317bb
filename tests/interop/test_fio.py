"""fio's nbd engine (libnbd inside fio) with data verification against the memory plugin."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from conftest import ServeFactory
from realpeers import need, run
from trioblock._plugins._memory import MemoryPlugin

pytestmark = pytest.mark.interop

MiB = 1024 * 1024


def memory() -> MemoryPlugin:
    return MemoryPlugin.from_params([("size", "64M")])


async def fio(uri: str, *options: str) -> dict[str, Any]:
    """Run one fio job against ``uri``; return its JSON report's job (after checking it)."""
    out = await run(
        [
            "fio",
            "--name=t",
            "--ioengine=nbd",
            f"--uri={uri}",
            "--output-format=json",
            "--verify_state_save=0",  # no state file left in the working directory
            *options,
        ]
    )
    report: dict[str, Any] = json.loads(out[out.index("{") :])  # fio may print notes first
    (job,) = report["jobs"]
    assert job["error"] == 0, job
    result: dict[str, Any] = job
    return result


@pytest.mark.parametrize("tcp", [False, True], ids=["unix", "tcp"])
async def test_fio_random_read_write_with_crc32c_verify_passes(
    serve: ServeFactory, tcp: bool
) -> None:
    server = await serve(memory(), tcp=tcp)
    job = await fio(
        server.uri(),
        "--rw=randrw",
        "--bs=4k",
        "--size=16M",
        "--iodepth=8",
        "--runtime=2",
        "--time_based",
        "--verify=crc32c",
    )
    assert job["write"]["io_bytes"] > 0
    assert job["read"]["io_bytes"] > 0


@pytest.mark.parametrize(
    ("rw", "bs"), [("write", "64k"), ("randwrite", "4k")], ids=["sequential", "random"]
)
async def test_fio_write_then_verify_reads_everything_back(
    serve: ServeFactory, rw: str, bs: str
) -> None:
    server = await serve(memory())
    job = await fio(
        server.uri(),
        f"--rw={rw}",
        f"--bs={bs}",
        "--size=8M",
        "--iodepth=16",
        "--verify=crc32c",
        "--do_verify=1",
        "--verify_fatal=1",
    )
    assert job["write"]["io_bytes"] == 8 * MiB
    # The verify phase reads every block written.
    assert job["read"]["io_bytes"] == 8 * MiB


async def test_fio_verify_catches_data_that_does_not_match(serve: ServeFactory) -> None:
    # Guards the tests above: verifying a disk that nothing wrote must fail.
    server = await serve(memory())
    result = await trio.run_process(
        [
            need("fio"),
            "--name=t",
            "--ioengine=nbd",
            f"--uri={server.uri()}",
            "--rw=write",
            "--bs=64k",
            "--size=1M",
            "--verify=crc32c",
            "--verify_only",
            "--verify_state_save=0",
            "--verify_fatal=1",
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode != 0
    assert b"verify: bad magic header" in result.stderr
