"""The sink's data channel: an SP Pull listener on an ipc path, in Trio, without nng.

A sink receives every payload eKuiper's rule produces, so its receive path sets the sink's
speed.  nng's own receive path hands each message across three threads (its poller, its task
queue, the caller): about 36 us of CPU per 200-byte message here, whatever the caller does.
This listener speaks the same SP-over-IPC wire (:mod:`triokuiper._sp`) from the Trio thread:
one ``recv_into`` takes whatever the peer has written, often dozens of messages, for ~4 us of
CPU per message (docs/triokuiper.md, "The sink's data channel").  eKuiper's Push side (mangos)
and nng's Push both dial it; the tests drive it with nng's.

Like nng's Pull it accepts any number of Push peers (a reconnect, a second dialer) and takes
messages from each in turn.  At most :data:`BACKLOG` messages wait for the sink; beyond that the
readers stop reading, and the peer's sends block (backpressure, no loss).
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import socket
import stat
import threading
from typing import Final

import pynng
import trio
import trio.lowlevel

from ._sp import DEFAULT_MAX_SIZE, PULL0, PUSH0, FrameDecoder, SPProtocolError, connection_header

log = logging.getLogger("triokuiper.pull")

BACKLOG: Final = 256
"""Messages received and not yet taken by the sink before the readers pause."""
RECV_SIZE: Final = 256 * 1024
NEGOTIATION_TIMEOUT: Final = 10.0  # nng's
ACCEPT_RETRY: Final = 0.1
_ACCEPT_RESOURCE: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class PullListener:
    """Listen with SP Pull on a unix socket path; :meth:`receive_batch` takes the messages.

    :meth:`listen` binds (synchronously useful: eKuiper dials right after the plugin answers);
    :meth:`run`, in a task, accepts and reads until :meth:`close`.
    """

    def __init__(self, path: str, *, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.path = path
        self._max_size = max_size
        self._listener: trio.socket.SocketType | None = None
        self._inode: int | None = None
        self._connections: set[trio.socket.SocketType] = set()
        self._items: collections.deque[bytes] = collections.deque()
        self._has_items: trio.Event | None = None  # the sink waits for messages
        self._has_room: trio.Event | None = None  # readers wait for the sink
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def listen(self) -> None:
        """Bind and listen, replacing a stale socket file as nng does (none may be live)."""
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                await sock.bind(self.path)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or not await _is_stale(self.path):
                    raise
                os.unlink(self.path)
                await sock.bind(self.path)
            sock.listen(16)
        except BaseException:
            sock.close()
            raise
        self._inode = os.stat(self.path).st_ino
        self._listener = sock

    async def run(self) -> None:
        """Accept Push peers and read from each until :meth:`close` (or cancelled)."""
        listener = self._listener
        if listener is None:
            raise RuntimeError("listen() first")
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        conn, _ = await listener.accept()
                    except (trio.ClosedResourceError, OSError) as exc:
                        if self._closed:
                            return
                        if not isinstance(exc, OSError) or exc.errno not in _ACCEPT_RESOURCE:
                            raise
                        # out of fds or memory: keep the peers we have, try again shortly
                        log.warning("%s: cannot accept (%s); retrying", self.path, exc)
                        await trio.sleep(ACCEPT_RETRY)
                        continue
                    self._connections.add(conn)
                    nursery.start_soon(self._read, conn)
        finally:
            self.close()

    async def _read(self, conn: trio.socket.SocketType) -> None:
        decoder = FrameDecoder(max_size=self._max_size)
        buffer = bytearray(RECV_SIZE)
        view = memoryview(buffer)
        try:
            await conn.send(connection_header(PULL0))
            first: list[bytes] = []
            with trio.fail_after(NEGOTIATION_TIMEOUT):
                while decoder.peer is None:
                    n = await conn.recv_into(buffer)
                    if not n:
                        return  # gone before its header
                    first = decoder.feed(view[:n])
            if decoder.peer != PUSH0:
                raise SPProtocolError(f"peer speaks protocol {decoder.peer:#x}, not Push")
            self._take(first)
            while True:
                if len(self._items) >= BACKLOG:
                    await self._wait_for_room()
                n = await conn.recv_into(buffer)
                self._take(decoder.feed(view[:n] if n else b""))
                if not n:
                    return
        except (trio.ClosedResourceError, trio.TooSlowError, OSError, SPProtocolError) as exc:
            if isinstance(exc, SPProtocolError) and decoder.peer == PUSH0:
                self._take(exc.messages)  # what came whole before the fault is delivered
            if not self._closed:
                log.warning("%s: dropped a peer: %s", self.path, exc)
        finally:
            view.release()
            self._connections.discard(conn)
            conn.close()

    def _take(self, messages: list[bytes]) -> None:
        if messages:
            self._items.extend(messages)
            event, self._has_items = self._has_items, None
            if event is not None:
                event.set()

    async def _wait_for_room(self) -> None:
        while len(self._items) >= BACKLOG and not self._closed:
            if self._has_room is None:
                self._has_room = trio.Event()
            await self._has_room.wait()

    async def receive_batch(self) -> list[bytes]:
        """Every message waiting, in arrival order (at least one).

        :class:`trio.ClosedResourceError` once closed and every message received before was
        taken.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        items = self._items
        while not items:
            if self._closed:
                raise trio.ClosedResourceError("the data channel was closed")
            if self._has_items is None:
                self._has_items = trio.Event()
            await self._has_items.wait()
        batch = list(items)
        items.clear()
        room, self._has_room = self._has_room, None
        if room is not None:
            room.set()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return batch

    def close(self) -> None:
        """Stop listening, drop every peer and wake the sink (idempotent, synchronous)."""
        if self._closed:
            return
        self._closed = True
        if self._listener is not None:
            self._listener.close()
            self._remove_socket_file()
        for conn in list(self._connections):
            conn.close()
        for event in (self._has_items, self._has_room):
            if event is not None:
                event.set()

    def _remove_socket_file(self) -> None:
        try:  # only our own file: a restarted plugin may already listen on the same path
            st = os.stat(self.path)
            if stat.S_ISSOCK(st.st_mode) and st.st_ino == self._inode:
                os.unlink(self.path)
        except OSError:
            pass


