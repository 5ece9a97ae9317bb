"""The Trio SP Req dialer (``triokuiper._req_dialer``) and the async function channel on it.

The peers are real: pynng ``Rep0`` sockets listening on the dialer's ipc path (nng's own threads
do the SP handshake; the tests drive the Rep side from worker threads), and raw unix sockets
speaking SP by hand (frames built with ``triokuiper._sp``) for the peers nng would never be:
wrong request ids, short or hostile replies, peers vanishing mid-frame.  Rep messages are read
with ``recv_msg``: pynng 0.8.1's ``recv`` raises ``RuntimeError`` on an empty message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import tracemalloc
from collections import deque
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

import pynng
import pytest
import trio
import trio.testing
from sp_peers import raw_listener, recv_exactly

from triokuiper._function import _serve_async
from triokuiper._messages import HANDSHAKE
from triokuiper._req_dialer import ReqDialer
from triokuiper._sp import (
    FRAME_PREFIX,
    HEADER_SIZE,
    PULL0,
    PUSH0,
    REP0,
    REQ0,
    FrameDecoder,
    SPProtocolError,
    connection_header,
    frame,
)

DEADLINE = 20
RECV_TIMEOUT_MS = 10_000  # a Rep thread gives up on its own instead of hanging
ID_BIT = 0x8000_0000
EXEC_CALL = json.dumps(
    {
        "func": "Exec",
        "arg": ["x", '{"ruleId":"r","opId":"o","instanceId":0,"funcId":0}'],
    },
    separators=(",", ":"),
).encode()


@pytest.fixture
def path(ekuiper_ipc_dir: str) -> str:
    return os.path.join(ekuiper_ipc_dir, "f.ipc")


# -- nng peers -------------------------------------------------------------------------------


@contextlib.contextmanager
def rep_at(path: str) -> Iterator[Any]:
    rep = pynng.Rep0(listen=f"ipc://{path}", recv_timeout=RECV_TIMEOUT_MS)
    try:
        yield rep
    finally:
        rep.close()


async def rep_recv(rep: Any) -> bytes:
    """The next request's body, received in a worker thread."""
    msg = await trio.to_thread.run_sync(rep.recv_msg, abandon_on_cancel=True)
    return bytes(msg.bytes)


async def rep_send(rep: Any, data: bytes) -> None:
    """Reply (to the request received last) from a worker thread."""
    await trio.to_thread.run_sync(rep.send, data, abandon_on_cancel=True)


@contextlib.asynccontextmanager
async def dialing(path: str) -> AsyncIterator[ReqDialer]:
    dialer = ReqDialer(path)
    await dialer.connect(attempts=20, interval=0.05)
    try:
        yield dialer
    finally:
        dialer.close()


# -- raw peers -------------------------------------------------------------------------------


async def send_all(conn: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[await conn.send(view) :]


class RawRep:
    """One accepted connection speaking SP Rep by hand."""

    def __init__(self, conn: trio.socket.SocketType) -> None:
        self.conn = conn
        self._decoder = FrameDecoder()
        self._decoder.feed(connection_header(REQ0))  # checked by accept()
        self._pending: deque[bytes] = deque()

    @classmethod
    async def accept(cls, listener: trio.socket.SocketType) -> RawRep:
        conn, _ = await listener.accept()
        assert await recv_exactly(conn, HEADER_SIZE) == connection_header(REQ0)
        await send_all(conn, connection_header(REP0))
        return cls(conn)

    async def recv(self) -> tuple[bytes, bytes]:
        """The next request as (request id, body)."""
        while not self._pending:
            data = await self.conn.recv(1 << 16)
            assert data, "the dialer hung up"
            self._pending.extend(self._decoder.feed(data))
        message = self._pending.popleft()
        return message[:4], message[4:]

    async def reply(self, request_id: bytes, body: bytes) -> None:
        await send_all(self.conn, frame(request_id + body))


@contextlib.asynccontextmanager
async def raw_pair(path: str) -> AsyncIterator[tuple[ReqDialer, RawRep]]:
    """A dialer connected to a raw Rep."""
    dialer = ReqDialer(path)
    async with raw_listener(path) as listener:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(dialer.connect, attempts=1))
            rep = await RawRep.accept(listener)
        try:
            with rep.conn:
                yield dialer, rep
        finally:
            dialer.close()


