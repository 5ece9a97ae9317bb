"""The write-back tracker without sockets: a model NFS server that loses unstable data on restart.

The model applies WRITEs to a volatile image, COMMIT copies it to stable storage, a restart
throws the volatile image away and changes the verifier.  Outstanding WRITEs are processed in
any order, replies are delivered in any order or lost with the connection.  Whatever happens,
every byte that is not yet right on stable storage must still be held by the tracker, and a
flush loop must end with stable storage equal to what the application wrote.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from trionfs._writeback import PendingWrite, WriteBackTracker

SIZE = 64


@dataclass
class ModelServer:
    stable: bytearray = field(default_factory=bytearray)
    volatile: bytearray = field(default_factory=bytearray)
    epoch: int = 1

    @property
    def verf(self) -> bytes:
        return self.epoch.to_bytes(8, "big")

    def write(self, offset: int, data: bytes, count: int, sync: bool) -> tuple[int, bytes]:
        data = data[:count]
        for image in (self.volatile, self.stable) if sync else (self.volatile,):
            if len(image) < offset + len(data):
                image.extend(bytes(offset + len(data) - len(image)))
            image[offset : offset + len(data)] = data
        return len(data), self.verf

    def commit(self) -> bytes:
        self.stable[:] = self.volatile
        return self.verf

    def restart(self) -> None:
        self.volatile[:] = self.stable
        self.epoch += 1


def apply(image: bytearray, offset: int, data: bytes) -> None:
    if len(image) < offset + len(data):
        image.extend(bytes(offset + len(data) - len(image)))
    image[offset : offset + len(data)] = data


def held_bytes(tracker: WriteBackTracker, size: int) -> dict[int, int]:
    buf = bytearray(b"\xff" * size)
    marker = bytearray(b"\x00" * size)
    tracker.read_overlay(0, buf)
    tracker.read_overlay(0, marker)
    # A byte is held when the overlay wrote over both 0xff and 0x00 fills.
    return {i: buf[i] for i in range(size) if buf[i] == marker[i]}


def assert_invariant(tracker: WriteBackTracker, server: ModelServer, expected: bytearray) -> None:
    """Every byte not yet right on stable storage is held, with the application's value."""
    held = held_bytes(tracker, len(expected))
    for i, value in enumerate(expected):
        if i in held:
            assert held[i] == value
        else:
            on_disk = server.stable[i] if i < len(server.stable) else 0  # a hole reads as zero
            assert on_disk == value, f"byte {i} lost"


def settle(tracker: WriteBackTracker, server: ModelServer, wsize: int) -> None:
    """A flush with no more faults: write everything dirty, commit, repeat until clean."""
    for _ in range(100):
        while (w := tracker.next_write(wsize)) is not None:
            count, verf = server.write(w.offset, bytes(w.data), len(w.data), sync=False)
            tracker.write_done(w.id, count, False, verf)
        if tracker.clean:
            return
        token = tracker.begin_commit()
        tracker.commit_done(token, server.commit())
    raise AssertionError("flush did not converge")


