"""The executors of one connection: queued requests in, replies out to the writer.

Executor tasks start only when requests wait and none is idle.  For an async plugin an executor
awaits the plugin calls; for a blocking plugin (an nbdkit Python plugin) it runs a whole batch in
one ``trio.to_thread`` hop.  How many run at once adapts to the plugin, measured per batch: while
its calls are fast (under :data:`FAST_CALL` each, the GIL-bound case) one executor takes everything
queued, because every extra thread only fights for the GIL (measured: 16 executors made 4 KiB
reads 2.7x slower than one); once calls are slow (the plugin waits on I/O), the queue is shared
among up to ``max_executors`` threads, as the thread model allows.

A blocking plugin whose requests have proved quick (:data:`INLINE_AFTER` requests in batches
averaging under :data:`INLINE_CPU` of CPU and :data:`INLINE_WALL` of wall time) is then called
inline on the Trio thread, without any hop: nbdkit pays a thread hop per request, we pay none.
The first request that waits more than :data:`INLINE_BLOCKED` (a sleep, I/O: seen as a voluntary
context switch, so being preempted does not count) or computes more than :data:`INLINE_LONGEST`
sends the plugin back to worker threads, for a time that doubles at each overrun, so a plugin
that sometimes blocks stalls the loop only a few times.
``ServerConfig(inline_quick_calls=False)`` (``--no-inline``) keeps every call in worker threads.
"""

from __future__ import annotations

import collections
import logging
import resource
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from ._events import Request, WriteRequest
from ._export import plan, run_async, run_blocking
from ._plugins._backend import BlockingOps, Buffer, ExportInfo, PluginConnection
from ._writer import WRITE_AT_ONCE

if TYPE_CHECKING:
    from ._connection import Connection

FAST_CALL = 200e-6  # seconds per request below which a blocking plugin is batched, not spread
MAX_BATCH = 64
# Calling a blocking plugin inline, without the thread hop (which costs ~120 µs of CPU here):
INLINE_CPU = 200e-6  # only while requests average under this much CPU time ...
INLINE_WALL = 1e-3  # ... and this much wall time in worker threads,
INLINE_AFTER = 2000  # for this many requests;
INLINE_BLOCKED = 1e-3  # then, inline, a request that waits longer than this (I/O, a sleep),
INLINE_LONGEST = 5e-3  # or computes longer than this, sends the plugin back to
INLINE_BACKOFF = 5.0  # worker threads for a while, doubling at each overrun

Queued = Request | WriteRequest
log = logging.getLogger("trioblock.server")


