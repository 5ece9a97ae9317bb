"""A private network + mount namespace held by a small process, and processes run inside it.

The holder is ``unshare -mn --propagation private sh -c SCRIPT``: it brings ``lo`` up, adds one
non-loopback address to it (daemons that resolve their bind address with ``AI_ADDRCONFIG``
ignore a host whose only IPv4 address is loopback), mounts a private tmpfs on ``/run`` (where
rpcbind keeps its socket and lock), prints ``ready`` and waits on its stdin.  On EOF — the
owner closed it, or the owner died — it kills every process left in the namespace and exits,
so nothing outlives a crashed test run.  :meth:`PrivateNamespace.close` does the same directly.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

from ._netns import entered_netns

__all__ = ["PrivateNamespace", "all_threads_stopped", "pids_in_netns", "terminate"]

# TEST-NET-1 (RFC 5737): routes nowhere, clashes with nothing.
EXTRA_ADDRESS = "192.0.2.1/32"

# $1: the owner's PID (spared: it may have a thread inside), $2: the extra address, $3: a
# directory to remove if the owner dies (may be empty).
_HOLDER_SCRIPT = r"""
set -e
ip link set lo up
ip addr add "$2" dev lo
mount -t tmpfs -o mode=0755 trionfs-run /run
mkdir -p /run/rpcbind
chown _rpc:root /run/rpcbind 2>/dev/null || chown daemon:root /run/rpcbind 2>/dev/null || true
set +e
echo ready
read -r _line
me=$(readlink /proc/$$/ns/net)
for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" = "$$" ] && continue
    [ "$pid" = "$1" ] && continue
    [ "$(readlink "$p/ns/net" 2>/dev/null)" = "$me" ] && kill -KILL "$pid" 2>/dev/null
done
[ -n "$3" ] && rm -rf -- "$3"
exit 0
"""


class PrivateNamespace:
    """A started holder process and an fd of its network namespace."""

    def __init__(self, errlog: Path, *, orphan_cleanup: Path | None = None) -> None:
        """Create the namespace (blocks until it is set up); ``errlog`` gets the holder's stderr.

        ``orphan_cleanup``: a directory the holder removes if the owner dies without closing.
        """
        with open(errlog, "wb") as err:
            self._holder: subprocess.Popen[bytes] | None = subprocess.Popen(
                ["unshare", "-mn", "--propagation", "private", "sh", "-c", _HOLDER_SCRIPT,
                 "trionfs-netns", str(os.getpid()), EXTRA_ADDRESS, str(orphan_cleanup or "")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )  # fmt: skip
        holder = self._holder
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != b"ready":
            holder.wait()
            self._close_pipes()
            why = errlog.read_text(errors="replace").strip() or f"status {holder.returncode}"
            raise RuntimeError(f"could not set up a private namespace: {why}")
        self.pid = holder.pid
        self.netns_fd = os.open(f"/proc/{holder.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        st = os.fstat(self.netns_fd)
        self.netns_id: tuple[int, int] = (st.st_dev, st.st_ino)

    def netns(self) -> AbstractContextManager[None]:
        """The calling thread is in the namespace for the block."""
        if self.netns_fd < 0:
            raise RuntimeError("the namespace is closed")
        return entered_netns(self.netns_fd)

    def nsenter_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside the namespaces."""
        return ["nsenter", "-t", str(self.pid), "-n", "-m", "--", *argv]

    def spawn(self, argv: Sequence[str], output: Path) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside, stdout and stderr appended to ``output``."""
        out: IO[bytes]
        with open(output, "ab") as out:
            return subprocess.Popen(
                self.nsenter_argv(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        """``subprocess.run`` inside (``capture_output`` by default)."""
        kwargs.setdefault("capture_output", True)
        return subprocess.run(self.nsenter_argv(argv), **kwargs)

    def close(self) -> None:
        """Kill whatever is left inside, then the holder; idempotent."""
        holder = self._holder
        if holder is not None:
            # The holder's own clean-up (on EOF) forks once per process on the machine: it
            # is the safety net for a dead owner.  Here Python does it faster.
            for pid in pids_in_netns(self.netns_id):
                if pid not in (os.getpid(), holder.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            holder.kill()
            holder.wait()
            self._close_pipes()
            self._holder = None
        if self.netns_fd >= 0:
            os.close(self.netns_fd)
            self.netns_fd = -1

    def _close_pipes(self) -> None:
        holder = self._holder
        if holder is not None:
            for pipe in (holder.stdin, holder.stdout):
                if pipe is not None and not pipe.closed:
                    pipe.close()


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    """SIGTERM ``proc`` and reap it (SIGKILL after ``timeout``); no-op if it has exited."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _state(stat_path: str) -> str | None:
    try:
        stat = Path(stat_path).read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def all_threads_stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is stopped (or gone): SIGSTOP has taken effect."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return True
    return all(_state(f"/proc/{pid}/task/{tid}/stat") in (None, "T", "t", "Z", "X") for tid in tids)


def pids_in_netns(netns_id: tuple[int, int]) -> list[int]:
    """PIDs whose (main thread's) network namespace is ``netns_id``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == netns_id:
            pids.append(int(entry))
    return pids
