"""memfd with seals, against the real kernel."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from triofd._errors import InvalidArgumentError
from triofd._memfd import (
    MFD_CLOEXEC,
    Memfd,
    Seal,
    memfd_add_seals,
    memfd_create,
    memfd_get_seals,
)


def test_memfd_is_an_anonymous_close_on_exec_regular_file() -> None:
    with Memfd("triofd-test", size=8192) as m:
        assert m.size == 8192
        assert stat.S_ISREG(os.fstat(m.fileno()).st_mode)
        assert not os.get_inheritable(m.fileno())
        assert os.readlink(f"/proc/self/fd/{m.fileno()}") == "/memfd:triofd-test (deleted)"
        assert m.write(b"hello", 100) == 5
        assert m.read(5, 100) == b"hello"
        assert m.seals == Seal(0)
    assert m.closed


def test_mmap_shares_memory_with_the_file() -> None:
    with Memfd(size=4096) as m:
        mapping = m.mmap()
        try:
            mapping[10:14] = b"mmap"
            assert m.read(4, 10) == b"mmap"
        finally:
            mapping.close()


def test_shrink_and_grow_seals_fix_the_size() -> None:
    with Memfd(size=4096) as m:
        assert m.seal(Seal.SHRINK, Seal.GROW) == Seal.SHRINK | Seal.GROW
        with pytest.raises(PermissionError) as info:
            m.truncate(100)
        assert info.value.errno == errno.EPERM
        with pytest.raises(PermissionError):
            m.truncate(8192)
        assert m.write(b"still writable") == 14


def test_write_seal_forbids_writes_and_is_refused_while_a_writable_map_exists() -> None:
    with Memfd(size=4096) as m:
        mapping = m.mmap()
        with pytest.raises(OSError, match="busy") as busy:
            m.seal(Seal.WRITE)
        assert busy.value.errno == errno.EBUSY
        mapping.close()
        m.seal(Seal.WRITE)
        with pytest.raises(PermissionError):
            m.write(b"x")
        readonly = m.mmap(writable=False)
        readonly.close()


def test_future_write_seal_keeps_existing_writable_maps() -> None:
    with Memfd(size=4096) as m:
        mapping = m.mmap()
        try:
            m.seal(Seal.FUTURE_WRITE)
            mapping[0:2] = b"ok"
            assert m.read(2) == b"ok"
            with pytest.raises(PermissionError):
                m.write(b"no")
        finally:
            mapping.close()


def test_seal_seal_forbids_further_seals() -> None:
    with Memfd() as m:
        m.seal(Seal.SEAL)
        with pytest.raises(PermissionError) as info:
            m.seal(Seal.GROW)
        assert info.value.errno == errno.EPERM


def test_memfd_without_sealing_starts_sealed_against_seals() -> None:
    with Memfd(allow_sealing=False) as m:
        assert Seal.SEAL in m.seals
        with pytest.raises(PermissionError):
            m.seal(Seal.WRITE)


def test_memfd_errors_keep_errno() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        memfd_create("x" * 300)  # name longer than 249 bytes
    assert info.value.errno == errno.EINVAL
    with pytest.raises(InvalidArgumentError) as info:
        memfd_create("x", 0x7FF0_0000)
    assert info.value.errno == errno.EINVAL
    r, w = os.pipe()
    try:
        with pytest.raises(PermissionError) as denied:
            memfd_add_seals(r, Seal.WRITE)  # not sealable (6.x says EPERM here)
        assert denied.value.errno == errno.EPERM
        with pytest.raises(InvalidArgumentError) as info:
            memfd_get_seals(r)
        assert info.value.errno == errno.EINVAL
    finally:
        os.close(r)
        os.close(w)
    fd = memfd_create("x", MFD_CLOEXEC)
    try:
        assert memfd_get_seals(fd) == Seal.SEAL  # created without MFD_ALLOW_SEALING
    finally:
        os.close(fd)
    with pytest.raises(TypeError):
        Memfd(b"bytes-name")  # type: ignore[arg-type]


def test_memfd_objects_leak_no_fd_over_10000_cycles() -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(10_000):
        Memfd().close()
    assert len(os.listdir("/proc/self/fd")) == before
