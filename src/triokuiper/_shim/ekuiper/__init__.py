"""triokuiper's stand-in for the official ``ekuiper`` SDK package (same names, same API).

Only on ``sys.path`` inside ``triokuiper compat PLUGIN.py``: a plugin written for the SDK
imports this, and ``plugin.start()`` hands its config to triokuiper's Trio runtime.
"""

from ekuiper.function import Function
from ekuiper.runtime import plugin
from ekuiper.runtime.context import Context
from ekuiper.runtime.plugin import PluginConfig
from ekuiper.sink import Sink
from ekuiper.source import Source

__all__ = ["Context", "Function", "PluginConfig", "Sink", "Source", "plugin"]

name = "ekuiper"
