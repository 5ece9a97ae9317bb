"""An in-process ONC-RPC server over real TCP whose every reply the test scripts: reordered,
delayed, truncated, garbage, dropped connections, any accept/reject status."""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from trionfs._rpc import NEED_DATA, RecordReceiver, frame_record
from trionfs._xdr import Unpacker


@dataclass
class ReceivedCall:
    conn: FakeConn
    xid: int
    prog: int
    vers: int
    proc: int
    cred_flavor: int
    cred_body: bytes
    args: bytes

    async def reply(self, body: bytes = b"", accept: int = 0) -> None:
        await self.conn.reply(self.xid, body, accept)


class FakeConn:
    def __init__(self, stream: trio.SocketStream, index: int) -> None:
        self.stream = stream
        self.index = index
        self.peer_port: int = stream.socket.getpeername()[1]
        self.closed = False
        self.read_gate = trio.Event()
        self.read_gate.set()

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def reply(
        self, xid: int, body: bytes = b"", accept: int = 0, max_fragment: int = 0x7FFFFFFF
    ) -> None:
        record = struct.pack(">IIIIII", xid, 1, 0, 0, 0, accept) + body
        await self.send_raw(b"".join(bytes(f) for f in frame_record([record], max_fragment)))

    async def close(self) -> None:
        self.closed = True
        await self.stream.aclose()


Handler = Callable[[ReceivedCall], Awaitable[None]]


async def echo(call: ReceivedCall) -> None:
    """Default behaviour: SUCCESS with the arguments as the results."""
    await call.reply(call.args)


@dataclass
class FakeRPCServer:
    handler: Handler = echo
    calls: list[ReceivedCall] = field(default_factory=list)
    connections: list[FakeConn] = field(default_factory=list)
    port: int = 0
    received_records: list[bytes] = field(default_factory=list)
    # When set, connections accepted from now on read nothing until it is set.
    new_connection_gate: trio.Event | None = None
    _listeners: list[trio.SocketListener] = field(default_factory=list)
    _new_call: trio.Event = field(default_factory=trio.Event)
    _new_connection: trio.Event = field(default_factory=trio.Event)

    async def run(self, *, task_status: trio.TaskStatus[FakeRPCServer]) -> None:
        self._listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = self._listeners[0].socket.getsockname()[1]
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(self)
                listener = self._listeners[0]
                while True:
                    try:
                        stream = await listener.accept()
                    except trio.ClosedResourceError:
                        return  # stop_listening(): new connections are refused from now on
                    nursery.start_soon(self._serve, stream)
        finally:
            for listener in self._listeners:
                listener.socket.close()

    async def stop_listening(self) -> None:
        for listener in self._listeners:
            await listener.aclose()

    async def wait_for_calls(self, n: int) -> list[ReceivedCall]:
        while len(self.calls) < n:
            self._new_call = trio.Event()
            await self._new_call.wait()
        return self.calls[:n]

    async def wait_for_connections(self, n: int) -> None:
        while len(self.connections) < n:
            self._new_connection = trio.Event()
            await self._new_connection.wait()

    async def _serve(self, stream: trio.SocketStream) -> None:
        conn = FakeConn(stream, len(self.connections))
        if self.new_connection_gate is not None:
            conn.read_gate = self.new_connection_gate
        self.connections.append(conn)
        self._new_connection.set()
        receiver = RecordReceiver(max_record_size=256 * 1024 * 1024)
        try:
            while not conn.closed:
                await conn.read_gate.wait()
                data = await stream.receive_some(1 << 20)
                if not data:
                    return
                receiver.receive_data(data)
                while (record := receiver.next_record()) is not NEED_DATA:
                    assert isinstance(record, memoryview)
                    self.received_records.append(bytes(record))
                    call = _parse_call(conn, bytes(record))
                    self.calls.append(call)
                    self._new_call.set()
                    await self.handler(call)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            conn.closed = True
            await stream.aclose()


def _parse_call(conn: FakeConn, record: bytes) -> ReceivedCall:
    u = Unpacker(record)
    xid, mtype, rpcvers, prog, vers, proc = (u.uint32() for _ in range(6))
    assert (mtype, rpcvers) == (0, 2)
    flavor, body = u.uint32(), u.opaque(400)
    u.uint32()
    u.opaque(400)
    return ReceivedCall(conn, xid, prog, vers, proc, flavor, body, bytes(u.rest()))
