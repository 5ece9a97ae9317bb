"""The Trio RPC client against a scripted in-process TCP server."""

from __future__ import annotations

import os
import struct
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio
import trio.testing
from rpcfake import FakeRPCServer, Handler, ReceivedCall, echo

from trionfs._errors import (
    AuthError,
    AuthStat,
    ProcUnavailError,
    ProgMismatchError,
    RemoteProtocolError,
    RPCTimeoutError,
)
from trionfs._rpc import AuthSys
from trionfs._rpcclient import RPCClient, RPCOptions

PROG, VERS = 0x20000099, 1


async def _serve(nursery: trio.Nursery, handler: Handler = echo) -> FakeRPCServer:
    server: FakeRPCServer = await nursery.start(FakeRPCServer(handler).run)
    return server


def _connect(server: FakeRPCServer, **options: Any) -> AbstractAsyncContextManager[RPCClient]:
    return RPCClient.connect("127.0.0.1", server.port, PROG, VERS, RPCOptions(**options))


async def _never_reply(call: ReceivedCall) -> None:
    pass


async def test_call_returns_the_results_of_its_procedure(nursery: trio.Nursery) -> None:
    server = await _serve(nursery)
    async with _connect(server) as client:
        u = await client.call(3, struct.pack(">I", 1234))
        assert u.uint32() == 1234
    assert server.calls[0].proc == 3
    assert (server.calls[0].prog, server.calls[0].vers) == (PROG, VERS)


async def test_pipelined_calls_get_their_own_replies_out_of_order(nursery: trio.Nursery) -> None:
    n = 8
    server = await _serve(nursery, _never_reply)
    results: dict[int, int] = {}
    async with _connect(server) as client:

        async def one(i: int) -> None:
            results[i] = (await client.call(1, struct.pack(">I", i))).uint32()

        async with trio.open_nursery() as calls:
            for i in range(n):
                calls.start_soon(one, i)
            received = await server.wait_for_calls(n)
            # All n are on the wire before any reply: they were pipelined.
            for call in reversed(received):
                await call.reply(call.args)
    assert results == {i: i for i in range(n)}
    assert len({c.xid for c in server.calls}) == n


