"""The Trio shell: one TCP connection to one RPC program, many calls in flight on it.

Shape (per ``RPCClient``):

- callers encode their call, register it in the xid table, then send the whole record under
  one lock (``sendmsg`` of header + payload views: the payload is never copied).  A small call
  finding the lock free is sent at once, without waiting (if the kernel takes only part of it,
  the caller holds the lock until the rest is out).  A send that fails or is cancelled part-way
  marks the connection broken: half a record is never followed by another record;
- one reader task per connection receives records (``recv_into`` a scratch buffer, or straight
  into the record being assembled for large fragments) and wakes the caller that owns the xid
  (a direct reschedule of the parked task, no Event); a reply nobody waits for any more
  (cancelled or timed-out call) is dropped;
- one manager task owns the connection's life: when the connection drops it reconnects
  according to ``autoreconnect`` and retransmits every call still waiting, with its same xid
  and bytes (the server's duplicate request cache then answers non-idempotent calls once).

Timeouts (``timeo`` seconds per attempt; ``retrans`` retransmissions of the same xid; then
``RPCTimeoutError``) are per call and never break the connection for the others.  One timer
task watches the reply deadlines of all waiting calls (a cancel scope per call cost more than
the rest of a small call's bookkeeping); a call that has to wait to be sent (lock busy, no
connection, socket full) waits under a cancel scope with the same deadline.
"""

from __future__ import annotations

import enum
import errno
import heapq
import logging
import math
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Final

import trio

from ._errors import RemoteProtocolError, RPCTimeoutError
from ._payload_sink import WOULD_BLOCK, PayloadSink, Splicer
from ._rpc import (
    LAST_FRAGMENT,
    NEED_DATA,
    CallEncoder,
    RecordReceiver,
    XidAllocator,
    decode_reply,
    frame_record,
    peek_xid,
)
from ._rpcconn import Conn, RPCOptions as RPCOptions, open_connection
from ._xdr import Buffer, Unpacker

logger = logging.getLogger("trionfs.rpc")

_SCRATCH_SIZE: Final = 128 * 1024
_HEAD_READ: Final = 512
"""Read size while replies are being spliced: a READ reply's head is ~130 bytes."""
_IOV_MAX: Final = 512
_JOIN_LIMIT: Final = 64 * 1024
_U32 = struct.Struct(">I")
_RECONNECT_DELAY_MIN: Final = 0.05
_RECONNECT_DELAY_MAX: Final = 5.0
_NOTHING_SENT: Final = memoryview(b"")


def _sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    while len(group.exceptions) == 1:
        inner = group.exceptions[0]
        if not isinstance(inner, BaseExceptionGroup):
            return inner
        group = inner
    return None


def _truncated() -> trio.BrokenResourceError:
    # A connection loss like any other (the server may have restarted mid-reply): the call is
    # retransmitted after reconnecting, or fails with this as the cause.
    return trio.BrokenResourceError("connection closed in the middle of a reply")


class _Default(enum.Enum):
    TOKEN = 0


class _Call:
    __slots__ = ("borrowed", "done", "error", "frames", "record", "sending_on", "sent_gen",
                 "sink", "waiter", "xid")  # fmt: skip

    def __init__(self, xid: int, frames: list[Buffer], borrowed: bool) -> None:
        self.sink: PayloadSink | None = None
        self.xid = xid
        self.frames = frames
        self.borrowed = borrowed  # frames are views of the caller's buffers
        self.sending_on: Conn | None = None  # set while some task is sending the frames
        self.sent_gen = -1
        # Finished (reply or error).  The caller parks itself (``waiter``) and whoever
        # finishes the call or finds it timed out reschedules it: cheaper than a trio.Event.
        self.done = False
        self.waiter: trio.lowlevel.Task | None = None
        self.record: memoryview | None = None
        self.error: BaseException | None = None

    def wake(self) -> None:
        task, self.waiter = self.waiter, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    def finish(self) -> None:
        self.done = True
        self.wake()


def _abort_wait(call: _Call) -> Callable[[object], trio.lowlevel.Abort]:
    def abort(_: object) -> trio.lowlevel.Abort:
        call.waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    return abort


