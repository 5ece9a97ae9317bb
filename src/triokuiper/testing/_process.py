"""Launching a plugin process the way eKuiper does, and making sure it never outlives a test.

eKuiper runs ``pythonBin -u EXECUTABLE '{"sendTimeout":1000}'`` with the executable's directory as
the working directory, the server's environment, stdout and stderr into its log, and stops the
plugin with SIGKILL.  Here the output is kept (and logged) so tests can read it.  The process gets
its own session so that teardown can kill anything it spawned as well.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence

import trio

__all__ = ["PORTABLE_CONF_ARG", "PluginProcess", "python_plugin_command"]

log = logging.getLogger("triokuiper.testing")

PORTABLE_CONF_ARG = '{"sendTimeout":1000}'
"""The single argument eKuiper passes: ``json.Marshal(PortableConfig{SendTimeout: 1000})``."""

_OUTPUT_LIMIT = 1 << 20  # keep the last MiB of plugin output
_GROUP_EXIT_TIMEOUT = 5.0  # how long teardown waits for killed processes to die


def _group_alive(pgid: int) -> bool:
    """True while a process of group ``pgid`` exists and is not a zombie (from /proc)."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def python_plugin_command(executable: str | os.PathLike[str]) -> list[str]:
    """``[python, "-u", EXECUTABLE, '{"sendTimeout":1000}']`` as eKuiper (>= 2.2) builds it."""
    return [sys.executable, "-u", os.fspath(executable), PORTABLE_CONF_ARG]


def go_exit_text(returncode: int) -> str:
    """The text of Go's ``*exec.ExitError`` for a return code (``cmd.Wait()``'s error)."""
    if returncode < 0:
        number = -returncode
        return f"signal: {_GO_SIGNAL_NAMES.get(number, f'signal {number}')}"
    return f"exit status {returncode}"


# Go's syscall signal names on Linux (what ``signal.String()`` prints).
_GO_SIGNAL_NAMES = {
    1: "hangup",
    2: "interrupt",
    3: "quit",
    4: "illegal instruction",
    5: "trace/breakpoint trap",
    6: "aborted",
    7: "bus error",
    8: "floating point exception",
    9: "killed",
    10: "user defined signal 1",
    11: "segmentation fault",
    12: "user defined signal 2",
    13: "broken pipe",
    14: "alarm clock",
    15: "terminated",
}


class PluginProcess:
    """One run of the plugin executable, watched by two tasks in the emulator's nursery."""

    def __init__(self, process: trio.Process) -> None:
        self._process = process
        self.output = bytearray()
        """Everything the plugin wrote to stdout and stderr (the last MiB)."""
        self.exited = trio.Event()
        self.returncode: int | None = None
        self._output_changed = trio.Event()

    @property
    def pid(self) -> int:
        return self._process.pid

    @classmethod
    async def spawn(
        cls,
        nursery: trio.Nursery,
        command: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None,
        env: Mapping[str, str],
    ) -> PluginProcess:
        process = await trio.lowlevel.open_process(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self = cls(process)
        log.info("plugin started pid: %d", process.pid)
        nursery.start_soon(self._pump_output)
        nursery.start_soon(self._wait)
        return self

    async def _pump_output(self) -> None:
        stream = self._process.stdout
        assert stream is not None
        async with stream:
            pending = b""
            while chunk := await stream.receive_some(65536):
                self.output += chunk
                if len(self.output) > _OUTPUT_LIMIT:
                    del self.output[: len(self.output) - _OUTPUT_LIMIT]
                self._output_changed.set()
                self._output_changed = trio.Event()
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    log.debug("plugin %d: %s", self.pid, line.decode(errors="replace"))

    async def wait_output(self, needle: bytes) -> None:
        """Wait until ``needle`` appears in the output; raise EOFError if the plugin exits."""
        while needle not in self.output:
            if self.exited.is_set():
                raise EOFError(f"plugin {self.pid} exited without printing {needle!r}")
            changed = self._output_changed
            with trio.move_on_after(0.05):  # also notice the exit
                await changed.wait()
        await trio.lowlevel.checkpoint()

    async def _wait(self) -> None:
        try:
            self.returncode = await self._process.wait()
        finally:
            self._kill_group()
            await self._wait_group_gone()
            self.exited.set()
        log.info("plugin %d exited: %s", self.pid, go_exit_text(self.returncode))

    def _kill_group(self) -> None:
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    async def _wait_group_gone(self) -> None:
        """Wait until the killed group's processes are dead, not merely signalled.

        SIGKILL is delivered asynchronously: ``killpg`` returns while a grandchild may still be
        running (notably on a loaded machine), so a caller checking "no orphans" right after
        teardown could still see it.  Zombies count as gone (their parent reaps them).
        """
        with trio.CancelScope(shield=True), trio.move_on_after(_GROUP_EXIT_TIMEOUT):
            while True:
                if not _group_alive(self._process.pid):
                    return
                await trio.sleep(0.01)

    async def kill(self) -> None:
        """SIGKILL (``process.Kill()``) and wait for the exit to be reaped."""
        if self._process.returncode is None:
            self._process.kill()
        self._kill_group()
        with trio.CancelScope(shield=True):
            await self._process.wait()
            await self.exited.wait()
            await self._wait_group_gone()
