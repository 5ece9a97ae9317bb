"""The blocking face (:mod:`trionfs.sync`) against a real nfs-ganesha."""

from __future__ import annotations

import csv
import io
import os
import shutil
import threading
from pathlib import Path

import pytest

from trionfs import parse_url, sync
from trionfs.testing import libnfs_cat

pytestmark = pytest.mark.interop

ALL_BYTES = bytes(range(256))


def on_disk(nfs_url: str) -> Path:
    return Path(parse_url(nfs_url).path)


def test_binary_files_are_buffered_io(nfs_url: str) -> None:
    with sync.NFS(nfs_url + "?rsize=4096&wsize=4096") as nfs:
        with nfs.open("/b.bin", "wb") as f:
            assert isinstance(f, io.BufferedIOBase)
            assert f.write(ALL_BYTES * 100) == 25600
            assert f.tell() == 25600
        with nfs.open("/b.bin", "rb") as f:
            assert f.read(10) == ALL_BYTES[:10]
            f.seek(-6, os.SEEK_END)
            assert f.read() == ALL_BYTES[-6:]
            buf = bytearray(4)
            f.seek(256)
            assert f.readinto(buf) == 4
            assert bytes(buf) == ALL_BYTES[:4]
            assert f.pread(3, 1) == ALL_BYTES[1:4]
        with nfs.open("/b.bin", "r+b") as f:
            f.truncate(300)
        assert nfs.stat("/b.bin").st_size == 300
    assert (on_disk(nfs_url) / "b.bin").read_bytes() == (ALL_BYTES * 2)[:300]


def test_text_mode_works_with_the_stdlib(nfs_url: str) -> None:
    with sync.NFS(nfs_url) as nfs:
        with nfs.open("/t.csv", "w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows([["name", "value"], ["é", "1"], ["b", "2"]])
        with nfs.open("/t.csv", encoding="utf-8", newline="") as f:
            assert list(csv.reader(f)) == [["name", "value"], ["é", "1"], ["b", "2"]]
        with nfs.open("/t.csv") as f:
            assert f.readline() == "name,value\n"  # universal newlines
            assert [line for line in f] == ["é,1\n", "b,2\n"]
    assert libnfs_cat(nfs_url + "/t.csv") == "name,value\r\né,1\r\nb,2\r\n".encode()


def test_path_operations(nfs_url: str) -> None:
    disk = on_disk(nfs_url)
    with sync.NFS(nfs_url) as nfs:
        nfs.makedirs("/a/b")
        nfs.mkdir("/a/c")
        with nfs.open("/a/b/f", "wb") as f:
            f.write(b"data")
        nfs.symlink("b/f", "/a/l")
        nfs.link("/a/b/f", "/a/h")
        assert nfs.readlink("/a/l") == "b/f"
        assert sorted(nfs.listdir("/a")) == ["b", "c", "h", "l"]
        assert {e.name for e in nfs.scandir("/a") if e.is_dir()} == {"b", "c"}
        assert [top for top, _, _ in nfs.walk("/a")] == ["/a", "/a/b", "/a/c"]
        nfs.rename("/a/c", "/a/d")
        nfs.chmod("/a/b/f", 0o600)
        nfs.chown("/a/b/f", 42, 43)
        nfs.truncate("/a/b/f", 2)
        nfs.utime("/a/b/f", (1000.0, 2000.0))
        assert nfs.access("/a/b/f", os.R_OK)
        assert nfs.statvfs().f_blocks > 0
        assert nfs.exists("/a/l")
        assert nfs.isfile("/a/l")
        assert nfs.islink("/a/l")
        assert nfs.isdir("/a/d")
        assert not nfs.exists("/a/c")
        st = nfs.lstat("/a/l")
        assert st.st_size == len("b/f")
        nfs.unlink("/a/h")
        nfs.rmdir("/a/d")
        with pytest.raises(FileNotFoundError):
            nfs.stat("/missing")
    st = os.stat(disk / "a" / "b" / "f")
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid, st.st_mtime, st.st_size) == (
        0o600,
        42,
        43,
        2000.0,
        2,
    )
    assert sorted(os.listdir(disk / "a")) == ["b", "l"]


def test_context_free_open_and_copyfileobj(nfs_url: str, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_000))
    with sync.open(nfs_url + "/copy.bin", "wb") as out, src.open("rb") as inp:
        shutil.copyfileobj(inp, out)
    with sync.open(nfs_url + "/copy.bin", "rb") as f:
        assert f.read() == src.read_bytes()
    with sync.open(nfs_url + "/hello.txt", "w", encoding="utf-16") as t:
        t.write("hi ✓")
    with sync.open(nfs_url + "/hello.txt", encoding="utf-16") as t:
        assert t.read() == "hi ✓"
    with pytest.raises(FileNotFoundError):
        sync.open(nfs_url + "/nope/x.bin", "rb")
    assert (on_disk(nfs_url) / "copy.bin").read_bytes() == src.read_bytes()


def test_many_threads_share_one_mount(nfs_url: str) -> None:
    errors: list[BaseException] = []
    with sync.NFS(nfs_url + "?wsize=4096") as nfs:

        def worker(i: int) -> None:
            try:
                data = bytes([i]) * (10_000 + i)
                with nfs.open(f"/t{i}", "wb") as f:
                    f.write(data)
                with nfs.open(f"/t{i}", "rb") as f:
                    assert f.read() == data
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert sorted(os.listdir(on_disk(nfs_url))) == sorted(f"t{i}" for i in range(8))


def test_close_flushes_open_files_and_a_closed_mount_refuses_calls(nfs_url: str) -> None:
    nfs = sync.NFS(nfs_url)
    f = nfs.open("/left-open.bin", "wb")
    f.write(b"flushed by the mount's close")
    nfs.close()
    assert nfs.closed
    assert (on_disk(nfs_url) / "left-open.bin").read_bytes() == b"flushed by the mount's close"
    with pytest.raises(ValueError, match="closed"):
        nfs.listdir("/")
    f.close()  # harmless after the mount is gone


def test_mount_errors_surface_in_the_calling_thread(nfs_url: str) -> None:
    with pytest.raises(FileNotFoundError):
        sync.NFS(nfs_url + "/does/not/exist")
    with pytest.raises(ValueError, match="unknown argument"):
        sync.NFS(nfs_url + "?bogus=1")
