"""pidfd with real processes: exit status, signals, pidfd_getfd, and trio.Process coexistence."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from pathlib import Path

import pytest
import trio
import trio.testing

from triofd._errors import InvalidArgumentError
from triofd._pidfd import (
    Pidfd,
    ProcessExit,
    pidfd_getfd,
    pidfd_open,
    pidfd_send_signal,
    waitid_pidfd,
)


def _spawn(script: str) -> int:
    """A raw child (no Popen object that would try to reap it too)."""
    return os.posix_spawnp("sh", ["sh", "-c", script], dict(os.environ))


async def test_wait_returns_exit_code_and_reaps_the_child() -> None:
    pid = _spawn("exit 3")
    async with Pidfd(pid) as pidfd:
        with trio.fail_after(10):
            result = await pidfd.wait()
        assert result == ProcessExit(pid, os.CLD_EXITED, 3)
        assert result.returncode == 3
        assert result.signal is None
        with pytest.raises(trio.EndOfChannel):
            await pidfd.receive()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG never blocks


async def test_async_for_yields_exactly_one_exit() -> None:
    pid = _spawn("exit 0")
    async with Pidfd(pid) as pidfd:
        with trio.fail_after(10):
            exits = [e async for e in pidfd]
    assert [e.returncode for e in exits] == [0]


async def test_reap_false_leaves_the_zombie_for_waitpid() -> None:
    pid = _spawn("exit 4")
    async with Pidfd(pid, reap=False) as pidfd:
        with trio.fail_after(10):
            assert (await pidfd.wait()).returncode == 4
    assert os.waitpid(pid, os.WNOHANG) == (pid, 4 << 8)  # noqa: ASYNC222 - already exited


async def test_send_signal_kills_and_status_reports_the_signal() -> None:
    pid = _spawn("exec sleep 30")
    async with Pidfd(pid) as pidfd:
        with pytest.raises(trio.WouldBlock):
            pidfd.receive_nowait()
        pidfd.terminate()
        with trio.fail_after(10):
            result = await pidfd.wait()
        assert result.code == os.CLD_KILLED
        assert result.returncode == -signal.SIGTERM
        assert result.signal is signal.SIGTERM
        # Reaped: the pidfd now refuses signals instead of hitting a recycled pid.
        with pytest.raises(InvalidArgumentError) as info:
            pidfd.kill()
        assert info.value.errno == errno.ESRCH


async def test_trio_process_and_pidfd_agree_without_fighting_over_the_reap() -> None:
    proc = await trio.lowlevel.open_process(["sh", "-c", "sleep 0.05; exit 5"])
    results: dict[str, int | None] = {}
    async with Pidfd(proc) as pidfd:

        async def via_trio() -> None:
            results["trio"] = await proc.wait()

        async def via_pidfd() -> None:
            results["pidfd"] = (await pidfd.wait()).returncode

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(via_trio)
                nursery.start_soon(via_pidfd)
    assert results == {"trio": 5, "pidfd": 5}
    assert proc.returncode == 5


async def test_trio_process_killed_by_signal_reports_negative_returncode() -> None:
    proc = await trio.lowlevel.open_process(["sleep", "30"])
    async with Pidfd(proc) as pidfd:
        pidfd.kill()
        with trio.fail_after(10):
            result = await pidfd.wait()
    assert result.returncode == -signal.SIGKILL
    assert await proc.wait() == -signal.SIGKILL


async def test_getfd_duplicates_an_fd_of_another_process(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"only the child opened this")
    proc = await trio.lowlevel.open_process(
        ["sh", "-c", f"exec 7<'{secret}'; echo ready; exec sleep 30"],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        with trio.fail_after(10):
            assert (await proc.stdout.receive_some(100)).startswith(b"ready")
        async with Pidfd(proc) as pidfd:
            dup = pidfd.getfd(7)
            try:
                assert not os.get_inheritable(dup)
                assert os.pread(dup, 100, 0) == b"only the child opened this"
            finally:
                os.close(dup)
            with pytest.raises(InvalidArgumentError) as info:
                pidfd.getfd(99)
            assert info.value.errno == errno.EBADF
    finally:
        proc.kill()
        await proc.wait()
        if proc.stdout is not None:
            await proc.stdout.aclose()


async def test_exit_of_a_process_that_is_not_our_child_has_no_status() -> None:
    out = await trio.run_process(
        ["sh", "-c", "sleep 0.2 >/dev/null 2>&1 & echo $!"], capture_stdout=True
    )
    grandchild = int(out.stdout)
    try:
        pidfd = Pidfd(grandchild)
    except InvalidArgumentError:
        pytest.skip("the grandchild exited before we could open it")
    async with pidfd:
        with trio.fail_after(10):
            result = await pidfd.wait()
    assert result == ProcessExit(grandchild, None, None)
    assert result.returncode is None
    assert result.signal is None


async def test_close_wakes_a_waiting_task() -> None:
    pid = _spawn("exec sleep 30")
    pidfd = Pidfd(pid)
    try:
        async with trio.open_nursery() as nursery:

            async def wait() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await pidfd.wait()

            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            await pidfd.aclose()
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)  # noqa: ASYNC222 - SIGKILLed: reaped at once


def test_low_level_layer_open_signal_waitid() -> None:
    pid = _spawn("exec sleep 30")
    fd = pidfd_open(pid)
    try:
        assert not os.get_inheritable(fd)
        assert waitid_pidfd(fd) is None
        pidfd_send_signal(fd, signal.SIGKILL)
        result = waitid_pidfd(fd, os.WEXITED)
        assert result == ProcessExit(pid, os.CLD_KILLED, signal.SIGKILL)
    finally:
        os.close(fd)


def test_pidfd_errors_keep_errno() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        pidfd_open(2**22 + 12345)  # above pid_max's default ceiling: no such process
    assert info.value.errno == errno.ESRCH
    with pytest.raises(InvalidArgumentError) as info:
        pidfd_open(os.getpid(), 0xFFFF)
    assert info.value.errno == errno.EINVAL
    r, w = os.pipe()
    try:
        with pytest.raises(InvalidArgumentError) as info:
            pidfd_send_signal(r, 0)  # not a pidfd
        assert info.value.errno == errno.EBADF
        with pytest.raises(InvalidArgumentError) as info:
            pidfd_getfd(r, 0)
        assert info.value.errno == errno.EBADF
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(ValueError, match="pid must be > 0"):
        Pidfd(0)
    with pytest.raises(TypeError):
        Pidfd("1")  # type: ignore[arg-type]


def test_pidfd_objects_leak_no_fd_over_10000_cycles() -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(10_000):
        Pidfd(os.getpid()).close()
    assert len(os.listdir("/proc/self/fd")) == before
