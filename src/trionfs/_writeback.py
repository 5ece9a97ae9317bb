"""Write-back tracking for UNSTABLE writes: what must be kept, sent, committed or sent again.

NFSv3 lets a server reply to an UNSTABLE WRITE before the data is on disk; only a COMMIT makes it
durable.  Every WRITE and COMMIT reply carries the server's *write verifier*, which changes when
the server restarts (and loses its unstable data).  RFC 1813 3.3.7 puts the burden on the
client: keep every byte until a COMMIT covered it under the verifier it was written with, and
write again whatever was written under a verifier that has since changed.  libnfs never looks at
the verifier, so a restart between WRITE and COMMIT silently loses data; this module is the
bookkeeping that prevents it.

Sans-I/O: no sockets, no trio.  The file object drives it::

    tracker.add(offset, data)                  # the application wrote
    while (w := tracker.next_write(wsize)):    # send what is dirty
        ... WRITE(w.offset, w.data) ...
        tracker.write_done(w.id, count, stable, verf)   # or write_failed(w.id)
    token = tracker.begin_commit()             # once the writes above have replied
    ... COMMIT ...
    tracker.commit_done(token, verf)           # releases what the verifier confirms

A byte is in one of three states: DIRTY (must be sent), INFLIGHT (a WRITE carrying it is
outstanding) or UNSTABLE (the server acknowledged it under a verifier, not yet committed).
Committed or stably written bytes are forgotten.  Two WRITEs with overlapping ranges are never
outstanding together (the server may apply them in either order), so newer data over an
in-flight range waits for that WRITE's reply.
"""

from __future__ import annotations

import bisect
import enum
import mmap
from dataclasses import dataclass

__all__ = ["PendingWrite", "WriteBackTracker"]


class _State(enum.Enum):
    DIRTY = "dirty"
    INFLIGHT = "inflight"
    UNSTABLE = "unstable"


@dataclass(slots=True)
class _Extent:
    start: int
    data: memoryview
    state: _State = _State.DIRTY
    write_id: int = 0  # the WRITE carrying it, while INFLIGHT
    verf: bytes = b""  # the verifier it was acknowledged under, while UNSTABLE
    completed: int = 0  # reply serial number, while UNSTABLE (orders it against COMMITs)

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    def cut(self, at: int) -> _Extent:
        """Split at absolute offset ``at``: self keeps the head, the tail is returned."""
        k = at - self.start
        tail = _Extent(at, self.data[k:], self.state, self.write_id, self.verf, self.completed)
        self.data = self.data[:k]
        return tail


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """One WRITE to send: ``pieces`` (in order) go at ``offset``; report the reply with
    ``id``.  Send the pieces as they are (scatter/gather): joining them would copy."""

    id: int
    offset: int
    pieces: tuple[memoryview, ...]

    @property
    def data(self) -> memoryview:
        """The bytes as one buffer (joined, a copy, if there are several pieces)."""
        if len(self.pieces) == 1:
            return self.pieces[0]
        return memoryview(b"".join(self.pieces))