class BlockingReceiver:
    """The listener's messages for a worker thread, behind a blocking ``recv()``.

    For sinks whose ``collect`` blocks (a plain ``def``, an official-SDK sink): :meth:`pump`, in
    a Trio task, moves batches from the listener into a deque; the thread's :meth:`recv` takes
    them one by one and raises ``pynng.Closed`` once closed and drained, exactly like the pynng
    Pull socket it stands in for.  The pump waits while :data:`BACKLOG` messages are pending.
    """

    def __init__(self, listener: PullListener) -> None:
        self._listener = listener
        self._items: collections.deque[bytes] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._room: trio.Event | None = None
        self._token = trio.lowlevel.current_trio_token()

    async def pump(self) -> None:
        """Feed the thread until the listener closes; then :meth:`close`."""
        try:
            while True:
                try:
                    batch = await self._listener.receive_batch()
                except trio.ClosedResourceError:
                    return
                await self._wait_for_room()
                with self._cond:
                    self._items.extend(batch)
                    self._cond.notify()
        finally:
            self.close()

    async def _wait_for_room(self) -> None:
        while True:
            with self._cond:
                if len(self._items) < BACKLOG or self._closed:
                    return
                room = self._room = trio.Event()
            await room.wait()

    def recv(self) -> bytes:
        """The next message (blocking; in a worker thread)."""
        with self._cond:
            items = self._items
            while not items:
                if self._closed:
                    raise pynng.Closed("the data channel was closed", 7)  # NNG_ECLOSED
                self._cond.wait()
            data = items.popleft()
            room = None
            if self._room is not None and len(items) <= BACKLOG // 2:
                room, self._room = self._room, None
        if room is not None:
            self._wake(room)
        return data

    def _wake(self, room: trio.Event) -> None:
        try:
            self._token.run_sync_soon(room.set)
        except trio.RunFinishedError:
            pass

    def close(self) -> None:
        """Wake the thread: its ``recv`` raises ``pynng.Closed`` once the deque is empty."""
        with self._cond:
            self._closed = True
            room, self._room = self._room, None
            self._cond.notify_all()
        self._listener.close()
        if room is not None:
            self._wake(room)


async def _is_stale(path: str) -> bool:
    """A socket file nobody listens on (a crashed plugin's), which may be replaced."""
    probe = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await probe.connect(path)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        probe.close()
    return False