class Executors:
    MAX_QUEUED = 256  # requests read ahead before the reader stops reading
    MAX_QUEUED_BYTES = 128 * 1024 * 1024  # of WRITE payloads

    def __init__(
        self,
        conn: Connection,
        plugin_conn: PluginConnection,
        info: ExportInfo,
        *,
        max_executors: int,
        structured: bool,
    ) -> None:
        self.conn = conn
        self.plugin_conn = plugin_conn
        self.info = info
        self.blocking = plugin_conn.blocking
        self.max_executors = max_executors
        self.structured = structured
        self.queue: collections.deque[Queued] = collections.deque()
        self.queued_bytes = 0
        self.executors = 0
        self.idle = 0
        self.running = 0
        self.closed = False
        self.nursery: trio.Nursery | None = None
        # Seconds per request of recent blocking batches; starting just above FAST_CALL spreads
        # the first requests, and three fast batches are enough to switch to batching.
        self.per_call = 2 * FAST_CALL
        self.allow_inline = conn.config.inline_quick_calls
        self.profile = _profile_of(conn.plugin)
        self._lot = trio.lowlevel.ParkingLot()
        self._room = trio.Event()

    def add(self, request: Queued) -> None:
        self.queue.append(request)
        if isinstance(request, WriteRequest):
            self.queued_bytes += len(request.data)

    @property
    def _batching(self) -> bool:
        return self.blocking is not None and self.per_call < FAST_CALL

    def kick(self) -> None:
        """Wake or start executors for what the reader queued."""
        waiting = len(self.queue)
        if not waiting:
            return
        if self._batching:
            # One batch at a time: a busy executor takes the queue when its batch is done.
            waiting = 0 if self.running else 1
            if not waiting:
                return
        if self.idle:
            self._lot.unpark(count=min(waiting, self.idle))
        missing = min(waiting - self.idle, self.max_executors - self.executors)
        for _ in range(max(0, missing)):
            self.executors += 1
            assert self.nursery is not None
            self.nursery.start_soon(self._executor)

    async def wait_for_room(self) -> None:
        while len(self.queue) >= self.MAX_QUEUED or self.queued_bytes >= self.MAX_QUEUED_BYTES:
            self._room = trio.Event()
            await self._room.wait()

    def close(self) -> None:
        self.closed = True
        self._lot.unpark_all()

    def _take(self) -> list[Queued]:
        if self._batching:
            share = MAX_BATCH
        else:
            busy = self.executors - self.idle - 1  # the others, not this one
            share = -(-len(self.queue) // max(1, self.max_executors - busy))
        batch = [self.queue.popleft() for _ in range(max(1, min(share, len(self.queue))))]
        for req in batch:
            if isinstance(req, WriteRequest):
                self.queued_bytes -= len(req.data)
        self._room.set()
        return batch

    async def _executor(self) -> None:
        writer = self.conn.writer
        while True:
            # While batching, executors left over from a slow phase wait for the running one.
            while not self.queue or (self._batching and self.running and not self.closed):
                if self.closed and not self.queue:
                    return
                self.idle += 1
                try:
                    await self._lot.park()
                finally:
                    self.idle -= 1
            batch = self._take()
            self.running += 1
            try:
                async with self.conn.serialized():
                    replies = await self._run(batch)
            finally:
                self.running -= 1
            await writer.send(replies)

    async def _run(self, batch: list[Queued]) -> list[Buffer]:
        info, structured, peer = self.info, self.structured, self.conn.peer
        if self.blocking is None:
            replies: list[Buffer] = []
            for req in batch:
                replies += await run_async(self.plugin_conn, plan(req, info, structured, peer))
            return replies
        if self.allow_inline and self.profile.inline:
            # Large replies leave as soon as they are made, while their data is still cached.
            deliver = self.conn.writer.send_nowait
            replies, timing = _run_batch_blocking(
                self.blocking, batch, info, structured, peer, deliver
            )
            await trio.lowlevel.checkpoint()
        else:
            limiter = getattr(self.conn.plugin, "limiter", None)  # the host sizes its own pool
            replies, timing = await trio.to_thread.run_sync(
                _run_batch_blocking, self.blocking, batch, info, structured, peer, limiter=limiter
            )
        self.per_call = 0.7 * self.per_call + 0.3 * timing.wall
        self._judge_inline(timing, len(batch))
        return replies

    def _judge_inline(self, timing: _Timing, count: int) -> None:
        if self.allow_inline:
            self.profile.judge(timing, count, self.conn.peer)


class _CallProfile:
    """How a blocking plugin's calls behave, learnt across all its connections (a plugin that
    proved quick on one connection is quick on the next): whether to call it inline."""

    def __init__(self) -> None:
        self.inline = False
        self.quick = 0
        self.backoff = INLINE_BACKOFF / 2
        self.not_before = 0.0

    def judge(self, timing: _Timing, count: int, peer: str) -> None:
        """Go inline after enough quick requests; leave at the first one that blocks."""
        if self.inline:
            blocked = timing.blocked if timing.waited else 0.0
            if blocked > INLINE_BLOCKED or timing.longest_cpu > INLINE_LONGEST:
                self.inline = False
                self.quick = 0
                self.backoff *= 2  # a plugin that keeps overrunning loses inline for good
                self.not_before = trio.current_time() + self.backoff
                log.info(
                    "%s: a plugin call blocked for %.1f ms: back to worker threads for %.0f s",
                    peer,
                    max(blocked, timing.longest_cpu) * 1e3,
                    self.backoff,
                )
            return
        # In worker threads wall time includes waits for the GIL, so judge CPU time and the
        # batch's mean.  A slow batch takes back as many requests as it had, rather than erase
        # or halve the evidence: on a loaded machine a few batches of 256 KiB reads (~120 µs
        # each) go over now and then, and halving kept such a plugin in threads for good.
        if timing.cpu < INLINE_CPU and timing.wall < INLINE_WALL:
            self.quick += count
        else:
            self.quick = max(0, self.quick - count)
        if self.quick >= INLINE_AFTER and trio.current_time() >= self.not_before:
            self.inline = True
            log.debug("%s: plugin calls are quick: calling them inline", peer)


_profiles: weakref.WeakKeyDictionary[object, _CallProfile] = weakref.WeakKeyDictionary()


def _profile_of(plugin: object) -> _CallProfile:
    profile = _profiles.get(plugin)
    if profile is None:
        profile = _profiles[plugin] = _CallProfile()
    return profile


@dataclass(frozen=True, slots=True)
class _Timing:
    wall: float  # mean seconds per request
    cpu: float  # mean CPU seconds per request (this thread's)
    longest_cpu: float  # the most CPU time one request took
    blocked: float  # the most wall time one request spent not computing ...
    waited: bool  # ... and whether the thread really waited (a voluntary context switch), as
    # opposed to being preempted by another process, which must not count against the plugin


def _voluntary_switches() -> int:
    return resource.getrusage(_RUSAGE_THREAD).ru_nvcsw


_RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)


