"""``ekuiper.runtime.plugin``: ``PluginConfig`` and ``start()``, served by triokuiper."""

from collections.abc import Callable
from typing import Any

from . import shared


class PluginConfig:
    def __init__(
        self,
        name: str,
        sources: dict[str, Callable[[], Any]],
        sinks: dict[str, Callable[[], Any]],
        functions: dict[str, Callable[[], Any]],
    ) -> None:
        self.name = name
        self.sources = sources
        self.sinks = sinks
        self.functions = functions

    def get(self, plugin_type: str, symbol_name: str) -> Any:
        if plugin_type == shared.TYPE_SOURCE:
            return self.sources[symbol_name]
        if plugin_type == shared.TYPE_SINK:
            return self.sinks[symbol_name]
        if plugin_type == shared.TYPE_FUNC:
            return self.functions[symbol_name]
        return None


def start(c: PluginConfig) -> None:
    """Serve the plugin with triokuiper's Trio runtime (returns when eKuiper goes away)."""
    from triokuiper._compat import start_sdk_plugin

    start_sdk_plugin(c)