async def test_timeout_retransmits_the_same_xid_then_raises(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await _serve(nursery, _never_reply)
    async with _connect(server, timeo=2.0, retrans=2) as client:
        start = trio.current_time()
        with pytest.raises(RPCTimeoutError):
            await client.call(1)
        assert trio.current_time() - start == pytest.approx(6.0)
        # The connection is still good for the next call.
        server.handler = echo
        assert (await client.call(2, b"\0\0\0\7", timeo=None)).uint32() == 7
    assert [c.xid for c in server.calls[:3]] == [server.calls[0].xid] * 3
    assert len(server.connections) == 1


async def test_per_call_timeo_overrides_the_default(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await _serve(nursery, _never_reply)
    async with _connect(server, timeo=100.0, retrans=0) as client:
        start = trio.current_time()
        with pytest.raises(TimeoutError):
            await client.call(1, timeo=0.5)
        assert trio.current_time() - start == pytest.approx(0.5)


async def test_dropped_connection_is_reestablished_and_calls_retransmitted_with_same_xid(
    nursery: trio.Nursery,
) -> None:
    async def drop_first_connection(call: ReceivedCall) -> None:
        if call.conn.index == 0:
            await call.conn.close()
        else:
            await call.reply(call.args)

    server = await _serve(nursery, drop_first_connection)
    async with _connect(server) as client:
        assert (await client.call(5, b"\0\0\0\x09")).uint32() == 9
        assert client.reconnects == 1
    first, second = server.calls
    assert first.xid == second.xid
    assert (first.conn.index, second.conn.index) == (0, 1)
    assert first.args == second.args


async def test_all_in_flight_calls_are_retransmitted_after_a_reconnect(
    nursery: trio.Nursery,
) -> None:
    n = 5

    async def gather_then_drop(call: ReceivedCall) -> None:
        if call.conn.index == 0:
            if len(server.calls) == n:
                await call.conn.close()
        else:
            await call.reply(call.args)

    server = await _serve(nursery, gather_then_drop)
    results = {}
    async with _connect(server) as client:

        async def one(i: int) -> None:
            results[i] = (await client.call(1, struct.pack(">I", i))).uint32()

        async with trio.open_nursery() as calls:
            for i in range(n):
                calls.start_soon(one, i)
    assert results == {i: i for i in range(n)}
    first = {c.xid for c in server.calls if c.conn.index == 0}
    second = {c.xid for c in server.calls if c.conn.index == 1}
    assert first == second
    assert len(server.calls) == 2 * n


async def test_autoreconnect_off_fails_pending_calls_with_broken_resource(
    nursery: trio.Nursery,
) -> None:
    async def drop(call: ReceivedCall) -> None:
        await call.conn.close()

    server = await _serve(nursery, drop)
    async with _connect(server, autoreconnect=0) as client:
        with pytest.raises(trio.BrokenResourceError):
            await client.call(1)
        with pytest.raises(trio.BrokenResourceError):
            await client.call(1)
    assert len(server.connections) == 1


async def test_autoreconnect_gives_up_after_n_refused_attempts(nursery: trio.Nursery) -> None:
    async def drop_and_stop(call: ReceivedCall) -> None:
        await server.stop_listening()
        await call.conn.close()

    server = await _serve(nursery, drop_and_stop)
    async with _connect(server, autoreconnect=2) as client:
        with pytest.raises(trio.BrokenResourceError) as info:
            await client.call(1)
        assert isinstance(info.value.__cause__, ConnectionRefusedError)


async def test_truncated_reply_then_eof_is_a_lost_connection(nursery: trio.Nursery) -> None:
    async def truncate(call: ReceivedCall) -> None:
        await call.conn.send_raw(struct.pack(">II", 0x80000000 | 100, call.xid) + b"\0" * 8)
        await call.conn.close()

    server = await _serve(nursery, truncate)
    async with _connect(server, autoreconnect=0) as client:
        with pytest.raises(trio.BrokenResourceError) as info:
            await client.call(1)
        assert "middle of a reply" in str(info.value.__cause__)


async def test_garbage_record_fails_pending_calls_with_protocol_error(
    nursery: trio.Nursery,
) -> None:
    async def garbage(call: ReceivedCall) -> None:
        await call.conn.send_raw(struct.pack(">IIII", 0x80000008, call.xid, 7, 0))

    server = await _serve(nursery, garbage)
    async with _connect(server) as client:
        with pytest.raises(RemoteProtocolError, match="message type"):
            await client.call(1)
        with pytest.raises(trio.BrokenResourceError):
            await client.call(1)


async def test_hostile_record_length_is_refused_before_allocating(nursery: trio.Nursery) -> None:
    async def huge(call: ReceivedCall) -> None:
        await call.conn.send_raw(struct.pack(">I", 0xFFFFFFFF))

    server = await _serve(nursery, huge)
    async with _connect(server, max_record_size=1 << 20) as client:
        with pytest.raises(RemoteProtocolError, match="exceeds"):
            await client.call(1)


async def test_malformed_reply_body_fails_only_that_call(nursery: trio.Nursery) -> None:
    async def first_malformed(call: ReceivedCall) -> None:
        if len(server.calls) == 1:
            # A well-framed record whose accept_stat is missing.
            record = struct.pack(">IIIII", call.xid, 1, 0, 0, 0)
            await call.conn.send_raw(struct.pack(">I", 0x80000000 | len(record)) + record)
        else:
            await call.reply(call.args)

    server = await _serve(nursery, first_malformed)
    async with _connect(server) as client:
        with pytest.raises(RemoteProtocolError, match="truncated"):
            await client.call(1)
        assert (await client.call(1, b"\0\0\0\3")).uint32() == 3
    assert len(server.connections) == 1


@pytest.mark.parametrize(
    ("body", "accept", "exc_type"),
    [
        (struct.pack(">II", 2, 4), 2, ProgMismatchError),
        (b"", 3, ProcUnavailError),
    ],
)
async def test_accept_statuses_surface_as_typed_errors(
    nursery: trio.Nursery, body: bytes, accept: int, exc_type: type[Exception]
) -> None:
    async def refuse(call: ReceivedCall) -> None:
        await call.reply(body, accept)

    server = await _serve(nursery, refuse)
    async with _connect(server) as client:
        with pytest.raises(exc_type):
            await client.call(1)


async def test_auth_error_reaches_the_caller_with_its_reason(nursery: trio.Nursery) -> None:
    async def tooweak(call: ReceivedCall) -> None:
        record = struct.pack(">IIIII", call.xid, 1, 1, 1, AuthStat.TOOWEAK)
        await call.conn.send_raw(struct.pack(">I", 0x80000000 | len(record)) + record)

    server = await _serve(nursery, tooweak)
    async with _connect(server) as client:
        with pytest.raises(AuthError) as info:
            await client.call(1)
    assert info.value.stat is AuthStat.TOOWEAK


async def test_auth_sys_credentials_are_sent_with_every_call(nursery: trio.Nursery) -> None:
    server = await _serve(nursery)
    cred = AuthSys(uid=1000, gid=1000, gids=(10, 20), machinename="client")
    async with _connect(server, auth=cred) as client:
        await client.call(0)
        await client.call(0)
    for call in server.calls:
        assert call.cred_flavor == 1
        assert AuthSys.decode(call.cred_body) == cred


async def test_cancelled_calls_leave_the_others_and_the_connection_working(
    nursery: trio.Nursery,
) -> None:
    server = await _serve(nursery, _never_reply)
    results: dict[int, int] = {}
    async with _connect(server) as client:
        scopes = {i: trio.CancelScope() for i in range(6)}

        async def one(i: int) -> None:
            with scopes[i]:
                results[i] = (await client.call(1, struct.pack(">I", i))).uint32()

        async with trio.open_nursery() as calls:
            for i in range(6):
                calls.start_soon(one, i)
            received = await server.wait_for_calls(6)
            await trio.testing.wait_all_tasks_blocked()
            scopes[1].cancel()
            scopes[4].cancel()
            await trio.testing.wait_all_tasks_blocked()
            for call in received:  # replies to cancelled calls arrive too; they are dropped
                await call.reply(call.args)
        server.handler = echo
        assert (await client.call(1, b"\0\0\0\x63")).uint32() == 99
    assert results == {0: 0, 2: 2, 3: 3, 5: 5}
    assert len(server.connections) == 1


async def test_multi_fragment_and_large_replies_are_reassembled(nursery: trio.Nursery) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 5)

    async def big(call: ReceivedCall) -> None:
        await call.conn.reply(call.xid, payload, max_fragment=1000 * 1000)

    server = await _serve(nursery, big)
    async with _connect(server) as client:
        u = await client.call(1)
        assert bytes(u.rest()) == payload


async def test_large_calls_are_sent_whole_and_in_fragments_when_asked(
    nursery: trio.Nursery,
) -> None:
    payload = os.urandom(2 * 1024 * 1024 + 3)

    async def ack(call: ReceivedCall) -> None:
        await call.reply(struct.pack(">I", len(call.args)))

    server = await _serve(nursery, ack)
    async with _connect(server, max_fragment=65536) as client:
        assert (await client.call(7, [b"head", memoryview(payload)])).uint32() == len(payload) + 4
    assert server.calls[0].args == b"head" + payload


async def test_aclose_fails_waiting_calls_with_closed_resource(nursery: trio.Nursery) -> None:
    server = await _serve(nursery, _never_reply)
    async with _connect(server) as client:
        async with trio.open_nursery() as calls:

            async def waiting() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await client.call(1)

            calls.start_soon(waiting)
            await server.wait_for_calls(1)
            await client.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await client.call(1)


async def test_cancelling_a_blocked_send_breaks_only_that_connection(
    nursery: trio.Nursery,
) -> None:
    server = await _serve(nursery)
    async with _connect(server, timeo=None) as client:
        await client.call(0)
        server.connections[0].read_gate = trio.Event()  # the server stops reading
        with trio.move_on_after(0.5):
            await client.call(1, bytes(64 * 1024 * 1024))  # fills the socket buffers
        server.connections[0].read_gate.set()
        assert (await client.call(2, b"\0\0\0\x05")).uint32() == 5
        assert client.reconnects == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="binding a port below 1024 needs root")
