"""Running the real NBD clients (libnbd tools, qemu, fio) from tests."""

from __future__ import annotations

import shutil
from collections.abc import Sequence

import pytest
import trio


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:  # the test command installs every peer; a missing one is a set-up bug
        pytest.fail(f"{tool} is not installed: run the README's test command")
    return path


async def run(args: Sequence[str], *, check: bool = True, limit: float = 120) -> str:
    """Run a real client to completion; return its stdout (stderr shown on failure)."""
    need(args[0])
    with trio.fail_after(limit):
        result = await trio.run_process(
            list(args), capture_stdout=True, capture_stderr=True, check=False
        )
    if check and result.returncode != 0:
        stderr = result.stderr.decode(errors="replace")
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{stderr}")
    return result.stdout.decode()