class WriteBackTracker:
    """Every byte written but not yet known durable, with its state; see the module doc."""

    def __init__(self) -> None:
        self._extents: list[_Extent] = []  # sorted, non-overlapping
        self._inflight: dict[int, tuple[int, int]] = {}  # write id -> (start, end)
        self._next_id = 1
        self._serial = 0  # counts WRITE replies, to know which ones a COMMIT covers
        self._verf: bytes | None = None
        self.verifier_changes = 0
        """How many times a reply showed a verifier different from the one before."""
        self.rewritten_bytes = 0
        """Bytes that went back to DIRTY because their verifier was lost."""

    # -- queries -------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes held (dirty, in flight or waiting for a COMMIT)."""
        return sum(len(e.data) for e in self._extents)

    @property
    def clean(self) -> bool:
        """Nothing held and no WRITE outstanding: everything written is durable."""
        return not self._extents and not self._inflight

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def dirty_bytes(self) -> int:
        """Bytes waiting to be sent (no WRITE can be longer than this)."""
        return sum(len(e.data) for e in self._extents if e.state is _State.DIRTY)

    @property
    def has_dirty(self) -> bool:
        return any(e.state is _State.DIRTY for e in self._extents)

    @property
    def needs_commit(self) -> bool:
        return any(e.state is _State.UNSTABLE for e in self._extents)

    @property
    def verifier(self) -> bytes | None:
        return self._verf

    @property
    def end(self) -> int:
        """One past the last byte held (0 if none): the file is at least this long."""
        return self._extents[-1].end if self._extents else 0

    def read_overlay(self, offset: int, buf: bytearray | memoryview) -> None:
        """Copy held bytes that fall into ``[offset, offset+len(buf))`` over ``buf``.

        Held bytes are what the application wrote last, so reads of a file being written see
        them even while the WRITE carrying them is outstanding.
        """
        end = offset + len(buf)
        view = memoryview(buf)
        for ext in self._extents[self._first_overlapping(offset) :]:
            if ext.start >= end:
                break
            lo, hi = max(ext.start, offset), min(ext.end, end)
            if lo < hi:
                view[lo - offset : hi - offset] = ext.data[lo - ext.start : hi - ext.start]

    def held_ranges(self) -> list[tuple[int, int]]:
        """``(start, end)`` of every held extent, merged where they touch."""
        out: list[tuple[int, int]] = []
        for e in self._extents:
            if out and out[-1][1] == e.start:
                out[-1] = (out[-1][0], e.end)
            else:
                out.append((e.start, e.end))
        return out

    # -- the application -----------------------------------------------------------------

    def add(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """The application wrote ``data`` at ``offset``; it is kept until durable.

        Immutable ``bytes`` and read-only views of ``bytes`` or of a read-only ``mmap`` (a
        copy tool's mapped source file) are kept by reference; anything the caller could
        change afterwards (bytearray, writable views) is copied.  A mapped file changed by
        someone else before the COMMIT is the same race as a file changed under ``cp``.
        """
        if offset < 0:
            raise ValueError("negative offset")
        if not data:
            return
        view = memoryview(data)
        if view.ndim != 1 or view.format != "B" or not view.c_contiguous:
            view = memoryview(view.tobytes())
        elif not (view.readonly and isinstance(view.obj, (bytes, mmap.mmap))):
            view = memoryview(bytes(view))
        new = _Extent(offset, view)
        if not self._extents or offset >= self._extents[-1].end:
            self._extents.append(new)  # appending (a writer streaming a file): nothing to cut
            return
        self._carve(new.start, new.end)
        i = bisect.bisect_left([e.start for e in self._extents], new.start)
        self._extents.insert(i, new)

    def truncate(self, size: int) -> None:
        """The file was truncated to ``size``: forget held bytes beyond it."""
        self._carve(size, max(size, self.end))

    # -- WRITE -----------------------------------------------------------------------------

    def next_write(self, max_size: int, min_size: int = 1) -> PendingWrite | None:
        """The next DIRTY range to send (at most ``max_size`` bytes), now INFLIGHT; or None.

        Adjacent dirty extents are joined into one WRITE (small application writes become
        one RPC); runs shorter than ``min_size`` are left for later (a writer streaming
        small pieces fills whole WRITEs).  Ranges overlapping an outstanding WRITE are held
        back.
        """
        if max_size <= 0:
            raise ValueError("max_size must be positive")
        for i, ext in enumerate(self._extents):
            if ext.state is not _State.DIRTY or self._overlaps_inflight(ext.start, ext.start + 1):
                continue
            # Gather adjacent dirty extents up to max_size that do not touch an in-flight range.
            j = i
            end = ext.start
            while (
                j < len(self._extents)
                and self._extents[j].state is _State.DIRTY
                and self._extents[j].start == end
                and end - ext.start < max_size
            ):
                limit = min(self._extents[j].end, ext.start + max_size)
                clear = self._clear_until(end, limit)
                if clear == end:
                    break
                if clear < self._extents[j].end:
                    self._extents.insert(j + 1, self._extents[j].cut(clear))
                end = clear
                j += 1
                if clear < limit:
                    break
            if end - ext.start < min(min_size, max_size):
                self._merge_dirty()
                continue
            write_id = self._next_id
            self._next_id += 1
            parts = self._extents[i:j]
            for part in parts:
                part.state, part.write_id = _State.INFLIGHT, write_id
            self._inflight[write_id] = (ext.start, end)
            return PendingWrite(write_id, ext.start, tuple(p.data for p in parts))
        return None

    def write_done(self, write_id: int, count: int, stable: bool, verf: bytes) -> None:
        """A WRITE replied: ``count`` bytes taken, ``stable`` if FILE_SYNC/DATA_SYNC."""
        start, end = self._inflight[write_id]
        if not 0 <= count <= end - start:
            self.write_failed(write_id)
            raise ValueError(f"WRITE reply count {count} outside 0..{end - start}")
        del self._inflight[write_id]
        done_end = start + count
        self._serial += 1
        self._split_at(done_end)
        kept: list[_Extent] = []
        for ext in self._extents:
            if ext.state is _State.INFLIGHT and ext.write_id == write_id:
                if ext.start >= done_end:  # a short write: the rest goes again
                    ext.state = _State.DIRTY
                elif stable:
                    continue
                else:
                    ext.state, ext.verf, ext.completed = _State.UNSTABLE, verf, self._serial
            kept.append(ext)
        self._extents = kept
        self._see_verifier(verf)

    def write_failed(self, write_id: int) -> None:
        """A WRITE failed or was cancelled: its bytes are DIRTY again."""
        self._inflight.pop(write_id)
        for ext in self._extents:
            if ext.state is _State.INFLIGHT and ext.write_id == write_id:
                ext.state = _State.DIRTY

    # -- COMMIT ----------------------------------------------------------------------------

    def begin_commit(self) -> int:
        """A COMMIT is about to be sent; it covers the WRITE replies received so far."""
        return self._serial

    def commit_done(self, token: int, verf: bytes) -> None:
        """A COMMIT (begun at ``token``) replied with ``verf``: release what it confirms."""
        self._see_verifier(verf)
        self._extents = [
            e
            for e in self._extents
            if not (e.state is _State.UNSTABLE and e.completed <= token and e.verf == verf)
        ]

    # -- internals -------------------------------------------------------------------------

    def _merge_dirty(self) -> None:
        """Join touching DIRTY extents again (the gathering above may have cut them)."""
        merged: list[_Extent] = []
        for ext in self._extents:
            last = merged[-1] if merged else None
            if (
                last is not None
                and last.state is _State.DIRTY
                and ext.state is _State.DIRTY
                and last.end == ext.start
                and len(last.data) < (1 << 16)
            ):
                last.data = memoryview(bytes(last.data) + bytes(ext.data))
            else:
                merged.append(ext)
        self._extents = merged

    def _see_verifier(self, verf: bytes) -> None:
        """A reply showed ``verf``: UNSTABLE bytes acknowledged under another one are lost."""
        if self._verf is not None and verf != self._verf:
            self.verifier_changes += 1
        self._verf = verf
        for ext in self._extents:
            if ext.state is _State.UNSTABLE and ext.verf != verf:
                ext.state = _State.DIRTY
                self.rewritten_bytes += len(ext.data)

    def _first_overlapping(self, offset: int) -> int:
        i = bisect.bisect_right([e.start for e in self._extents], offset)
        return max(i - 1, 0)

    def _split_at(self, at: int) -> None:
        for i, ext in enumerate(self._extents):
            if ext.start < at < ext.end:
                self._extents.insert(i + 1, ext.cut(at))
                return
            if ext.start >= at:
                return

    def _carve(self, start: int, end: int) -> None:
        """Drop held bytes in ``[start, end)`` (newer data or a truncation replaces them)."""
        if start >= end:
            return
        self._split_at(start)
        self._split_at(end)
        self._extents = [e for e in self._extents if e.end <= start or e.start >= end]

    def _overlaps_inflight(self, start: int, end: int) -> bool:
        return any(s < end and start < e for s, e in self._inflight.values())

    def _clear_until(self, start: int, limit: int) -> int:
        """The largest ``x <= limit`` such that ``[start, x)`` overlaps no in-flight WRITE."""
        x = limit
        for s, e in self._inflight.values():
            if e > start and s < x:
                x = s if s > start else start
        return x
