"""The private nfs-ganesha fixture: lifecycle, isolation, namespaces and fault helpers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from trionfs.testing import (
    GaneshaServer,
    GaneshaUnavailable,
    LibnfsError,
    current_netns_id,
    ganesha_unavailable_reason,
    libnfs_cp,
    libnfs_ls,
    libnfs_unavailable_reason,
)
from trionfs.testing._rpcprobe import MOUNT_PROGRAM, NFS_PROGRAM, pmap_getport, rpc_null

pytestmark = pytest.mark.interop


def _null_call_bytes(xid: int) -> bytes:
    body = struct.pack(">IIIIIIIIII", xid, 0, 2, NFS_PROGRAM, 3, 0, 0, 0, 0, 0)
    return struct.pack(">I", 0x80000000 | len(body)) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _null_over(sock: socket.socket, xid: int) -> int:
    """Send an NFS NULL call on ``sock`` and return the xid of the reply."""
    sock.sendall(_null_call_bytes(xid))
    (mark,) = struct.unpack(">I", _recv_exact(sock, 4))
    reply = _recv_exact(sock, mark & 0x7FFFFFFF)
    rxid: int = struct.unpack(">I", reply[:4])[0]
    return rxid


def _gone_or_zombie(pid: int) -> bool:
    # An orphan is reaped by init some time after it dies; a zombie is dead enough.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _registered(server: GaneshaServer) -> str:
    out = server.run(["rpcinfo", "-p", "127.0.0.1"], check=True).stdout
    return out.decode()


def test_ganesha_is_available_on_this_machine() -> None:
    # CI runs as root with ganesha installed: the interop tests must run, not skip.
    assert ganesha_unavailable_reason() is None


def test_server_registers_nfs3_and_mount3_with_its_own_rpcbind(
    nfs_server: GaneshaServer,
) -> None:
    rows = {tuple(line.split()[:4]) for line in _registered(nfs_server).splitlines()[1:]}
    assert ("100003", "3", "tcp", str(nfs_server.nfs_port)) in rows
    assert ("100005", "3", "tcp", str(nfs_server.mount_port)) in rows
    assert nfs_server.url == f"nfs://127.0.0.1{nfs_server.export_dir}"


def test_export_dir_is_root_owned_and_world_writable(nfs_server: GaneshaServer) -> None:
    st = nfs_server.export_dir.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 0, 0o777)


def test_nfs_ls_lists_a_file_copied_in_through_nfs(
    nfs_server: GaneshaServer, tmp_path: Path
) -> None:
    src = tmp_path / "hello.txt"
    src.write_bytes(b"hello, ganesha\n")
    libnfs_cp(str(src), nfs_server.url_for("hello.txt"))
    [entry] = libnfs_ls(nfs_server.url)
    assert (entry.name, entry.size, entry.is_dir) == ("hello.txt", 15, False)
    assert (nfs_server.export_dir / "hello.txt").read_bytes() == b"hello, ganesha\n"


def test_netns_context_moves_only_the_calling_thread_and_restores_it_on_error(
    nfs_server_shared: GaneshaServer,
) -> None:
    outside = current_netns_id()
    inside: list[tuple[int, int]] = []

    def fail_inside() -> None:
        with nfs_server_shared.netns():
            inside.append(current_netns_id())
            rpc_null("127.0.0.1", nfs_server_shared.nfs_port, NFS_PROGRAM, 3)
            raise KeyError("boom")

    with pytest.raises(KeyError):
        fail_inside()
    assert inside == [nfs_server_shared.netns_id]
    assert current_netns_id() == outside


def test_host_namespace_does_not_see_the_server(nfs_server_shared: GaneshaServer) -> None:
    assert current_netns_id() != nfs_server_shared.netns_id
    # Whatever listens on the host's 2049 (usually nothing), it is not this server's rpcbind.
    with nfs_server_shared.netns():
        port = pmap_getport("127.0.0.1", MOUNT_PROGRAM, 3)
    assert port == nfs_server_shared.mount_port


def test_two_servers_at_once_do_not_unregister_each_other(tmp_path: Path) -> None:
    with GaneshaServer() as first, GaneshaServer() as second:
        assert first.netns_id != second.netns_id
        for server in (first, second):
            assert f"{server.nfs_port}  nfs" in _registered(server)
        # ganesha unregisters all NFS/MOUNT entries when it stops: only its own rpcbind.
        first.stop_ganesha()
        assert "nfs" not in _registered(first).replace("portmapper", "")
        assert "mountd" in _registered(second)
        src = tmp_path / "f"
        src.write_bytes(b"x" * 10)
        libnfs_cp(str(src), second.url_for("f"), server=second)
        assert [e.name for e in libnfs_ls(second.url, server=second)] == ["f"]


def test_restart_changes_the_epoch_and_new_epoch_false_keeps_it(
    nfs_server: GaneshaServer,
) -> None:
    first = nfs_server.epoch
    nfs_server.restart()
    second = nfs_server.epoch
    assert second != first
    nfs_server.restart(new_epoch=False)
    assert nfs_server.epoch == second
    assert f"epoch {second:x}" in nfs_server.log_text()  # ganesha logs it in hex


def test_epoch_given_to_the_constructor_survives_restarts() -> None:
    with GaneshaServer(epoch=1_700_000_000) as server:
        server.restart()
        assert server.epoch == 1_700_000_000
        assert "epoch 6553f100" in server.log_text()


def test_client_reconnects_on_the_same_port_after_restart(nfs_server: GaneshaServer) -> None:
    with socket.create_connection(("127.0.0.1", nfs_server.nfs_port), timeout=5) as sock:
        assert _null_over(sock, 11) == 11
        old_pid = nfs_server.ganesha_pid
        nfs_server.restart()
        assert nfs_server.ganesha_pid != old_pid
        assert sock.recv(1) == b""  # the old server closed our connection
    with socket.create_connection(("127.0.0.1", nfs_server.nfs_port), timeout=5) as sock:
        assert _null_over(sock, 12) == 12


def test_paused_server_leaves_calls_unanswered_until_resumed(
    nfs_server: GaneshaServer,
) -> None:
    with socket.create_connection(("127.0.0.1", nfs_server.nfs_port), timeout=5) as sock:
        nfs_server.pause()
        sock.settimeout(0.3)
        sock.sendall(_null_call_bytes(21))
        with pytest.raises(TimeoutError):
            sock.recv(4)
        nfs_server.resume()
        sock.settimeout(5)
        (mark,) = struct.unpack(">I", _recv_exact(sock, 4))
        assert struct.unpack(">I", _recv_exact(sock, mark & 0x7FFFFFFF)[:4])[0] == 21


def test_stopped_ganesha_refuses_connections_and_can_start_again(
    nfs_server: GaneshaServer,
) -> None:
    nfs_server.stop_ganesha()
    assert not nfs_server.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", nfs_server.nfs_port), timeout=5)
    nfs_server.start_ganesha()
    rpc_null("127.0.0.1", nfs_server.nfs_port, NFS_PROGRAM, 3)


def test_killed_ganesha_can_be_started_again(nfs_server: GaneshaServer) -> None:
    pid = nfs_server.ganesha_pid
    assert pid is not None
    nfs_server.kill()
    assert not nfs_server.running
    nfs_server.start_ganesha()
    assert pmap_getport("127.0.0.1", NFS_PROGRAM, 3) == nfs_server.nfs_port


def test_stop_leaves_no_process_and_no_temporary_directory() -> None:
    server = GaneshaServer()
    server.start()
    base = server.base_dir
    pids = [server.holder_pid, server.ganesha_pid]
    assert len(server.processes_in_netns()) >= 3  # holder, rpcbind, ganesha
    server.stop()
    assert server.processes_in_netns() == []
    for pid in pids:
        assert pid is not None
        assert _gone_or_zombie(pid)
    assert not base.exists()
    server.stop()  # idempotent


_ORPHAN_SCRIPT = """
import sys, time
from trionfs.testing import GaneshaServer
s = GaneshaServer()
s.start()
print(s.netns_id[0], s.netns_id[1], s.ganesha_pid, s.base_dir, flush=True)
time.sleep(60)
"""


def test_processes_die_with_an_owner_that_is_killed() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        fields = child.stdout.readline().split()
        dev, ino, ganesha = (int(x) for x in fields[:3])
        base = Path(fields[3])
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    from trionfs.testing._namespace import pids_in_netns as _pids_in_netns

    deadline = time.monotonic() + 10
    while _pids_in_netns((dev, ino)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _pids_in_netns((dev, ino)) == []
    assert _gone_or_zombie(ganesha)
    deadline = time.monotonic() + 10
    while base.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not base.exists()  # the holder removed the dead owner's temporary directory


def test_nfs_url_is_a_fresh_world_writable_directory_on_the_shared_server(
    nfs_url: str, nfs_server_shared: GaneshaServer
) -> None:
    assert nfs_url.startswith(nfs_server_shared.url + "/")
    on_disk = nfs_server_shared.export_dir / nfs_url.rsplit("/", 1)[1]
    assert on_disk.is_dir()
    assert on_disk.stat().st_mode & 0o777 == 0o777
    assert list(on_disk.iterdir()) == []
    assert libnfs_ls(nfs_url) == []
    assert current_netns_id() == nfs_server_shared.netns_id


def test_nfs_url_lets_a_non_root_uid_create_files(nfs_url: str, tmp_path: Path) -> None:
    src = tmp_path / "u"
    src.write_bytes(b"by uid 1000")
    libnfs_cp(str(src), nfs_url + "/owned?uid=1000&gid=1000")
    [entry] = libnfs_ls(nfs_url)
    assert (entry.name, entry.uid, entry.gid) == ("owned", 1000, 1000)


def test_shared_server_is_brought_back_if_a_test_killed_it(
    nfs_server_shared: GaneshaServer, request: pytest.FixtureRequest
) -> None:
    nfs_server_shared.kill()
    url = request.getfixturevalue("nfs_url")
    assert nfs_server_shared.running
    assert libnfs_ls(url) == []


async def test_trio_sockets_of_a_trio_test_reach_the_server(nfs_url: str) -> None:
    # pytest-trio runs the test on the main thread, which nfs_url moved into the namespace.
    stream = await trio.open_tcp_stream("127.0.0.1", 2049)
    async with stream:
        await stream.send_all(_null_call_bytes(31))
        data = b""
        while len(data) < 8:
            chunk = await stream.receive_some()
            assert chunk
            data += chunk
    assert struct.unpack(">I", data[4:8])[0] == 31


async def test_restart_from_a_worker_thread_keeps_the_trio_connection_usable(
    nfs_server: GaneshaServer,
) -> None:
    before = nfs_server.epoch
    stream = await trio.open_tcp_stream("127.0.0.1", nfs_server.nfs_port)
    async with stream:
        await trio.to_thread.run_sync(nfs_server.restart)
        assert await stream.receive_some() == b""
    assert nfs_server.epoch != before
    async with await trio.open_tcp_stream("127.0.0.1", nfs_server.nfs_port) as again:
        await again.send_all(_null_call_bytes(41))
        assert len(await again.receive_some()) >= 4


def test_write_verifier_follows_the_epoch_across_restarts(nfs_server: GaneshaServer) -> None:
    first = nfs_server.write_verifier()
    # ganesha 4.3 stores the epoch as a native (little-endian here) uint64 with node id 0.
    assert first == nfs_server.epoch.to_bytes(8, sys.byteorder)
    nfs_server.restart(new_epoch=False)
    assert nfs_server.write_verifier() == first
    nfs_server.restart()
    assert nfs_server.write_verifier() not in (first, b"")
    assert nfs_server.write_verifier() == nfs_server.epoch.to_bytes(8, sys.byteorder)
    assert list(nfs_server.export_dir.iterdir()) == []  # the probe cleans up after itself


def test_write_verifier_can_be_asked_from_outside_the_namespace(
    nfs_server_shared: GaneshaServer,
) -> None:
    assert current_netns_id() != nfs_server_shared.netns_id
    assert nfs_server_shared.write_verifier() == nfs_server_shared.epoch.to_bytes(8, sys.byteorder)


def test_factory_servers_take_export_options(
    nfs_server_factory: Callable[..., GaneshaServer], tmp_path: Path
) -> None:
    readonly = nfs_server_factory(export_params={"Access_Type": "RO"})
    writable = nfs_server_factory(epoch=1_800_000_000)
    assert writable.epoch == 1_800_000_000
    src = tmp_path / "f"
    src.write_bytes(b"data")
    with pytest.raises(LibnfsError, match="NFS3ERR_ROFS"):
        libnfs_cp(str(src), readonly.url_for("f"), server=readonly)
    libnfs_cp(str(src), writable.url_for("f"), server=writable)
    assert (writable.export_dir / "f").read_bytes() == b"data"


def test_without_root_the_fixtures_skip_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trionfs.testing._pytest_plugin import _skip_if_unavailable

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv("TRIONFS_REQUIRE_GANESHA", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        _skip_if_unavailable()
    monkeypatch.setenv("TRIONFS_REQUIRE_GANESHA", "1")
    with pytest.raises(pytest.fail.Exception, match="TRIONFS_REQUIRE_GANESHA"):
        _skip_if_unavailable()


def test_missing_tools_are_named_in_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which

    def which(name: str) -> str | None:
        return None if name in ("ganesha.nfsd", "nfs-cat") else real_which(name)

    monkeypatch.setattr(shutil, "which", which)
    reason = ganesha_unavailable_reason()
    assert reason is not None
    assert "ganesha.nfsd" in reason
    libnfs_reason = libnfs_unavailable_reason()
    assert libnfs_reason is not None
    assert "nfs-cat" in libnfs_reason
    with pytest.raises(GaneshaUnavailable, match=r"ganesha\.nfsd"):
        GaneshaServer().start()


_FAILING_SESSION = """
import os

