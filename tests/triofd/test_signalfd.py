"""signalfd with real signals.

In-process tests use thread-directed signals (``pthread_kill``, ``rt_tgsigqueueinfo``): a
process-directed ``kill`` could be taken by a Trio worker thread left over from another test
(masks are per thread), which is exactly the caveat the module documents.  Process-directed
signals (``kill``, ``SIGCHLD``) are tested in a fresh interpreter that has no other threads.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading

import pytest
import trio
import trio.testing

from triofd._errors import InvalidArgumentError
from triofd._lib import ffi, lib
from triofd._signalfd import SIGNALFD_SIGINFO_SIZE, SignalInfo, SignalReceiver, signalfd

SI_QUEUE = -1
SI_TKILL = -6
SYS_RT_TGSIGQUEUEINFO = 297  # x86_64


def _blocked() -> set[int]:
    return {int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])}


def _queue_to_this_thread(sig: int, value: int) -> None:
    """``sigqueue`` aimed at the calling thread: si_code SI_QUEUE with a value."""
    if os.uname().machine != "x86_64":
        pytest.skip("rt_tgsigqueueinfo number known for x86_64 only")
    info = ffi.new("char[128]")
    buf = ffi.buffer(info)
    buf[0:12] = (
        sig.to_bytes(4, "little")
        + (0).to_bytes(4, "little")
        + SI_QUEUE.to_bytes(4, "little", signed=True)
    )
    buf[16:24] = os.getpid().to_bytes(4, "little") + os.getuid().to_bytes(4, "little")
    buf[24:32] = value.to_bytes(8, "little")
    result = lib.syscall(
        ffi.cast("long", SYS_RT_TGSIGQUEUEINFO),
        ffi.cast("long", os.getpid()),
        ffi.cast("long", threading.get_native_id()),
        ffi.cast("long", sig),
        ffi.cast("char *", info),
    )
    assert result == 0, os.strerror(ffi.errno)


async def test_thread_directed_signal_is_decoded_with_sender_pid_uid_and_code() -> None:
    async with SignalReceiver([signal.SIGUSR1]) as receiver:
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
        with trio.fail_after(5):
            info = await receiver.receive()
    assert info.signo == signal.SIGUSR1
    assert info.signal is signal.SIGUSR1
    assert info.code == SI_TKILL
    assert info.pid == os.getpid()
    assert info.uid == os.getuid()
    assert info.errno == 0


async def test_queued_signal_carries_its_value_in_int_and_ptr() -> None:
    value = 0x1234_5678_9ABC_DEF0
    async with SignalReceiver([signal.SIGUSR2]) as receiver:
        _queue_to_this_thread(signal.SIGUSR2, value)
        with trio.fail_after(5):
            info = await receiver.receive()
    assert info.code == SI_QUEUE
    assert info.pid == os.getpid()
    assert info.ptr_value == value
    assert info.int_value == int.from_bytes(value.to_bytes(8, "little")[:4], "little", signed=True)


async def test_realtime_signals_queue_every_instance_and_burst_is_read_in_one_batch() -> None:
    rt = signal.SIGRTMIN + 3
    async with SignalReceiver([rt]) as receiver:
        for i in range(5):
            _queue_to_this_thread(rt, i)
        got = [receiver.receive_nowait().ptr_value for _ in range(5)]
        assert got == [0, 1, 2, 3, 4]
        with pytest.raises(trio.WouldBlock):
            receiver.receive_nowait()


async def test_mask_is_set_while_open_and_restored_on_close() -> None:
    assert signal.SIGUSR1 not in _blocked()
    receiver = SignalReceiver([signal.SIGUSR1])
    assert signal.SIGUSR1 in _blocked()
    assert signal.SIGUSR1 in receiver
    await receiver.aclose()
    assert signal.SIGUSR1 not in _blocked()
    await receiver.aclose()  # idempotent, and doesn't unblock twice


async def test_signals_blocked_before_stay_blocked_after_close() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])
    try:
        async with SignalReceiver([signal.SIGUSR2, signal.SIGUSR1]):
            pass
        assert signal.SIGUSR2 in _blocked()
        assert signal.SIGUSR1 not in _blocked()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGUSR2])


async def test_add_extends_the_signal_set() -> None:
    async with SignalReceiver([signal.SIGUSR1]) as receiver:
        receiver.add(signal.SIGUSR2)
        assert receiver.signals == {signal.SIGUSR1, signal.SIGUSR2}
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR2)
        with trio.fail_after(5):
            assert (await receiver.receive()).signo == signal.SIGUSR2
    assert not {signal.SIGUSR1, signal.SIGUSR2} & _blocked()


async def test_close_wakes_blocked_receiver() -> None:
    receiver = SignalReceiver([signal.SIGUSR1])
    async with trio.open_nursery() as nursery:

        async def wait() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await receiver.receive()

        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        await receiver.aclose()


async def test_cancelled_receive_loses_no_signal() -> None:
    async with SignalReceiver([signal.SIGUSR1]) as receiver:
        with trio.move_on_after(0.01):
            await receiver.receive()
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
        with trio.fail_after(5):
            assert (await receiver.receive()).signo == signal.SIGUSR1


def test_bad_signal_arguments_raise_before_any_system_call() -> None:
    with pytest.raises(ValueError, match="SIGKILL"):
        SignalReceiver([signal.SIGKILL])
    with pytest.raises(ValueError, match="not a signal number"):
        SignalReceiver([0])
    with pytest.raises(ValueError, match="at least one"):
        SignalReceiver([])
    with pytest.raises(TypeError):
        SignalReceiver(["SIGUSR1"])  # type: ignore[list-item]
    assert signal.SIGUSR1 not in _blocked()


def test_signalfd_errors_keep_errno() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        signalfd(987654, [signal.SIGUSR1])
    assert info.value.errno == errno.EBADF
    r, w = os.pipe()
    try:
        with pytest.raises(InvalidArgumentError) as info:
            signalfd(r, [signal.SIGUSR1])  # not a signalfd
        assert info.value.errno == errno.EINVAL
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(InvalidArgumentError) as info:
        signalfd(-1, [signal.SIGUSR1], 0xFFFF)
    assert info.value.errno == errno.EINVAL


def test_signal_receivers_leak_no_fd_and_leave_the_mask_alone_over_10000_cycles() -> None:
    before = len(os.listdir("/proc/self/fd"))
    mask = _blocked()
    for _ in range(10_000):
        SignalReceiver([signal.SIGUSR1]).close()
    assert len(os.listdir("/proc/self/fd")) == before
    assert _blocked() == mask


PROCESS_DIRECTED = r"""
import json, os, signal, sys, time
import trio
from triofd._signalfd import SignalReceiver

