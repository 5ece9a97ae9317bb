"""Per-connection context that plugin code can reach without being passed it.

The server sets :data:`current` in each connection's task; ``trio.to_thread.run_sync`` copies the
context into the worker thread, so ``nbdkit.export_name()`` and friends work from blocking plugin
code too.  ``request_shutdown`` / ``request_disconnect`` are safe to call from any thread.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field


def _nothing(*_: object) -> None:
    return None


@dataclass(slots=True)
class ConnectionContext:
    export_name: str = ""
    is_tls: bool = False
    readonly: bool = False
    # Thread-safe hooks into the server; no-ops outside a server (e.g. in unit tests).
    request_shutdown: Callable[[], None] = field(default=_nothing)
    request_disconnect: Callable[[bool], None] = field(default=_nothing)


current: contextvars.ContextVar[ConnectionContext] = contextvars.ContextVar(
    "trioblock_connection",
    default=ConnectionContext(),  # noqa: B039 -- outside a server; the server sets a fresh one
)
