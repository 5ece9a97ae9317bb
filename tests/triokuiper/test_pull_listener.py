"""The Trio SP Pull listener (``triokuiper._pull_listener``) against real nng Push peers.

The peers are pynng ``Push0`` sockets dialing the listener's ipc path, plus raw unix sockets
for the faults nng would never commit.  A pynng ``dial(block=True)`` runs in a worker thread:
the SP handshake needs the listener's task, so dialing from the Trio thread would deadlock.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import resource
import socket
import threading
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import pynng
import pytest
import trio
import trio.testing

from triokuiper import _pull_listener
from triokuiper._pull_listener import BACKLOG, RECV_SIZE, BlockingReceiver, PullListener
from triokuiper._sp import FRAME_PREFIX, PULL0, PUSH0, connection_header, frame

DEADLINE = 20
SEND_TIMEOUT_MS = 10_000  # generous: a stalled push must wait for the sink, not time out
PUSH_HEADER = connection_header(PUSH0)
T = TypeVar("T")


@pytest.fixture
def path(ekuiper_ipc_dir: str) -> str:
    return os.path.join(ekuiper_ipc_dir, "x.ipc")


def url(path: str) -> str:
    return f"ipc://{path}"


@contextlib.asynccontextmanager
async def serving(path: str) -> AsyncIterator[PullListener]:
    listener = PullListener(path)
    await listener.listen()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.run)
        try:
            yield listener
        finally:
            listener.close()


@contextlib.asynccontextmanager
async def push_peer(path: str) -> AsyncIterator[pynng.Push0]:
    push = pynng.Push0(send_timeout=SEND_TIMEOUT_MS)
    try:
        await trio.to_thread.run_sync(functools.partial(push.dial, url(path), block=True))
        yield push
    finally:
        push.close()


def send_all(push: pynng.Push0, messages: list[bytes]) -> None:
    for message in messages:
        push.send(message)


async def in_thread(fn: Callable[..., T], *args: object) -> T:
    # abandon on cancel: a test that fails by its deadline must not wait for a stuck thread
    return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)


async def collect(listener: PullListener, count: int) -> list[bytes]:
    got: list[bytes] = []
    while len(got) < count:
        batch = await listener.receive_batch()
        assert batch
        got += batch
    return got


async def collect_until(listener: PullListener, last: bytes) -> list[bytes]:
    got: list[bytes] = []
    while last not in got:
        got += await listener.receive_batch()
    return got


async def eventually(condition: Callable[[], bool]) -> None:
    """Poll state nothing signals: the listener's private queues, the log."""
    while not condition():  # noqa: ASYNC110 -- no event to wait on
        await trio.sleep(0.01)


async def exists(path: str) -> bool:
    return await trio.Path(path).exists()


async def raw_connect(path: str) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.connect(path)
    return sock


async def read_header(sock: trio.socket.SocketType) -> None:
    """Take the listener's header, so that our close is a clean EOF and not a reset."""
    received = b""
    while len(received) < len(PUSH_HEADER):
        chunk = await sock.recv(len(PUSH_HEADER) - len(received))
        assert chunk
        received += chunk
    assert received == connection_header(PULL0)


async def wait_dropped(sock: trio.socket.SocketType) -> None:
    """Read until the listener closes its end: its header, then EOF (or a reset)."""
    received = b""
    try:
        while chunk := await sock.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass  # Linux resets when the listener closes with our bytes unread
    assert received in (b"", connection_header(PULL0))


def mixed_messages(count: int) -> list[bytes]:
    messages = []
    for n in range(count):
        if n % 500 == 250:
            body = b"%d:" % n + bytes([n % 256]) * (1 << 20)  # ~1 MiB
        elif n % 97 == 0:
            body = b""  # nng sends empty messages: the listener yields b""
        else:
            body = b"%d:" % n + b"p" * (n % 3000)
        messages.append(body)
    return messages