def other_id(request_id: bytes) -> bytes:
    """A request id that is not ``request_id`` (high bit set, as a real earlier one would be)."""
    return (((int.from_bytes(request_id, "big") + 1) & 0x7FFF_FFFF) | ID_BIT).to_bytes(4, "big")


def stale_replies_dropped(caplog: pytest.LogCaptureFixture) -> int:
    return sum("dropped a stale reply" in r.getMessage() for r in caplog.records)


# -- round trips -----------------------------------------------------------------------------


def _echo_reversed(rep: Any, count: int) -> list[bytes]:
    got: list[bytes] = []
    for _ in range(count):
        body = rep.recv_msg().bytes
        got.append(body)
        rep.send(body[::-1] + b"!")
    return got


async def test_round_trips_in_order_with_an_nng_rep_whatever_the_size(path: str) -> None:
    rng = random.Random(1234)
    edges = [0, 1, 3, 4, 5, FRAME_PREFIX, 65535, 65536, 65537, 256 * 1024]
    sizes = edges + [
        rng.randrange(0, 64) if rng.random() < 0.7 else rng.randrange(0, 256 * 1024 + 1)
        for _ in range(300 - len(edges))
    ]
    bodies = [rng.randbytes(n) for n in sizes]
    with trio.fail_after(DEADLINE), rep_at(path) as rep:
        async with dialing(path) as dialer, trio.open_nursery() as nursery:
            received: list[bytes] = []

            async def serve() -> None:
                received.extend(
                    await trio.to_thread.run_sync(
                        _echo_reversed, rep, len(bodies), abandon_on_cancel=True
                    )
                )

            nursery.start_soon(serve)
            for body in bodies:
                assert await dialer.request(body) == body[::-1] + b"!"
                assert not dialer.waiting
    assert received == bodies


async def test_each_request_carries_a_new_id_with_the_high_bit_set(path: str) -> None:
    with trio.fail_after(DEADLINE):
        async with raw_pair(path) as (dialer, rep), trio.open_nursery() as nursery:
            ids: list[bytes] = []

            async def answer(count: int) -> None:
                for _ in range(count):
                    request_id, body = await rep.recv()
                    ids.append(request_id)
                    await rep.reply(request_id, b"re " + body)

            nursery.start_soon(answer, 5)
            for i in range(5):
                assert await dialer.request(b"%d" % i) == b"re %d" % i
    assert len(set(ids)) == 5
    assert all(int.from_bytes(i, "big") & ID_BIT for i in ids)


# -- stale replies ---------------------------------------------------------------------------


async def test_a_reply_with_another_id_is_dropped(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="triokuiper.req")
    with trio.fail_after(DEADLINE):
        async with raw_pair(path) as (dialer, rep), trio.open_nursery() as nursery:

            async def answer() -> None:
                request_id, body = await rep.recv()
                assert body == b"question"
                await rep.reply(other_id(request_id), b"stale")
                await trio.sleep(0.05)  # the stale one is read on its own, too
                await rep.reply(request_id, b"answer")

            nursery.start_soon(answer)
            assert await dialer.request(b"question") == b"answer"
    assert stale_replies_dropped(caplog) == 1


async def test_replies_shorter_than_a_request_id_are_dropped(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="triokuiper.req")
    with trio.fail_after(DEADLINE):
        async with raw_pair(path) as (dialer, rep), trio.open_nursery() as nursery:

            async def answer() -> None:
                request_id, _ = await rep.recv()
                # an empty message, then the id's first 2 and 3 bytes, all in one write
                short = frame(b"") + frame(request_id[:2]) + frame(request_id[:3])
                await send_all(rep.conn, short + frame(request_id + b"ok"))

            nursery.start_soon(answer)
            assert await dialer.request(b"q") == b"ok"
            assert dialer.connected
    assert stale_replies_dropped(caplog) == 3


# -- resend_nowait ---------------------------------------------------------------------------


