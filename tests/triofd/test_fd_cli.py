"""``triofd watch`` as a user runs it: a real process, real events, loud overflow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from triofd.__main__ import main


@contextmanager
def watcher(*args: str) -> Iterator[subprocess.Popen[str]]:
    """Start ``triofd watch ARGS`` and return once its watches are established."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "triofd", "watch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline() == "triofd: watches established\n"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_prints_one_line_per_event(tmp_watch_dir: Path) -> None:
    with watcher("-e", "create,delete", "-c", "3", str(tmp_watch_dir)) as proc:
        (tmp_watch_dir / "a").write_bytes(b"")
        os.unlink(tmp_watch_dir / "a")
        (tmp_watch_dir / "dir").mkdir()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.splitlines() == [
        f"CREATE {tmp_watch_dir}/a",
        f"DELETE {tmp_watch_dir}/a",
        f"CREATE,ISDIR {tmp_watch_dir}/dir",
    ]


def test_json_lines_and_move_cookies(tmp_watch_dir: Path) -> None:
    (tmp_watch_dir / "old").write_bytes(b"")
    with watcher("--json", "-e", "move", "-c", "2", str(tmp_watch_dir)) as proc:
        os.rename(tmp_watch_dir / "old", tmp_watch_dir / "new")
        out, _ = proc.communicate(timeout=30)
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["mask"] == ["MOVED_FROM"]
    assert first["name"] == "old"
    assert second["mask"] == ["MOVED_TO"]
    assert second["path"] == str(tmp_watch_dir / "new")
    assert first["cookie"] == second["cookie"] != 0


def test_recursive_watch_sees_files_in_new_subdirectories(tmp_watch_dir: Path) -> None:
    with watcher("-r", "-e", "create", "-c", "4", str(tmp_watch_dir)) as proc:
        (tmp_watch_dir / "a" / "b").mkdir(parents=True)
        (tmp_watch_dir / "a" / "b" / "f").write_bytes(b"")
        (tmp_watch_dir / "g").write_bytes(b"")
        out, _ = proc.communicate(timeout=30)
    assert sorted(out.splitlines()) == sorted(
        [
            f"CREATE,ISDIR {tmp_watch_dir}/a",
            f"CREATE,ISDIR {tmp_watch_dir}/a/b",
            f"CREATE {tmp_watch_dir}/a/b/f",
            f"CREATE {tmp_watch_dir}/g",
        ]
    )


def test_queue_overflow_is_reported_loudly_with_status_3(tmp_watch_dir: Path) -> None:
    target = tmp_watch_dir / "f"
    target.write_bytes(b"")
    with watcher("-e", "open,close_nowrite", str(tmp_watch_dir)) as proc:
        os.kill(proc.pid, signal.SIGSTOP)  # a consumer that stops reading
        try:
            for _ in range(10_000):  # 20 000 events
                os.close(os.open(target, os.O_RDONLY))
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert len(out.splitlines()) == int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    assert err.startswith("triofd: error: inotify queue overflowed")
    assert "Traceback" not in err


def test_sigint_exits_130_without_a_traceback(tmp_watch_dir: Path) -> None:
    with watcher(str(tmp_watch_dir)) as proc:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err == ""


def test_reader_going_away_ends_quietly(tmp_watch_dir: Path) -> None:
    with watcher("-e", "create", str(tmp_watch_dir)) as proc:
        assert proc.stdout is not None
        (tmp_watch_dir / "first").write_bytes(b"")
        assert proc.stdout.readline() == f"CREATE {tmp_watch_dir}/first\n"
        proc.stdout.close()  # like `| head -1`
        for i in range(50):  # the next write fails with EPIPE
            (tmp_watch_dir / f"more{i}").write_bytes(b"")
        assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None
        assert proc.stderr.read() == ""


def test_timeout_exits_zero_without_events(tmp_watch_dir: Path) -> None:
    with watcher("-t", "0.2", str(tmp_watch_dir)) as proc:
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert out == ""


def test_missing_path_is_one_error_line_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["watch", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert (
        err == f"triofd: error: {tmp_path}/missing: inotify_add_watch: No such file or directory\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["watch", "-e", "bogus", "/tmp"], "unknown inotify event 'bogus'"),
        (["watch"], "the following arguments are required: PATH"),
        (["watch", "-c", "0", "/tmp"], "--count must be at least 1"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_command_lines_exit_2_with_one_error_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("triofd: error:")


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: triofd watch")
    assert "--recursive" in out
