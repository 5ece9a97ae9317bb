"""mount/pivot_root/unshare/setns/sethostname, run in a CHILD in private mount+UTS namespaces.

The test runner's own namespaces are never touched: each script starts with
``unshare(CLONE_NEWNS | CLONE_NEWUTS)`` and makes ``/`` recursively private before mounting.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from typing import Any

import pytest

from triofd._errors import InvalidArgumentError
from triofd._system import (
    CloneFlags,
    MountFlags,
    UmountFlags,
    gethostname,
    getpid,
    getppid,
    setns,
    unshare,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root")

PRELUDE = r"""
import errno, json, os, sys, tempfile
from triofd._system import *

def errno_of(fn, *args):
    try:
        fn(*args)
    except OSError as exc:
        return [type(exc).__name__, exc.errno, isinstance(exc, ValueError)]
    return None

out = {}
original_uts = os.open("/proc/self/ns/uts", os.O_RDONLY | os.O_CLOEXEC)
out["host_before"] = gethostname()
unshare(CloneFlags.NEWNS | CloneFlags.NEWUTS)
mount(None, "/", None, MountFlags.REC | MountFlags.PRIVATE)
"""

PRIVILEGED = (
    PRELUDE
    + r"""
out["pid"] = [getpid(), os.getpid(), getppid(), os.getppid()]
sethostname("triofd-ns-test")
out["host_inside"] = gethostname()
setns(original_uts, CloneFlags.NEWUTS)
out["host_after_setns"] = gethostname()
unshare(CloneFlags.NEWUTS)

work = tempfile.mkdtemp()
mount("tmpfs", work, "tmpfs", MountFlags.NOSUID | MountFlags.NODEV, "size=1m,mode=755")
out["mounted"] = any(l.split()[4] == work for l in open("/proc/self/mountinfo"))
with open(work + "/marker", "w") as f:
    f.write("inside")
ro = MountFlags.REMOUNT | MountFlags.RDONLY | MountFlags.NOSUID | MountFlags.NODEV
mount(None, work, None, ro)
out["write_after_ro_remount"] = errno_of(lambda: open(work + "/x", "w"))
bind = tempfile.mkdtemp()
mount(work, bind, None, MountFlags.BIND)
out["bind_sees"] = open(bind + "/marker").read()
umount2(bind, UmountFlags.DETACH)
out["bind_after_umount"] = os.listdir(bind)

out["umount_not_a_mount"] = errno_of(umount2, bind)
out["mount_bad_fstype"] = errno_of(mount, "none", bind, "no-such-fs")
out["mount_missing_target"] = errno_of(mount, "tmpfs", "/no/such/dir", "tmpfs")
out["setns_not_a_namespace"] = errno_of(setns, 0, 0)
out["unshare_bad_flags"] = errno_of(unshare, 1)
out["pivot_root_on_the_current_root"] = errno_of(pivot_root, bind, bind)

new_root = tempfile.mkdtemp()
mount("tmpfs", new_root, "tmpfs", 0, "size=1m")
os.mkdir(new_root + "/old")
with open(new_root + "/i-am-root", "w") as f:
    f.write("")
pivot_root(new_root, new_root + "/old")
os.chdir("/")
out["root_after_pivot"] = sorted(os.listdir("/"))
umount2("/old", UmountFlags.DETACH)
out["old_after_detach"] = os.listdir("/old")
print(json.dumps(out))
"""
)

UNPRIVILEGED = (
    PRELUDE
    + r"""
from triofd._pidfd import pidfd_open, pidfd_send_signal
init = pidfd_open(1)
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
out["sethostname"] = errno_of(sethostname, "nope")
out["mount"] = errno_of(mount, "tmpfs", "/tmp", "tmpfs")
out["umount2"] = errno_of(umount2, "/")
out["unshare"] = errno_of(unshare, CloneFlags.NEWNS)
out["pivot_root"] = errno_of(pivot_root, "/", "/")
out["pidfd_send_signal"] = errno_of(pidfd_send_signal, init, 0)
print(json.dumps(out))
"""
)


def _run_child(script: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_namespaces_hostname_mounts_and_pivot_root_in_a_child() -> None:
    host = socket.gethostname()
    out = _run_child(PRIVILEGED)
    raw_pid, os_pid, raw_ppid, os_ppid = out["pid"]
    assert raw_pid == os_pid
    assert raw_ppid == os_ppid == os.getpid()
    assert out["host_before"] == host
    assert out["host_inside"] == "triofd-ns-test"
    assert out["host_after_setns"] == host
    assert out["mounted"] is True
    assert out["write_after_ro_remount"] == ["OSError", errno.EROFS, False]
    assert out["bind_sees"] == "inside"
    assert out["bind_after_umount"] == []
    assert out["umount_not_a_mount"] == ["InvalidArgumentError", errno.EINVAL, True]
    assert out["mount_bad_fstype"] == ["OSError", errno.ENODEV, False]
    assert out["mount_missing_target"] == ["FileNotFoundError", errno.ENOENT, False]
    assert out["setns_not_a_namespace"] == ["InvalidArgumentError", errno.EINVAL, True]
    assert out["unshare_bad_flags"] == ["InvalidArgumentError", errno.EINVAL, True]
    assert out["pivot_root_on_the_current_root"] == ["OSError", errno.EBUSY, False]
    assert out["root_after_pivot"] == ["i-am-root", "old"]
    assert out["old_after_detach"] == []
    # And the runner's own world is untouched.
    assert socket.gethostname() == host == gethostname()


def test_unprivileged_child_gets_permission_error_with_eperm() -> None:
    out = _run_child(UNPRIVILEGED)
    for call in ("sethostname", "mount", "umount2", "unshare", "pivot_root", "pidfd_send_signal"):
        assert out[call] == ["PermissionError", errno.EPERM, False], call


def test_raw_getpid_and_getppid_match_the_kernel() -> None:
    assert getpid() == os.getpid()
    assert getppid() == os.getppid()


def test_errors_raised_in_process_without_changing_anything() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(InvalidArgumentError) as info:
            setns(r, CloneFlags.NEWNS)  # not a namespace fd
        assert info.value.errno == errno.EINVAL
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(InvalidArgumentError) as info:
        setns(987654)
    assert info.value.errno == errno.EBADF
    with pytest.raises(TypeError):
        setns("fd")
    with pytest.raises(InvalidArgumentError) as info:
        unshare(1)  # not a CLONE_* flag unshare accepts
    assert info.value.errno == errno.EINVAL
    with pytest.raises(ValueError, match="out of range"):
        unshare(1 << 31)


def test_flag_enums_combine_and_match_the_kernel_numbers() -> None:
    assert CloneFlags.NEWNS | CloneFlags.NEWUTS == 0x04020000
    assert MountFlags.REC | MountFlags.PRIVATE == 0x44000
    assert int(MountFlags.BIND) == 4096
    assert int(MountFlags.LAZYTIME) == 1 << 25
    assert int(UmountFlags.DETACH) == 2
