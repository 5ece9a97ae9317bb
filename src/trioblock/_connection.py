"""One client connection: handshake, then requests served by a small pool of worker tasks.

Everything for a connection lives in one nursery.  A reader task parses requests and hands them
to workers over a channel; workers are started lazily, up to the concurrency the plugin's thread
model allows (one worker keeps requests in order for the serialising models).  Replies go through
one lock, so a reply is never interleaved with another; a failed or cancelled send breaks the
connection rather than leave half a reply on the wire.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from . import _wire as w
from ._events import (
    NEED_DATA,
    Disconnect,
    ExportRequest,
    HandshakeComplete,
    ListExports,
    ProtocolError,
    RejectedRequest,
    StartTLS,
    _NeedData,
)
from ._executors import Executors
from ._export import transmission_flags
from ._handshake import ExportDetails, ServerHandshake
from ._plugins import _context
from ._plugins._backend import (
    ExportInfo,
    Plugin,
    PluginConnection,
    ThreadModel,
)
from ._transmission import (
    ServerTransmission,
    error_reply,
)
from ._writer import BrokenConnection, ReplyWriter

if TYPE_CHECKING:
    import ssl

log = logging.getLogger("trioblock.server")

RECEIVE_SIZE = 256 * 1024 + 1024


@dataclass
class ServerConfig:
    readonly: bool = False
    tls: str = "off"  # off | on | require
    ssl_context: ssl.SSLContext | None = None
    threads: int = 16  # concurrent requests per connection under PARALLEL
    handshake_timeout: float = 60.0
    structured_replies: bool = True
    shutdown_grace: float = 10.0  # how long in-flight requests may take to finish at shutdown
    send_buffer: int = 4 * 1024 * 1024  # SO_SNDBUF for client sockets; 0 keeps the kernel's
    inline_quick_calls: bool = True  # call a blocking plugin inline once its calls prove quick
    remove_socket: bool = True  # unlink a Unix socket at exit (not one systemd handed us)


@dataclass
class SharedLocks:
    """Locks shared by all connections of one server (thread-model serialisation)."""

    connections: trio.Lock = field(default_factory=trio.Lock)
    requests: trio.Lock = field(default_factory=trio.Lock)


@dataclass(frozen=True, slots=True)
class _OpenExport:
    conn: PluginConnection
    info: ExportInfo


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
        export: _OpenExport | None = None
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
        except (trio.BrokenResourceError, trio.ClosedResourceError, BrokenConnection) as exc:
            log.debug("%s: connection lost: %s", self.peer, exc)
        finally:
            if export is not None:
                await self.close_handle(
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
            raise BrokenConnection(str(exc)) from exc

    async def _receive(self) -> bytes | bytearray:
        try:
            return await self.stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, OSError) as exc:
            raise BrokenConnection(str(exc)) from exc

    # -- handshake -----------------------------------------------------------------------------

    async def _handshake(
        self, hs: ServerHandshake, ctx: _context.ConnectionContext
    ) -> tuple[HandshakeComplete | None, _OpenExport | None]:
        export: _OpenExport | None = None
        try:
            while True:
                event = hs.next_event()
                await self._send(hs.data_to_send())
                if hs.closed:  # aborted, or an EXPORT_NAME that failed: nothing more to say
                    return None, None
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
                elif isinstance(event, HandshakeComplete):
                    await self._send(hs.data_to_send())
                    return event, export
        except BaseException:
            if export is not None:
                await self.close_handle(export.conn, flush=False)
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
    ) -> _OpenExport | None:
        readonly = self.config.readonly
        conn: PluginConnection | None = None
        try:
            name = request.name
            if name == "":
                name = await self.plugin.default_export(readonly, hs.tls_active)
            ctx.export_name = name
            async with self.serialized():
                conn = await self.plugin.open(readonly, name, hs.tls_active)
                info = await conn.info()
        except Exception as exc:
            if conn is not None:
                await self.close_handle(conn, flush=False)
            log.info("%s: cannot open export %r: %s", self.peer, request.name, exc)
            # The reason stays in the log: plugin internals are not the client's business.
            hs.reply_error(w.Rep.ERR_UNKNOWN, "cannot open the export")
            return None
        except BaseException:
            if conn is not None:  # cancelled (timeout, shutdown) while sizing the export
                await self.close_handle(conn, flush=False)
            raise
        tflags = transmission_flags(info, readonly=readonly, thread_model=self.plugin.thread_model)
        hs.reply_export(ExportDetails(info.size, tflags, name, info.description, info.block_size))
        if request.kind == "info":
            await self.close_handle(conn, flush=False)
            return None
        return _OpenExport(conn, info)

    def serialized(self) -> AbstractAsyncContextManager[object]:
        """The lock SERIALIZE_ALL_REQUESTS (and stricter) holds around every plugin call:
        open, sizing, requests, flush and close alike, across all connections (nbdkit)."""
        if self.plugin.thread_model <= ThreadModel.SERIALIZE_ALL_REQUESTS:
            return self.locks.requests
        return _NO_LOCK

    async def close_handle(self, conn: PluginConnection, *, flush: bool) -> None:
        """Flush (at a clean shutdown) and close a plugin handle, even while being cancelled."""
        with trio.CancelScope(shield=True), trio.move_on_after(30):
            async with self.serialized():
                if flush:
                    try:
                        await conn.flush(0)
                    except Exception as exc:
                        log.warning("%s: flush at close failed: %s", self.peer, exc)
                try:
                    await conn.close()
                except Exception:
                    log.exception("%s: plugin close raised", self.peer)

    async def _start_tls(self, hs: ServerHandshake, ctx: _context.ConnectionContext) -> None:
        context = self.config.ssl_context
        if context is None:
            raise AssertionError("TLS enabled without a context")
        tls = trio.SSLStream(self.stream, context, server_side=True)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError as exc:
            raise BrokenConnection(f"TLS handshake failed: {exc.__cause__ or exc}") from exc
        self.stream = tls
        hs.tls_established()
        ctx.is_tls = True

    # -- transmission --------------------------------------------------------------------------

    async def _transmission(
        self, hs: ServerHandshake, done: HandshakeComplete, export: _OpenExport
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
        self.in_transmission = True
        self.writer = ReplyWriter(self.stream)
        model = self.plugin.thread_model
        pool = Executors(
            self,
            export.conn,
            export.info,
            max_executors=max(1, self.config.threads) if model == ThreadModel.PARALLEL else 1,
            structured=done.structured_replies,
        )
        try:
            async with trio.open_nursery() as outer:
                outer.start_soon(self.writer.run)
                try:
                    async with trio.open_nursery() as nursery:
                        pool.nursery = nursery
                        try:
                            with self._reader_scope:
                                await self._read_requests(tx, pool)
                        finally:
                            pool.close()  # executors finish the queued requests, then end
                finally:
                    self.writer.close()  # sends what is queued, then the writer task ends
        except BaseExceptionGroup as group:
            # A vanished client or a protocol error is an expected end, not a server failure.
            matched, rest = group.split(_EXPECTED_ENDS)
            if matched is None or rest is not None:
                raise
            raise _first_leaf(matched) from None

    async def _read_requests(self, tx: ServerTransmission, pool: Executors) -> None:
        structured = tx.structured_replies
        while True:
            event = tx.next_event()
            if isinstance(event, _NeedData):
                pool.kick()
                await pool.wait_for_room()
                data = await self._receive()
                if not data:
                    log.debug("%s: client closed without NBD_CMD_DISC", self.peer)
                    return
                tx.receive_data(data)
            elif isinstance(event, RejectedRequest):
                log.debug("%s: refused request: %s", self.peer, event.reason)
                reply = error_reply(event.cookie, event.command, event.error, structured)
                await self.writer.send([reply])
            elif isinstance(event, Disconnect):
                return
            else:
                pool.add(event)


_NO_LOCK: AbstractAsyncContextManager[object] = contextlib.nullcontext()

_EXPECTED_ENDS = (
    ProtocolError,
    BrokenConnection,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
)


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
