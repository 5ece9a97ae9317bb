"""Every inotify/fanotify/eventfd system call, given real bad arguments, raises the mapped error
and keeps its errno (the table in ``triofd._errors``)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from triofd import (
    FanEvent,
    FanInit,
    FanMark,
    InotifyMask,
    InvalidArgumentError,
    fanotify_init,
    fanotify_mark,
    inotify_add_watch,
    inotify_init1,
    inotify_rm_watch,
)


@pytest.fixture
def inotify_fd() -> object:
    fd = inotify_init1()
    yield fd
    os.close(fd)


@pytest.fixture
def pipe_fd() -> object:
    r, w = os.pipe()
    yield r
    os.close(r)
    os.close(w)


def expect(exc_type: type[BaseException], err: int, call: object, *args: object) -> OSError:
    assert callable(call)
    with pytest.raises(exc_type) as info:
        call(*args)
    assert isinstance(info.value, OSError)
    assert info.value.errno == err, os.strerror(info.value.errno or 0)
    assert info.value.strerror
    assert os.strerror(err) in info.value.strerror
    return info.value


def test_inotify_init1_unknown_flag_is_einval() -> None:
    error = expect(InvalidArgumentError, errno.EINVAL, inotify_init1, 0x1)
    assert isinstance(error, ValueError)


def test_inotify_add_watch_errors(inotify_fd: int, pipe_fd: int, tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    all_events = InotifyMask.ALL_EVENTS
    expect(InvalidArgumentError, errno.EBADF, inotify_add_watch, -1, tmp_path, all_events)
    expect(InvalidArgumentError, errno.EINVAL, inotify_add_watch, pipe_fd, tmp_path, all_events)
    expect(InvalidArgumentError, errno.EINVAL, inotify_add_watch, inotify_fd, tmp_path, 0)
    error = expect(
        FileNotFoundError, errno.ENOENT, inotify_add_watch, inotify_fd, tmp_path / "nope", 1
    )
    assert error.filename == str(tmp_path / "nope")
    expect(
        NotADirectoryError,
        errno.ENOTDIR,
        inotify_add_watch,
        inotify_fd,
        tmp_path / "file",
        InotifyMask.ONLYDIR | InotifyMask.ATTRIB,
    )
    expect(InvalidArgumentError, errno.ENAMETOOLONG, inotify_add_watch, inotify_fd, "x" * 5000, 1)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    expect(InvalidArgumentError, errno.ELOOP, inotify_add_watch, inotify_fd, loop, 1)
    inotify_add_watch(inotify_fd, tmp_path, InotifyMask.CREATE)
    mask = InotifyMask.CREATE | InotifyMask.MASK_CREATE
    expect(FileExistsError, errno.EEXIST, inotify_add_watch, inotify_fd, tmp_path, mask)
    # MASK_ADD and MASK_CREATE together are contradictory.
    both = InotifyMask.CREATE | InotifyMask.MASK_CREATE | InotifyMask.MASK_ADD
    expect(InvalidArgumentError, errno.EINVAL, inotify_add_watch, inotify_fd, tmp_path, both)


def test_inotify_add_watch_checks_python_types_before_the_call(inotify_fd: int) -> None:
    with pytest.raises(TypeError):
        inotify_add_watch(inotify_fd, 3.5, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        inotify_add_watch(inotify_fd, "/tmp", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="null byte"):
        inotify_add_watch(inotify_fd, "/tmp/a\0b", 1)
    with pytest.raises(ValueError, match="32 unsigned bits"):
        inotify_add_watch(inotify_fd, "/tmp", 1 << 32)


def test_inotify_rm_watch_errors(inotify_fd: int, pipe_fd: int) -> None:
    expect(InvalidArgumentError, errno.EINVAL, inotify_rm_watch, inotify_fd, 12345)
    expect(InvalidArgumentError, errno.EBADF, inotify_rm_watch, -1, 1)
    expect(InvalidArgumentError, errno.EINVAL, inotify_rm_watch, pipe_fd, 1)


def test_inotify_init1_out_of_fds_is_plain_oserror_emfile() -> None:
    script = (
        "import resource, errno, os, triofd\n"
        "n = len(os.listdir('/proc/self/fd'))\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (n - 1, n - 1))  # listdir's fd was counted\n"
        "try:\n"
        "    triofd.inotify_init1()\n"
        "except OSError as e:\n"
        "    print(type(e).__name__, errno.errorcode[e.errno])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["OSError", "EMFILE"]


def test_fanotify_init_errors() -> None:
    expect(InvalidArgumentError, errno.EINVAL, fanotify_init, 0x80000000)
    # Two notification classes at once.
    both = FanInit.CLASS_CONTENT | FanInit.CLASS_PRE_CONTENT
    expect(InvalidArgumentError, errno.EINVAL, fanotify_init, both)


def test_fanotify_init_unprivileged_fd_mode_is_permission_error() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to nobody")
    # A forked child drops to nobody (losing CAP_SYS_ADMIN) and reports what it got.
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            try:
                fanotify_init(0)
                report = "allowed"
            except PermissionError as exc:
                report = errno.errorcode[exc.errno or 0]
            os.close(fanotify_init(FanInit.REPORT_FID))
            report += " fid-ok"
        except BaseException as exc:
            report = repr(exc)
        os.write(write_end, report.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        report = reader.read().decode()
    os.waitpid(pid, 0)
    assert report == "EPERM fid-ok"


def test_fanotify_mark_errors(tmp_path: Path, pipe_fd: int) -> None:
    fd = fanotify_init(FanInit.CLOEXEC)
    try:
        add = FanMark.ADD
        expect(
            InvalidArgumentError, errno.EBADF, fanotify_mark, -1, add, FanEvent.OPEN, -100, tmp_path
        )
        expect(
            InvalidArgumentError,
            errno.EINVAL,
            fanotify_mark,
            pipe_fd,
            add,
            FanEvent.OPEN,
            -100,
            tmp_path,
        )
        error = expect(
            FileNotFoundError,
            errno.ENOENT,
            fanotify_mark,
            fd,
            add,
            FanEvent.OPEN,
            -100,
            tmp_path / "x",
        )
        assert error.filename == str(tmp_path / "x")
        # ADD and REMOVE together.
        expect(
            InvalidArgumentError,
            errno.EINVAL,
            fanotify_mark,
            fd,
            add | FanMark.REMOVE,
            FanEvent.OPEN,
            -100,
            tmp_path,
        )
        # Directory-entry events need FAN_REPORT_FID on the group.
        expect(
            InvalidArgumentError,
            errno.EINVAL,
            fanotify_mark,
            fd,
            add,
            FanEvent.CREATE,
            -100,
            tmp_path,
        )
        # Removing a mark that does not exist.
        expect(
            FileNotFoundError,
            errno.ENOENT,
            fanotify_mark,
            fd,
            FanMark.REMOVE,
            FanEvent.OPEN,
            -100,
            tmp_path,
        )
        expect(
            NotADirectoryError,
            errno.ENOTDIR,
            fanotify_mark,
            fd,
            add | FanMark.ONLYDIR,
            FanEvent.OPEN,
            -100,
            "/etc/hostname",
        )
        with pytest.raises(ValueError, match="64 unsigned bits"):
            fanotify_mark(fd, add, 1 << 64, -100, tmp_path)
    finally:
        os.close(fd)
