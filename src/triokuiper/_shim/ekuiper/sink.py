"""``ekuiper.sink.Sink``: the SDK's sink base class (blocking methods, run in a worker thread)."""

from abc import abstractmethod
from typing import Any

from .runtime.context import Context


class Sink:
    """abstract class for eKuiper sink plugin"""

    @abstractmethod
    def configure(self, conf: dict[str, Any]) -> Any:
        """configure with the conf map; raise on error"""

    @abstractmethod
    def open(self, ctx: Context) -> Any:
        """connect; data arrive through collect afterwards"""

    @abstractmethod
    def collect(self, ctx: Context, data: Any) -> Any:
        """handle one payload (bytes)"""

    @abstractmethod
    def close(self, ctx: Context) -> Any:
        """stop and clean up"""