def _run_batch_blocking(
    ops: BlockingOps,
    batch: list[Queued],
    info: ExportInfo,
    structured: bool,
    peer: str,
    deliver: Callable[[list[Buffer]], bool] | None = None,
) -> tuple[list[Buffer], _Timing]:
    """Run a batch (in a worker thread, or inline); return the replies and how long it took.

    With ``deliver`` (inline), each reply carrying :data:`WRITE_AT_ONCE` bytes or more of data is
    handed over as soon as it is made, after the smaller ones made before it, and only the rest
    is returned.  ``deliver`` returns whether it wrote to the socket: that time is not the
    plugin's, so it is left out of the timing."""
    wall, cpu = time.perf_counter, time.thread_time
    switches = _voluntary_switches()
    start = last = wall()
    start_cpu = last_cpu = cpu()
    longest_cpu = blocked = 0.0
    writing = writing_cpu = 0.0  # spent by deliver() writing to the socket
    replies: list[Buffer] = []
    for req in batch:
        reply = run_blocking(ops, plan(req, info, structured, peer))
        now, now_cpu = wall(), cpu()
        longest_cpu = max(longest_cpu, now_cpu - last_cpu)
        blocked = max(blocked, (now - last) - (now_cpu - last_cpu))
        last, last_cpu = now, now_cpu
        if deliver is None or len(reply[-1]) < WRITE_AT_ONCE:
            replies += reply  # small replies (and all in threads) leave together after the batch
            continue
        if replies:  # those before it go first
            deliver(replies)
            replies = []
        before = _voluntary_switches()
        if deliver(reply):
            last, last_cpu = wall(), cpu()
            writing += last - now
            writing_cpu += last_cpu - now_cpu
            # A wait for the socket's lock is not the plugin blocking: leave it out too.
            switches += _voluntary_switches() - before
    n = len(batch)
    waited = _voluntary_switches() > switches
    timing = _Timing(
        (last - start - writing) / n,
        (last_cpu - start_cpu - writing_cpu) / n,
        longest_cpu,
        blocked,
        waited,
    )
    return replies, timing