async def test_resend_replaces_the_waiting_request_with_an_nng_rep(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="triokuiper.req")
    with trio.fail_after(DEADLINE), rep_at(path) as rep:
        async with dialing(path) as dialer, trio.open_nursery() as nursery:
            result: list[bytes] = []

            async def ask() -> None:
                result.append(await dialer.request(b"first"))

            nursery.start_soon(ask)
            assert await rep_recv(rep) == b"first"
            assert dialer.waiting
            sent_first = dialer.last_request
            dialer.resend_nowait(b"second")
            assert dialer.last_request >= sent_first
            await rep_send(rep, b"reply to first")  # carries the first id: dropped
            assert await rep_recv(rep) == b"second"
            assert not result  # still waiting
            await rep_send(rep, b"reply to second")
    assert result == [b"reply to second"]
    assert stale_replies_dropped(caplog) == 1


async def test_resend_uses_a_new_id_and_only_its_reply_counts(path: str) -> None:
    with trio.fail_after(DEADLINE):
        async with raw_pair(path) as (dialer, rep), trio.open_nursery() as nursery:
            result: list[bytes] = []

            async def ask() -> None:
                result.append(await dialer.request(b"first"))

            nursery.start_soon(ask)
            first_id, body = await rep.recv()
            assert body == b"first"
            dialer.resend_nowait(b"second")
            second_id, body = await rep.recv()
            assert body == b"second"
            assert second_id != first_id
            assert int.from_bytes(second_id, "big") & ID_BIT
            await rep.reply(first_id, b"late")
            await trio.testing.wait_all_tasks_blocked()
            assert not result
            await rep.reply(second_id, b"fresh")
    assert result == [b"fresh"]


async def test_resend_when_not_waiting_does_nothing(path: str) -> None:
    with trio.fail_after(DEADLINE):
        async with raw_pair(path) as (dialer, rep), trio.open_nursery() as nursery:
            before = dialer.last_request
            dialer.resend_nowait(b"nobody asked")  # never requested yet
            nursery.start_soon(dialer.request, b"one")
            request_id, body = await rep.recv()
            assert body == b"one"
            await rep.reply(request_id, b"r1")
            await trio.testing.wait_all_tasks_blocked()
            assert not dialer.waiting
            after_one = dialer.last_request
            assert after_one > before
            dialer.resend_nowait(b"nobody asked")  # answered: nothing is waiting
            assert dialer.last_request == after_one
            nursery.start_soon(dialer.request, b"two")
            request_id, body = await rep.recv()
            assert body == b"two"  # nothing went out in between
            await rep.reply(request_id, b"r2")


async def test_a_resend_the_socket_has_no_room_for_drops_the_connection(path: str) -> None:
    with trio.fail_after(DEADLINE):
        async with raw_pair(path) as (dialer, rep), trio.open_nursery() as nursery:
            failed: list[BaseException] = []

            async def ask() -> None:
                try:
                    await dialer.request(b"first")
                except OSError as exc:
                    failed.append(exc)

            nursery.start_soon(ask)
            await rep.recv()
            # far more than a unix socket buffers, and the Rep is not reading
            dialer.resend_nowait(b"x" * (16 << 20))
            assert not dialer.connected
    assert len(failed) == 1
    assert isinstance(failed[0], ConnectionResetError)


# -- broken connections and redial -----------------------------------------------------------


async def test_an_nng_rep_closing_mid_wait_resets_and_redial_reaches_the_next_one(
    path: str,
) -> None:
    with trio.fail_after(DEADLINE):
        dialer = ReqDialer(path)
        try:
            with rep_at(path) as rep:
                await dialer.connect(attempts=20, interval=0.05)
                async with trio.open_nursery() as nursery:

                    async def close_when_asked() -> None:
                        assert await rep_recv(rep) == b"anyone?"
                        rep.close()

                    nursery.start_soon(close_when_asked)
                    with pytest.raises(ConnectionResetError):
                        await dialer.request(b"anyone?")
                    assert not dialer.waiting
            await _redial_to_a_late_rep(dialer, path)
        finally:
            dialer.close()


async def _redial_to_a_late_rep(dialer: ReqDialer, path: str) -> None:
    """redial() while nobody listens yet; a new Rep comes up; requests work again."""
    with contextlib.ExitStack() as stack:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dialer.redial)
            await trio.sleep(0.3)  # a few failed attempts first
            assert not dialer.connected
            rep = stack.enter_context(rep_at(path))
        # redial() has returned: connected to the new Rep
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_answer_one, rep)
            assert await dialer.request(b"again") == b"reply: again"


