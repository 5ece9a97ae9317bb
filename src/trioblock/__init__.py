"""trioblock: an NBD server on Trio that hosts nbdkit Python plugins and Trio-native plugins."""

from ._connection import ServerConfig as ServerConfig
from ._plugins import PluginLoadError as PluginLoadError, load_plugin as load_plugin
from ._plugins._backend import (
    ExportInfo as ExportInfo,
    Plugin as Plugin,
    PluginConnection as PluginConnection,
    ThreadModel as ThreadModel,
)
from ._server import (
    NBDServer as NBDServer,
    open_listeners as open_listeners,
    serve_nbd as serve_nbd,
    serve_nbd_stream as serve_nbd_stream,
)

__all__ = [
    "ExportInfo",
    "NBDServer",
    "Plugin",
    "PluginConnection",
    "PluginLoadError",
    "ServerConfig",
    "ThreadModel",
    "load_plugin",
    "open_listeners",
    "serve_nbd",
    "serve_nbd_stream",
]
