"""The example scripts, run as their users would (a subprocess) against nfs-ganesha."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trionfs import parse_url

pytestmark = pytest.mark.interop

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, *args: str) -> str:
    proc = subprocess.run(  # the child inherits the test thread's network namespace
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def test_copy_tree_example_copies_every_file(nfs_url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "top.txt").write_text("top")
    (src / "a" / "mid.bin").write_bytes(bytes(range(256)) * 40)
    (src / "a" / "b" / "deep.txt").write_text("deep")
    out = run_example("nfs_copy_tree.py", str(src), nfs_url)
    assert out == f"copied 3 files, {3 + 10240 + 4} bytes\n"
    disk = Path(parse_url(nfs_url).path)
    assert (disk / "top.txt").read_text() == "top"
    assert (disk / "a" / "mid.bin").read_bytes() == bytes(range(256)) * 40
    assert (disk / "a" / "b" / "deep.txt").read_text() == "deep"


def test_sync_face_example(nfs_url: str) -> None:
    out = run_example("nfs_sync_face.py", nfs_url)
    assert out.splitlines() == [
        "read: hello from trionfs",
        "read: second line",
        "bytes ok: True",
        "entry: bytes.bin 256",
        "entry: hello.txt 31",
    ]


def test_listing_example(nfs_url: str) -> None:
    disk = Path(parse_url(nfs_url).path)
    run_example("nfs_sync_face.py", nfs_url)  # something to list
    out = run_example("nfs_listing.py", nfs_url).splitlines()
    assert out[0].startswith("-rw")
    assert out[0].endswith(" bytes.bin")
    assert f" {os.stat(disk / 'hello.txt').st_size:>10} " in out[1]
    assert out[1].endswith(" hello.txt")
    assert out[2].startswith("2 entries, ")