async def _answer_one(rep: Any) -> None:
    body = await rep_recv(rep)
    await rep_send(rep, b"reply: " + body)


async def test_a_raw_rep_closing_mid_wait_raises_connection_reset(path: str) -> None:
    with trio.fail_after(DEADLINE):
        async with raw_pair(path) as (dialer, rep), trio.open_nursery() as nursery:

            async def hang_up() -> None:
                await rep.recv()
                rep.conn.close()

            nursery.start_soon(hang_up)
            with pytest.raises(ConnectionResetError):
                await dialer.request(b"anyone?")
            assert not dialer.waiting


async def test_a_rep_closing_mid_frame_raises_and_redial_recovers(path: str) -> None:
    with trio.fail_after(DEADLINE):
        dialer = ReqDialer(path)
        try:
            async with raw_listener(path) as listener:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(partial(dialer.connect, attempts=1))
                    rep = await RawRep.accept(listener)
                with rep.conn:
                    async with trio.open_nursery() as nursery:

                        async def half_a_reply() -> None:
                            request_id, _ = await rep.recv()
                            whole = frame(request_id + b"y" * 100)
                            await send_all(rep.conn, whole[:50])
                            rep.conn.close()

                        nursery.start_soon(half_a_reply)
                        with pytest.raises((SPProtocolError, OSError)) as caught:
                            await dialer.request(b"anyone?")
            assert isinstance(caught.value, SPProtocolError)  # what the decoder says
            await _redial_to_a_late_rep(dialer, path)
        finally:
            dialer.close()


async def test_cancelling_a_request_mid_write_drops_the_connection(path: str) -> None:
    with trio.fail_after(DEADLINE):
        async with raw_pair(path) as (dialer, _rep):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:

                    async def cancel_when_stuck() -> None:
                        await trio.testing.wait_all_tasks_blocked()
                        scope.cancel()

                    nursery.start_soon(cancel_when_stuck)
                    # the Rep is not reading: the write waits for room
                    await dialer.request(b"x" * (16 << 20))
            assert scope.cancelled_caught
            assert not dialer.connected  # half a frame may be on the wire
            assert not dialer.waiting
            with pytest.raises(trio.ClosedResourceError):
                await dialer.request(b"not connected")


# -- connect ---------------------------------------------------------------------------------


async def test_connect_to_a_missing_path_is_refused(path: str) -> None:
    with trio.fail_after(DEADLINE):
        with pytest.raises(ConnectionRefusedError, match="cannot dial") as caught:
            await ReqDialer(path).connect(attempts=3, interval=0.01)
    assert isinstance(caught.value.__cause__, FileNotFoundError)


@pytest.mark.parametrize(("kind", "number"), [("Pull0", PULL0), ("Push0", PUSH0)])
async def test_connect_to_an_nng_listener_of_another_protocol_is_refused(
    path: str, kind: str, number: int
) -> None:
    with trio.fail_after(DEADLINE):
        peer = getattr(pynng, kind)(listen=f"ipc://{path}")
        try:
            dialer = ReqDialer(path)
            with pytest.raises(ConnectionRefusedError, match=f"{number:#x}, expected 0x31"):
                await dialer.connect(attempts=2, interval=0.01)
            assert not dialer.connected
        finally:
            peer.close()


@pytest.mark.parametrize(
    "header",
    [connection_header(REQ0), connection_header(PULL0), b"HTTP/1.1", b"\x00SP\x01\x00\x31\x00\x00"],
)
async def test_connect_to_a_raw_peer_with_a_non_rep_header_is_refused(
    path: str, header: bytes
) -> None:
    async def answer(listener: trio.socket.SocketType) -> None:
        conn, _ = await listener.accept()
        with conn:
            await recv_exactly(conn, HEADER_SIZE)
            await send_all(conn, header)
            await trio.sleep_forever()

    with trio.fail_after(DEADLINE):
        async with raw_listener(path) as listener, trio.open_nursery() as nursery:
            nursery.start_soon(answer, listener)
            with pytest.raises(ConnectionRefusedError) as caught:
                await ReqDialer(path).connect(attempts=1)
            nursery.cancel_scope.cancel()
    assert isinstance(caught.value.__cause__, SPProtocolError)


