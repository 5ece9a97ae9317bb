"""The timerfd, signalfd and pidfd examples, each run as a real script in a fresh interpreter."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(name: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def test_timer_loop_counts_every_tick() -> None:
    out = _run("fd_timer_loop.py", "--interval", "0.01", "--ticks", "5")
    ticks = [int(n) for n in re.findall(r"^tick\s+(\d+)", out, re.MULTILINE)]
    # Coalesced expirations skip numbers, but the count never goes backwards and reaches 5.
    assert ticks == sorted(ticks)
    assert ticks[-1] >= 5
    assert out.rstrip().endswith("ticks")


def test_signal_handler_decodes_the_sender_and_stops_on_sigterm() -> None:
    out = _run("fd_signal_handler.py", "--demo")
    pid = int(re.search(r"^pid (\d+):", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert f"SIGUSR1 from pid {pid} uid " in out
    assert f"SIGTERM from pid {pid} uid " in out
    assert out.rstrip().endswith("stopped cleanly")


def test_pidfd_reaper_reports_exit_codes_and_kills_the_straggler() -> None:
    out = _run("fd_pidfd_reaper.py")
    assert re.search(r"^quick .*exited, returncode 0$", out, re.MULTILINE)
    assert re.search(r"^fails .*exited, returncode 3$", out, re.MULTILINE)
    assert re.search(r"^hangs .*killed after .* by SIGKILL$", out, re.MULTILINE)
    assert out.rstrip().endswith("all children reaped")
