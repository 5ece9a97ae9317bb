"""The layouts and constants hard-coded for ABI mode, checked against the system's C headers.

A C program is compiled with the host's compiler and prints what the headers say; the test is
skipped when no compiler is installed (the behavioural tests still exercise every value).
Constants newer than the headers (6.1 here, kernel 6.18) are guarded with ``#ifdef``.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import struct
import subprocess
from pathlib import Path

import pytest

from triofd._lib import ffi
from triofd._memfd import MFD_ALLOW_SEALING, MFD_CLOEXEC, MFD_NOEXEC_SEAL, Seal
from triofd._signalfd import _SIGINFO, SFD_CLOEXEC, SFD_NONBLOCK, SignalInfo
from triofd._splice import F_GETPIPE_SZ, F_SETPIPE_SZ, SpliceFlag
from triofd._system import _SYSCALLS, CloneFlags, MountFlags, UmountFlags
from triofd._timerfd import (
    TFD_CLOEXEC,
    TFD_NONBLOCK,
    TFD_TIMER_ABSTIME,
    TFD_TIMER_CANCEL_ON_SET,
    Clock,
)

SIGINFO_FIELDS = [
    "ssi_signo", "ssi_errno", "ssi_code", "ssi_pid", "ssi_uid", "ssi_fd", "ssi_tid", "ssi_band",
    "ssi_overrun", "ssi_trapno", "ssi_status", "ssi_int", "ssi_ptr", "ssi_utime", "ssi_stime",
    "ssi_addr", "ssi_addr_lsb", "ssi_syscall", "ssi_call_addr", "ssi_arch",
]  # fmt: skip

CONSTANTS = {
    "TFD_CLOEXEC": TFD_CLOEXEC,
    "TFD_NONBLOCK": TFD_NONBLOCK,
    "TFD_TIMER_ABSTIME": TFD_TIMER_ABSTIME,
    "TFD_TIMER_CANCEL_ON_SET": TFD_TIMER_CANCEL_ON_SET,
    "SFD_CLOEXEC": SFD_CLOEXEC,
    "SFD_NONBLOCK": SFD_NONBLOCK,
    "SPLICE_F_MOVE": SpliceFlag.MOVE,
    "SPLICE_F_NONBLOCK": SpliceFlag.NONBLOCK,
    "SPLICE_F_MORE": SpliceFlag.MORE,
    "SPLICE_F_GIFT": SpliceFlag.GIFT,
    "F_SETPIPE_SZ": F_SETPIPE_SZ,
    "F_GETPIPE_SZ": F_GETPIPE_SZ,
    "MFD_CLOEXEC": MFD_CLOEXEC,
    "MFD_ALLOW_SEALING": MFD_ALLOW_SEALING,
    "MFD_NOEXEC_SEAL": MFD_NOEXEC_SEAL,
    "SYS_getpid": _SYSCALLS[platform.machine()][0] if platform.machine() in _SYSCALLS else -1,
    "SYS_getppid": _SYSCALLS[platform.machine()][1] if platform.machine() in _SYSCALLS else -1,
    "SYS_pivot_root": _SYSCALLS[platform.machine()][2] if platform.machine() in _SYSCALLS else -1,
    "MNT_FORCE": UmountFlags.FORCE,
    "MNT_DETACH": UmountFlags.DETACH,
    "MNT_EXPIRE": UmountFlags.EXPIRE,
    "UMOUNT_NOFOLLOW": UmountFlags.NOFOLLOW,
}
CONSTANTS.update({f"CLOCK_{c.name}": c.value for c in Clock})
CONSTANTS.update({f"F_SEAL_{s.name}": s.value for s in Seal})
CONSTANTS.update({f"CLONE_{f.name}": f.value for f in CloneFlags})
CONSTANTS.update({f"MS_{f.name}": f.value for f in MountFlags})

PROGRAM = """
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <time.h>
int main(void) {
    printf("sizeof_itimerspec %zu\\n", sizeof(struct itimerspec));
    printf("off_it_value %zu\\n", offsetof(struct itimerspec, it_value));
    printf("off_tv_nsec %zu\\n", offsetof(struct timespec, tv_nsec));
    printf("sizeof_iovec %zu\\n", sizeof(struct iovec));
    printf("sizeof_signalfd_siginfo %zu\\n", sizeof(struct signalfd_siginfo));
    @FIELDS@
    @CONSTANTS@
    return 0;
}
"""


@pytest.fixture(scope="module")
def header_values(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to read the headers with")
    fields = "\n    ".join(
        f'printf("{f} %zu\\n", offsetof(struct signalfd_siginfo, {f}));' for f in SIGINFO_FIELDS
    )
    constants = "\n    ".join(
        f'#ifdef {name}\n    printf("{name} %lld\\n", (long long)({name}));\n    #endif'
        for name in CONSTANTS
    )
    src = Path(tmp_path_factory.mktemp("layouts")) / "layouts.c"
    src.write_text(PROGRAM.replace("@FIELDS@", fields).replace("@CONSTANTS@", constants))
    exe = src.with_suffix("")
    subprocess.run([cc, "-o", str(exe), str(src)], check=True, capture_output=True, timeout=60)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=10)
    values = {
        name: int(value) for name, value in (line.split() for line in out.stdout.splitlines())
    }
    return values


def _struct_offsets(fmt: str) -> list[int]:
    """Offsets of each non-padding item of a ``=``-prefixed struct format."""
    offsets, pos = [], 0
    for ch in fmt.lstrip("=<>!@"):
        if ch.isdigit():
            continue  # only the trailing pad uses a count
        if ch != "x":
            offsets.append(pos)
        pos += struct.calcsize("=" + ch)
    return offsets


def test_itimerspec_and_iovec_layouts_match_the_headers(header_values: dict[str, int]) -> None:
    assert ffi.sizeof("struct itimerspec") == header_values["sizeof_itimerspec"] == 32
    assert ffi.offsetof("struct itimerspec", "it_value") == header_values["off_it_value"]
    assert ffi.offsetof("struct timespec", "tv_nsec") == header_values["off_tv_nsec"]
    assert ffi.sizeof("struct iovec") == header_values["sizeof_iovec"]


def test_signalfd_siginfo_layout_matches_the_headers(header_values: dict[str, int]) -> None:
    assert _SIGINFO.size == header_values["sizeof_signalfd_siginfo"] == 128
    expected = [header_values[f] for f in SIGINFO_FIELDS]
    assert _struct_offsets(_SIGINFO.format) == expected
    assert len(SignalInfo.__dataclass_fields__) == len(SIGINFO_FIELDS)


def test_constants_match_the_headers(header_values: dict[str, int]) -> None:
    for name, value in CONSTANTS.items():
        if name in header_values:
            assert int(value) == header_values[name], name
    # Only constants newer than older headers may be missing (6.1 lacks the first two).
    missing = set(CONSTANTS) - set(header_values)
    assert missing <= {"F_SEAL_EXEC", "MFD_NOEXEC_SEAL", "MS_NOSYMFOLLOW", "CLONE_NEWTIME"}


def test_python_knows_the_same_signal_and_seal_numbers() -> None:
    import fcntl

    assert Seal.WRITE == fcntl.F_SEAL_WRITE
    assert Seal.SEAL == fcntl.F_SEAL_SEAL
    assert signal.NSIG == 65
    assert os.O_CLOEXEC == TFD_CLOEXEC == SFD_CLOEXEC
