"""What the emulated eKuiper server reports, as exceptions carrying eKuiper's own error text."""

from __future__ import annotations

__all__ = [
    "CommandError",
    "EmulatorError",
    "PluginExitedError",
    "PluginTimeoutError",
]


class EmulatorError(Exception):
    """Something eKuiper would report as an error for a rule or a plugin."""


class CommandError(EmulatorError):
    """A start/stop command was not answered ``ok``: ``str(exc)`` is ``receive error: <reply>``."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        super().__init__("receive error: " + reply.decode("utf-8", errors="replace"))


class PluginExitedError(EmulatorError):
    """The plugin process exited while the server waited for it (eKuiper would wait up to 1 h)."""


class PluginTimeoutError(EmulatorError, TimeoutError):
    """The plugin did not answer within eKuiper's timeout (handshake or function call)."""