async def main():
    out = {}
    async with SignalReceiver([signal.SIGUSR1, signal.SIGCHLD]) as receiver:
        os.kill(os.getpid(), signal.SIGUSR1)
        info = await receiver.receive()
        out["kill"] = [info.signo, info.code, info.pid, info.uid]
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        info = await receiver.receive()
        out["chld"] = [info.signo, info.code, info.pid, info.status, info.utime, info.stime]
        os.waitpid(pid, 0)
    out["mask_after"] = sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))
    print(json.dumps(out))

trio.run(main)
"""


def test_process_directed_kill_and_sigchld_status_in_a_fresh_interpreter() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROCESS_DIRECTED],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    signo, code, pid, uid = out["kill"]
    assert (signo, code, uid) == (signal.SIGUSR1, 0, os.getuid())  # SI_USER
    assert pid > 0
    signo, code, child, status, utime, stime = out["chld"]
    assert (signo, code, status) == (signal.SIGCHLD, os.CLD_EXITED, 7)
    assert child > 0
    assert utime >= 0
    assert stime >= 0
    assert signal.SIGUSR1 not in out["mask_after"]
    assert signal.SIGCHLD not in out["mask_after"]


def test_siginfo_record_is_128_bytes_and_unknown_signals_stay_ints() -> None:
    assert SIGNALFD_SIGINFO_SIZE == 128
    record = bytearray(128)
    record[0:4] = (signal.SIGRTMIN + 1).to_bytes(4, "little")
    info = SignalInfo.unpack_from(record)
    assert info.signal == signal.SIGRTMIN + 1
    assert not isinstance(info.signal, signal.Signals)