async def test_one_push_peer_every_message_in_order(path: str) -> None:
    messages = mixed_messages(3000)
    assert b"" in messages
    with trio.fail_after(DEADLINE):
        async with (
            serving(path) as listener,
            push_peer(path) as push,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(in_thread, send_all, push, messages)
            got = await collect(listener, len(messages))
    assert got == messages


async def test_two_push_peers_all_messages_each_in_order(path: str) -> None:
    count = 2000
    sent = {
        tag: [b"%s%d" % (tag, n) + b"." * (n % 700) for n in range(count)] for tag in (b"a", b"b")
    }
    with trio.fail_after(DEADLINE):
        async with (
            serving(path) as listener,
            push_peer(path) as a,
            push_peer(path) as b,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(in_thread, send_all, a, sent[b"a"])
            nursery.start_soon(in_thread, send_all, b, sent[b"b"])
            got = await collect(listener, 2 * count)
    assert len(got) == 2 * count
    for tag, messages in sent.items():
        assert [m for m in got if m.startswith(tag)] == messages


async def test_backpressure_holds_the_peer_and_loses_nothing(path: str) -> None:
    size = 1024
    count = 10_000  # ~10 MB: far more than the backlog plus every socket buffer
    messages = [b"%08d" % n + b"b" * (size - 8) for n in range(count)]
    per_read = RECV_SIZE // (FRAME_PREFIX + size) + 1
    pushed = trio.Event()

    async def push_everything(push: pynng.Push0) -> None:
        await in_thread(send_all, push, messages)
        pushed.set()

    with trio.fail_after(DEADLINE):
        async with serving(path) as listener, push_peer(path) as push:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(push_everything, push)
                await eventually(lambda: len(listener._items) >= BACKLOG)  # the sink took none
                await trio.sleep(0.3)
                assert not pushed.is_set()  # the peer is held...
                assert len(listener._items) <= BACKLOG + per_read  # ...and nothing piles up
                got = await collect(listener, count)
            assert pushed.is_set()
    assert got == messages


FAULTS = [
    # (lead: good frames sent and received first, fault bytes, the reason logged)
    pytest.param(b"", b"GET / HTTP/1.1\r\n\r\n", "not an SP connection header", id="bad-magic"),
    pytest.param(b"", b"\x00SP\x00\x00\x50\x00\x01", "not an SP connection header", id="reserved"),
    pytest.param(b"", connection_header(PULL0) + frame(b"x"), "0x51, not Push", id="pull-peer"),
    pytest.param(b"", connection_header(0x10) + frame(b"x"), "0x10, not Push", id="pair-peer"),
    pytest.param(
        PUSH_HEADER + frame(b"raw-0") + frame(b"raw-1"),
        b"\x01" + (2**40).to_bytes(8, "big"),  # and no body: the listener must not wait for it
        "1099511627776 bytes is over",
        id="hostile-length",
    ),
    pytest.param(
        PUSH_HEADER + frame(b"raw-0") + frame(b"raw-1"),
        b"\x02" + (1).to_bytes(8, "big") + b"x",
        "unknown SP message type 2",
        id="wrong-type",
    ),
    pytest.param(
        PUSH_HEADER + frame(b"raw-0") + frame(b"raw-1"),
        frame(b"cut short")[:-4],  # then the peer vanishes
        "stream ended inside a frame",
        id="vanishing-mid-frame",
    ),
]


@pytest.mark.parametrize(("lead", "fault", "reason"), FAULTS)
async def test_faulty_peer_is_dropped_while_a_good_peer_is_served(
    path: str, lead: bytes, fault: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="triokuiper.pull")
    before = [b"good-%d" % n for n in range(100)]
    after = [b"good-%d" % n for n in range(100, 200)]
    with trio.fail_after(DEADLINE):
        async with serving(path) as listener, push_peer(path) as push:
            await in_thread(send_all, push, before)
            assert await collect(listener, len(before)) == before

            raw = await raw_connect(path)
            with raw:
                if lead:
                    await raw.send(lead)
                    assert await collect(listener, 2) == [b"raw-0", b"raw-1"]
                await raw.send(fault)
                if reason.startswith("stream ended"):
                    await read_header(raw)
                    raw.close()
                else:
                    await wait_dropped(raw)  # promptly: no body, no more bytes are awaited
            await eventually(lambda: any(reason in r.getMessage() for r in caplog.records))

            await in_thread(send_all, push, after)
            assert await collect(listener, len(after)) == after
    assert [r.getMessage() for r in caplog.records if "dropped a peer" in r.getMessage()]
    assert len(caplog.records) == 1


@pytest.mark.parametrize("split_header", [False, True], ids=["with-header", "after-header"])
async def test_messages_completed_in_the_same_read_as_a_fault_are_delivered(
    path: str, split_header: bool
) -> None:
    good = frame(b"raw-0") + frame(b"raw-1")
    bad_type = b"\x02" + (1).to_bytes(8, "big") + b"x"
    with trio.fail_after(DEADLINE):
        async with serving(path) as listener, push_peer(path) as push:
            raw = await raw_connect(path)
            with raw:
                if split_header:
                    await raw.send(PUSH_HEADER + frame(b"first"))
                    assert await listener.receive_batch() == [b"first"]
                    await raw.send(good + bad_type)  # one write: one recv_into
                else:
                    await raw.send(PUSH_HEADER + good + bad_type)
                await wait_dropped(raw)
            await in_thread(send_all, push, [b"sentinel"])
            got = await collect_until(listener, b"sentinel")
    assert got == [b"raw-0", b"raw-1", b"sentinel"]


async def test_peer_gone_before_its_header_is_dropped_quietly(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(DEADLINE):
        async with serving(path) as listener, push_peer(path) as push:
            raw = await raw_connect(path)
            with raw:
                await raw.send(PUSH_HEADER[:5])
                await read_header(raw)
            await eventually(lambda: len(listener._connections) == 1)  # the good peer's
            await in_thread(send_all, push, [b"still served"])
            assert await listener.receive_batch() == [b"still served"]
    assert not caplog.records


async def test_listen_replaces_a_stale_socket_file(path: str) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # a crashed plugin's file: nobody listens on it
    assert await exists(path)
    with trio.fail_after(DEADLINE):
        async with serving(path) as listener, push_peer(path) as push:
            await in_thread(send_all, push, [b"hello"])
            assert await listener.receive_batch() == [b"hello"]


async def test_listen_refuses_a_path_a_live_listener_holds(path: str) -> None:
    with trio.fail_after(DEADLINE):
        async with serving(path) as first:
            second = PullListener(path)
            with pytest.raises(OSError, match="in use") as info:
                await second.listen()
            assert info.value.errno == errno.EADDRINUSE
            second.close()  # never bound: must not remove the live listener's file
            assert await exists(path)
            async with push_peer(path) as push:
                await in_thread(send_all, push, [b"first keeps it"])
                assert await first.receive_batch() == [b"first keeps it"]


async def test_listen_refuses_a_path_an_nng_listener_holds(path: str) -> None:
    with pynng.Pull0() as pull, trio.fail_after(DEADLINE):
        pull.listen(url(path))
        with pytest.raises(OSError, match="in use") as info:
            await PullListener(path).listen()
        assert info.value.errno == errno.EADDRINUSE


async def test_close_removes_the_socket_file_and_wakes_the_sink(path: str) -> None:
    listener = PullListener(path)
    await listener.listen()
    assert await exists(path)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listener.run)

            async def sink() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await listener.receive_batch()

            nursery.start_soon(sink)
            await trio.testing.wait_all_tasks_blocked()
            listener.close()
            listener.close()  # idempotent
        # run() returned on its own: the nursery exited
    assert listener.closed
    assert not await exists(path)
    with pytest.raises(trio.ClosedResourceError):
        await listener.receive_batch()


async def test_close_drops_connected_peers(path: str) -> None:
    with trio.fail_after(DEADLINE):
        async with serving(path) as listener:
            raw = await raw_connect(path)
            with raw:
                await raw.send(PUSH_HEADER)
                await trio.testing.wait_all_tasks_blocked()
                listener.close()
                await wait_dropped(raw)


async def test_close_leaves_a_newer_listeners_socket_file(path: str) -> None:
    with trio.fail_after(DEADLINE):
        old = PullListener(path)
        await old.listen()
        os.unlink(path)  # e.g. a restarted plugin took over the path
        async with serving(path) as new:
            old.close()
            assert await exists(path)
            async with push_peer(path) as push:
                await in_thread(send_all, push, [b"to the new one"])
                assert await new.receive_batch() == [b"to the new one"]


async def test_run_before_listen_is_an_error(path: str) -> None:
    with pytest.raises(RuntimeError, match="listen"):
        await PullListener(path).run()


async def test_cancelled_receive_batch_loses_no_message(path: str) -> None:
    with trio.fail_after(DEADLINE):
        async with serving(path) as listener, push_peer(path) as push:
            async with trio.open_nursery() as nursery:
                scope = trio.CancelScope()

                async def waiting_sink() -> None:
                    with scope:
                        await listener.receive_batch()
                        pytest.fail("receive_batch returned without a message")

                nursery.start_soon(waiting_sink)
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
            assert scope.cancelled_caught

            await in_thread(send_all, push, [b"after the cancel"])
            assert await listener.receive_batch() == [b"after the cancel"]


async def test_receive_batch_cancelled_on_entry_takes_nothing(path: str) -> None:
    messages = [b"m%d" % n for n in range(3)]
    with trio.fail_after(DEADLINE):
        async with serving(path) as listener, push_peer(path) as push:
            await in_thread(send_all, push, messages)
            for _ in range(3):
                with trio.CancelScope() as scope:
                    scope.cancel()
                    await listener.receive_batch()
                    pytest.fail("receive_batch ignored a pending cancellation")
                await trio.sleep(0.01)  # let the messages in
            assert await collect(listener, len(messages)) == messages


async def test_blocking_receiver_every_message_in_order_then_closed(path: str) -> None:
    messages = mixed_messages(1500)
    with trio.fail_after(DEADLINE):
        async with serving(path) as listener, push_peer(path) as push:
            receiver = BlockingReceiver(listener)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(receiver.pump)
                    nursery.start_soon(in_thread, send_all, push, messages)
                    got = await in_thread(lambda: [receiver.recv() for _ in messages])
                    assert got == messages
                    receiver.close()
                    with pytest.raises(pynng.Closed):
                        await in_thread(receiver.recv)
                    # the pump ended with the listener: the nursery exits
                assert listener.closed
            finally:
                receiver.close()


async def test_blocking_receiver_wakes_a_waiting_thread_on_close(path: str) -> None:
    with trio.fail_after(DEADLINE):
        async with serving(path) as listener:
            receiver = BlockingReceiver(listener)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(receiver.pump)

                    async def blocked_thread() -> None:
                        with pytest.raises(pynng.Closed):
                            await in_thread(receiver.recv)

                    nursery.start_soon(blocked_thread)
                    await trio.sleep(0.05)  # let the thread reach recv (either way it must wake)
                    listener.close()  # the pump sees it and closes the receiver
            finally:
                receiver.close()


async def test_blocking_receiver_drains_before_raising_closed(path: str) -> None:
    messages = [b"q%d" % n for n in range(10)]
    with trio.fail_after(DEADLINE):
        async with serving(path) as listener, push_peer(path) as push:
            receiver = BlockingReceiver(listener)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(receiver.pump)
                    await in_thread(send_all, push, messages)
                    await eventually(lambda: len(receiver._items) == len(messages))
                    receiver.close()

                def drain() -> list[bytes]:
                    got = []
                    with contextlib.suppress(pynng.Closed):
                        while True:
                            got.append(receiver.recv())
                    return got

                assert await in_thread(drain) == messages
            finally:
                receiver.close()


async def test_blocking_receiver_pump_pauses_at_backlog_and_resumes(path: str) -> None:
    size = 4096
    count = 6 * BACKLOG  # > 3 * BACKLOG, and more than both deques can hold
    messages = [b"%06d" % n + b"s" * (size - 6) for n in range(count)]
    per_read = RECV_SIZE // (FRAME_PREFIX + size) + 1
    go = threading.Event()

    def slow_consumer() -> list[bytes]:
        go.wait(DEADLINE)
        return [receiver.recv() for _ in messages]

    with trio.fail_after(DEADLINE):
        async with serving(path) as listener, push_peer(path) as push:
            receiver = BlockingReceiver(listener)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(receiver.pump)
                    nursery.start_soon(in_thread, send_all, push, messages)
                    await eventually(lambda: receiver._room is not None)  # the pump waits
                    assert BACKLOG <= len(receiver._items) < 2 * BACKLOG + per_read
                    assert len(receiver._items) + len(listener._items) < count
                    go.set()
                    got = await in_thread(slow_consumer)
                    assert receiver._room is None
                    receiver.close()
            finally:
                go.set()
                receiver.close()
    assert got == messages


async def test_running_out_of_fds_pauses_accepting_and_loses_no_peer(
    path: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_pull_listener, "ACCEPT_RETRY", 0.01)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with trio.fail_after(DEADLINE):
        async with serving(path) as listener:
            raw = await raw_connect(path)  # its accept is the one to fail
            try:
                await raw.send(PUSH_HEADER + frame(b"one"))
                assert await collect(listener, 1) == [b"one"]
                second = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                lowest_free = os.dup(0)  # a new fd takes the lowest free number
                os.close(lowest_free)
                resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # none left
                try:
                    await second.connect(path)  # the kernel queues it; accept() gets EMFILE
                    await eventually(lambda: "cannot accept" in caplog.text)
                finally:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
                with second:
                    await second.send(PUSH_HEADER + frame(b"two"))
                    assert await collect(listener, 1) == [b"two"]  # accepted once fds are back
                await raw.send(frame(b"three"))  # the first peer was kept all along
                assert await collect(listener, 1) == [b"three"]
            finally:
                raw.close()