HOST_NETNS = os.stat("/proc/thread-self/ns/net").st_ino


def test_a_failing_test_inside_the_namespace(nfs_url):
    assert os.stat("/proc/thread-self/ns/net").st_ino != HOST_NETNS
    raise AssertionError("deliberate")


def test_the_next_test_is_back_in_the_host_namespace():
    assert os.stat("/proc/thread-self/ns/net").st_ino == HOST_NETNS


def test_a_later_test_gets_a_working_directory(nfs_url):
    from trionfs.testing import libnfs_ls

    assert libnfs_ls(nfs_url) == []
"""


def test_a_failing_test_does_not_leave_the_next_one_in_the_namespace(tmp_path: Path) -> None:
    (tmp_path / "test_session.py").write_text(_FAILING_SESSION)
    # Only our plugin (the entry point a user gets), not every installed one: faster start.
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    argv = ["-p", "trionfs.testing._pytest_plugin", "-p", "no:cacheprovider", "test_session.py"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "1 failed, 2 passed" in proc.stdout, proc.stdout + proc.stderr
    assert "deliberate" in proc.stdout


def test_netns_blocks_nest_and_unwind_in_order(
    nfs_server_factory: Callable[..., GaneshaServer],
) -> None:
    first, second = nfs_server_factory(), nfs_server_factory(mount_port=20049)
    host = current_netns_id()
    with first.netns():
        assert current_netns_id() == first.netns_id
        with second.netns():
            assert current_netns_id() == second.netns_id
            # Same address, different server: each namespace has its own 127.0.0.1.
            assert pmap_getport("127.0.0.1", MOUNT_PROGRAM, 3) == 20049
        assert current_netns_id() == first.netns_id
        assert pmap_getport("127.0.0.1", MOUNT_PROGRAM, 3) == 20048
    assert current_netns_id() == host


def test_a_server_that_cannot_start_reports_its_log_and_leaves_nothing() -> None:
    server = GaneshaServer(core_params={"NFS_Port": "not-a-port"}, startup_timeout=10)
    with pytest.raises(RuntimeError, match=r"ganesha\.nfsd exited with status \d+") as info:
        server.start()
    assert "ganesha.log" in str(info.value)
    assert server.processes_in_netns() == []
    assert not server.running
    with pytest.raises(RuntimeError, match="not been started"):
        _ = server.base_dir  # the temporary directory is gone