async def test_a_header_arriving_with_a_reply_keeps_the_reply(path: str) -> None:
    # a raw Rep that writes its header and a (stale) reply in one go: the decoder must keep
    # what came after the header, and the request must drop it as stale
    async def eager(listener: trio.socket.SocketType) -> None:
        conn, _ = await listener.accept()
        with conn:
            await recv_exactly(conn, HEADER_SIZE)
            await send_all(conn, connection_header(REP0) + frame(b"\x80\x00\x00\x00early"))
            rep = RawRep(conn)
            request_id, body = await rep.recv()
            await rep.reply(request_id, b"re " + body)
            await trio.sleep_forever()

    with trio.fail_after(DEADLINE):
        async with raw_listener(path) as listener, trio.open_nursery() as nursery:
            nursery.start_soon(eager, listener)
            dialer = ReqDialer(path)
            try:
                await dialer.connect(attempts=1)
                assert await dialer.request(b"q") == b"re q"
            finally:
                dialer.close()
            nursery.cancel_scope.cancel()


async def test_a_hostile_reply_length_raises_without_allocating_it(path: str) -> None:
    with trio.fail_after(DEADLINE):
        async with raw_pair(path) as (dialer, rep), trio.open_nursery() as nursery:

            async def hostile() -> None:
                request_id, _ = await rep.recv()
                prefix = b"\x01" + (2**40).to_bytes(8, "big")
                await send_all(rep.conn, prefix + request_id + b"z" * 1000)

            nursery.start_soon(hostile)
            tracemalloc.start()
            try:
                with pytest.raises(SPProtocolError, match="over the"):
                    await dialer.request(b"q")
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert peak < 8 << 20


# -- close and cancellation ------------------------------------------------------------------


async def test_close_wakes_a_waiting_request_with_closed_resource_error(path: str) -> None:
    with trio.fail_after(DEADLINE), rep_at(path) as rep:
        async with dialing(path) as dialer, trio.open_nursery() as nursery:
            failed: list[BaseException] = []

            async def ask() -> None:
                try:
                    await dialer.request(b"q")
                except trio.ClosedResourceError as exc:
                    failed.append(exc)

            nursery.start_soon(ask)
            assert await rep_recv(rep) == b"q"
            dialer.close()
        assert len(failed) == 1
        assert not dialer.connected
        with pytest.raises(trio.ClosedResourceError):
            await dialer.redial()
        with pytest.raises(trio.ClosedResourceError):
            await dialer.request(b"after close")


async def test_redial_waiting_for_a_listener_ends_when_closed(path: str) -> None:
    with trio.fail_after(DEADLINE):
        dialer = ReqDialer(path)
        async with trio.open_nursery() as nursery:
            failed: list[BaseException] = []

            async def redial() -> None:
                try:
                    await dialer.redial()
                except trio.ClosedResourceError as exc:
                    failed.append(exc)

            nursery.start_soon(redial)
            await trio.sleep(0.15)  # nobody listens: it is sleeping between attempts
            dialer.close()
        assert len(failed) == 1


async def test_a_cancelled_request_leaves_the_dialer_usable_and_its_reply_is_dropped(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="triokuiper.req")
    with trio.fail_after(DEADLINE):
        async with raw_pair(path) as (dialer, rep):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:

                    async def cancel_once_received() -> None:
                        _, body = await rep.recv()
                        assert body == b"slow"
                        scope.cancel()

                    nursery.start_soon(cancel_once_received)
                    await dialer.request(b"slow")
            assert scope.cancelled_caught
            assert dialer.connected
            assert not dialer.waiting
            async with trio.open_nursery() as nursery:

                async def late_then_fresh() -> None:
                    next_id, body = await rep.recv()
                    assert body == b"next"
                    first_id = (
                        (int.from_bytes(next_id, "big") - 1) & 0x7FFF_FFFF | ID_BIT
                    ).to_bytes(4, "big")
                    await rep.reply(first_id, b"late")
                    await rep.reply(next_id, b"fresh")

                nursery.start_soon(late_then_fresh)
                assert await dialer.request(b"next") == b"fresh"
    assert stale_replies_dropped(caplog) == 1