actions = st.one_of(
    st.tuples(st.just("add"), st.integers(0, SIZE - 1), st.binary(min_size=1, max_size=24)),
    st.tuples(st.just("send"), st.integers(1, 16), st.integers(1, 16)),
    st.tuples(st.just("process"), st.integers(0, 10), st.integers(0, 100), st.booleans()),
    st.tuples(st.just("deliver"), st.integers(0, 10), st.booleans()),
    st.tuples(st.just("commit")),
    st.tuples(st.just("restart")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(actions, max_size=60), st.integers(1, 32))
def test_any_interleaving_keeps_every_uncommitted_byte(
    program: list[tuple[object, ...]], wsize: int
) -> None:
    tracker = WriteBackTracker()
    server = ModelServer()
    expected = bytearray()
    sent: list[PendingWrite] = []  # sent, not yet processed by the server
    replies: list[tuple[int, int, bytes]] = []  # processed, reply not yet delivered
    for action in program:
        kind = action[0]
        if kind == "add":
            offset, data = action[1], action[2]
            assert isinstance(offset, int)
            assert isinstance(data, bytes)
            tracker.add(offset, data)
            apply(expected, offset, data)
        elif kind == "send":
            assert isinstance(action[1], int)
            assert isinstance(action[2], int)
            w = tracker.next_write(action[1], min_size=action[2])
            if w is not None:
                assert min(action[1], action[2]) <= len(w.data) <= action[1]
                sent.append(w)
        elif kind == "process" and sent:
            assert isinstance(action[1], int)
            assert isinstance(action[2], int)
            w = sent.pop(action[1] % len(sent))
            count = len(w.data) if action[3] else action[2] % (len(w.data) + 1)
            _, verf = server.write(w.offset, bytes(w.data), count, sync=False)
            replies.append((w.id, count, verf))
        elif kind == "deliver" and replies:
            assert isinstance(action[1], int)
            write_id, count, verf = replies.pop(action[1] % len(replies))
            tracker.write_done(write_id, count, False, verf)
        elif kind == "commit" and not sent:
            token = tracker.begin_commit()
            tracker.commit_done(token, server.commit())
        elif kind == "restart":
            server.restart()
            # The connection drops: unprocessed WRITEs and undelivered replies are lost.
            for w in sent:
                tracker.write_failed(w.id)
            for write_id, _, _ in replies:
                tracker.write_failed(write_id)
            sent.clear()
            replies.clear()
        assert_invariant(tracker, server, expected)
    for w in sent:
        tracker.write_failed(w.id)
    for write_id, _, _ in replies:
        tracker.write_failed(write_id)
    settle(tracker, server, wsize)
    assert tracker.clean
    assert tracker.buffered == 0
    assert bytes(server.stable[: len(expected)]) == bytes(expected)


def test_restart_between_write_and_commit_rewrites_the_lost_range() -> None:
    tracker = WriteBackTracker()
    server = ModelServer()
    tracker.add(0, b"hello world")
    w = tracker.next_write(100)
    assert w is not None
    count, verf = server.write(0, bytes(w.data), 11, sync=False)
    tracker.write_done(w.id, count, False, verf)
    server.restart()
    token = tracker.begin_commit()
    tracker.commit_done(token, server.commit())
    assert tracker.verifier_changes == 1
    assert tracker.rewritten_bytes == 11
    assert tracker.has_dirty
    settle(tracker, server, 100)
    assert bytes(server.stable) == b"hello world"


def test_commit_releases_only_writes_that_replied_before_it() -> None:
    tracker = WriteBackTracker()
    tracker.add(0, b"a" * 10)
    tracker.add(10, b"b" * 10)
    first = tracker.next_write(10)
    second = tracker.next_write(10)
    assert first is not None
    assert second is not None
    tracker.write_done(first.id, 10, False, b"v1")
    token = tracker.begin_commit()
    tracker.write_done(second.id, 10, False, b"v1")
    tracker.commit_done(token, b"v1")
    assert tracker.held_ranges() == [(10, 20)]
    assert tracker.needs_commit


def test_stable_write_reply_releases_at_once() -> None:
    tracker = WriteBackTracker()
    tracker.add(5, b"xyz")
    w = tracker.next_write(1 << 20)
    assert w is not None
    assert w.offset == 5
    assert bytes(w.data) == b"xyz"
    tracker.write_done(w.id, 3, True, b"v")
    assert tracker.clean


def test_short_write_sends_the_remainder_again() -> None:
    tracker = WriteBackTracker()
    tracker.add(0, b"0123456789")
    w = tracker.next_write(100)
    assert w is not None
    tracker.write_done(w.id, 4, False, b"v")
    again = tracker.next_write(100)
    assert again is not None
    assert again.offset == 4
    assert bytes(again.data) == b"456789"


def test_newer_data_over_an_inflight_write_waits_for_its_reply() -> None:
    tracker = WriteBackTracker()
    tracker.add(0, b"old!")
    w = tracker.next_write(100)
    assert w is not None
    tracker.add(2, b"NEW")
    assert tracker.next_write(100) is None  # would race with the outstanding WRITE
    tracker.write_done(w.id, 4, False, b"v")
    nxt = tracker.next_write(100)
    assert nxt is not None
    assert (nxt.offset, bytes(nxt.data)) == (2, b"NEW")
    buf = bytearray(5)
    tracker.read_overlay(0, buf)
    assert bytes(buf) == b"olNEW"


def test_adjacent_small_writes_go_out_as_one_write() -> None:
    tracker = WriteBackTracker()
    for i in range(10):
        tracker.add(i * 3, b"abc")
    w = tracker.next_write(16)
    assert w is not None
    assert (w.offset, len(w.data)) == (0, 16)
    w2 = tracker.next_write(16)
    assert w2 is not None
    assert (w2.offset, len(w2.data)) == (16, 14)
    assert bytes(w.data) + bytes(w2.data) == b"abc" * 10


def test_truncate_forgets_bytes_past_the_new_size() -> None:
    tracker = WriteBackTracker()
    tracker.add(0, b"x" * 100)
    tracker.truncate(40)
    assert tracker.held_ranges() == [(0, 40)]


def test_bad_reply_count_is_a_value_error_and_keeps_the_data() -> None:
    tracker = WriteBackTracker()
    tracker.add(0, b"abc")
    w = tracker.next_write(10)
    assert w is not None
    with pytest.raises(ValueError, match="count"):
        tracker.write_done(w.id, 4, False, b"v")
    assert tracker.has_dirty
    assert tracker.inflight == 0


def test_mutable_buffers_are_copied_and_bytes_are_kept_by_reference() -> None:
    tracker = WriteBackTracker()
    buf = bytearray(b"abcd")
    tracker.add(0, buf)
    buf[:] = b"XXXX"  # the application reuses its buffer at once
    immutable = b"efgh" * 1000
    tracker.add(4, immutable)
    w = tracker.next_write(1 << 20)
    assert w is not None
    assert bytes(w.data[:8]) == b"abcdefgh"
    tracker.add(5000, memoryview(bytearray(b"zz")).cast("B"))
    out = bytearray(2)
    tracker.read_overlay(5000, out)
    assert out == b"zz"


def test_adjacent_writes_go_out_as_one_write_of_their_uncopied_pieces() -> None:
    tracker = WriteBackTracker()
    a, b = b"x" * 100, b"y" * 50
    tracker.add(0, a)
    tracker.add(100, b)  # appended: kept by reference, not joined
    w = tracker.next_write(1 << 20)
    assert w is not None
    assert (w.offset, len(w.pieces)) == (0, 2)
    assert w.pieces[0].obj is a
    assert w.pieces[1].obj is b
    assert bytes(w.data) == a + b


def test_read_only_mmap_views_are_kept_by_reference_and_writable_ones_copied(
    tmp_path: Path,
) -> None:
    path = tmp_path / "src"
    path.write_bytes(b"0123456789" * 1000)
    with open(path, "r+b") as f:
        ro = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        rw = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE)
    tracker = WriteBackTracker()
    tracker.add(0, memoryview(ro)[:5000])
    tracker.add(5000, memoryview(rw)[5000:])
    rw[5000:5002] = b"XX"  # writable mappings can change: the tracker copied them
    w = tracker.next_write(1 << 20)
    assert w is not None
    assert w.pieces[0].obj is ro  # a slice of the mapping, not a copy
    assert w.pieces[1].obj is not rw
    assert bytes(w.data) == b"0123456789" * 1000
    with pytest.raises(BufferError):
        ro.close()  # the held slice keeps the mapping open until the tracker lets go
    tracker.write_done(w.id, len(w.data), True, b"v")
    del w
    assert tracker.clean
    ro.close()
    rw.close()