async def test_privileged_source_port_when_asked(nursery: trio.Nursery) -> None:
    server = await _serve(nursery)
    async with _connect(server, privileged_port=True) as client:
        await client.call(0)
    assert server.connections[0].peer_port < 1024


async def test_connect_failure_is_raised_at_once() -> None:
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        async with RPCClient.connect("127.0.0.1", port, PROG, VERS):
            pass  # pragma: no cover


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="retrans"):
        RPCOptions(retrans=-1)
    with pytest.raises(ValueError, match="timeo"):
        RPCOptions(timeo=0)
    with pytest.raises(ValueError, match="autoreconnect"):
        RPCOptions(autoreconnect=-2)


async def test_exceptions_from_the_body_are_not_wrapped_in_groups(nursery: trio.Nursery) -> None:
    server = await _serve(nursery)
    with pytest.raises(FileNotFoundError):
        async with _connect(server):
            raise FileNotFoundError("raised by the caller's code")


async def test_typed_clients_check_program_and_version(nursery: trio.Nursery) -> None:
    from trionfs._clients import NFS3Client, PortmapClient
    from trionfs._errors import LocalProtocolError

    server = await _serve(nursery)
    async with _connect(server) as client:
        with pytest.raises(ValueError, match="program"):
            NFS3Client(client)
    async with PortmapClient.connect("127.0.0.1", server.port) as pmap:
        with pytest.raises(LocalProtocolError, match="version 3 or 4"):
            await pmap.getaddr(100003, 3)
    async with PortmapClient.connect("127.0.0.1", server.port, version=4) as rpcb:
        with pytest.raises(LocalProtocolError, match="version 2"):
            await rpcb.getport(100003, 3)


