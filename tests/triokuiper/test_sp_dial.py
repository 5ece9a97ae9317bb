"""Dialling an SP-over-IPC listener (``triokuiper._sp_dial``, shared by the Push and Req
dialers): the header exchange, the first dial's retries, and redialling until closed."""

from __future__ import annotations

from functools import partial

import pytest
import trio
from sp_peers import raw_listener, recv_exactly

from triokuiper import _sp_dial
from triokuiper._sp import HEADER_SIZE, PULL0, PUSH0, REP0, REQ0, connection_header, frame

DEADLINE = 20


@pytest.fixture
def path(ekuiper_ipc_dir: str) -> str:
    return f"{ekuiper_ipc_dir}/d.ipc"


async def test_the_first_dial_tries_attempts_times_then_is_refused(path: str) -> None:
    accepted = 0

    async def hang_up(listener: trio.socket.SocketType) -> None:
        nonlocal accepted
        while True:
            conn, _ = await listener.accept()
            accepted += 1
            with conn:  # hang up mid-handshake, after the dialer's header
                assert await recv_exactly(conn, HEADER_SIZE) == connection_header(REQ0)

    with trio.fail_after(DEADLINE):
        async with raw_listener(path) as listener, trio.open_nursery() as nursery:
            nursery.start_soon(hang_up, listener)
            opener = partial(_sp_dial.open_sp, path, REQ0, REP0)
            with pytest.raises(ConnectionRefusedError, match="cannot dial") as caught:
                await _sp_dial.dial(path, opener, attempts=3, interval=0.01)
            nursery.cancel_scope.cancel()
    assert accepted == 3
    assert isinstance(caught.value.__cause__, ConnectionResetError)
    assert "closed during the SP handshake" in str(caught.value)


async def test_a_silent_peer_fails_the_dial_after_the_negotiation_timeout(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sp_dial, "NEGOTIATION_TIMEOUT", 0.2)
    # a listener that never accepts: the kernel completes connect() from its backlog
    with trio.fail_after(DEADLINE):
        async with raw_listener(path):
            opener = partial(_sp_dial.open_sp, path, PUSH0, PULL0)
            with pytest.raises(ConnectionRefusedError) as caught:
                await _sp_dial.dial(path, opener, attempts=2, interval=0.01)
    assert isinstance(caught.value.__cause__, trio.TooSlowError)


async def test_messages_in_the_same_read_as_the_header_are_kept(path: str) -> None:
    async def answer(listener: trio.socket.SocketType) -> None:
        conn, _ = await listener.accept()
        with conn:
            await recv_exactly(conn, HEADER_SIZE)
            await conn.send(connection_header(PULL0) + frame(b"early") + frame(b"x")[:5])
            await trio.sleep_forever()

    with trio.fail_after(DEADLINE):
        async with raw_listener(path) as listener, trio.open_nursery() as nursery:
            nursery.start_soon(answer, listener)
            conn = await _sp_dial.open_sp(path, PUSH0, PULL0)
            with conn.sock:
                assert conn.received == [b"early"]
                assert conn.decoder.pending == 5  # half a frame, kept for the next read
            nursery.cancel_scope.cancel()


async def test_redial_keeps_trying_until_a_listener_appears_and_stops_once_closed(
    path: str,
) -> None:
    with trio.fail_after(DEADLINE):
        attempts = 0
        third_attempt = trio.Event()

        async def opener() -> _sp_dial.SPConnection:
            nonlocal attempts
            attempts += 1
            if attempts == 3:
                third_attempt.set()
            return await _sp_dial.open_sp(path, REQ0, REP0)

        async def answer(listener: trio.socket.SocketType) -> None:
            conn, _ = await listener.accept()
            with conn:
                await conn.send(connection_header(REP0))
                await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            redialled = trio.Event()
            result: list[_sp_dial.SPConnection] = []

            async def redial() -> None:
                result.append(await _sp_dial.redial(path, opener, closed=lambda: False))
                redialled.set()

            nursery.start_soon(redial)
            await third_attempt.wait()  # failed attempts, 0.1 then 0.2 s apart
            assert not redialled.is_set()
            async with raw_listener(path) as listener:
                nursery.start_soon(answer, listener)
                await redialled.wait()
                result[0].sock.close()
                nursery.cancel_scope.cancel()
        with pytest.raises(trio.ClosedResourceError):
            await _sp_dial.redial(path, opener, closed=lambda: True)
