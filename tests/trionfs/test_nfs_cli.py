"""The ``trionfs`` command line, run in-process with ``main([...])`` against nfs-ganesha."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from trionfs import parse_url
from trionfs.__main__ import main
from trionfs.testing import libnfs_cat, libnfs_ls

pytestmark = pytest.mark.interop


def on_disk(nfs_url: str) -> Path:
    return Path(parse_url(nfs_url).path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_cp_local_to_nfs_and_back_is_exact(
    nfs_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(bytes(range(256)) * 5000)
    assert run(capsys, "cp", str(src), nfs_url + "/data.bin") == (0, "", "")
    assert (on_disk(nfs_url) / "data.bin").read_bytes() == src.read_bytes()
    assert libnfs_cat(nfs_url + "/data.bin") == src.read_bytes()
    back = tmp_path / "back.bin"
    assert run(capsys, "cp", nfs_url + "/data.bin", str(back))[0] == 0
    assert back.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(back.stat().st_mode) == stat.S_IMODE(src.stat().st_mode)


def test_cp_sparse_file_reads_back_zeros_and_stays_sparse(
    nfs_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "sparse"
    with src.open("wb") as f:
        f.write(b"head")
        f.seek(5 << 20)
        f.write(b"tail")
    assert run(capsys, "cp", str(src), nfs_url + "/sparse")[0] == 0
    remote = on_disk(nfs_url) / "sparse"
    assert remote.read_bytes() == src.read_bytes()
    assert remote.stat().st_blocks * 512 < 1 << 20  # the hole was not written


def test_cp_of_several_big_pieces_with_holes_is_exact_both_ways(
    nfs_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 4 MiB pieces (mmap slices one way, READ replies the other), an odd tail, a zero block
    # inside data and one starting a piece: every path of the big-file copy.
    data = bytearray(os.urandom(9 * (1 << 20) + 12345))
    data[100_000 : 100_000 + (64 << 10)] = bytes(64 << 10)
    data[4 << 20 : (4 << 20) + (128 << 10)] = bytes(128 << 10)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    assert run(capsys, "cp", str(src), nfs_url + "/big.bin") == (0, "", "")
    assert (on_disk(nfs_url) / "big.bin").read_bytes() == data
    back = tmp_path / "back.bin"
    assert run(capsys, "cp", nfs_url + "/big.bin", str(back))[0] == 0
    assert back.read_bytes() == data


def test_cp_of_an_empty_file_creates_an_empty_file_both_ways(
    nfs_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "empty"
    src.write_bytes(b"")  # mmap refuses empty files: the read fallback
    assert run(capsys, "cp", str(src), nfs_url + "/empty") == (0, "", "")
    assert (on_disk(nfs_url) / "empty").read_bytes() == b""
    back = tmp_path / "back"
    assert run(capsys, "cp", nfs_url + "/empty", str(back))[0] == 0
    assert back.read_bytes() == b""


def test_cp_recursive_onto_new_and_into_existing_destination(
    nfs_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f.txt").write_text("hello")
    (tree / "top.bin").write_bytes(b"\0\1\2")
    os.symlink("sub/f.txt", tree / "link")
    assert run(capsys, "cp", "-r", str(tree), nfs_url + "/new")[0] == 0  # new: becomes the copy
    disk = on_disk(nfs_url)
    assert (disk / "new" / "sub" / "f.txt").read_text() == "hello"
    assert os.readlink(disk / "new" / "link") == "sub/f.txt"  # copied as a symlink
    assert run(capsys, "cp", "-r", str(tree), nfs_url + "/new")[0] == 0  # existing: goes inside
    assert (disk / "new" / "tree" / "top.bin").read_bytes() == b"\0\1\2"
    # NFS -> NFS and NFS -> local, recursively
    assert run(capsys, "cp", "-r", nfs_url + "/new", nfs_url + "/copy")[0] == 0
    assert (disk / "copy" / "tree" / "sub" / "f.txt").read_text() == "hello"
    local = tmp_path / "local"
    assert run(capsys, "cp", "-R", nfs_url + "/copy", str(local))[0] == 0
    assert os.readlink(local / "link") == "sub/f.txt"
    assert (local / "tree" / "top.bin").read_bytes() == b"\0\1\2"


def test_cp_directory_without_r_is_skipped_with_an_error(
    nfs_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "d").mkdir()
    status, _, err = run(capsys, "cp", str(tmp_path / "d"), nfs_url + "/d")
    assert status == 1
    assert err == f"trionfs: cp: {tmp_path / 'd'}: -r not specified; omitting directory\n"


def test_ls_long_recursive_and_cat(nfs_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "mkdir", "-p", nfs_url + "/x/y") == (0, "", "")
    assert run(capsys, "mkdir", nfs_url + "/x/z")[0] == 0
    assert run(capsys, "ln", "-s", "y", nfs_url + "/x/ly")[0] == 0
    disk = on_disk(nfs_url)
    status, out, _ = run(capsys, "ls", nfs_url + "/x")
    assert (status, out) == (0, "ly\ny\nz\n")
    status, out, _ = run(capsys, "ls", "-l", nfs_url + "/x")
    lines = out.splitlines()
    assert lines[0].startswith("lrwxrwxrwx")
    assert lines[0].endswith("ly -> y")
    assert lines[1].startswith("d")
    assert lines[1].endswith(" y")
    status, out, _ = run(capsys, "ls", "-R", nfs_url + "/x")
    assert out == f"{nfs_url}/x:\nly\ny\nz\n\n{nfs_url}/x/y:\n\n{nfs_url}/x/z:\n"
    assert sorted(os.listdir(disk / "x")) == ["ly", "y", "z"]
    names = {e.name for e in libnfs_ls(nfs_url + "/x")}
    assert {"ly", "y", "z"} <= names


def test_cat_writes_bytes_to_stdout(nfs_url: str, tmp_path: Path) -> None:
    src = tmp_path / "bin"
    src.write_bytes(bytes(range(256)))
    assert main(["cp", str(src), nfs_url + "/bin"]) == 0
    proc = subprocess.run(  # a subprocess: stdout must be the real binary stream
        [sys.executable, "-m", "trionfs", "cat", nfs_url + "/bin", nfs_url + "/bin"],
        capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == bytes(range(256)) * 2


def test_rm_mv_ln_stat_df_exports(nfs_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    disk = on_disk(nfs_url)
    assert main(["mkdir", "-p", nfs_url + "/d/e/f"]) == 0
    capsys.readouterr()
    status, _, err = run(capsys, "rm", nfs_url + "/d")
    assert status == 1
    assert err == f"trionfs: rm: {nfs_url}/d: Is a directory\n"
    assert run(capsys, "mv", nfs_url + "/d", nfs_url + "/moved")[0] == 0
    assert run(capsys, "ln", nfs_url + "/moved", nfs_url + "/hl")[0] == 1  # dirs: no hard link
    status, out, _ = run(capsys, "stat", nfs_url + "/moved")
    assert status == 0
    assert "directory" in out
    assert f"Inode: {os.stat(disk / 'moved').st_ino}" in out
    assert run(capsys, "rm", "-r", nfs_url + "/moved")[0] == 0
    assert not (disk / "moved").exists()
    assert run(capsys, "rm", "-f", nfs_url + "/never") == (0, "", "")
    status, out, _ = run(capsys, "df", nfs_url)
    assert status == 0
    assert out.splitlines()[0].split()[:2] == ["Filesystem", "1K-blocks"]
    status, out, _ = run(capsys, "exports", nfs_url)
    assert status == 0
    assert out.startswith("Export list for 127.0.0.1:")


def test_errors_are_one_line_and_never_a_traceback(
    nfs_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "cat", nfs_url + "/missing")
    assert (status, out) == (1, "")
    assert err == f"trionfs: cat: {nfs_url}/missing: No such file or directory\n"
    status, _, err = run(capsys, "ls", nfs_url + "?wsise=1")
    assert status == 1
    assert err.startswith(f"trionfs: ls: {nfs_url}?wsise=1: nfs URL: unknown")
    status, _, err = run(capsys, "ls", "nfs://127.0.0.1:1/x?timeo=5&retrans=0")
    assert status == 1
    assert err.startswith("trionfs: ls: nfs://127.0.0.1:1/x")
    assert err[-1] == "\n"
    assert err.count("\n") == 1
    status, _, err = run(capsys, "frobnicate")
    assert status == 2
    assert "invalid choice" in err
    status, _, err = run(capsys, "mkdir", nfs_url + "/a", nfs_url + "/a")  # second one fails
    assert status == 1
    assert err == f"trionfs: mkdir: {nfs_url}/a: File exists\n"


def test_progress_only_when_asked_or_on_a_terminal(
    nfs_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "p.bin"
    src.write_bytes(b"p" * 3_000_000)
    assert run(capsys, "cp", str(src), nfs_url + "/quiet.bin") == (0, "", "")  # not a tty
    status, out, err = run(capsys, "cp", "--progress=always", str(src), nfs_url + "/loud.bin")
    assert (status, out) == (0, "")
    assert "MB/s" in err
    assert "100%" in err
    assert (on_disk(nfs_url) / "loud.bin").read_bytes() == src.read_bytes()


def test_help_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--help")
    assert status == 0
    assert "cp" in out
    assert "exports" in out
    status, _, err = run(capsys, "cp", "nfs://h/only-one")
    assert status == 2
    assert err.startswith("trionfs cp: ")


def test_cp_sparse_always_and_never_decide_the_holes_both_ways(
    nfs_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dense = tmp_path / "dense.bin"  # written zeros: not sparse, so "auto" would copy it dense
    dense.write_bytes(b"x" + bytes(2 << 20) + b"y")
    assert run(capsys, "cp", "--sparse=always", str(dense), nfs_url + "/a.bin")[0] == 0
    remote = on_disk(nfs_url) / "a.bin"
    assert remote.read_bytes() == dense.read_bytes()
    assert remote.stat().st_blocks * 512 < 1 << 20  # the zero blocks became a hole
    back = tmp_path / "back.bin"
    assert run(capsys, "cp", "--sparse=never", nfs_url + "/a.bin", str(back))[0] == 0
    assert back.read_bytes() == dense.read_bytes()
    assert back.stat().st_blocks * 512 >= 2 << 20  # every byte written, though the source is sparse
