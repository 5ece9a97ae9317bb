"""pytest plugin: the fixtures triofd ships for its users' tests.

* ``no_fd_leak`` — fails the test if it ends with more fds open than it started with.
* ``tmp_watch_dir`` — an empty directory (under ``tmp_path``) for inotify/fanotify watches.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from . import assert_no_fd_leak


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    with assert_no_fd_leak():
        yield


@pytest.fixture
def tmp_watch_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "watched"
    directory.mkdir()
    return directory
