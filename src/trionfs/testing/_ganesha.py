"""A private nfs-ganesha server (NFSv3 over TCP, VFS export) in its own network namespace.

Why a namespace per server: ganesha refuses to start without rpcbind, and on start and on stop
it unregisters *every* NFS and MOUNT registration in rpcbind, so two servers sharing one rpcbind
break each other.  Each :class:`GaneshaServer` therefore gets

* a :class:`~trionfs.testing._namespace.PrivateNamespace` (network + mount namespace, ``lo`` up
  with one extra address because ganesha resolves ``Bind_addr`` with ``AI_ADDRCONFIG``, a
  private tmpfs on ``/run``);
* its own ``rpcbind -f -w`` and ``ganesha.nfsd -F`` started inside it with ``nsenter``.

The server listens on ``127.0.0.1`` *of that namespace*.  Clients reach it by creating their
sockets from a thread that has entered the namespace (:meth:`GaneshaServer.netns`), or by running
in it (:meth:`GaneshaServer.run`).

If the owning process dies, the namespace's holder kills every process left inside, so a
crashed test run leaves no ganesha behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from ._namespace import PrivateNamespace, all_threads_stopped, pids_in_netns, terminate
from ._netns import current_netns_id
from ._rpcprobe import MOUNT_PROGRAM, NFS_PROGRAM, PORTMAP_PROGRAM, pmap_getport, rpc_null
from ._verifier import probe_write_verifier

__all__ = ["GaneshaServer", "GaneshaUnavailable", "ganesha_unavailable_reason"]

logger = logging.getLogger("trionfs.testing")

LOOPBACK = "127.0.0.1"
_REQUIRED_TOOLS = ("ganesha.nfsd", "rpcbind", "unshare", "nsenter", "ip", "mount")

# Live servers by network-namespace id, so helpers can find "the server this thread is in".
_registry: dict[tuple[int, int], GaneshaServer] = {}
_registry_lock = threading.Lock()


class GaneshaUnavailable(RuntimeError):
    """This machine cannot run a private ganesha (not root, or a tool is missing)."""


def ganesha_unavailable_reason() -> str | None:
    """Why :class:`GaneshaServer` cannot start here, or ``None`` if it can."""
    if os.geteuid() != 0:
        return "a private nfs-ganesha needs root (network namespaces, rpcbind, ganesha.nfsd)"
    missing = [tool for tool in _REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        tools = ", ".join(missing)
        return f"a private nfs-ganesha needs {tools} (apt: nfs-ganesha-vfs rpcbind)"
    return None


def _fresh_epoch(previous: int | None) -> int:
    now = int(time.time())
    return now if previous is None or now > previous else previous + 1


def _config_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class GaneshaServer:
    """One nfs-ganesha NFSv3 server exporting a fresh directory, in a private namespace.

    ``start()`` returns once NFS v3 answers a NULL call and rpcbind maps MOUNT v3; ``stop()``
    ends every process of the server and removes its temporary directory.  The instance is
    also a context manager (start on enter, stop on exit)::

        with GaneshaServer() as server, server.netns():
            ...  # sockets created here reach server.url

    Fault helpers: :meth:`restart` (new write verifier unless ``new_epoch=False``),
    :meth:`stop_ganesha` / :meth:`start_ganesha` (nothing listens in between: connections are
    refused), :meth:`kill` (SIGKILL, as a crash), :meth:`pause` / :meth:`resume` (SIGSTOP: calls
    hang until the client times out).
    """

    host = LOOPBACK

    def __init__(
        self,
        *,
        base_dir: str | os.PathLike[str] | None = None,
        nfs_port: int = 2049,
        mount_port: int = 20048,
        export_mode: int = 0o777,
        epoch: int | None = None,
        log_level: str = "NIV_EVENT",
        core_params: Mapping[str, str | int | bool] | None = None,
        export_params: Mapping[str, str | int | bool] | None = None,
        startup_timeout: float = 15.0,
    ) -> None:
        """Configure (not start) a server.

        ``base_dir``: where the export and ganesha's files go (default: a new temporary
        directory, removed by ``stop()``).  ``epoch``: pin ganesha's epoch, and so its write
        verifier, across restarts (default: a fresh epoch on every start).  ``core_params`` /
        ``export_params``: extra ``NFS_CORE_PARAM`` / ``EXPORT`` settings, e.g.
        ``{"PrivilegedPort": True}``.
        """
        self.nfs_port = nfs_port
        self.mount_port = mount_port
        self._export_mode = export_mode
        self._pinned_epoch = epoch
        self._epoch: int | None = None
        self._log_level = log_level
        self._core_params = dict(core_params or {})
        self._export_params = dict(export_params or {})
        self._startup_timeout = startup_timeout
        self._base_dir_arg = Path(base_dir) if base_dir is not None else None
        self._base: Path | None = None
        self._ns: PrivateNamespace | None = None
        self._netns_id: tuple[int, int] | None = None
        self._rpcbind: subprocess.Popen[bytes] | None = None
        self._ganesha: subprocess.Popen[bytes] | None = None
        self._ganesha_log_pos = 0

    # -- facts about the running server ------------------------------------------------------

    @property
    def base_dir(self) -> Path:
        """The server's working directory (config, logs, recovery dir, export)."""
        if self._base is None:
            raise RuntimeError("the server has not been started")
        return self._base

    @property
    def export_dir(self) -> Path:
        """The exported directory on disk.  Read it to check results; change it only through NFS."""
        return self.base_dir / "export"

    @property
    def export_path(self) -> str:
        """The export's path as clients MOUNT it (the same path as on disk)."""
        return str(self.export_dir)

    @property
    def url(self) -> str:
        """``nfs://127.0.0.1/<export path>`` (a libnfs URL; ports come from rpcbind)."""
        return f"nfs://{self.host}{self.export_path}"

    def url_for(self, relpath: str) -> str:
        """The URL of ``relpath`` inside the export."""
        return f"{self.url}/{relpath.lstrip('/')}"

    @property
    def epoch(self) -> int:
        """ganesha's current epoch (``-E``), from which its NFSv3 write verifier is made."""
        if self._epoch is None:
            raise RuntimeError("ganesha has not been started")
        return self._epoch

    @property
    def ganesha_pid(self) -> int | None:
        """PID of the running ganesha.nfsd, or ``None``."""
        g = self._ganesha
        return g.pid if g is not None and g.poll() is None else None

    @property
    def _namespace(self) -> PrivateNamespace:
        if self._ns is None:
            raise RuntimeError("the server has not been started")
        return self._ns

    @property
    def holder_pid(self) -> int:
        """PID of the process holding the namespace (for ``nsenter -t PID``)."""
        return self._namespace.pid

    @property
    def netns_id(self) -> tuple[int, int]:
        """``(st_dev, st_ino)`` of the server's network namespace."""
        if self._netns_id is None:
            raise RuntimeError("the server has not been started")
        return self._netns_id

    @property
    def running(self) -> bool:
        """Whether ganesha is running (possibly paused)."""
        return self.ganesha_pid is not None

    @property
    def log_path(self) -> Path:
        return self.base_dir / "ganesha.log"

    def log_text(self) -> str:
        """ganesha's log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- namespace ----------------------------------------------------------------------------

    def netns(self) -> AbstractContextManager[None]:
        """Context manager: the calling thread is in the server's network namespace inside it.

        Only the calling thread moves.  With Trio, enter it on the thread that runs
        ``trio.run`` (the main thread under pytest-trio) and connect to numeric addresses:
        Trio creates sockets on that thread, but ``getaddrinfo`` of names and
        ``trio.run_process`` use worker threads, which stay where they were.
        """
        return self._namespace.netns()

    def nsenter_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside the server's namespaces."""
        return self._namespace.nsenter_argv(argv)

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        """``subprocess.run(argv)`` in the server's namespaces (``capture_output`` by default)."""
        return self._namespace.run(argv, **kwargs)

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> GaneshaServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Create the namespace, start rpcbind and ganesha, and wait until both answer."""
        reason = ganesha_unavailable_reason()
        if reason is not None:
            raise GaneshaUnavailable(reason)
        if self._ns is not None:
            raise RuntimeError("the server is already started")
        try:
            self._prepare_dirs()
            self._start_namespace()
            self._start_rpcbind()
            self.start_ganesha(new_epoch=True)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop ganesha, rpcbind and the namespace holder; remove the temporary directory.

        Safe to call more than once and on a half-started server.
        """
        try:
            self.stop_ganesha()
            terminate(self._rpcbind)
            self._rpcbind = None
        finally:
            with _registry_lock:
                if self._netns_id is not None and _registry.get(self._netns_id) is self:
                    del _registry[self._netns_id]
            if self._ns is not None:
                self._ns.close()
                self._ns = None
            if self._base is not None and self._base_dir_arg is None:
                shutil.rmtree(self._base, ignore_errors=True)
                self._base = None

    def start_ganesha(self, *, new_epoch: bool = True) -> None:
        """(Re)start ganesha in the existing namespace and wait until it serves.

        ``new_epoch=False`` keeps the previous epoch, so the write verifier stays the same;
        otherwise a pinned ``epoch=`` from the constructor is used, or a fresh one.
        """
        if self._ns is None:
            raise RuntimeError("the server has not been started")
        if self.running:
            raise RuntimeError("ganesha is already running")
        if not new_epoch and self._epoch is not None:
            epoch = self._epoch
        elif self._pinned_epoch is not None:
            epoch = self._pinned_epoch
        else:
            epoch = _fresh_epoch(self._epoch)
        base = self.base_dir
        self._ganesha_log_pos = self.log_path.stat().st_size if self.log_path.exists() else 0
        argv = [
            "ganesha.nfsd", "-F",
            "-f", str(base / "ganesha.conf"),
            "-L", str(self.log_path),
            "-p", str(base / "ganesha.pid"),
            "-N", self._log_level,
            "-E", str(epoch),
        ]  # fmt: skip
        self._ganesha = self._spawn(argv, "ganesha.out")
        self._epoch = epoch
        try:
            self._wait_until(self._ganesha_ready, self._ganesha, "ganesha.nfsd")
        except BaseException:
            self.kill()  # never leave a half-started ganesha behind
            raise
        logger.debug("ganesha %d serving %s (epoch %d)", self._ganesha.pid, self.url, epoch)

    def stop_ganesha(self) -> None:
        """SIGTERM ganesha and wait for it (it unregisters from rpcbind); no-op if not running."""
        g = self._ganesha
        if g is not None and g.poll() is None:
            try:
                os.kill(g.pid, signal.SIGCONT)  # a paused ganesha cannot handle SIGTERM
            except ProcessLookupError:
                pass
        terminate(g)
        self._ganesha = None

    def restart(self, *, new_epoch: bool = True) -> None:
        """Stop and start ganesha on the same ports; clients may reconnect to the same address.

        With ``new_epoch=True`` (default) the write verifier changes, as after a server
        reboot: uncommitted UNSTABLE writes must be resent.  (A server constructed with
        ``epoch=`` keeps that epoch.)
        """
        self.stop_ganesha()
        self.start_ganesha(new_epoch=new_epoch)

    def kill(self) -> None:
        """SIGKILL ganesha, like a crash (no unregistering, no clean close of connections)."""
        g = self._ganesha
        if g is not None and g.poll() is None:
            g.kill()
            g.wait()
        self._ganesha = None

    def pause(self) -> None:
        """SIGSTOP ganesha: connections stay open, calls get no reply (client timeouts)."""
        pid = self.ganesha_pid
        if pid is None:
            raise RuntimeError("ganesha is not running")
        os.kill(pid, signal.SIGSTOP)
        # Delivery is asynchronous: return only once every thread has stopped.
        deadline = time.monotonic() + 5
        while not all_threads_stopped(pid):
            if time.monotonic() > deadline:
                raise TimeoutError(f"ganesha {pid} did not stop on SIGSTOP")
            time.sleep(0.001)

    def resume(self) -> None:
        """SIGCONT a paused ganesha."""
        pid = self.ganesha_pid
        if pid is None:
            raise RuntimeError("ganesha is not running")
        os.kill(pid, signal.SIGCONT)

    def write_verifier(self) -> bytes:
        """The 8-byte NFSv3 write verifier ganesha returns now, asked over the wire.

        Independent of the client under test (a hand-made COMMIT of a scratch file in the
        export root, removed again).  Works from any thread.
        """
        with _maybe_entered(self):
            return probe_write_verifier(
                self.host, self.export_path, nfs_port=self.nfs_port, mount_port=self.mount_port
            )

    def processes_in_netns(self) -> list[int]:
        """PIDs of processes whose network namespace is the server's (for leak checks)."""
        return pids_in_netns(self.netns_id)

    # -- internals ------------------------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        if self._base_dir_arg is None:
            self._base = Path(tempfile.mkdtemp(prefix="trionfs-ganesha-"))
        else:
            self._base = self._base_dir_arg
            self._base.mkdir(parents=True, exist_ok=True)
        base = self._base
        os.chmod(base, 0o755)  # mkdtemp makes 0700; non-root uids must reach the export
        export = base / "export"
        export.mkdir(exist_ok=True)
        os.chown(export, 0, 0)
        os.chmod(export, self._export_mode)
        (base / "recovery").mkdir(exist_ok=True)
        (base / "ganesha.conf").write_text(self._config())

    def _config(self) -> str:
        core: dict[str, str | int | bool] = {
            "Protocols": 3,
            "NFS_Port": self.nfs_port,
            "MNT_Port": self.mount_port,
            "Enable_NLM": False,
            "Enable_RQUOTA": False,
            "Enable_UDP": False,
            "Bind_addr": LOOPBACK,
        }
        core.update(self._core_params)
        export: dict[str, str | int | bool] = {
            "Export_Id": 1,
            "Path": self.export_path,
            "Pseudo": self.export_path,
            "Access_Type": "RW",
            "Squash": "No_Root_Squash",
            "Protocols": 3,
            "Transports": "TCP",
            "SecType": "sys",
        }
        export.update(self._export_params)

        def block(items: Mapping[str, str | int | bool]) -> str:
            return "".join(f"    {k} = {_config_value(v)};\n" for k, v in items.items())

        return (
            f"NFS_CORE_PARAM {{\n{block(core)}}}\n"
            "NFSV4 {\n    Graceless = true;\n"
            f'    RecoveryRoot = "{self.base_dir / "recovery"}";\n}}\n'
            "NFS_KRB5 {\n    Active_krb5 = false;\n}\n"
            f"EXPORT {{\n{block(export)}    FSAL {{\n        Name = VFS;\n    }}\n}}\n"
        )

    def _start_namespace(self) -> None:
        owned = self.base_dir if self._base_dir_arg is None else None
        self._ns = PrivateNamespace(self.base_dir / "holder.err", orphan_cleanup=owned)
        self._netns_id = self._ns.netns_id
        with _registry_lock:
            _registry[self._netns_id] = self

    def _start_rpcbind(self) -> None:
        self._rpcbind = self._spawn(["rpcbind", "-f", "-w"], "rpcbind.out")

        def ready() -> bool:
            rpc_null(LOOPBACK, 111, PORTMAP_PROGRAM, 2, timeout=1.0)
            return True

        self._wait_until(ready, self._rpcbind, "rpcbind")

    def _spawn(self, argv: list[str], outname: str) -> subprocess.Popen[bytes]:
        return self._namespace.spawn(argv, self.base_dir / outname)

    def _ganesha_ready(self) -> bool:
        rpc_null(LOOPBACK, self.nfs_port, NFS_PROGRAM, 3, timeout=1.0)
        return (
            pmap_getport(LOOPBACK, NFS_PROGRAM, 3) == self.nfs_port
            and pmap_getport(LOOPBACK, MOUNT_PROGRAM, 3) == self.mount_port
        )

    def _wait_until(self, probe: Any, proc: subprocess.Popen[bytes], what: str) -> None:
        deadline = time.monotonic() + self._startup_timeout
        delay = 0.005
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{what} exited with status {proc.returncode} during startup\n"
                    + self._startup_log_tail()
                )
            try:
                with self.netns():
                    if probe():
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not become ready\n" + self._startup_log_tail())
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _startup_log_tail(self) -> str:
        parts = []
        for name in ("rpcbind.out", "ganesha.out"):
            path = self.base_dir / name
            if path.exists() and path.stat().st_size:
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-2000:]}")
        log = self.log_text()[self._ganesha_log_pos :]
        if log:
            parts.append(f"--- ganesha.log\n{log[-3000:]}")
        return "\n".join(parts)


def server_for_current_thread() -> GaneshaServer | None:
    """The live server whose namespace the calling thread is in, else the only live server."""
    here = current_netns_id()
    with _registry_lock:
        server = _registry.get(here)
        if server is None and len(_registry) == 1:
            server = next(iter(_registry.values()))
    return server


@contextmanager
def _maybe_entered(server: GaneshaServer) -> Iterator[None]:
    if current_netns_id() == server.netns_id:
        yield
    else:
        with server.netns():
            yield
