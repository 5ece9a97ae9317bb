"""``ekuiper.source.Source``: the SDK's source base class (``open`` runs in a worker thread)."""

from abc import abstractmethod
from typing import Any

from .runtime.context import Context


class Source:
    """abstract class for eKuiper source plugin"""

    @abstractmethod
    def configure(self, datasource: str, conf: dict[str, Any]) -> Any:
        """configure with the datasource and conf map; raise on error"""

    @abstractmethod
    def open(self, ctx: Context) -> Any:
        """run and emit data or errors through ctx until closed"""

    @abstractmethod
    def close(self, ctx: Context) -> Any:
        """stop and clean up"""
