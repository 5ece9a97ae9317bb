"""examples/fd_recursive_watch.py run as a user would, against a tree changing under it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fd_recursive_watch.py"


def test_recursive_watch_example_reports_nested_creates_and_renames(tmp_watch_dir: Path) -> None:
    (tmp_watch_dir / "existing").mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), str(tmp_watch_dir), "1.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == f"watching 2 directories under {tmp_watch_dir}\n"
    (tmp_watch_dir / "new" / "deep").mkdir(parents=True)
    (tmp_watch_dir / "new" / "deep" / "file").write_bytes(b"")
    # Whether the file was seen by the kernel or by the watcher's listing, it is reported.
    created = [proc.stdout.readline() for _ in range(3)]
    os.rename(tmp_watch_dir / "new" / "deep" / "file", tmp_watch_dir / "existing" / "moved")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert created == [
        f"create,isdir {tmp_watch_dir}/new\n",
        f"create,isdir {tmp_watch_dir}/new/deep\n",
        f"create {tmp_watch_dir}/new/deep/file\n",
    ]
    assert out.splitlines() == [
        f"renamed {tmp_watch_dir}/new/deep/file -> {tmp_watch_dir}/existing/moved",
    ]


def test_recursive_watch_example_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "fd_recursive_watch.py DIR" in result.stderr
