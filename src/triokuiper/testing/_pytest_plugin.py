"""pytest plugin (entry point ``pytest11: triokuiper``): ``ekuiper_emulator``, ``ekuiper_ipc_dir``.

Kept import-light: pytest loads it in every session wherever triokuiper is installed, so the
emulator is imported only when a test asks for a fixture.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from triokuiper.testing import Emulator

    trio_fixture = pytest.fixture
else:
    try:  # a Trio fixture even outside trio_mode (then only Trio tests may use it)
        from pytest_trio import trio_fixture
    except ImportError:  # pragma: no cover - the fixture needs pytest-trio to run anyway
        trio_fixture = pytest.fixture


@pytest.fixture
def ekuiper_ipc_dir() -> Iterator[str]:
    """A private, short directory for the test's ipc sockets (removed afterwards).

    Short because a Unix socket path must fit in 107 bytes, which ``tmp_path`` may not.
    """
    path = tempfile.mkdtemp(prefix="kuipc-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class EmulatorFactory:
    """``emu = await ekuiper_emulator(plugin_name, **open_emulator_kwargs)``."""

    def __init__(self, nursery: Any, ipc_dir: str) -> None:
        self._nursery = nursery
        self._ipc_dir = ipc_dir
        self.emulators: list[Emulator] = []

    async def __call__(self, plugin_name: str, **kwargs: Any) -> Emulator:
        import trio

        from triokuiper.testing import open_emulator

        kwargs.setdefault("ipc_dir", self._ipc_dir)

        async def run(task_status: trio.TaskStatus[Emulator]) -> None:
            async with open_emulator(plugin_name, **kwargs) as emulator:
                task_status.started(emulator)
                await trio.sleep_forever()

        emulator: Emulator = await self._nursery.start(run)
        self.emulators.append(emulator)
        return emulator


@trio_fixture
async def ekuiper_emulator(ekuiper_ipc_dir: str) -> AsyncIterator[EmulatorFactory]:
    """A factory of emulated eKuiper servers that live until the end of the test (pytest-trio).

    Arguments are those of :func:`triokuiper.testing.open_emulator`; ``ipc_dir`` defaults to
    ``ekuiper_ipc_dir``.  Every plugin process is killed and every socket closed at teardown.
    """
    import trio

    async with trio.open_nursery() as nursery:
        factory = EmulatorFactory(nursery, ekuiper_ipc_dir)
        try:
            yield factory
        finally:
            nursery.cancel_scope.cancel()