async def test_a_late_nng_reply_to_a_cancelled_request_is_dropped(path: str) -> None:
    with trio.fail_after(DEADLINE), rep_at(path) as rep:
        async with dialing(path) as dialer:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:

                    async def cancel_once_received() -> None:
                        assert await rep_recv(rep) == b"slow"
                        scope.cancel()

                    nursery.start_soon(cancel_once_received)
                    await dialer.request(b"slow")
            assert scope.cancelled_caught
            assert dialer.connected
            await rep_send(rep, b"late")  # nng replies with the cancelled request's id
            await trio.sleep(0.1)  # let it reach the dialer's socket before the next request
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_answer_one, rep)
                assert await dialer.request(b"next") == b"reply: next"


async def test_a_reply_followed_by_garbage_is_still_returned(path: str) -> None:
    with trio.fail_after(DEADLINE):
        async with raw_pair(path) as (dialer, rep), trio.open_nursery() as nursery:

            async def reply_then_garbage() -> None:
                request_id, _ = await rep.recv()
                await send_all(rep.conn, frame(request_id + b"answer") + b"\x07" * FRAME_PREFIX)

            nursery.start_soon(reply_then_garbage)
            assert await dialer.request(b"q") == b"answer"
            # and the broken stream is not used again
            with pytest.raises((SPProtocolError, OSError, trio.ClosedResourceError)):
                await dialer.request(b"q2")


# -- the async function channel end to end ---------------------------------------------------


class Echo:
    """An async function: ``exec`` returns its first argument."""

    async def exec(self, args: list[Any], ctx: Any) -> Any:
        await trio.lowlevel.checkpoint()
        return args[0]

    def validate(self, args: list[Any]) -> str:
        return ""

    def is_aggregate(self) -> bool:
        return False


def _drain(rep: Any) -> list[bytes]:
    """Every request nng has queued (the one received last is the one a send replies to)."""
    got: list[bytes] = []
    while True:
        try:
            got.append(rep.recv_msg(block=False).bytes)
        except pynng.TryAgain:
            return got


async def call_exec(rep: Any) -> bytes:
    """Send an Exec call, as eKuiper does: a reply that comes back as ``handshake`` means our
    call answered a request the keepalive had already replaced, so send it again."""
    while True:
        await rep_send(rep, EXEC_CALL)
        answer = await rep_recv(rep)
        if answer != HANDSHAKE:
            return answer


async def test_async_function_keeps_alive_answers_and_redials(path: str) -> None:
    with trio.fail_after(DEADLINE):
        channel = ReqDialer(path)
        try:
            rep = pynng.Rep0(listen=f"ipc://{path}", recv_timeout=RECV_TIMEOUT_MS)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_serve_async, channel, Echo(), "func_f", 0.3)
                    assert await rep_recv(rep) == HANDSHAKE
                    await trio.sleep(1)  # idle: no call
                    queued = await trio.to_thread.run_sync(_drain, rep)
                    assert len(queued) >= 1
                    assert set(queued) == {HANDSHAKE}
                    answer = json.loads(await call_exec(rep))
                    assert answer == {"state": True, "result": "x"}

                    # eKuiper goes away and comes back on the same path
                    rep.close()
                    rep = pynng.Rep0(listen=f"ipc://{path}", recv_timeout=RECV_TIMEOUT_MS)
                    assert await rep_recv(rep) == HANDSHAKE
                    answer = json.loads(await call_exec(rep))
                    assert answer == {"state": True, "result": "x"}
                    nursery.cancel_scope.cancel()
            finally:
                rep.close()
        finally:
            channel.close()


async def test_closing_the_channel_under_a_serving_function_ends_it_quietly(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Echo:
        async def exec(self, args: list[Any], ctx: Any) -> Any:
            await trio.lowlevel.checkpoint()
            return args[0]

    with trio.fail_after(DEADLINE):
        rep = pynng.Rep0(listen=f"ipc://{path}")
        try:
            dialer = ReqDialer(path)
            await dialer.connect()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_serve_async, dialer, Echo(), "func_echo", 5.0)
                assert await trio.to_thread.run_sync(rep.recv) == HANDSHAKE
                dialer.close()  # what a stop that timed out does: returns, no error
        finally:
            rep.close()
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
