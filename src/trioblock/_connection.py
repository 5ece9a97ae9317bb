"""One client connection: handshake, then requests served by a small pool of worker tasks.

Everything for a connection lives in one nursery.  A reader task parses requests and hands them
to workers over a channel; workers are started lazily, up to the concurrency the plugin's thread
model allows (one worker keeps requests in order for the serialising models).  Replies go through
one lock, so a reply is never interleaved with another; a failed or cancelled send breaks the
connection rather than leave half a reply on the wire.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from . import _wire as w
from ._events import (
    NEED_DATA,
    Aborted,
    Disconnect,
    ExportRequest,
    HandshakeComplete,
    ListExports,
    ProtocolError,
    RejectedRequest,
    Request,
    StartTLS,
    WriteRequest,
    _NeedData,
)
from ._export import Export, RequestFailed, nbd_errno, transmission_flags
from ._handshake import ExportDetails, ServerHandshake
from ._plugins import _context
from ._plugins._backend import Plugin, PluginConnection, ThreadModel
from ._transmission import (
    ServerTransmission,
    block_status_reply,
    error_reply,
    read_reply_header,
    simple_reply,
)

if TYPE_CHECKING:
    import ssl

log = logging.getLogger("trioblock.server")

RECEIVE_SIZE = 256 * 1024 + 1024
SMALL_REPLY = 64 * 1024  # below this a read reply is joined into one send, above it sent in two


@dataclass
class ServerConfig:
    readonly: bool = False
    tls: str = "off"  # off | on | require
    ssl_context: ssl.SSLContext | None = None
    threads: int = 16  # concurrent requests per connection under PARALLEL
    handshake_timeout: float = 60.0
    structured_replies: bool = True
    shutdown_grace: float = 10.0  # how long in-flight requests may take to finish at shutdown


@dataclass
class SharedLocks:
    """Locks shared by all connections of one server (thread-model serialisation)."""

    connections: trio.Lock = field(default_factory=trio.Lock)
    requests: trio.Lock = field(default_factory=trio.Lock)


class _Broken(Exception):
    """The reply stream failed; the connection is over."""


class Connection:
    def __init__(
        self,
        stream: trio.abc.Stream,
        plugin: Plugin,
        config: ServerConfig,
        locks: SharedLocks,
        *,
        request_shutdown: Callable[[], None] = lambda: None,
        peer: str = "?",
    ) -> None:
        self.stream = stream
        self.plugin = plugin
        self.config = config
        self.locks = locks
        self.peer = peer
        self._request_shutdown = request_shutdown
        self._send_lock = trio.Lock()
        self._reader_scope = trio.CancelScope()
        self._scope = trio.CancelScope()
        self._token = trio.lowlevel.current_trio_token()
        self._stopping = False  # no more requests will be read
        self._flush_on_close = False  # set by a server shutdown: flush before closing
        self.in_transmission = False

    # -- control (thread-safe wrappers are installed into the plugin context) --------------------

    def stop_reading(self, *, flush: bool = False) -> None:
        """Stop taking new requests; in-flight ones finish, then the connection closes."""
        self._stopping = True
        self._flush_on_close = self._flush_on_close or flush
        self._reader_scope.cancel()

    def abort(self) -> None:
        self._scope.cancel()

    def _disconnect_from_plugin(self, force: bool) -> None:
        self._token.run_sync_soon(self.abort if force else self.stop_reading)

    def _shutdown_from_plugin(self) -> None:
        self._token.run_sync_soon(self._request_shutdown)

    # -- the connection's life -----------------------------------------------------------------

    async def run(self) -> None:
        model = self.plugin.thread_model
        with self._scope:
            if model == ThreadModel.SERIALIZE_CONNECTIONS:
                async with self.locks.connections:
                    await self._run()
            else:
                await self._run()

    async def _run(self) -> None:
        ctx = _context.ConnectionContext(
            readonly=self.config.readonly,
            request_shutdown=self._shutdown_from_plugin,
            request_disconnect=self._disconnect_from_plugin,
        )
        _context.current.set(ctx)
        try:
            await self.plugin.preconnect(self.config.readonly)
        except Exception as exc:
            log.info("%s: preconnect refused the client: %s", self.peer, exc)
            return
        hs = ServerHandshake(tls=self.config.tls, structured_replies=self.config.structured_replies)
        export: Export | None = None
        try:
            with trio.move_on_after(self.config.handshake_timeout) as timeout:
                done, export = await self._handshake(hs, ctx)
            if timeout.cancelled_caught:
                log.info("%s: handshake timed out", self.peer)
                return
            if done is None or export is None:
                return
            await self._transmission(hs, done, export)
        except ProtocolError as exc:
            log.info("%s: %s", self.peer, exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError, _Broken) as exc:
            log.debug("%s: connection lost: %s", self.peer, exc)
        finally:
            if export is not None:
                await _close_quietly(
                    export.conn, flush=export.info.can_flush and self._flush_on_close
                )
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self.stream.aclose()

    async def _send(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise _Broken(str(exc)) from exc

    async def _receive(self) -> bytes | bytearray:
        try:
            return await self.stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, OSError) as exc:
            raise _Broken(str(exc)) from exc

    # -- handshake -----------------------------------------------------------------------------

    async def _handshake(
        self, hs: ServerHandshake, ctx: _context.ConnectionContext
    ) -> tuple[HandshakeComplete | None, Export | None]:
        export: Export | None = None
        try:
            while True:
                event = hs.next_event()
                await self._send(hs.data_to_send())
                if event is NEED_DATA:
                    hs.receive_data(await self._receive())
                elif isinstance(event, ListExports):
                    await self._list(hs)
                elif isinstance(event, ExportRequest):
                    if export is not None:  # an earlier GO cannot have happened; INFO closes
                        raise AssertionError("export already open")
                    export = await self._open(hs, event, ctx)
                elif isinstance(event, StartTLS):
                    await self._start_tls(hs, ctx)
                elif isinstance(event, Aborted):
                    return None, None
                elif isinstance(event, HandshakeComplete):
                    await self._send(hs.data_to_send())
                    return event, export
        except BaseException:
            if export is not None:
                await _close_quietly(export.conn, flush=False)
            raise

    async def _list(self, hs: ServerHandshake) -> None:
        try:
            exports = await self.plugin.list_exports(self.config.readonly, hs.tls_active)
        except Exception as exc:
            log.warning("%s: list_exports failed: %s", self.peer, exc)
            hs.reply_error(w.Rep.ERR_UNKNOWN, "could not list exports")
        else:
            hs.reply_exports([(name, desc) for name, desc in exports])

    async def _open(
        self, hs: ServerHandshake, request: ExportRequest, ctx: _context.ConnectionContext
    ) -> Export | None:
        readonly = self.config.readonly
        conn: PluginConnection | None = None
        try:
            name = request.name
            if name == "":
                name = await self.plugin.default_export(readonly, hs.tls_active)
            ctx.export_name = name
            conn = await self.plugin.open(readonly, name, hs.tls_active)
            info = await conn.info()
        except Exception as exc:
            if conn is not None:
                await _close_quietly(conn, flush=False)
            log.info("%s: cannot open export %r: %s", self.peer, request.name, exc)
            hs.reply_error(w.Rep.ERR_UNKNOWN, f"cannot open export: {exc}")
            return None
        tflags = transmission_flags(info, readonly=readonly, thread_model=self.plugin.thread_model)
        hs.reply_export(
            ExportDetails(info.size, tflags, request.name, info.description, info.block_size)
        )
        if request.kind == "info":
            await _close_quietly(conn, flush=False)
            return None
        return Export(conn, info)

    async def _start_tls(self, hs: ServerHandshake, ctx: _context.ConnectionContext) -> None:
        context = self.config.ssl_context
        if context is None:
            raise AssertionError("TLS enabled without a context")
        tls = trio.SSLStream(self.stream, context, server_side=True)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError as exc:
            raise _Broken(f"TLS handshake failed: {exc.__cause__ or exc}") from exc
        self.stream = tls
        hs.tls_established()
        ctx.is_tls = True

    # -- transmission --------------------------------------------------------------------------

    async def _transmission(
        self, hs: ServerHandshake, done: HandshakeComplete, export: Export
    ) -> None:
        tflags = transmission_flags(
            export.info, readonly=self.config.readonly, thread_model=self.plugin.thread_model
        )
        tx = ServerTransmission(
            size=export.info.size,
            tflags=tflags | w.TFlag.HAS_FLAGS | (w.TFlag.SEND_DF if done.structured_replies else 0),
            structured_replies=done.structured_replies,
            base_allocation=done.base_allocation,
        )
        trailing = hs.trailing_data()
        if trailing:
            tx.receive_data(trailing)
        model = self.plugin.thread_model
        max_workers = max(1, self.config.threads) if model == ThreadModel.PARALLEL else 1
        serialize_all = model <= ThreadModel.SERIALIZE_ALL_REQUESTS
        self.in_transmission = True
        send, receive = trio.open_memory_channel[Request | WriteRequest](0)
        pool = _WorkerPool(
            self, export, receive, max_workers, serialize_all, done.structured_replies
        )
        async with trio.open_nursery() as nursery:
            pool.nursery = nursery
            async with send:
                with self._reader_scope:
                    await self._read_requests(tx, send, pool)
            # The channel is closed: workers finish what they hold, then the nursery ends.

    async def _read_requests(
        self,
        tx: ServerTransmission,
        send: trio.MemorySendChannel[Request | WriteRequest],
        pool: _WorkerPool,
    ) -> None:
        structured = tx.structured_replies
        while True:
            event = tx.next_event()
            if isinstance(event, _NeedData):
                data = await self._receive()
                if not data:
                    log.debug("%s: client closed without NBD_CMD_DISC", self.peer)
                    self._stopping = True
                    return
                tx.receive_data(data)
            elif isinstance(event, RejectedRequest):
                log.debug("%s: refused request: %s", self.peer, event.reason)
                async with self._send_lock:
                    await self._send(
                        error_reply(event.cookie, event.command, event.error, structured)
                    )
            elif isinstance(event, Disconnect):
                self._stopping = True
                return
            else:
                pool.ensure_worker()
                await send.send(event)

    async def reply(self, *parts: bytes | bytearray | memoryview) -> None:
        async with self._send_lock:
            for part in parts:
                await self._send(part)


class _WorkerPool:
    def __init__(
        self,
        conn: Connection,
        export: Export,
        receive: trio.MemoryReceiveChannel[Request | WriteRequest],
        max_workers: int,
        serialize_all: bool,
        structured: bool,
    ) -> None:
        self.conn = conn
        self.export = export
        self.receive = receive
        self.max_workers = max_workers
        self.serialize_all = serialize_all
        self.structured = structured
        self.workers = 0
        self.idle = 0
        self.nursery: trio.Nursery | None = None

    def ensure_worker(self) -> None:
        if self.idle == 0 and self.workers < self.max_workers and self.nursery is not None:
            self.workers += 1
            self.nursery.start_soon(self._worker, self.receive.clone())

    async def _worker(self, receive: trio.MemoryReceiveChannel[Request | WriteRequest]) -> None:
        async with receive:
            while True:
                self.idle += 1
                try:
                    request = await receive.receive()
                except trio.EndOfChannel:
                    return
                finally:
                    self.idle -= 1
                if self.serialize_all:
                    async with self.conn.locks.requests:
                        await self._execute(request)
                else:
                    await self._execute(request)

    async def _execute(self, req: Request | WriteRequest) -> None:
        cookie = req.cookie
        command = w.Cmd.WRITE if isinstance(req, WriteRequest) else req.command
        ex = self.export
        fua = bool(req.flags & w.CmdFlag.FUA)
        try:
            if isinstance(req, WriteRequest):
                await ex.write(req.data, req.offset, fua)
            elif command == w.Cmd.READ:
                data = await ex.read(req.offset, req.length)
                head = read_reply_header(cookie, req.offset, req.length, self.structured)
                if len(data) <= SMALL_REPLY:
                    await self.conn.reply(head + data)
                else:
                    await self.conn.reply(head, data)
                return
            elif command == w.Cmd.FLUSH:
                await ex.flush()
            elif command == w.Cmd.TRIM:
                await ex.trim(req.offset, req.length, fua)
            elif command == w.Cmd.CACHE:
                await ex.cache(req.offset, req.length)
            elif command == w.Cmd.WRITE_ZEROES:
                await ex.zero(
                    req.offset,
                    req.length,
                    may_trim=not req.flags & w.CmdFlag.NO_HOLE,
                    fast=bool(req.flags & w.CmdFlag.FAST_ZERO),
                    fua=fua,
                )
            elif command == w.Cmd.BLOCK_STATUS:
                extents = await ex.block_status(
                    req.offset, req.length, bool(req.flags & w.CmdFlag.REQ_ONE)
                )
                await self.conn.reply(block_status_reply(cookie, w.BASE_ALLOCATION_ID, extents))
                return
        except RequestFailed as exc:
            log.debug("%s: %s failed: %s", self.conn.peer, w.Cmd(command).name, exc)
            await self.conn.reply(error_reply(cookie, command, exc.nbd_error, self.structured))
            return
        except OSError as exc:
            fast = bool(req.flags & w.CmdFlag.FAST_ZERO)
            df = bool(req.flags & w.CmdFlag.DF)
            err = nbd_errno(exc.errno, fast_zero=fast, df=df)
            log.debug("%s: %s failed: %s", self.conn.peer, w.Cmd(command).name, exc)
            await self.conn.reply(error_reply(cookie, command, err, self.structured))
            return
        except Exception:
            log.exception("%s: %s raised", self.conn.peer, w.Cmd(command).name)
            await self.conn.reply(error_reply(cookie, command, w.EIO, self.structured))
            return
        await self.conn.reply(simple_reply(cookie))


async def _close_quietly(conn: PluginConnection, *, flush: bool) -> None:
    """Flush (at a clean shutdown) and close a plugin handle, even while being cancelled."""
    with trio.CancelScope(shield=True), trio.move_on_after(30):
        if flush:
            try:
                await conn.flush(0)
            except Exception as exc:
                log.warning("flush at close failed: %s", exc)
        try:
            await conn.close()
        except Exception:
            log.exception("plugin close raised")
