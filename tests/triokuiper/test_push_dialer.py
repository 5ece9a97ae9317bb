"""The Trio SP Push dialer (``triokuiper._push_dialer``) against real nng Pull peers.

The peers are pynng ``Pull0`` sockets listening on the dialer's ipc path (nng's own threads do
the SP handshake, so listening from the Trio thread is fine), plus raw unix sockets for the
peers nng would never be.  Rows are read with ``recv_msg``: pynng 0.8.1's ``recv`` raises
``RuntimeError`` on an empty message.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterator

import pynng
import pytest
import trio
import trio.testing
from sp_peers import raw_listener, recv_exactly

from triokuiper._push_dialer import BUFFER, PushDialer
from triokuiper._sp import HEADER_SIZE, PULL0, PUSH0, connection_header

DEADLINE = 20
RECV_TIMEOUT_MS = 10_000  # a reader thread gives up on its own instead of hanging
REP0 = 0x31


@pytest.fixture
def path(ekuiper_ipc_dir: str) -> str:
    return os.path.join(ekuiper_ipc_dir, "x.ipc")


@contextlib.contextmanager
def pull_at(path: str) -> Iterator[pynng.Pull0]:
    pull = pynng.Pull0(listen=f"ipc://{path}", recv_timeout=RECV_TIMEOUT_MS)
    try:
        yield pull
    finally:
        pull.close()


def _read(pull: pynng.Pull0, count: int) -> list[bytes]:
    return [pull.recv_msg().bytes for _ in range(count)]


async def read_rows(pull: pynng.Pull0, count: int) -> list[bytes]:
    """``count`` rows, read in one worker thread (abandoned if the test's deadline passes)."""
    return await trio.to_thread.run_sync(_read, pull, count, abandon_on_cancel=True)


def _read_until(pull: pynng.Pull0, last: bytes) -> list[bytes]:
    got: list[bytes] = []
    while not got or got[-1] != last:
        got.append(pull.recv_msg().bytes)
    return got


async def read_until(pull: pynng.Pull0, last: bytes) -> list[bytes]:
    return await trio.to_thread.run_sync(_read_until, pull, last, abandon_on_cancel=True)


@contextlib.asynccontextmanager
async def dialing(
    path: str, *, send_timeout: float | None = None, on_stall: Callable[[], None] | None = None
) -> AsyncIterator[PushDialer]:
    """A connected dialer, closed afterwards (its writer is left to each test)."""
    dialer = PushDialer(path, send_timeout=send_timeout, on_stall=on_stall)
    await dialer.connect(attempts=1)
    try:
        yield dialer
    finally:
        dialer.close()


def numbered(count: int, size: int = 4, start: int = 0) -> list[bytes]:
    return [i.to_bytes(4, "big") + bytes(size - 4) for i in range(start, start + count)]


async def fill_buffer(dialer: PushDialer, rows: list[bytes]) -> None:
    """Queue exactly BUFFER rows with no writer running, so the next send has no room."""
    assert len(rows) == BUFFER
    for row in rows:
        await dialer.send(row)


class StallCounter:
    def __init__(self) -> None:
        self.count = 0
        self.event = trio.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()


# -- delivery -------------------------------------------------------------------------------


async def test_every_row_arrives_in_order_whatever_its_size(path: str) -> None:
    rng = random.Random(1234)
    sizes = [0, 1, 9, 65535, 65536] + [int(2 ** rng.uniform(0, 16)) for _ in range(2995)]
    rows = [rng.randbytes(size) for size in sizes]
    with trio.fail_after(DEADLINE), pull_at(path) as pull:
        async with dialing(path) as dialer, trio.open_nursery() as nursery:
            nursery.start_soon(dialer.run)

            async def produce() -> None:
                for row in rows:
                    await dialer.send(row)
                await dialer.finish()

            nursery.start_soon(produce)
            got = await read_rows(pull, len(rows))
    assert got == rows


async def test_rows_from_a_worker_thread_arrive_in_order(path: str) -> None:
    rows = numbered(2000, size=100)
    with trio.fail_after(DEADLINE), pull_at(path) as pull:
        async with dialing(path, send_timeout=10.0) as dialer, trio.open_nursery() as nursery:
            nursery.start_soon(dialer.run)

            def produce() -> None:
                for row in rows:
                    dialer.send_blocking(row)

            nursery.start_soon(
                functools.partial(trio.to_thread.run_sync, produce, abandon_on_cancel=True)
            )
            got = await read_rows(pull, len(rows))
            await dialer.finish()
    assert got == rows


async def test_a_reader_that_stops_holds_the_sender_and_loses_nothing(path: str) -> None:
    # 16 KiB rows: the kernel's socket buffer holds only a few dozen, so 4 x BUFFER rows cannot
    # all be absorbed by the kernel plus the dialer's own BUFFER
    rows = numbered(4 * BUFFER, size=16 * 1024)
    stalls = StallCounter()
    sent = 0
    with trio.fail_after(DEADLINE), pull_at(path) as pull:
        async with (
            dialing(path, send_timeout=0.05, on_stall=stalls) as dialer,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(dialer.run)
            produced = trio.Event()

            async def produce() -> None:
                nonlocal sent
                for row in rows:
                    await dialer.send(row)
                    sent += 1
                produced.set()

            nursery.start_soon(produce)
            await stalls.event.wait()
            held_at = sent
            await trio.sleep(0.3)
            # still held, reported once for the whole stall
            assert not produced.is_set()
            assert sent == held_at < len(rows)
            assert stalls.count == 1
            got = await read_rows(pull, len(rows))
            await produced.wait()
            await dialer.finish()
    assert got == rows


async def test_rows_queued_before_finish_arrive_after_close(path: str) -> None:
    rows = numbered(600, size=50)
    with trio.fail_after(DEADLINE), pull_at(path) as pull:
        dialer = PushDialer(path)
        await dialer.connect(attempts=1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dialer.run)
            for row in rows:
                await dialer.send(row)
            await dialer.finish()
        # run() has returned and closed the socket: the kernel still delivers what it was given
        dialer.close()
        with pytest.raises(pynng.Closed):
            await dialer.send(b"too late")
        got = await read_rows(pull, len(rows))
    assert got == rows


async def test_writer_redials_when_the_reader_comes_back(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="triokuiper.push")
    before = numbered(50)
    after = numbered(350, start=50)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            dialer = PushDialer(path)
            with pull_at(path) as old:
                await dialer.connect(attempts=1)
                nursery.start_soon(dialer.run)
                for row in before:
                    await dialer.send(row)
                assert await read_rows(old, len(before)) == before
            with pull_at(path) as new:
                for row in after:
                    await dialer.send(row)
                got = await read_until(new, after[-1])
                await dialer.finish()
    # the batch being written when the break was found is lost; everything after it arrives
    assert got
    assert got == after[len(after) - len(got) :]
    assert "reader went away" in caplog.text
    assert "reader is back" in caplog.text


# -- connecting -----------------------------------------------------------------------------


async def test_connect_without_a_listener_is_refused(path: str) -> None:
    with trio.fail_after(DEADLINE):
        dialer = PushDialer(path)
        with pytest.raises(ConnectionRefusedError, match="cannot dial"):
            await dialer.connect(attempts=3, interval=0.01)


async def test_connect_to_an_nng_listener_of_another_protocol_is_refused(path: str) -> None:
    with trio.fail_after(DEADLINE):
        rep = pynng.Rep0(listen=f"ipc://{path}")
        try:
            with pytest.raises(ConnectionRefusedError, match=f"{REP0:#x}"):
                await PushDialer(path).connect(attempts=2, interval=0.01)
        finally:
            rep.close()


async def test_connect_to_a_raw_peer_answering_push_is_refused(path: str) -> None:
    headers: list[bytes] = []

    async def answer_push(listener: trio.socket.SocketType) -> None:
        conn, _ = await listener.accept()
        with conn:
            headers.append(await recv_exactly(conn, HEADER_SIZE))
            await conn.send(connection_header(PUSH0))
            await trio.sleep_forever()

    with trio.fail_after(DEADLINE):
        async with raw_listener(path) as listener, trio.open_nursery() as nursery:
            nursery.start_soon(answer_push, listener)
            with pytest.raises(ConnectionRefusedError, match=f"expected {PULL0:#x}"):
                await PushDialer(path).connect(attempts=1)
            nursery.cancel_scope.cancel()
    assert headers == [connection_header(PUSH0)]


# -- closing, timeouts, cancellation ---------------------------------------------------------


async def test_close_wakes_a_trio_sender_waiting_for_room(path: str) -> None:
    with trio.fail_after(DEADLINE), pull_at(path):
        async with dialing(path) as dialer, trio.open_nursery() as nursery:
            await fill_buffer(dialer, numbered(BUFFER))
            failed = trio.Event()

            async def one_more() -> None:
                with pytest.raises(pynng.Closed):
                    await dialer.send(b"no room")
                failed.set()

            nursery.start_soon(one_more)
            await trio.testing.wait_all_tasks_blocked()
            assert not failed.is_set()
            dialer.close()
            await failed.wait()


async def test_close_wakes_a_thread_blocked_in_send_blocking(path: str) -> None:
    with trio.fail_after(DEADLINE), pull_at(path):
        async with dialing(path) as dialer, trio.open_nursery() as nursery:
            await fill_buffer(dialer, numbered(BUFFER))
            outcome: list[BaseException] = []

            def one_more() -> None:
                try:
                    dialer.send_blocking(b"no room")
                except BaseException as exc:
                    outcome.append(exc)

            # abandoned if the deadline passes: a thread close() failed to wake must not hang us
            nursery.start_soon(
                functools.partial(trio.to_thread.run_sync, one_more, abandon_on_cancel=True)
            )
            await trio.sleep(0.1)  # let the thread reach its wait
            assert not outcome
            dialer.close()
        assert len(outcome) == 1
        assert isinstance(outcome[0], pynng.Closed)
        with pytest.raises(pynng.Closed):
            dialer.send_blocking(b"after close")


async def test_send_blocking_times_out_without_queueing_the_row(path: str) -> None:
    rows = numbered(BUFFER)
    with trio.fail_after(DEADLINE), pull_at(path) as pull:
        async with dialing(path, send_timeout=0.05) as dialer:
            await fill_buffer(dialer, rows)
            with pytest.raises(pynng.Timeout):
                await trio.to_thread.run_sync(dialer.send_blocking, b"timed out")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(dialer.run)
                await dialer.send(b"marker")
                await dialer.finish()
        got = await read_rows(pull, BUFFER + 1)
    assert got == [*rows, b"marker"]


async def test_a_cancelled_send_queues_nothing(path: str) -> None:
    rows = numbered(BUFFER)
    with trio.fail_after(DEADLINE), pull_at(path) as pull:
        async with dialing(path) as dialer:
            with trio.CancelScope() as scope:
                scope.cancel()
                await dialer.send(b"cancelled before it ran")
            assert scope.cancelled_caught
            await fill_buffer(dialer, rows)
            with trio.move_on_after(0.05) as waiting:
                await dialer.send(b"cancelled while waiting for room")
            assert waiting.cancelled_caught
            async with trio.open_nursery() as nursery:
                nursery.start_soon(dialer.run)
                await dialer.send(b"marker")
                await dialer.finish()
        got = await read_rows(pull, BUFFER + 1)
    assert got == [*rows, b"marker"]


async def test_cancelling_the_writer_returns_cleanly_and_closes_the_socket(path: str) -> None:
    pipe_gone = threading.Event()
    stalls = StallCounter()
    with trio.fail_after(DEADLINE), pull_at(path) as pull:
        pull.add_post_pipe_remove_cb(lambda pipe: pipe_gone.set())
        dialer = PushDialer(path, send_timeout=0.01, on_stall=stalls)
        await dialer.connect(attempts=1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dialer.run)

            async def produce() -> None:
                while True:  # nobody reads: the writer ends up blocked in the kernel
                    await dialer.send(bytes(64 * 1024))

            nursery.start_soon(produce)
            await stalls.event.wait()
            nursery.cancel_scope.cancel()
        assert nursery.cancel_scope.cancelled_caught
        with pytest.raises(pynng.Closed):
            await dialer.send(b"after cancel")
        # nng notices the end of the stream once it has read what the kernel still holds
        pull.recv_timeout = 100
        with pytest.raises(pynng.Timeout):
            await trio.to_thread.run_sync(_read, pull, 1_000_000)
        assert await trio.to_thread.run_sync(pipe_gone.wait, 5.0)


async def test_close_while_the_writer_is_idle_ends_run(path: str) -> None:
    with trio.fail_after(DEADLINE), pull_at(path):
        dialer = PushDialer(path)
        await dialer.connect(attempts=1)
        with trio.move_on_after(1) as waited:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(dialer.run)
                await trio.testing.wait_all_tasks_blocked()
                dialer.close()
        assert not waited.cancelled_caught, "run() still running 1 s after close()"