class RPCClient:
    """Calls to one program/version over one TCP connection.  Create with ``connect``."""

    def __init__(
        self, host: str, port: int, prog: int, vers: int, options: RPCOptions | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.prog = prog
        self.vers = vers
        self.options = options if options is not None else RPCOptions()
        self._encoder = CallEncoder(prog, vers, self.options.auth)
        self._xids = XidAllocator()
        self._pending: dict[int, _Call] = {}
        self._sinks = 0  # waiting calls whose reply data is spliced to a file
        self._send_lock = trio.StrictFIFOLock()
        self._conn: Conn | None = None
        self._gen = 0
        self._connected = trio.Event()
        self._closed = False
        self._failure: BaseException | None = None
        self._manager_scope: trio.CancelScope | None = None
        self._tasks: trio.Nursery | None = None
        # Reply deadlines of waiting calls, watched by one timer task (a cancel scope per
        # call costs more than the rest of a small call's bookkeeping).  Entries of calls
        # that finished are dropped lazily.
        self._deadlines: list[tuple[float, int, _Call]] = []
        self._deadline_seq = 0
        self._timer_scope: trio.CancelScope | None = None
        self.reconnects = 0
        """How many times the connection was re-established (for tests and metrics)."""

    # -- life cycle -----------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, host: str, port: int, prog: int, vers: int, options: RPCOptions | None = None
    ) -> AsyncIterator[RPCClient]:
        """Connect (the first attempt's failure is raised as ``OSError``), run the reader in
        a nursery of our own, and close everything on exit."""
        client = cls(host, port, prog, vers, options)
        conn = await client._open_socket()
        try:
            async with trio.open_nursery() as nursery:
                client._install(conn)
                client._manager_scope = await nursery.start(client._background, conn)
                try:
                    yield client
                finally:
                    await client.aclose()
        except BaseExceptionGroup as group:
            # Our background tasks do not raise, so a group holds the body's one exception:
            # hand it back as is so ``except FileNotFoundError`` around the block works.
            exc = _sole_exception(group)
            if exc is None:
                raise
            cause, context = exc.__cause__, exc.__context__
            try:
                raise exc
            finally:
                exc.__cause__, exc.__context__ = cause, context
                del exc

    async def aclose(self) -> None:
        """Close the connection; calls still waiting get ``trio.ClosedResourceError``."""
        if not self._closed:
            self._closed = True
            if self._manager_scope is not None:
                self._manager_scope.cancel()
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._fail_pending(trio.ClosedResourceError("the RPC client was closed"))
            self._connected.set()  # wake anyone waiting to send; they will see _closed
        await trio.lowlevel.checkpoint()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def connected(self) -> bool:
        return self._conn is not None

    # -- calls ----------------------------------------------------------------------------

    async def call(
        self,
        proc: int,
        args: Buffer | Sequence[Buffer] = b"",
        *,
        timeo: float | _Default | None = _Default.TOKEN,
        sink: PayloadSink | None = None,
    ) -> Unpacker:
        """Call ``proc`` with XDR-encoded ``args`` (one buffer, or pieces that are sent in
        order without being joined); return an ``Unpacker`` at the start of the results.
        With ``sink``, the reply's data may be spliced into a local file instead of the reply
        (see ``_payload_sink``: the data bytes of the reply are then partly not valid).

        Raises an ``RPCError`` subclass if the server refused the call, ``RPCTimeoutError``
        after ``retrans`` retransmissions without a reply, ``RemoteProtocolError`` for a
        malformed reply, ``trio.BrokenResourceError`` when the connection is lost for good,
        ``trio.ClosedResourceError`` after ``aclose``.  Buffers in ``args`` must not change
        until the call returns.  ``timeo`` overrides the per-attempt timeout for this call.
        """
        self._check_usable()
        xid = self._xids.allocate()
        while xid in self._pending:
            xid = self._xids.allocate()
        head = self._encoder.header(xid, proc)
        if isinstance(args, bytes | bytearray | memoryview):
            pieces: list[Buffer] = [head, args]
        else:
            pieces = [head, *args]
        total = 0
        for p in pieces:
            total += p.nbytes if isinstance(p, memoryview) else len(p)
        if total <= _JOIN_LIMIT and total <= self.options.max_fragment:
            # Small calls: one buffer, one syscall; joining is cheaper than scatter/gather.
            frames: list[Buffer] = [b"".join([_U32.pack(LAST_FRAGMENT | total), *pieces])]
            call = _Call(xid, frames, borrowed=False)
        else:
            call = _Call(xid, frame_record(pieces, self.options.max_fragment), borrowed=True)
        self._pending[xid] = call
        if sink is not None:
            call.sink = sink
            self._sinks += 1
        limit = self.options.timeo if isinstance(timeo, _Default) else timeo
        each = math.inf if limit is None else limit
        try:
            for attempt in range(self.options.retrans + 1):
                deadline = trio.current_time() + each
                rest = self._send_nowait(call)
                if rest is None:
                    # The common case: the record went out without waiting; only the reply
                    # is awaited, under the timer task's watch.
                    await self._wait_reply(call, deadline)
                else:
                    with trio.move_on_at(deadline):
                        if rest:
                            await self._finish_send(call, rest)
                        await self._transmit(call)
                        await self._wait_reply(call, math.inf)
                if call.done:
                    break
                logger.debug("xid %#x: no reply after %ss (attempt %d)", xid, limit, attempt + 1)
                call.sent_gen = -1  # retransmit, same xid
            else:
                raise RPCTimeoutError(
                    f"no reply from {self.host}:{self.port} (program {self.prog}, procedure "
                    f"{proc}) after {self.options.retrans + 1} attempt(s) of {limit}s"
                )
        finally:
            self._pending.pop(xid, None)
            if sink is not None:
                self._sinks -= 1
            conn = call.sending_on
            if conn is not None and call.borrowed:
                # Another task (a retransmission after a reconnect) is part-way through
                # sending our buffers and we are leaving (cancelled): the caller may reuse
                # them at once, so the rest of that record must never be sent.
                self._break(conn)
            # The timer may still list this call for a while: let go of the buffers now
            # (a READ reply's pooled buffer is reused only once nothing references it).
            record, call.record, call.frames = call.record, None, []
        if call.error is not None:
            raise call.error
        assert record is not None
        return decode_reply(record)

    def _check_usable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the RPC client was closed")
        if self._failure is not None:
            raise trio.BrokenResourceError(
                f"connection to {self.host}:{self.port} lost"
            ) from self._failure

    def _send_nowait(self, call: _Call) -> memoryview | None:
        """Send a one-frame call now if that needs no waiting (connection up, send lock
        free).  None: the whole record went out.  An empty view: nothing was sent, leave it
        to ``_transmit`` (which may wait).  Else the kernel took part of the record: the
        rest is returned with the send lock held, for ``_finish_send``."""
        conn = self._conn
        if conn is None or len(call.frames) != 1 or self._send_lock.locked():
            return _NOTHING_SENT
        if call.sent_gen == self._gen:
            return None  # already on this connection (retransmitted after a reconnect)
        frame = call.frames[0]
        try:
            n = conn.raw.send(frame)
        except BlockingIOError:
            return _NOTHING_SENT
        except OSError:
            self._break(conn)
            return _NOTHING_SENT
        if n != len(frame):
            self._send_lock.acquire_nowait()  # nothing may come between the two halves
            return memoryview(frame)[n:]
        call.sent_gen = self._gen
        return None

    async def _finish_send(self, call: _Call, rest: memoryview) -> None:
        """Send the rest of a record ``_send_nowait`` started (it holds the send lock)."""
        conn = self._conn
        try:
            if conn is None:
                return  # the connection broke meanwhile: ``_transmit`` sends it again
            call.sending_on = conn
            await self._send_record(conn, [rest], started=True)
            call.sent_gen = self._gen
        except (OSError, trio.ClosedResourceError) as exc:
            logger.debug("send failed, waiting for a new connection: %r", exc)
        finally:
            call.sending_on = None
            self._send_lock.release()

    async def _wait_reply(self, call: _Call, deadline: float) -> None:
        """Park until the call is finished or ``deadline`` passes (inf: no timer)."""
        if call.done:
            await trio.lowlevel.checkpoint()
            return
        if deadline != math.inf:
            self._watch(deadline, call)
        call.waiter = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(_abort_wait(call))

    def _watch(self, deadline: float, call: _Call) -> None:
        heap = self._deadlines
        if len(heap) > 2 * len(self._pending) + 64:
            # Drop entries of finished calls (amortized: only when most are stale).
            heap[:] = [e for e in heap if not e[2].done]
            heapq.heapify(heap)
        self._deadline_seq += 1
        heapq.heappush(heap, (deadline, self._deadline_seq, call))
        scope = self._timer_scope
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline

    async def _timer(self) -> None:
        """Wake every waiting call whose reply deadline passed (it then retransmits or
        raises ``RPCTimeoutError``)."""
        heap = self._deadlines
        while True:
            now = trio.current_time()
            while heap and (heap[0][0] <= now or heap[0][2].done):
                _, _, call = heapq.heappop(heap)
                if not call.done:
                    call.wake()
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()

    async def _transmit(self, call: _Call) -> None:
        """Send the call on the current connection unless it already went out on it."""
        while not call.done:
            conn = self._conn
            if conn is None:
                self._check_usable()
                await self._connected.wait()
                continue
            # acquire_nowait first: ``async with lock`` would cost a scheduler round per call.
            lock = self._send_lock
            try:
                lock.acquire_nowait()
            except trio.WouldBlock:
                await lock.acquire()
            try:
                if self._conn is not conn:
                    continue  # the connection changed while we queued
                if call.sent_gen != self._gen:
                    try:
                        await self._send_call(conn, call)
                    except (OSError, trio.ClosedResourceError) as exc:
                        logger.debug("send failed, waiting for a new connection: %r", exc)
                        continue
                    call.sent_gen = self._gen
            finally:
                lock.release()
            return
        await trio.lowlevel.checkpoint()

    async def _send_call(self, conn: Conn, call: _Call) -> None:
        call.sending_on = conn
        try:
            await self._send_record(conn, call.frames)
        finally:
            call.sending_on = None

    async def _send_record(
        self, conn: Conn, frames: Sequence[Buffer], *, started: bool = False
    ) -> None:
        """Send a whole record (call with the lock held; ``started``: its first bytes are
        already out).  If anything goes wrong after the first byte, the connection is
        broken and the exception propagates.  Does not checkpoint when the kernel takes
        everything at once (callers checkpoint after)."""
        views = [memoryview(f).cast("B") for f in frames]
        raw = conn.raw
        sent_any = started
        try:
            while views:
                try:
                    n = raw.sendmsg(views[:_IOV_MAX])
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(raw)
                    continue
                sent_any = True
                while n:
                    first = views[0]
                    if n >= first.nbytes:
                        n -= first.nbytes
                        views.pop(0)
                    else:
                        views[0] = first[n:]
                        n = 0
                while views and not views[0].nbytes:
                    views.pop(0)
        except BaseException as exc:
            # A cancellation before the first byte leaves the stream clean; anything else
            # leaves half a record (or a dead socket) behind.
            if sent_any or not isinstance(exc, trio.Cancelled):
                self._break(conn)
            raise

    def _break(self, conn: Conn) -> None:
        """Mark ``conn`` unusable: the reader wakes with ClosedResourceError and the manager
        reconnects."""
        if self._conn is conn:
            self._conn = None
            self._connected = trio.Event()
        conn.close()

    def _fail_pending(self, exc: BaseException) -> None:
        for call in list(self._pending.values()):
            if not call.done:
                call.error = exc
                call.finish()

    # -- connection management ------------------------------------------------------------

    def _install(self, conn: Conn) -> None:
        self._conn = conn
        self._gen += 1
        self._connected.set()

    async def _background(
        self,
        conn: Conn,
        *,
        task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The client's own tasks, under a scope that ``aclose`` cancels (never the caller's)."""
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as tasks:
                self._tasks = tasks
                tasks.start_soon(self._timer)
                task_status.started(scope)
                await self._manage(conn)

    async def _manage(self, conn: Conn) -> None:
        while True:
            try:
                await self._reader(conn)
                cause: BaseException = ConnectionResetError(
                    errno.ECONNRESET, "the server closed the connection"
                )
            except RemoteProtocolError as exc:
                # Framing or routing is lost: no way to tell which reply is whose.
                logger.warning("malformed reply from %s:%s: %s", self.host, self.port, exc)
                self._break(conn)
                self._give_up(exc)
                return
            except (OSError, trio.ClosedResourceError, trio.BrokenResourceError) as exc:
                cause = exc
            self._break(conn)
            if self._closed:
                return
            logger.info("connection to %s:%s lost: %r", self.host, self.port, cause)
            new = await self._reconnect(cause)
            if new is None:
                return
            conn = new
            self.reconnects += 1
            self._install(conn)
            assert self._tasks is not None
            self._tasks.start_soon(self._resend_pending, conn)

    def _give_up(self, cause: BaseException) -> None:
        self._failure = cause
        if isinstance(cause, RemoteProtocolError):
            self._fail_pending(cause)
        else:
            broken = trio.BrokenResourceError(f"connection to {self.host}:{self.port} lost")
            broken.__cause__ = cause
            self._fail_pending(broken)
        self._connected.set()  # wake senders: they see _failure

    async def _reconnect(self, cause: BaseException) -> Conn | None:
        policy = self.options.autoreconnect
        attempt = 0
        delay = _RECONNECT_DELAY_MIN
        while policy < 0 or attempt < policy:
            attempt += 1
            try:
                return await self._open_socket()
            except OSError as exc:
                cause = exc
                logger.info("reconnect %d to %s:%s failed: %r", attempt, self.host, self.port, exc)
            await trio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_DELAY_MAX)
        self._give_up(cause)
        return None

    async def _resend_pending(self, conn: Conn) -> None:
        """After a reconnect: retransmit every call that has not gone out on this connection."""
        calls = [c for c in self._pending.values() if c.sent_gen != self._gen]
        for call in calls:
            async with self._send_lock:
                if self._conn is not conn:
                    return
                if call.done or call.sent_gen == self._gen:
                    continue
                if self._pending.get(call.xid) is not call:
                    continue
                try:
                    await self._send_call(conn, call)
                except (OSError, trio.ClosedResourceError):
                    return
                call.sent_gen = self._gen
        await trio.lowlevel.checkpoint()

    async def _reader(self, conn: Conn) -> None:
        receiver = RecordReceiver(self.options.max_record_size)
        scratch = memoryview(bytearray(_SCRATCH_SIZE))
        raw = conn.raw
        splicer = Splicer()
        unyielded = 0
        try:
            while True:
                n = self._splice_step(raw.fileno(), receiver, splicer) if self._sinks else None
                if n == WOULD_BLOCK:
                    unyielded = 0
                    await trio.lowlevel.wait_readable(raw)
                    continue
                if n is None:
                    direct = receiver.direct_buffer()
                    # Replies to splice: read a reply's head alone, not its data with it.
                    buffer = scratch[:_HEAD_READ] if self._sinks else scratch
                    try:
                        if direct is not None:
                            with direct:
                                n = raw.recv_into(direct)
                        else:
                            n = raw.recv_into(buffer)
                    except BlockingIOError:
                        unyielded = 0
                        await trio.lowlevel.wait_readable(raw)
                        continue
                    if n and direct is not None:
                        receiver.direct_filled(n)
                    elif n:
                        receiver.receive_data(buffer[:n])
                elif n:
                    receiver.direct_filled(n)  # those bytes went to a file
                if n == 0:
                    if receiver.in_record:
                        raise _truncated()
                    return
                while True:
                    record = receiver.next_record()
                    if record is NEED_DATA:
                        break
                    assert isinstance(record, memoryview)
                    self._route(record)
                # The woken callers run when we next wait for data; while data keeps streaming
                # in, yield now and then so we never hog the loop.
                unyielded += 1
                if unyielded >= 16:
                    unyielded = 0
                    await trio.lowlevel.checkpoint()
        finally:
            splicer.close()

    def _splice_step(self, sock: int, receiver: RecordReceiver, splicer: Splicer) -> int | None:
        """Splice the next piece of a reply whose data goes to a file (see ``call(sink=)``);
        None when the next bytes are to be read the usual way."""
        head = receiver.record_prefix()
        available = receiver.fragment_left
        if head is None or len(head) < 4 or not available:
            return None
        call = self._pending.get(_U32.unpack_from(head)[0])
        sink = call.sink if call is not None and not call.done else None
        if sink is None:
            return None
        key = (receiver, receiver.serial)
        if sink.record_key != key:  # a new reply (maybe after a retransmission): start over
            sink.record_key, sink.span, sink.spliced = key, None, None
        if sink.span is None:
            span = sink.locate(head)
            if span is None:
                return None
            sink.span = (span[0], span[0] + span[1])
        return splicer.step(sock, sink, len(head), available)

    def _route(self, record: memoryview) -> None:
        xid = peek_xid(record)
        call = self._pending.get(xid)
        if call is None or call.done:
            logger.debug("dropping a reply nobody waits for (xid %#x)", xid)
            return
        call.record = record
        call.finish()

    async def _open_socket(self) -> Conn:
        return await open_connection(self.host, self.port, self.options)