async def test_nfs_status_from_the_wire_raises_the_matching_oserror(
    nursery: trio.Nursery,
) -> None:
    from trionfs._clients import NFS3Client
    from trionfs._errors import NFSStat3
    from trionfs._nfs3 import Proc, encode_result

    async def noent(call: ReceivedCall) -> None:
        await call.reply(encode_result(Proc.LOOKUP, None, NFSStat3.NOENT))

    server = await _serve(nursery, noent)
    async with NFS3Client.connect("127.0.0.1", server.port) as nfs:
        with pytest.raises(FileNotFoundError) as info:
            await nfs.lookup(b"\1" * 8, "missing")
    assert getattr(info.value, "status", None) is NFSStat3.NOENT
    assert server.calls[0].prog == 100003


async def test_cancelled_caller_stops_a_retransmission_of_its_buffers_midway(
    nursery: trio.Nursery,
) -> None:
    payload = bytearray(32 * 1024 * 1024)  # more than the socket buffers hold

    async def drop_first(call: ReceivedCall) -> None:
        if call.conn.index == 0:
            server.new_connection_gate = trio.Event()  # the next connection stalls
            await call.conn.close()
        else:
            await call.reply(struct.pack(">I", len(call.args)))

    server = await _serve(nursery, drop_first)
    async with _connect(server, timeo=None) as client:
        with trio.CancelScope() as scope:
            nursery.start_soon(_cancel_when_stalled, server, scope)
            await client.call(7, [b"head", payload])
        assert scope.cancelled_caught
        # The caller is gone: its buffer may be reused; the record was cut off, not finished.
        payload[:] = b"\xff" * 16 + payload[16:]
        gate = server.new_connection_gate
        assert gate is not None
        server.new_connection_gate = None
        gate.set()
        assert (await client.call(7, b"\0\0\0\1")).uint32() == 4
    assert [c.conn.index for c in server.calls] == [0, 2]
    assert client.reconnects == 2


async def _cancel_when_stalled(server: FakeRPCServer, scope: trio.CancelScope) -> None:
    await server.wait_for_connections(2)
    # Once everything is idle, the retransmission is blocked part-way through the record.
    await trio.testing.wait_all_tasks_blocked(cushion=0.05)
    scope.cancel()


async def test_small_calls_the_kernel_takes_in_part_are_finished_whole(
    nursery: trio.Nursery,
) -> None:
    server = await _serve(nursery)
    async with _connect(server, timeo=None) as client:
        await client.call(0)
        server.connections[0].read_gate = trio.Event()  # the server stops reading
        finished_in_part = 0
        inner = client._finish_send

        async def counting(*args: Any) -> None:
            nonlocal finished_in_part
            finished_in_part += 1
            await inner(*args)

        client._finish_send = counting  # type: ignore[method-assign, assignment]
        results: dict[int, int] = {}

        async def one(i: int) -> None:
            # 60 000 bytes: one joined frame, sent without waiting when the kernel takes it.
            args = struct.pack(">I", i) + bytes(59_996)
            results[i] = (await client.call(1, args)).uint32()

        async with trio.open_nursery() as calls:
            for i in range(400):  # ~24 MB: more than the loopback socket buffers hold
                calls.start_soon(one, i)
            await trio.testing.wait_all_tasks_blocked()
            server.connections[0].read_gate.set()
        assert results == {i: i for i in range(400)}
        assert finished_in_part >= 1  # the kernel did take a record in part
        assert client.reconnects == 0  # and no record was torn


async def test_deadlines_of_finished_calls_are_not_kept(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await _serve(nursery)
    async with _connect(server, timeo=5.0, retrans=0) as client:
        for i in range(2000):
            assert (await client.call(1, struct.pack(">I", i))).uint32() == i
        # Bounded: stale entries are dropped once they outnumber twice the waiting calls + 64.
        assert len(client._deadlines) <= 2 * 1 + 64 + 1
        server.handler = _never_reply
        start = trio.current_time()
        with pytest.raises(RPCTimeoutError):
            await client.call(1)
        assert trio.current_time() - start == pytest.approx(5.0)
