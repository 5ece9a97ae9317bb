"""triokuiper: eKuiper portable plugins (sources, sinks, functions) as Trio tasks over nng."""

from ._api import (
    Function as Function,
    PluginConfig as PluginConfig,
    Sink as Sink,
    SinkContext as SinkContext,
    Source as Source,
    SourceContext as SourceContext,
)
from ._messages import (
    FunctionContext as FunctionContext,
    LocalProtocolError as LocalProtocolError,
    Meta as Meta,
    ProtocolError as ProtocolError,
    RemoteProtocolError as RemoteProtocolError,
)
from ._runtime import Plugin as Plugin, run as run, serve as serve

__all__ = [
    "Function",
    "FunctionContext",
    "LocalProtocolError",
    "Meta",
    "Plugin",
    "PluginConfig",
    "ProtocolError",
    "RemoteProtocolError",
    "Sink",
    "SinkContext",
    "Source",
    "SourceContext",
    "run",
    "serve",
]
